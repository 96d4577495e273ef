"""SessionStore and the seed's four functions, against a real redis-server."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import math
import os
import signal
import threading
import time
import types
from decimal import Decimal

import pytest
import redis
from helpers import unique_prefix, wait_until
from index_checks import (
    assert_index_follows_its_sessions,
    index_dies_with_its_sessions,
    index_expiry_follows_every_change,
)
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.retry import Retry

import sessionlab
from sessionlab import (
    DEFAULT_TTL,
    CorruptSession,
    InvalidCartItem,
    InvalidSessionId,
    InvalidStoreSetting,
    InvalidTTL,
    LabServer,
    SessionError,
    SessionStore,
    UnserializableData,
    WriteOutcomeUnknown,
)
from sessionlab.sample import CART, PROFILE, UPDATED
from sessionlab.store import MAX_DEPTH, MAX_QUANTITY, MAX_TTL, random_id


def short_id(value: object) -> str:
    """A test id for any parameter, even an int too big to print."""
    try:
        return ascii(value)[:40]
    except ValueError:
        return "huge-int"


# -- the seed notebook, unchanged ------------------------------------------------------------


def test_seed_test_cases_verbatim(fresh_connection):
    from sessionlab import create_session, delete_session, get_session_data, update_session_data

    # The seed notebook's cell "9. Testing the Session Management System", character for
    # character (only the noqa comments added).
    # fmt: off
    # Test Case 1: Create and Retrieve Session
    user_data = {"user_id": "U002", "name": "John", "preferences": {"theme": "dark", "browser": "Firefox"}}  # noqa: E501
    create_session("task2", user_data)

    session_data = get_session_data("task2")
    assert session_data['name'] == 'John', "Test Case 1 Failed: Data mismatch"

    # Test Case 2: Update Session
    updated_user_data = {"user_id": "U002", "name": "John", "preferences": {"theme": "light", "browser": "Safari"}}  # noqa: E501
    update_session_data("task2", updated_user_data)

    updated_session_data = get_session_data("task2")
    assert updated_session_data['preferences']['theme'] == 'light', "Test Case 2 Failed: Update failed"  # noqa: E501

    # Test Case 3: Delete Session
    delete_session("task2")
    assert get_session_data("task2") is None, "Test Case 3 Failed: Deletion failed"

    print("All test cases passed!")
    # fmt: on


def test_seed_functions_return_values_and_use_the_embedded_server(fresh_connection):
    import sessionlab
    from sessionlab import create_session, delete_session, get_session_data, update_session_data

    assert create_session("task1", PROFILE) is True
    assert sessionlab.embedded_server() is not None and sessionlab.embedded_server().running
    raw = sessionlab.connect()
    assert raw.ttl("session:{task1}") == DEFAULT_TTL
    assert get_session_data("task1") == PROFILE
    assert update_session_data("task1", UPDATED) is True
    assert get_session_data("task1") == UPDATED
    assert delete_session("task1") is True
    assert get_session_data("task1") is None
    assert update_session_data("task1", PROFILE) is False
    assert delete_session("task1") is False
    assert raw.exists("session:{task1}") == 0
    assert create_session("short", PROFILE, expiration_seconds=30) is True
    assert raw.ttl("session:{short}") == 30
    with pytest.raises(InvalidTTL):
        create_session("bad", PROFILE, expiration_seconds=0)


# -- CRUD --------------------------------------------------------------------------------------


def test_crud_return_values(any_store):
    store = any_store
    assert store.create("s1", PROFILE) is True
    assert store.get("s1") == PROFILE
    assert isinstance(store.get("s1"), dict)
    assert store.get("nobody") is None
    assert store.update("s1", UPDATED) is True
    assert store.get("s1") == UPDATED
    assert store.update("nobody", UPDATED) is False
    assert store.get("nobody") is None  # update did not create it
    assert store.delete("s1") is True
    assert store.get("s1") is None
    assert store.delete("s1") is False


def test_keys_and_stored_form(store, client):
    store.create("abc", {"name": "Zoë", "n": 1.5, "tags": ["a"], "ok": True, "none": None})
    store.add_to_cart("abc", "SKU-1", 2)
    key = store.key("abc")
    assert key == f"{store.prefix}:{{abc}}"
    assert client.type(key) == "hash"
    fields = client.hgetall(key)
    assert {k: v for k, v in fields.items() if not k.startswith("_")} == {
        "p:name": '"Zoë"',  # compact JSON, UTF-8 as is
        "p:n": "1.5",
        "p:tags": '["a"]',
        "p:ok": "true",
        "p:none": "null",
        "c:SKU-1": "2",
    }
    assert sorted(k for k in fields if k.startswith("_")) == ["_a", "_c", "_i"]
    assert int(fields["_a"]) // 1000 - int(fields["_c"]) == store.absolute_ttl  # ms, s
    assert list(client.scan_iter(f"{store.prefix}:*")) == [key]  # one key, whatever was written
    assert store.get("abc") == {"name": "Zoë", "n": 1.5, "tags": ["a"], "ok": True, "none": None}


def test_profile_keys_that_need_json_escapes(store, client):
    data = {'say "hi"': 1, "back\\slash": 2, "tab\there": 3, "ünï": 4, "": 5, "a:b": 6}
    store.create("s", data)
    assert store.get("s") == data
    assert store.load("s").profile == data
    assert store.patch("s", {'say "hi"': 10}, remove=["back\\slash"])
    assert store.get("s") == {'say "hi"': 10, "tab\there": 3, "ünï": 4, "": 5, "a:b": 6}
    assert "p:user_id" in profile_fields_of(store, client, PROFILE)  # plain names stay plain


def profile_fields_of(store, client, data) -> list[str]:
    store.create("plain", data)
    return [k for k in client.hkeys(store.key("plain")) if k.startswith("p:")]


def test_every_write_keeps_the_session_one_key(store, client):
    store.create("s", PROFILE, ttl=30, user_id="U1")
    store.add_to_cart("s", "A", 3)
    store.remove_from_cart("s", "A", 1)
    store.set_quantity("s", "B", 2)
    store.patch("s", {"name": "Alice"})
    store.update("s", UPDATED)
    store.load("s")
    store.touch("s")
    keys = {store.key("s"), store.user_key("U1")}  # the session and its user's index
    assert set(client.scan_iter(f"{store.prefix}:*")) == keys
    assert store.delete("s") is True
    assert list(client.scan_iter(f"{store.prefix}:*")) == []


@pytest.mark.parametrize("session_id", ["abc", "task2", "U-001", "a.b:c@d_e", "x" * 128])
def test_a_sessions_key_is_in_its_ids_hash_slot(store, session_id):
    assert key_slot(store.key(session_id).encode()) == key_slot(session_id.encode())


def test_ids_spread_over_slots(store):
    ids = [random_id() for _ in range(200)]
    assert len({key_slot(store.key(i).encode()) for i in ids}) > 150


def test_create_on_an_existing_id_replaces_profile_and_empties_cart(store, client):
    store.create("s", PROFILE, ttl=100)
    store.add_to_cart("s", "A", 3)
    assert store.create("s", UPDATED, ttl=2000) is True
    assert store.get("s") == UPDATED
    assert store.get_cart("s") == {}
    assert store.ttl("s") == 2000


def test_delete_removes_profile_and_cart(store, client):
    store.create("s", PROFILE)
    store.add_to_cart("s", "A")
    assert store.delete("s") is True
    assert client.exists(store.key("s")) == 0
    assert store.get_cart("s") == {}
    assert store.load("s") is None


def test_store_arguments():
    client = redis.Redis()  # never connects: the constructor sends nothing
    for prefix in ["", "a b", "{x}", "x" * 65, 5, "sess\n", "s\ud800"]:
        with pytest.raises(InvalidStoreSetting, match="prefix") as caught:
            SessionStore(client, prefix=prefix)
        assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidTTL):
        SessionStore(client, default_ttl=0)
    with pytest.raises(InvalidTTL):
        SessionStore(client, absolute_ttl=-1)
    for bad in [0, -1, True, 1.5, "3"]:
        with pytest.raises(InvalidStoreSetting, match="max_sessions_per_user"):
            SessionStore(client, max_sessions_per_user=bad)
    store = SessionStore(client, prefix="shop:sessions", default_ttl=60)
    assert store.key("a") == "shop:sessions:{a}"
    assert store.idle_ttl == store.default_ttl == 60
    assert repr(store) == (
        "SessionStore(prefix='shop:sessions', idle_ttl=60, absolute_ttl=28800, "
        "max_sessions_per_user=None)"
    )
    store = SessionStore(client, idle_ttl=10, absolute_ttl=20, max_sessions_per_user=3)
    assert (store.idle_ttl, store.absolute_ttl, store.max_sessions_per_user) == (10, 20, 3)


def test_an_asyncio_client_is_refused_with_a_type_error():
    import redis.asyncio

    for client in [redis.asyncio.Redis(), redis.asyncio.RedisCluster(host="127.0.0.1", port=1)]:
        with pytest.raises(TypeError, match="asyncio") as caught:
            SessionStore(client)
        assert isinstance(caught.value, SessionError)
        assert "asyncio.to_thread" in str(caught.value)
    with pytest.raises(TypeError, match="redis-py client"):
        SessionStore("redis://localhost")


# -- TTL ----------------------------------------------------------------------------------------


def test_create_sets_the_ttl(store, client):
    store.create("default", PROFILE)
    assert client.ttl(store.key("default")) == store.idle_ttl == 1800
    store.create("given", PROFILE, ttl=77)
    assert client.ttl(store.key("given")) == 77
    custom = SessionStore(client, prefix=unique_prefix(), default_ttl=42)
    custom.create("x", PROFILE)
    assert custom.ttl("x") == 42


def test_a_ttl_past_the_absolute_deadline_is_capped(client):
    store = SessionStore(client, prefix=unique_prefix(), idle_ttl=100, absolute_ttl=50)
    store.create("s", PROFILE)
    assert store.ttl("s") == 50
    store.create("t", PROFILE, ttl=MAX_TTL)
    assert store.ttl("t") == 50
    assert store.touch("t", ttl=1000) is True
    assert store.ttl("t") <= 50


def test_update_keeps_the_remaining_ttl_unlike_a_plain_hset(store, client):
    store.create("kept", PROFILE, ttl=1000)
    client.pexpire(store.key("kept"), 500_000)  # time has passed: 500 s left
    assert store.update("kept", UPDATED) is True
    assert 499 <= store.ttl("kept") <= 500  # not reset to 1000, not removed
    assert store.get("kept") == UPDATED
    assert store.patch("kept", {"name": "Bob"}) is True
    assert 499 <= store.ttl("kept") <= 500


def test_update_never_resurrects_an_expired_session(any_store):
    store, client = any_store, any_store.client
    store.create("gone", PROFILE, ttl=100)
    client.pexpire(store.key("gone"), 5)
    assert wait_until(lambda: client.exists(store.key("gone")) == 0, timeout=5)
    assert store.update("gone", UPDATED) is False
    assert store.patch("gone", {"name": "x"}) is False
    assert store.add_to_cart("gone", "A") is None
    assert store.set_quantity("gone", "A", 2) is None
    assert store.remove_from_cart("gone", "A") is None
    assert store.touch("gone") is False
    assert store.load("gone") is None
    assert client.exists(store.key("gone")) == 0
    assert store.get("gone") is None


def test_ttl(store, client):
    assert store.ttl("absent") is None
    store.create("s", PROFILE, ttl=300)
    assert store.ttl("s") == 300
    client.persist(store.key("s"))
    assert store.ttl("s") == -1


def test_touch_slides_the_idle_expiry(store, client):
    store.create("s", PROFILE, ttl=100)
    store.add_to_cart("s", "A")
    client.pexpire(store.key("s"), 3000)
    assert store.touch("s", ttl=500) is True
    assert store.ttl("s") == 500
    assert store.touch("s") is True  # the session's own idle timeout
    assert store.ttl("s") == 100
    assert store.get_cart("s") == {"A": 1}
    assert store.touch("absent") is False
    assert client.exists(store.key("absent")) == 0


@pytest.mark.parametrize(
    "ttl", [0, -1, 1.5, 60.0, True, False, "60", [60], MAX_TTL + 1, 10**5000], ids=short_id
)
def test_bad_ttl(store, client, ttl):
    with pytest.raises(InvalidTTL) as caught:
        store.create("s", PROFILE, ttl=ttl)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, SessionError)
    assert len(str(caught.value)) < 300
    assert client.exists(store.key("s")) == 0
    store.create("s", PROFILE, ttl=50)
    with pytest.raises(InvalidTTL):
        store.touch("s", ttl=ttl)
    assert store.ttl("s") == 50


def test_largest_ttl(client):
    store = SessionStore(client, prefix=unique_prefix(), absolute_ttl=MAX_TTL)
    store.create("s", PROFILE, ttl=MAX_TTL)
    assert store.ttl("s") == MAX_TTL


def test_int_enum_ttl_and_quantity_are_sent_as_numbers(store, client):
    class Minutes(enum.IntEnum):
        FIVE = 300

    class Count(enum.IntEnum):
        TWO = 2

    assert store.create("s", PROFILE, ttl=Minutes.FIVE) is True
    assert store.ttl("s") == 300
    assert store.add_to_cart("s", "A", Count.TWO) == 2
    assert store.set_quantity("s", "B", Count.TWO) == 2
    assert store.remove_from_cart("s", "A", Count.TWO) == 0
    assert store.touch("s", Minutes.FIVE) is True
    assert client.hget(store.key("s"), "c:B") == "2"
    assert store.load("s").cart == {"B": 2}


# -- load: the whole session in one round trip -------------------------------------------------


class CountingRedis(redis.Redis):
    """A redis-py client that counts the commands it sends (a pipeline counts once)."""

    sent = 0

    def execute_command(self, *args, **options):
        CountingRedis.sent += 1
        return super().execute_command(*args, **options)


def test_load_returns_the_whole_session_in_one_round_trip(lab_server):
    client = CountingRedis(connection_pool=lab_server.client().connection_pool)
    store = SessionStore(client, prefix=unique_prefix(), idle_ttl=600)
    store.create("s", PROFILE, user_id="U001")
    for sku, quantity in CART.items():
        store.add_to_cart("s", sku, quantity)
    client.pexpire(store.key("s"), 100_000)
    store.load("s")  # the script is loaded into Redis once (SCRIPT LOAD on first use)
    CountingRedis.sent = 0
    session = store.load("s")
    assert CountingRedis.sent == 1
    assert session.session_id == "s"
    assert session.profile == PROFILE
    assert session.cart == CART
    assert session.ttl == 600  # slid back up from 100 s
    assert session.user_id == "U001"
    assert session.created_at <= session.last_seen_at
    assert abs(session.last_seen_at - client.time()[0]) <= 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        session.ttl = 5
    assert store.load("absent") is None


def test_load_scripts_spares_the_noscript_round_trips():
    """A server that does not know a script (new, restarted, failed over) answers NOSCRIPT and
    the store loads it: 3 round trips. After load_scripts(), one."""
    with LabServer() as server:
        client = CountingRedis(connection_pool=server.client().connection_pool)
        store = SessionStore(client, prefix=unique_prefix())
        store.create("s", PROFILE)
        client.script_flush()
        CountingRedis.sent = 0
        assert store.load("s").profile == PROFILE
        assert CountingRedis.sent == 3  # EVALSHA (NOSCRIPT), SCRIPT LOAD, EVALSHA
        client.script_flush()
        store.load_scripts()
        CountingRedis.sent = 0
        assert store.load("s").profile == PROFILE
        assert CountingRedis.sent == 1


def test_last_seen_is_read_from_the_expiry_and_a_load_writes_no_field(client):
    store = SessionStore(client, prefix=unique_prefix())
    store.create("s", PROFILE, ttl=600, user_id="U1")
    now = int(client.time()[0])
    client.hset(store.key("s"), "_c", now - 200)  # as if created 200 s ago
    client.pexpire(store.key("s"), 500_000)  # and last seen 100 s ago
    assert abs(store.sessions_of("U1")[0].last_seen_at - (now - 100)) <= 1
    fields = client.hgetall(store.key("s"))
    assert abs(store.load("s").last_seen_at - now) <= 1
    assert client.hgetall(store.key("s")) == fields  # the slide is the expiry alone
    assert abs(store.sessions_of("U1")[0].last_seen_at - now) <= 1


def test_get_does_not_slide_but_load_does(store, client):
    store.create("s", PROFILE, ttl=600)
    client.pexpire(store.key("s"), 100_000)
    store.get("s")
    store.get_cart("s")
    assert store.ttl("s") == 100
    store.load("s")
    assert store.ttl("s") == 600


def test_load_never_slides_past_the_absolute_deadline(client):
    store = SessionStore(client, prefix=unique_prefix(), idle_ttl=600, absolute_ttl=1000)
    store.create("s", PROFILE)
    deadline = int(client.hget(store.key("s"), "_a")) - 900_000  # as if created 900 s ago
    client.hset(store.key("s"), "_a", deadline)
    session = store.load("s")
    assert session.ttl <= 100
    assert client.pexpiretime(store.key("s")) <= deadline
    assert store.touch("s", ttl=MAX_TTL) is True
    assert client.pexpiretime(store.key("s")) <= deadline


def test_no_session_outlives_its_absolute_timeout_under_constant_touch(client):
    """20 sessions, each touched and loaded in a loop: all gone at their absolute deadline."""
    store = SessionStore(client, prefix=unique_prefix(), idle_ttl=2, absolute_ttl=2)
    ids = [f"s{n}" for n in range(20)]
    for session_id in ids:
        store.create(session_id, PROFILE)
    deadlines = {i: int(client.hget(store.key(i), "_a")) for i in ids}  # epoch ms
    alive_past_deadline = 0
    rounds = 0
    while any(client.exists(store.key(i)) for i in ids):
        rounds += 1
        for session_id in ids:
            store.touch(session_id)
            store.load(session_id)
            expires = client.pexpiretime(store.key(session_id))
            assert expires <= deadlines[session_id]  # Redis holds the cap, every time
        now_ms = int(client.time()[0]) * 1000
        alive_past_deadline = sum(
            1 for i in ids if now_ms > deadlines[i] and client.exists(store.key(i))
        )
        assert alive_past_deadline == 0
        assert rounds < 10_000, "sessions still alive long after their absolute deadline"
    assert rounds > 5  # the loop really kept touching them for a while


# -- patch: no lost profile update ------------------------------------------------------------


def test_patch_sets_and_removes_only_named_fields(any_store):
    store = any_store
    store.create("s", {**PROFILE, "visits": 1})
    store.add_to_cart("s", "A", 2)
    assert store.patch("s", {"name": "Alice", "theme": "light"}, remove=["visits"]) is True
    assert store.get("s") == {
        "user_id": "U001",
        "name": "Alice",
        "preferences": PROFILE["preferences"],
        "theme": "light",
    }
    assert store.patch("s", {}, remove=["never-there"]) is True
    assert store.patch("s", {}) is True
    assert store.get_cart("s") == {"A": 2}
    assert store.patch("absent", {"name": "x"}) is False
    assert store.get("absent") is None


def test_patch_bad_input_writes_nothing(store):
    store.create("s", PROFILE)
    with pytest.raises(UnserializableData, match="remove"):
        store.patch("s", {}, remove="name")  # a string is not a list of names
    with pytest.raises(UnserializableData):
        store.patch("s", {"when": datetime.date(2026, 1, 1), "name": "Bob"})
    with pytest.raises(UnserializableData):
        store.patch("s", {"name": "Bob"}, remove=[7])
    with pytest.raises(UnserializableData):
        store.patch("s", {1: "Bob"})
    assert store.get("s") == PROFILE


def test_16_concurrent_patches_of_different_fields_all_land(lab_server):
    store = SessionStore(lab_server.client(), prefix=unique_prefix())
    store.create("s", PROFILE, ttl=900)
    start = threading.Barrier(16)

    def change(n: int) -> None:
        start.wait()
        assert store.patch("s", {f"field{n}": n}) is True

    workers = [threading.Thread(target=change, args=(n,)) for n in range(16)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert store.get("s") == {**PROFILE, **{f"field{n}": n for n in range(16)}}
    assert 890 <= store.ttl("s") <= 900


def test_two_requests_that_update_different_fields_lose_one_but_patch_keeps_both(store):
    """The control: update() replaces the whole profile, so two requests that each read the
    profile, change one field and write it back lose the first one's change; patch() does not."""
    store.create("s", PROFILE)
    first, second = store.get("s"), store.get("s")  # two requests read the same profile
    store.update("s", {**first, "theme": "light"})
    store.update("s", {**second, "name": "Alice"})
    assert "theme" not in store.get("s")  # lost
    store.create("s", PROFILE)
    store.patch("s", {"theme": "light"})
    store.patch("s", {"name": "Alice"})
    assert store.get("s") == {**PROFILE, "theme": "light", "name": "Alice"}


# -- writes applied at most once ---------------------------------------------------------------


def stalled(pid: int, seconds: float, *calls):
    """Run each call in its own thread while the server ``pid`` is stopped (SIGSTOP) for
    ``seconds``; return what each returned or raised."""
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(calls))]
    os.kill(pid, signal.SIGSTOP)
    try:
        for thread in threads:
            thread.start()
        time.sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    for thread in threads:
        thread.join(30)
    return results


AT_MOST_ONCE_WRITES = {  # the writes whose second run would change the result
    "add_to_cart": (lambda store: store.add_to_cart("s", "A"), {"A": 4}),
    "remove_from_cart": (lambda store: store.remove_from_cart("s", "A", 1), {"A": 2}),
}


def redis_py_default_retry(client: redis.Redis) -> redis.Redis:
    """The control: redis-py's own retry rule (send again after any ConnectionError or
    TimeoutError, 3 times), waiting 1 s, then 2 s: past the stall."""
    client.set_retry(Retry(ExponentialBackoff(cap=2.0, base=0.5), 3))
    return client


@pytest.mark.parametrize("write", AT_MOST_ONCE_WRITES)
def test_a_write_whose_reply_times_out_is_applied_once_and_reported(write):
    """The server stops answering (SIGSTOP) for longer than the client's socket timeout. A
    client with redis-py's own retry sends the command again on a new connection, and when the
    server resumes it runs every copy (the control script: 2+ extra runs). The client the lab
    server hands out never sends a command again once it may have reached the server: the
    store's write runs once, and the caller learns that its outcome is unknown."""
    call, cart = AT_MOST_ONCE_WRITES[write]
    with LabServer() as server:
        # Each client with a connection open before the stall (a new connection would wait in
        # its handshake and send its command only once).
        control_client = redis_py_default_retry(server.client(socket_timeout=0.3))
        control = control_client.register_script("return redis.call('INCR', KEYS[1])")
        control(keys=["control"])
        store = SessionStore(server.client(socket_timeout=0.3), prefix="once")
        store.create("s", PROFILE)
        call(store)  # loads the store's script now: no SCRIPT LOAD during the stall
        store.create("s", PROFILE)
        store.add_to_cart("s", "A", 3)

        results = stalled(server.pid, 1.5, lambda: control(keys=["control"]), lambda: call(store))

        assert int(control_client.get("control")) >= 3, results  # run again: 1 + 2 or more
        assert store.get_cart("s") == cart, results
        assert isinstance(results[1], WriteOutcomeUnknown), results
        assert isinstance(results[1], SessionError) and isinstance(results[1], redis.RedisError)
        assert "may or may not have been applied" in str(results[1])
        assert "not sent again" in str(results[1])
        control_client.close()
        store.client.close()


def test_a_write_that_could_not_connect_is_sent_once_it_can(lab_server):
    """A failure while connecting means the command was never sent: the handed-out client
    connects again (with backoff) and sends it, once."""
    client = lab_server.client()
    store = SessionStore(client, prefix=unique_prefix())
    store.create("s", PROFILE)
    failures = [2]
    connection_class = client.connection_pool.connection_class

    class FlakyConnect(connection_class):  # the first two connects fail, as if refused
        def _connect(self):
            if failures[0]:
                failures[0] -= 1
                raise ConnectionRefusedError(111, "Connection refused")
            return super()._connect()

    client.connection_pool.connection_class = FlakyConnect
    client.connection_pool.reset()  # no connection left: the next command must connect
    assert store.add_to_cart("s", "A") == 1
    assert failures == [0]
    client.connection_pool.connection_class = connection_class
    assert store.get_cart("s") == {"A": 1}


def test_a_rotation_run_twice_returns_the_new_id(store, client):
    """ROTATE run twice: the second run finds the old id gone and the new one there, and
    reports success instead of losing the session."""
    store.create("old", PROFILE)
    script = store._scripts["rotate"]
    keys = [store.key("old"), store.key("new")]
    assert script(keys=keys, args=[""]) == 1
    assert script(keys=keys, args=[""]) == 1
    assert store.get("new") == PROFILE and store.get("old") is None


@pytest.mark.slow
def test_connect_clients_apply_a_write_whose_reply_timed_out_once(fresh_connection):
    """connect() to a configured server: 5 s reply timeout; redis-py's own retry would send
    the command again, connect()'s client does not."""
    from sessionlab.config import Settings
    from sessionlab.connection import COMMAND_TIMEOUT

    with LabServer() as server:
        # As a .env would name it (a locked server's password included, where it has one).
        settings = Settings(
            host="127.0.0.1", port=server.port, password=getattr(server, "password", None)
        )
        control_client = redis_py_default_retry(sessionlab.connect(settings))
        control = control_client.register_script("return redis.call('INCR', KEYS[1])")
        control(keys=["control"])
        store = SessionStore(sessionlab.connect(settings), prefix="once")
        store.create("s", PROFILE)
        store.add_to_cart("s", "A")
        results = stalled(
            server.pid,
            COMMAND_TIMEOUT + 1,
            lambda: control(keys=["control"]),
            lambda: store.add_to_cart("s", "A"),
        )
        assert int(control_client.get("control")) >= 3, results
        assert store.get_cart("s") == {"A": 2}, results
        assert isinstance(results[1], WriteOutcomeUnknown), results
        control_client.close()
        store.client.close()


# -- session ids ----------------------------------------------------------------------------------


def test_new_id():
    ids = {random_id() for _ in range(2000)}
    assert len(ids) == 2000
    for session_id in list(ids)[:50]:
        assert len(session_id) == 43
        raw = base64.urlsafe_b64decode(session_id + "=")
        assert len(raw) * 8 >= 256
        assert SessionStore(redis.Redis()).key(session_id)  # valid as an id


def test_new_id_is_usable(store):
    session_id = store.new_id()
    store.create(session_id, PROFILE)
    assert store.get(session_id) == PROFILE


BAD_IDS = [
    "",
    "x" * 129,
    " ",
    "a b",
    " a",
    "a\t",
    "a\n",
    "a\x00b",
    "a\x1b[31m",
    "{a}",
    "a}",
    "a{",
    "sessión",
    "a\ud800",  # a lone surrogate
    "a/b",
    "a*",
    123,
    None,
    b"abc",
    ["a"],
]


@pytest.mark.parametrize("session_id", BAD_IDS, ids=ascii)
def test_bad_session_id(store, client, session_id):
    calls = [
        lambda: store.create(session_id, PROFILE),
        lambda: store.get(session_id),
        lambda: store.load(session_id),
        lambda: store.update(session_id, PROFILE),
        lambda: store.patch(session_id, {"a": 1}),
        lambda: store.delete(session_id),
        lambda: store.ttl(session_id),
        lambda: store.touch(session_id),
        lambda: store.add_to_cart(session_id, "A"),
        lambda: store.remove_from_cart(session_id, "A"),
        lambda: store.set_quantity(session_id, "A", 1),
        lambda: store.get_cart(session_id),
        lambda: store.rotate(session_id),
    ]
    if session_id is not None:  # keep=None means "keep none"
        calls.append(lambda: store.logout_everywhere("U1", keep=session_id))
    for call in calls:
        with pytest.raises(InvalidSessionId) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        assert "session id" in str(caught.value)
        str(caught.value).encode()  # the message itself is valid UTF-8 (no surrogate in it)
    assert list(client.scan_iter(f"{store.prefix}:*")) == []


def test_a_str_subclass_id_builds_the_key_from_its_characters(store, client):
    class Sneaky(str):
        def __str__(self) -> str:
            return "other"

        def __format__(self, spec: str) -> str:
            return "other"

    session_id = Sneaky("abc")
    assert store.key(session_id) == f"{store.prefix}:{{abc}}"
    assert type(store.key(session_id)) is str
    store.create(session_id, PROFILE)
    assert client.exists(store.key("abc")) == 1
    assert list(client.scan_iter(f"{store.prefix}:*other*")) == []
    assert store.load(Sneaky("abc")).session_id == "abc"
    assert type(store.load(Sneaky("abc")).session_id) is str


def test_longest_session_id(store):
    store.create("x" * 128, PROFILE)
    assert store.get("x" * 128) == PROFILE


# -- data JSON cannot hold ------------------------------------------------------------------------


class Thing:
    pass


cycle: dict = {"name": "me"}
cycle["self"] = cycle

BAD_DATA = [
    ({"user": Thing()}, "user_data['user']"),
    ({"tags": {"a", "b"}}, "user_data['tags']"),
    ({"seen": datetime.datetime(2026, 1, 1)}, "user_data['seen']"),
    ({"day": datetime.date(2026, 1, 1)}, "user_data['day']"),
    ({"price": Decimal("1.50")}, "user_data['price']"),
    ({"score": math.nan}, "user_data['score']"),
    ({"score": math.inf}, "user_data['score']"),
    ({"score": -math.inf}, "user_data['score']"),
    ({1: "one"}, "1"),
    ({None: "none"}, "None"),
    ({("a", "b"): "pair"}, "('a', 'b')"),
    ({"prefs": {"deep": {"when": datetime.time(12)}}}, "user_data['prefs']['deep']['when']"),
    ({"items": [1, 2, {"x": b"bytes"}]}, "user_data['items'][2]['x']"),
    ({"items": [{"id": 1}, {2: "x"}]}, "user_data['items'][1]"),
    ({"pair": (1, 2)}, "user_data['pair']"),
    ({"fn": print}, "user_data['fn']"),
    (cycle, "user_data['self']"),
    ({"big": 10**5000}, "user_data['big'] is an int of more than 4000 digits"),
    ({"big": [-(10**4001)]}, "user_data['big'][0] is an int"),
    ({"text": "bad \ud800 surrogate"}, "user_data['text'] holds a lone surrogate"),
    ({"deep": {"k\udfff": 1}}, "user_data['deep']['k\\udfff'] holds a lone surrogate"),
    ({"k\udfff": 1}, "with a lone surrogate"),
    # flat containers, which take profile_fields' fast path when nothing in them needs a check
    ({"prefs": {1: "one"}}, "user_data['prefs'] has the key 1"),
    ({"prefs": {"score": math.nan}}, "user_data['prefs']['score']"),
    ({"tags": ["a", math.inf]}, "user_data['tags'][1]"),
    ({"prefs": {"big": 10**5000}}, "user_data['prefs']['big'] is an int"),
    ({"prefs": {"t": "bad \ud800"}}, "user_data['prefs']['t'] holds a lone surrogate"),
    ({"tags": ["a", b"b"]}, "user_data['tags'][1]"),
    (["not", "a", "dict"], "dict"),
    ("a string", "dict"),
    (None, "dict"),
]


@pytest.mark.parametrize(("data", "path"), BAD_DATA, ids=short_id)
def test_unserializable_data_writes_nothing(store, client, data, path):
    with pytest.raises(UnserializableData) as caught:
        store.create("new", data)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, SessionError)
    assert path in str(caught.value)
    assert len(str(caught.value)) < 400
    assert client.exists(store.key("new")) == 0
    # Update and patch: the old value stays whole, and so does its TTL.
    store.create("old", PROFILE, ttl=100)
    for write in (store.update, store.patch):
        with pytest.raises(UnserializableData) as caught:
            write("old", data)
        assert path in str(caught.value)
    assert store.get("old") == PROFILE
    assert store.ttl("old") == 100


def test_json_edge_values_round_trip(store):
    data = {
        "empty": {},
        "list": [],
        "nested": [[1, [2, [3]]], {"a": {"b": None}}],
        "big": 2**70,
        "huge": 10**3999,
        "neg": -0.5,
        "text": 'emoji 🛒, quotes " and \\ and \u2028',
        "": "empty key",
        "bool": False,
        "flat": {"q": 'quote " and \\ and \n', "n": -7, "f": 0.1, "none": None, "yes": True},
        "mixed": [1, "a", None, True, 2.5, 2**70],
    }
    store.create("s", data)
    assert store.get("s") == data
    assert store.load("s").profile["big"] == 2**70


def test_other_mappings_are_stored_as_dicts(store):
    store.create("s", types.MappingProxyType({"a": types.MappingProxyType({"b": 1})}))
    assert store.get("s") == {"a": {"b": 1}}


def test_same_object_twice_is_not_a_cycle(store):
    shared = {"theme": "dark"}
    store.create("s", {"a": shared, "b": [shared, shared]})
    assert store.get("s") == {"a": shared, "b": [shared, shared]}


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def at_stack_depth(frames: int, call):
    """Run ``call`` with ``frames`` extra frames on the stack (a caller deep in a framework)."""
    if frames == 0:
        return call()
    return at_stack_depth(frames - 1, call)


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 995, 5000])
def test_too_deep_nesting_is_refused_the_same_at_any_stack_depth(store, client, depth):
    for frames in (0, 900):
        with pytest.raises(UnserializableData, match=f"nested more than {MAX_DEPTH} levels"):
            at_stack_depth(frames, lambda: store.create("s", {"deep": nested(depth)}))
    assert client.exists(store.key("s")) == 0


def test_the_deepest_allowed_nesting_reads_back_from_a_deep_stack(store):
    store.create("s", {"deep": nested(MAX_DEPTH)})
    assert at_stack_depth(800, lambda: store.get("s")) == {"deep": nested(MAX_DEPTH)}
    assert at_stack_depth(800, lambda: store.load("s")).profile == {"deep": nested(MAX_DEPTH)}


# -- what someone else wrote under our keys ---------------------------------------------------


CORRUPT = [
    ("string", b"not a hash"),
    ("list", ["a", "b"]),
    ("set", ["a"]),
    ("hash", {"name": "John"}),  # no meta fields: not ours
    ("hash", {"_a": "x", "_i": "1", "_c": "1", "_s": "1", "p:name": '"J"'}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "p:name": "not json"}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "p:name": b"\xff\xfe"}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "c:A": "many"}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "c:A": "1.5"}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "c:A": ""}),
    ("hash", {"_a": "99999999999999", "_i": "9", "_c": "1", "_s": "1", "c:A": '"2"'}),
]


def write_raw(raw: redis.Redis, key: str, kind: str, value) -> None:
    raw.delete(key)
    if kind == "string":
        raw.set(key, value)
    elif kind == "hash":
        raw.hset(key, mapping=value)
    elif kind == "list":
        raw.rpush(key, *value)
    else:
        raw.sadd(key, *value)


@pytest.mark.parametrize(("kind", "value"), CORRUPT, ids=lambda v: ascii(v)[:50])
def test_corrupt_session(any_store, bytes_client, kind, value):
    store = any_store
    write_raw(bytes_client, store.key("s"), kind, value)
    for read in (store.get, store.load, store.get_cart):
        with pytest.raises(CorruptSession) as caught:
            read("s")
        assert store.key("s") in str(caught.value)
        assert not isinstance(caught.value, (ValueError, redis.RedisError))
        error = caught.value
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
    if kind != "hash" or "_a" not in value or "c:A" in value:
        with pytest.raises(CorruptSession):
            store.add_to_cart("s", "A")
    if kind != "hash" or "_a" not in value:
        for write in (
            lambda: store.update("s", PROFILE),
            lambda: store.patch("s", {"a": 1}),
            lambda: store.touch("s"),
            lambda: store.set_quantity("s", "A", 1),
            lambda: store.rotate("s"),
        ):
            with pytest.raises(CorruptSession):
                write()
    assert store.delete("s") is True  # deleting what is not ours works: a way out


# -- the cart ------------------------------------------------------------------------------------


def test_cart(any_store):
    store = any_store
    store.create("s", PROFILE)
    assert store.get_cart("s") == {}
    assert store.add_to_cart("s", "SKU-1") == 1
    assert store.add_to_cart("s", "SKU-1", 2) == 3
    assert store.add_to_cart("s", "sku/2#red", 5) == 5
    assert store.get_cart("s") == {"SKU-1": 3, "sku/2#red": 5}
    assert store.remove_from_cart("s", "SKU-1", 1) == 2
    assert store.remove_from_cart("s", "SKU-1", 2) == 0
    assert store.get_cart("s") == {"sku/2#red": 5}
    assert store.remove_from_cart("s", "sku/2#red", 99) == 0  # more than there is: all gone
    assert store.get_cart("s") == {}
    assert store.add_to_cart("s", "C", 4) == 4
    assert store.remove_from_cart("s", "C") == 0  # no quantity: remove all
    assert store.remove_from_cart("s", "never-added") == 0
    assert store.remove_from_cart("s", "never-added", 3) == 0
    assert store.get_cart("s") == {}
    assert not [f for f in store.client.hkeys(store.key("s")) if f[:2] in ("c:", b"c:")]
    assert store.get("s") == PROFILE


def test_set_quantity(any_store):
    store = any_store
    store.create("s", PROFILE)
    assert store.set_quantity("s", "A", 5) == 5
    assert store.set_quantity("s", "A", 2) == 2
    assert store.add_to_cart("s", "A") == 3
    assert store.set_quantity("s", "B", MAX_QUANTITY) == MAX_QUANTITY
    assert store.get_cart("s") == {"A": 3, "B": MAX_QUANTITY}
    assert store.set_quantity("s", "A", 0) == 0  # 0 removes the item
    assert store.get_cart("s") == {"B": MAX_QUANTITY}
    assert store.set_quantity("absent", "A", 1) is None
    assert store.get_cart("absent") == {}


def test_cart_of_a_missing_session(store, client):
    assert store.add_to_cart("absent", "A") is None
    assert store.remove_from_cart("absent", "A") is None
    assert store.remove_from_cart("absent", "A", 2) is None
    assert store.get_cart("absent") == {}
    assert client.exists(store.key("absent")) == 0


def test_cart_lives_and_dies_with_the_session(store, client):
    store.create("s", PROFILE, ttl=600)
    client.pexpire(store.key("s"), 400_000)
    store.add_to_cart("s", "A", 2)
    assert 399 <= store.ttl("s") <= 400  # a cart change neither resets nor drops the TTL
    client.pexpire(store.key("s"), 50)
    store.add_to_cart("s", "B")
    assert wait_until(lambda: client.exists(store.key("s")) == 0, timeout=5)
    assert store.get_cart("s") == {}
    assert store.add_to_cart("s", "A") is None
    assert client.exists(store.key("s")) == 0


@pytest.mark.parametrize(
    ("sku", "quantity"),
    [
        ("", 1),
        ("a b", 1),
        ("x" * 65, 1),
        ("{a}", 1),
        ("a\ud800", 1),
        (None, 1),
        (7, 1),
        ("A", 0),
        ("A", -1),
        ("A", 1.0),
        ("A", True),
        ("A", "2"),
        ("A", MAX_QUANTITY + 1),
        ("A", 2**63),
        ("A", 2**64 + 1),
        ("A", 10**5000),
    ],
    ids=short_id,
)
def test_bad_cart_item(store, client, sku, quantity):
    store.create("s", PROFILE)
    with pytest.raises(InvalidCartItem) as caught:
        store.add_to_cart("s", sku, quantity)
    assert isinstance(caught.value, ValueError)
    assert len(str(caught.value)) < 300
    str(caught.value).encode()
    with pytest.raises(InvalidCartItem):
        store.remove_from_cart("s", sku, quantity)
    if quantity != 0:
        with pytest.raises(InvalidCartItem):
            store.set_quantity("s", sku, quantity)
    assert store.get_cart("s") == {}


def test_a_cart_item_never_passes_the_largest_quantity(store, client):
    store.create("s", PROFILE)
    store.set_quantity("s", "A", MAX_QUANTITY - 1)
    assert store.add_to_cart("s", "A") == MAX_QUANTITY
    with pytest.raises(InvalidCartItem, match="would pass 1,000,000"):
        store.add_to_cart("s", "A")
    assert store.get_cart("s") == {"A": MAX_QUANTITY}
    # A value near int64's end that someone else wrote: refused, not a raw overflow error.
    client.hset(store.key("s"), "c:B", 2**63 - 1)
    with pytest.raises(InvalidCartItem):
        store.add_to_cart("s", "B")
    assert client.hget(store.key("s"), "c:B") == str(2**63 - 1)


def test_concurrent_adds_lose_no_update(store):
    threads, adds = 8, 250
    store.create("s", PROFILE)
    start = threading.Barrier(threads)

    def shopper():
        start.wait()
        for _ in range(adds):
            store.add_to_cart("s", "A")
            store.add_to_cart("s", "B", 2)

    workers = [threading.Thread(target=shopper) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert store.get_cart("s") == {"A": threads * adds, "B": 2 * threads * adds}


def test_profile_update_racing_cart_changes_loses_neither(store):
    store.create("s", {"visits": 0}, ttl=900)
    rounds = 300
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(work):
        try:
            start.wait()
            for i in range(rounds):
                work(i)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    workers = [
        threading.Thread(target=run, args=(lambda i: store.update("s", {"visits": i + 1}),)),
        threading.Thread(target=run, args=(lambda i: store.add_to_cart("s", f"S{i % 10}"),)),
        threading.Thread(target=run, args=(lambda i: store.remove_from_cart("s", "S0", 1),)),
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert store.get("s") == {"visits": rounds}
    cart = store.get_cart("s")
    assert sum(cart.get(f"S{n}", 0) for n in range(1, 10)) == rounds - rounds // 10
    assert 895 <= store.ttl("s") <= 900


def test_seed_example_profile_with_a_cart_on_a_bytes_client(lab_server):
    raw = lab_server.client(decode_responses=False)
    store = SessionStore(raw, prefix=unique_prefix())
    store.create("task1", PROFILE, user_id="U001")
    store.add_to_cart("task1", "SKU-1", 2)
    assert raw.hget(store.key("task1"), "p:user_id") == b'"U001"'
    assert store.get("task1") == PROFILE
    assert store.get_cart("task1") == {"SKU-1": 2}
    assert all(isinstance(k, str) for k in store.get_cart("task1"))
    assert store.load("task1").user_id == "U001"
    assert [s.session_id for s in store.sessions_of("U001")] == ["task1"]
    assert store.delete("task1") is True
    raw.close()


def test_int_and_str_subclasses_are_stored_as_plain_values(store):
    class Level(enum.IntEnum):
        GOLD = 2

    class Theme(enum.StrEnum):
        DARK = "dark"

    store.create("s", {"level": Level.GOLD, "theme": Theme.DARK, "flag": True})
    assert store.get("s") == {"level": 2, "theme": "dark", "flag": True}
    assert type(store.get("s")["level"]) is int


def test_unserializable_message(store):
    with pytest.raises(UnserializableData) as caught:
        store.create(
            "s", {"cart": [{"sku": "A"}, {"sku": "B", "added": datetime.date(2026, 1, 2)}]}
        )
    assert str(caught.value).startswith(
        "user_data['cart'][1]['added'] = datetime.date(2026, 1, 2) (type date): "
        "JSON cannot represent it;"
    )
    with pytest.raises(UnserializableData) as caught:
        store.create("s", {"prefs": {7: "x"}})
    assert str(caught.value) == ("user_data['prefs'] has the key 7 (int): JSON keys must be str.")
    with pytest.raises(UnserializableData, match=r"^user_data\['p'\] is nan: JSON has no NaN"):
        store.create("s", {"p": math.nan})


# -- a server that refuses writes ---------------------------------------------------------------


def test_a_full_server_refuses_writes_with_store_full_on_every_path():
    """noeviction at maxmemory: every write raises StoreFull, which is also redis-py's
    OutOfMemoryError; reads still work."""
    with sessionlab.LabServer(maxmemory="2mb", maxmemory_policy="noeviction") as server:
        store = sessionlab.SessionStore(server.client(), prefix="full")
        store.create("kept", {"name": "Rohith"})
        filler = "x" * 2000
        with pytest.raises(sessionlab.StoreFull) as refused:
            for n in range(2000):
                store.create(f"s{n}", {"blob": filler})
        assert isinstance(refused.value, redis.exceptions.OutOfMemoryError)
        assert "maxmemory" in str(refused.value)
        written = n
        assert written > 0
        assert store.get(f"s{written}") is None  # the refused session is not half-written
        store.client.config_set("maxmemory", "1mb")  # far below use now: every write refused
        for write in (
            lambda: store.update("kept", {"name": "Rohith", "blob": filler}),
            lambda: store.patch("kept", {"blob": filler}),
            lambda: store.add_to_cart("kept", "SKU-RED-MUG"),
            lambda: store.set_quantity("kept", "SKU-RED-MUG", 2),
        ):
            with pytest.raises(sessionlab.StoreFull):
                write()
        assert store.get("kept") == {"name": "Rohith"}
        assert store.delete("s0") is True


def test_a_server_whose_disk_save_failed_refuses_writes_with_store_read_only():
    """MISCONF: the last snapshot failed (here: dump.rdb is a directory, like a full disk), so
    Redis refuses every write until a save succeeds."""
    with sessionlab.LabServer(save="3600 1") as server:
        client = server.client()
        store = sessionlab.SessionStore(client, prefix="disk")
        store.create("kept", PROFILE)
        blocker = server.dir / "dump.rdb"
        blocker.mkdir()
        try:
            client.bgsave()
            assert wait_until(
                lambda: client.info("persistence")["rdb_last_bgsave_status"] == "err", timeout=10
            )
            writes = [
                lambda: store.create("new", PROFILE),
                lambda: store.update("kept", UPDATED),
                lambda: store.patch("kept", {"name": "x"}),
                lambda: store.add_to_cart("kept", "A"),
                lambda: store.set_quantity("kept", "A", 1),
                lambda: store.remove_from_cart("kept", "A"),
                lambda: store.touch("kept"),
                lambda: store.load("kept"),
                lambda: store.delete("kept"),
                lambda: store.rotate("kept"),
            ]
            for write in writes:
                with pytest.raises(sessionlab.StoreReadOnly) as refused:
                    write()
                assert "MISCONF" in str(refused.value) and "disk" in str(refused.value)
                assert isinstance(refused.value, redis.exceptions.ResponseError)
            assert store.get("kept") == PROFILE  # reads still work
        finally:
            blocker.rmdir()
            client.bgsave()
            wait_until(lambda: client.info("persistence")["rdb_last_bgsave_status"] == "ok")
        assert store.add_to_cart("kept", "A") == 1
        client.close()


# -- rotation -------------------------------------------------------------------------------------


def test_rotate_moves_everything_to_a_fresh_id_and_kills_the_old_one(any_store):
    store, client = any_store, any_store.client
    store.create("old", PROFILE, ttl=600, user_id="U001")
    for sku, quantity in CART.items():
        store.add_to_cart("old", sku, quantity)
    before = client.hgetall(store.key("old"))
    expiry = client.pexpiretime(store.key("old"))
    new = store.rotate("old")
    assert isinstance(new, str) and len(new) == 43 and new != "old"
    assert client.hgetall(store.key(new)) == before  # profile, cart, user, created, deadline
    assert client.pexpiretime(store.key(new)) == expiry
    session = store.load(new)
    assert (session.profile, session.cart, session.user_id) == (PROFILE, CART, "U001")
    # The old id is dead: reads None, writes refused, nothing resurrected.
    assert store.get("old") is None and store.load("old") is None
    assert store.update("old", UPDATED) is False
    assert store.patch("old", {"name": "x"}) is False
    assert store.add_to_cart("old", "A") is None
    assert store.touch("old") is False
    assert store.rotate("old") is None
    assert client.exists(store.key("old")) == 0
    assert [s.session_id for s in store.sessions_of("U001")] == [new]
    assert store.rotate("never-there") is None


def test_rotate_keeps_the_original_absolute_deadline(client):
    store = SessionStore(client, prefix=unique_prefix(), idle_ttl=600, absolute_ttl=1000)
    store.create("s", PROFILE)
    deadline = client.hget(store.key("s"), "_a")
    new = store.rotate("s")
    assert client.hget(store.key(new), "_a") == deadline
    assert client.pexpiretime(store.key(new)) <= int(deadline)


def test_a_session_fixation_fails_after_rotate(store):
    """The attacker plants a session id in the victim's browser, the victim logs in: without a
    rotation the attacker's id is now logged in; with rotate() at login it is dead."""
    planted = store.new_id()
    store.create(planted, {})  # the attacker's anonymous session
    store.patch(planted, {"user": "victim"})  # the victim logs in on it (naive flow)
    assert store.get(planted) == {"user": "victim"}  # the attacker is logged in as the victim
    store.create(planted, {})
    fresh = store.rotate(planted)  # the fixed flow: a new id at login
    store.patch(fresh, {"user": "victim"})
    assert store.get(planted) is None
    assert store.get(fresh) == {"user": "victim"}


def test_rotate_with_a_user_id_logs_in_keeping_the_anonymous_cart(any_store):
    """Login in one call: a new id linked to the user, the anonymous cart kept, the planted
    (old) id dead; a later rotation keeps the link, a rotation to another user moves it."""
    store, client = any_store, any_store.client
    store.create("anon", {"theme": "dark"})
    store.add_to_cart("anon", "SKU-RED-MUG", 2)
    new = store.rotate("anon", user_id="U5")
    session = store.load(new)
    assert (session.user_id, session.cart, session.profile) == (
        "U5",
        {"SKU-RED-MUG": 2},
        {"theme": "dark"},
    )
    assert store.get("anon") is None and client.exists(store.key("anon")) == 0
    assert [s.session_id for s in store.sessions_of("U5")] == [new]
    again = store.rotate(new)
    assert store.load(again).user_id == "U5"
    assert [s.session_id for s in store.sessions_of("U5")] == [again]
    other = store.rotate(again, user_id="U6")
    assert store.load(other).user_id == "U6"
    assert store.sessions_of("U5") == []
    assert [s.session_id for s in store.sessions_of("U6")] == [other]
    assert store.logout_everywhere("U6") == 1 and store.get(other) is None
    assert store.rotate("gone", user_id="U5") is None
    assert store.sessions_of("U5") == []


def test_rotate_with_a_user_id_counts_against_the_limit_and_refuses_bad_ids(client):
    store = user_store(client, max_sessions_per_user=2)
    for session_id in ["a", "b"]:
        store.create(session_id, PROFILE, user_id="U1")
        time.sleep(0.002)  # "oldest": created first (s), then the earlier deadline (ms)
    store.create("anon", PROFILE)
    with pytest.raises(sessionlab.InvalidUserId):
        store.rotate("anon", user_id="a b")
    assert store.get("anon") == PROFILE  # nothing moved
    new = store.rotate("anon", user_id="U1")
    assert [s.session_id for s in store.sessions_of("U1")] == ["b", new]
    assert store.get("a") is None


# -- a user's sessions ---------------------------------------------------------------------------


def user_store(client, **settings) -> SessionStore:
    return SessionStore(client, prefix=unique_prefix(), **settings)


def test_sessions_of_lists_a_users_live_sessions_oldest_first(client):
    store = user_store(client)
    store.create("a", PROFILE, user_id="U1")
    store.create("b", PROFILE, user_id="U1", ttl=60)
    store.create("c", PROFILE, user_id="U2")
    store.create("d", PROFILE)
    listed = store.sessions_of("U1")
    assert [s.session_id for s in listed] == ["a", "b"]
    now = int(client.time()[0])
    for info in listed:
        assert abs(info.created_at - now) <= 1 and abs(info.last_seen_at - now) <= 1
    assert 1790 <= listed[0].ttl <= 1800 and 50 <= listed[1].ttl <= 60
    assert store.sessions_of("nobody") == []
    store.delete("a")
    assert [s.session_id for s in store.sessions_of("U1")] == ["b"]
    assert client.zrange(store.user_key("U1"), 0, -1) == ["b"]  # delete unlinked it


def test_logout_everywhere(client):
    store = user_store(client)
    for session_id in ["a", "b", "c"]:
        store.create(session_id, PROFILE, user_id="U1")
    store.create("other", PROFILE, user_id="U2")
    assert store.logout_everywhere("U1", keep="b") == 2
    assert [s.session_id for s in store.sessions_of("U1")] == ["b"]
    assert store.get("a") is None and store.get("b") == PROFILE
    assert store.logout_everywhere("U1") == 1
    assert store.sessions_of("U1") == []
    assert client.exists(store.user_key("U1")) == 0  # no empty index left behind
    assert store.get("other") == PROFILE
    assert store.logout_everywhere("U1") == 0
    assert store.logout_everywhere("nobody") == 0


def test_logout_everywhere_also_ends_a_session_rotated_meanwhile(client):
    store = user_store(client)
    store.create("a", PROFILE, user_id="U1")
    new = store.rotate("a")
    assert store.logout_everywhere("U1") == 1
    assert store.get(new) is None


def test_max_sessions_per_user_ends_the_oldest(client):
    store = user_store(client, max_sessions_per_user=2)
    for session_id in ["first", "second", "third"]:
        store.create(session_id, PROFILE, user_id="U1")
        time.sleep(0.002)  # "oldest": created first (s), then the earlier deadline (ms)
    assert [s.session_id for s in store.sessions_of("U1")] == ["second", "third"]
    assert store.get("first") is None
    store.delete("second")  # a dead entry does not count
    store.create("fourth", PROFILE, user_id="U1")
    assert [s.session_id for s in store.sessions_of("U1")] == ["third", "fourth"]
    new = store.rotate("third")  # a rotation is the same session, not one more
    assert [s.session_id for s in store.sessions_of("U1")] == [new, "fourth"]


@pytest.mark.parametrize("user_id", ["", "a b", "{u}", "x" * 129, "u\ud800", 7, b"u"], ids=ascii)
def test_bad_user_id(store, client, user_id):
    for call in (
        lambda: store.create("s", PROFILE, user_id=user_id),
        lambda: store.sessions_of(user_id),
        lambda: store.logout_everywhere(user_id),
    ):
        with pytest.raises(sessionlab.InvalidUserId) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        str(caught.value).encode()
    assert client.exists(store.key("s")) == 0


def test_the_index_expires_with_the_last_absolute_deadline(client):
    """Absolute expiry: the index key expires in the same millisecond as the last session."""
    store = user_store(client, idle_ttl=10, absolute_ttl=2)
    for session_id in ["a", "b", "c"]:
        store.create(session_id, PROFILE, user_id="U1")
    last = max(client.pexpiretime(store.key(i)) for i in "abc")
    assert client.pexpiretime(store.user_key("U1")) == last
    assert wait_until(lambda: client.exists(store.user_key("U1")) == 0, timeout=10)
    assert client.exists(*(store.key(i) for i in "abc")) == 0
    assert list(client.scan_iter(f"{store.prefix}:*")) == []


@pytest.mark.slow
def test_the_index_dies_with_its_sessions_when_they_idle_out(client):
    """Idle expiry (the common end: idle 1 s here, absolute an hour away): the index expires
    with the last of its sessions, not with the latest absolute deadline."""
    index_dies_with_its_sessions(user_store(client, idle_ttl=1, absolute_ttl=3600), "U1")


def test_the_index_expiry_follows_every_change(client):
    index_expiry_follows_every_change(user_store(client), "U1")


def test_create_over_a_linked_session_moves_it_to_the_new_users_index(client):
    """An id created again for another user (or none) leaves the first user's index: that
    user's logout_everywhere must not end the new session."""
    store = user_store(client)
    store.create("s", PROFILE, user_id="U1")
    store.create("t", PROFILE, user_id="U1")
    store.create("s", UPDATED, user_id="U2")
    assert client.zrange(store.user_key("U1"), 0, -1) == ["t"]
    assert client.zrange(store.user_key("U2"), 0, -1) == ["s"]
    assert_index_follows_its_sessions(store, "U1")
    store.create("t", PROFILE)  # anonymous now
    assert client.exists(store.user_key("U1")) == 0
    assert store.logout_everywhere("U1") == 0
    assert store.get("s") == UPDATED and store.get("t") == PROFILE
    assert store.logout_everywhere("U2") == 1


def test_a_profile_with_thousands_of_fields(store):
    """More fields than one HSET inside a script takes (sent in chunks of whole pairs)."""
    data = {f"f{n}": n for n in range(1500)}
    store.create("s", data)
    assert store.get("s") == data
    store.update("s", {**data, "f0": "changed"})
    assert store.get("s")["f0"] == "changed"
    store.patch("s", {f"g{n}": n for n in range(1200)}, remove=[f"f{n}" for n in range(1200)])
    profile = store.load("s").profile
    assert len(profile) == 1500 and profile["g1199"] == 1199 and "f1199" not in profile
