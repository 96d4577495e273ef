"""SessionStore and the seed's four functions, against a real redis-server."""

from __future__ import annotations

import base64
import datetime
import enum
import json
import math
import threading
import types
from decimal import Decimal

import pytest
import redis
from helpers import unique_prefix, wait_until
from redis.crc import key_slot

import sessionlab
from sessionlab import (
    DEFAULT_TTL,
    CorruptSession,
    InvalidCartItem,
    InvalidSessionId,
    InvalidTTL,
    SessionError,
    SessionStore,
    UnserializableData,
)
from sessionlab.store import MAX_QUANTITY, MAX_TTL

PROFILE = {"user_id": "U001", "name": "Rohith", "preferences": {"theme": "dark", "browser": "Edge"}}
UPDATED = {
    "user_id": "U001",
    "name": "Alice",
    "preferences": {"theme": "light", "browser": "chrome"},
}


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
    assert store.key("abc") == f"{store.prefix}:{{abc}}"
    assert store.cart_key("abc") == f"{store.prefix}:{{abc}}:cart"
    assert sorted(client.scan_iter(f"{store.prefix}:*")) == sorted(
        [store.key("abc"), store.cart_key("abc")]
    )
    assert client.type(store.key("abc")) == "string"
    assert client.type(store.cart_key("abc")) == "hash"
    # Compact JSON, UTF-8 as is.
    assert client.get(store.key("abc")) == (
        '{"name":"Zoë","n":1.5,"tags":["a"],"ok":true,"none":null}'
    )
    assert store.get("abc") == {"name": "Zoë", "n": 1.5, "tags": ["a"], "ok": True, "none": None}


@pytest.mark.parametrize("session_id", ["abc", "task2", "U-001", "a.b:c@d_e", "x" * 128])
def test_profile_and_cart_share_a_hash_slot(store, session_id):
    assert key_slot(store.key(session_id).encode()) == key_slot(store.cart_key(session_id).encode())


def test_all_ids_share_slots_only_by_their_tag(store):
    ids = [SessionStore.new_id() for _ in range(200)]
    for session_id in ids:
        slot = key_slot(store.key(session_id).encode())
        assert slot == key_slot(store.cart_key(session_id).encode())
        assert slot == key_slot(session_id.encode())  # only the id decides the slot
    assert len({key_slot(i.encode()) for i in ids}) > 150  # and ids spread over slots


def test_create_on_an_existing_id_replaces_profile_and_empties_cart(store, client):
    store.create("s", PROFILE, ttl=100)
    store.add_to_cart("s", "A", 3)
    assert store.create("s", UPDATED, ttl=2000) is True
    assert store.get("s") == UPDATED
    assert store.get_cart("s") == {}
    assert client.exists(store.cart_key("s")) == 0
    assert store.ttl("s") == 2000


def test_delete_removes_profile_and_cart(store, client):
    store.create("s", PROFILE)
    store.add_to_cart("s", "A")
    assert store.delete("s") is True
    assert client.exists(store.key("s"), store.cart_key("s")) == 0
    assert store.get_cart("s") == {}


def test_store_arguments():
    client = redis.Redis()  # never connects: the constructor sends nothing
    for prefix in ["", "a b", "{x}", "x" * 65, 5, "sess\n"]:
        with pytest.raises(ValueError, match="prefix"):
            SessionStore(client, prefix=prefix)
    with pytest.raises(InvalidTTL):
        SessionStore(client, default_ttl=0)
    store = SessionStore(client, prefix="shop:sessions", default_ttl=60)
    assert store.key("a") == "shop:sessions:{a}"
    assert repr(store) == "SessionStore(prefix='shop:sessions', default_ttl=60)"


# -- TTL ----------------------------------------------------------------------------------------


def test_create_sets_the_ttl(store, client):
    store.create("default", PROFILE)
    assert client.ttl(store.key("default")) == DEFAULT_TTL
    store.create("given", PROFILE, ttl=77)
    assert client.ttl(store.key("given")) == 77
    custom = SessionStore(client, prefix=unique_prefix(), default_ttl=42)
    custom.create("x", PROFILE)
    assert custom.ttl("x") == 42


def test_update_keeps_the_remaining_ttl_unlike_a_plain_set(store, client):
    store.create("kept", PROFILE, ttl=1000)
    store.create("seed", PROFILE, ttl=1000)
    client.pexpire(store.key("kept"), 500_000)  # time has passed: 500 s left
    assert store.update("kept", UPDATED) is True
    assert 499 <= store.ttl("kept") <= 500  # not reset to 1000, not removed
    assert store.get("kept") == UPDATED
    # The seed's update was `if r.exists(id): r.set(id, json.dumps(data))`: the key
    # loses its expiry and the session lives forever.
    if client.exists(store.key("seed")):
        client.set(store.key("seed"), json.dumps(UPDATED))
    assert client.ttl(store.key("seed")) == -1
    assert store.ttl("seed") == -1


def test_update_never_resurrects_an_expired_session(any_store):
    store, client = any_store, any_store.client
    store.create("gone", PROFILE, ttl=100)
    client.pexpire(store.key("gone"), 5)
    assert wait_until(lambda: client.exists(store.key("gone")) == 0, timeout=5)
    assert store.update("gone", UPDATED) is False
    assert client.exists(store.key("gone")) == 0
    assert store.get("gone") is None


def test_ttl(store, client):
    assert store.ttl("absent") is None
    store.create("s", PROFILE, ttl=300)
    assert store.ttl("s") == 300
    client.persist(store.key("s"))
    assert store.ttl("s") == -1


def test_touch_slides_expiry_of_profile_and_cart(store, client):
    store.create("s", PROFILE, ttl=100)
    store.add_to_cart("s", "A")
    client.pexpire(store.key("s"), 3000)
    client.pexpire(store.cart_key("s"), 3000)
    assert store.touch("s", ttl=500) is True
    assert store.ttl("s") == 500
    assert client.ttl(store.cart_key("s")) == 500
    assert store.touch("s") is True  # the store's default
    assert store.ttl("s") == DEFAULT_TTL == client.ttl(store.cart_key("s"))
    assert store.touch("absent") is False
    assert client.exists(store.key("absent"), store.cart_key("absent")) == 0


def test_touch_without_a_cart(store, client):
    store.create("s", PROFILE, ttl=100)
    assert store.touch("s", ttl=200) is True
    assert store.ttl("s") == 200
    assert client.exists(store.cart_key("s")) == 0


@pytest.mark.parametrize("ttl", [0, -1, 1.5, 60.0, True, False, "60", [60], MAX_TTL + 1])
def test_bad_ttl(store, client, ttl):
    with pytest.raises(InvalidTTL) as caught:
        store.create("s", PROFILE, ttl=ttl)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, SessionError)
    assert client.exists(store.key("s")) == 0
    store.create("s", PROFILE, ttl=50)
    with pytest.raises(InvalidTTL):
        store.touch("s", ttl=ttl)
    assert store.ttl("s") == 50


def test_largest_ttl(store):
    store.create("s", PROFILE, ttl=MAX_TTL)
    assert store.ttl("s") == MAX_TTL


# -- session ids ----------------------------------------------------------------------------------


def test_new_id():
    ids = {SessionStore.new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for session_id in list(ids)[:50]:
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
    "a/b",
    "a*",
    123,
    None,
    b"abc",
    ["a"],
]


@pytest.mark.parametrize("session_id", BAD_IDS, ids=repr)
def test_bad_session_id(store, client, session_id):
    calls = [
        lambda: store.create(session_id, PROFILE),
        lambda: store.get(session_id),
        lambda: store.update(session_id, PROFILE),
        lambda: store.delete(session_id),
        lambda: store.ttl(session_id),
        lambda: store.touch(session_id),
        lambda: store.add_to_cart(session_id, "A"),
        lambda: store.remove_from_cart(session_id, "A"),
        lambda: store.get_cart(session_id),
    ]
    for call in calls:
        with pytest.raises(InvalidSessionId) as caught:
            call()
        assert isinstance(caught.value, ValueError)
        assert "session id" in str(caught.value)
    assert list(client.scan_iter(f"{store.prefix}:*")) == []


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
    (["not", "a", "dict"], "dict"),
    ("a string", "dict"),
    (None, "dict"),
]


@pytest.mark.parametrize(("data", "path"), BAD_DATA, ids=lambda v: repr(v)[:40])
def test_unserializable_data_writes_nothing(store, client, data, path):
    with pytest.raises(UnserializableData) as caught:
        store.create("new", data)
    assert isinstance(caught.value, TypeError) and isinstance(caught.value, SessionError)
    assert path in str(caught.value)
    assert client.exists(store.key("new")) == 0
    # Update: the old value stays whole, and so does its TTL.
    store.create("old", PROFILE, ttl=100)
    with pytest.raises(UnserializableData) as caught:
        store.update("old", data)
    assert path in str(caught.value)
    assert store.get("old") == PROFILE
    assert store.ttl("old") == 100


def test_json_edge_values_round_trip(store):
    data = {
        "empty": {},
        "list": [],
        "nested": [[1, [2, [3]]], {"a": {"b": None}}],
        "big": 2**70,
        "neg": -0.5,
        "text": 'emoji 🛒, quotes " and \\ and \u2028',
        "": "empty key",
        "bool": False,
    }
    store.create("s", data)
    assert store.get("s") == data
    assert store.get("s")["big"] == 2**70


def test_other_mappings_are_stored_as_dicts(store):
    store.create("s", types.MappingProxyType({"a": types.MappingProxyType({"b": 1})}))
    assert store.get("s") == {"a": {"b": 1}}


def test_same_object_twice_is_not_a_cycle(store):
    shared = {"theme": "dark"}
    store.create("s", {"a": shared, "b": [shared, shared]})
    assert store.get("s") == {"a": shared, "b": [shared, shared]}


def test_too_deep_nesting(store, client):
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(UnserializableData, match="nested too deeply"):
        store.create("s", {"deep": deep})
    assert client.exists(store.key("s")) == 0


# -- what someone else wrote under our keys ---------------------------------------------------


CORRUPT_PROFILES = [
    ("string", b"not json at all"),
    ("string", b'{"truncated": '),
    ("string", b"[1, 2, 3]"),
    ("string", b'"just a string"'),
    ("string", b"42"),
    ("string", b"null"),
    ("string", b"\xff\xfe\x00{}"),  # not UTF-8
    ("string", b'{"name": "\xe9"}'),  # Latin-1, not UTF-8
    ("hash", {"name": "John"}),
    ("list", ["a", "b"]),
    ("set", ["a"]),
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


@pytest.mark.parametrize(("kind", "value"), CORRUPT_PROFILES, ids=lambda v: repr(v)[:30])
def test_corrupt_profile(any_store, bytes_client, kind, value):
    store = any_store
    write_raw(bytes_client, store.key("s"), kind, value)
    with pytest.raises(CorruptSession) as caught:
        store.get("s")
    assert store.key("s") in str(caught.value)
    assert isinstance(caught.value, SessionError)
    assert not isinstance(caught.value, (ValueError, redis.RedisError))  # not JSONDecodeError
    # and no JSONDecodeError / UnicodeDecodeError / ResponseError shown as its cause either
    error = caught.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


CORRUPT_CARTS = [
    ("hash", {"A": "many"}),
    ("hash", {"A": "1.5"}),
    ("hash", {"A": ""}),
    ("hash", {b"\xff\xfe": "1"}),  # a field name that is not UTF-8
    ("string", b"[]"),
    ("list", ["A"]),
]


@pytest.mark.parametrize(("kind", "value"), CORRUPT_CARTS, ids=lambda v: repr(v)[:30])
def test_corrupt_cart(any_store, bytes_client, kind, value):
    store = any_store
    store.create("s", PROFILE)
    write_raw(bytes_client, store.cart_key("s"), kind, value)
    with pytest.raises(CorruptSession, match=r"cart"):
        store.get_cart("s")
    if kind != "hash" or "A" in value:
        with pytest.raises(CorruptSession, match=r"cart"):
            store.add_to_cart("s", "A")
        with pytest.raises(CorruptSession, match=r"cart"):
            store.remove_from_cart("s", "A", 1)
    assert store.get("s") == PROFILE  # the profile is unharmed


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
    assert store.client.exists(store.cart_key("s")) == 0  # an empty cart is no key
    assert store.get("s") == PROFILE


def test_cart_of_a_missing_session(store, client):
    assert store.add_to_cart("absent", "A") is None
    assert store.remove_from_cart("absent", "A") is None
    assert store.remove_from_cart("absent", "A", 2) is None
    assert store.get_cart("absent") == {}
    assert client.exists(store.cart_key("absent")) == 0


def test_cart_lives_and_dies_with_the_session(store, client):
    store.create("s", PROFILE, ttl=600)
    client.pexpire(store.key("s"), 400_000)
    store.add_to_cart("s", "A", 2)
    profile_ms, cart_ms = client.pttl(store.key("s")), client.pttl(store.cart_key("s"))
    # The script copies the profile's PTTL, a whole number of ms, so the cart's deadline may land
    # up to 1 ms after the profile's: -1 is that rounding, not a cart that outlives its session.
    assert -1 <= profile_ms - cart_ms < 1000 and cart_ms > 390_000  # the session's TTL
    store.update("s", UPDATED)
    assert -1 <= client.pttl(store.key("s")) - client.pttl(store.cart_key("s")) < 1000
    # Expires with it.
    client.pexpire(store.key("s"), 50)
    store.add_to_cart("s", "B")
    assert wait_until(lambda: client.exists(store.key("s"), store.cart_key("s")) == 0, timeout=5)
    assert store.get_cart("s") == {}
    assert store.add_to_cart("s", "A") is None


def test_cart_of_a_session_without_expiry(store, client):
    store.create("s", PROFILE)
    client.persist(store.key("s"))
    store.add_to_cart("s", "A")
    assert client.ttl(store.cart_key("s")) == -1


@pytest.mark.parametrize(
    ("sku", "quantity"),
    [
        ("", 1),
        ("a b", 1),
        ("x" * 65, 1),
        ("{a}", 1),
        (None, 1),
        (7, 1),
        ("A", 0),
        ("A", -1),
        ("A", 1.0),
        ("A", True),
        ("A", "2"),
        ("A", MAX_QUANTITY + 1),
    ],
)
def test_bad_cart_item(store, client, sku, quantity):
    store.create("s", PROFILE)
    with pytest.raises(InvalidCartItem) as caught:
        store.add_to_cart("s", sku, quantity)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidCartItem):
        store.remove_from_cart("s", sku, quantity)
    assert client.exists(store.cart_key("s")) == 0


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
    store.create("task1", PROFILE)
    store.add_to_cart("task1", "SKU-1", 2)
    assert raw.get(store.key("task1")).startswith(b'{"user_id":"U001"')
    assert store.get("task1") == PROFILE
    assert store.get_cart("task1") == {"SKU-1": 2}
    assert all(isinstance(k, str) for k in store.get_cart("task1"))
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


def test_a_full_server_refuses_writes_with_store_full_on_every_path():
    """noeviction at maxmemory: create (a Lua script, a plain ResponseError on 6.2), update and
    add_to_cart all raise StoreFull, which is also redis-py's OutOfMemoryError; reads still work."""
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
        assert store.client.exists(store.cart_key(f"s{written}")) == 0
        store.client.config_set("maxmemory", "1mb")  # far below use now: every write refused
        with pytest.raises(sessionlab.StoreFull):
            store.update("kept", {"name": "Rohith", "blob": filler})
        with pytest.raises(sessionlab.StoreFull):
            store.add_to_cart("kept", "SKU-RED-MUG")
        assert store.get("kept") == {"name": "Rohith"}
        assert store.delete("s0") is True
