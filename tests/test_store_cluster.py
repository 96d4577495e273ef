"""SessionStore on a real Redis Cluster (``LabCluster``, 3 masters): every guarantee holds.

A session is one key, so each call is one single-slot script. A user's sessions are drawn in
the slot of the user's index (``session:user:{uid}``: ``new_id(user_id=...)``), so a call that
changes a linked session and the index is one script too. A rotation's new id is drawn in the
old id's slot (one atomic RENAME), except for a login that moves an anonymous session into the
user's slot: three resumable steps.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from helpers import plain_cluster_client
from index_checks import (
    assert_index_follows_its_sessions,
    index_dies_with_its_sessions,
    index_expiry_follows_every_change,
)
from redis.crc import key_slot

from sessionlab import InvalidSessionId, LabCluster, SessionStore, WriteOutcomeUnknown
from sessionlab.sample import CART, PROFILE

STALL = 0.8  # seconds a master is stopped: more than the client's socket timeout, less than
SOCKET_TIMEOUT = 0.2  # the cluster's node timeout (1 s), so no failover starts meanwhile


@pytest.fixture(scope="module")
def cluster() -> Iterator[LabCluster]:
    with LabCluster(masters=3, replicas=0) as lab:
        yield lab


@pytest.fixture
def store(cluster: LabCluster) -> Iterator[SessionStore]:
    cluster.wait_until_ok()
    client = cluster.client()
    yield SessionStore(client, prefix=f"t{time.monotonic_ns()}")
    client.close()


def slot(store: SessionStore, session_id: str) -> int:
    return key_slot(store.key(session_id).encode())


def test_the_api_core_on_a_cluster(store):
    session_id = store.new_id(user_id="U001")
    assert store.create(session_id, PROFILE, user_id="U001") is True
    for sku, quantity in CART.items():
        assert store.add_to_cart(session_id, sku, quantity) == quantity
    assert store.patch(session_id, {"name": "Alice"}, remove=["preferences"]) is True
    session = store.load(session_id)
    assert session.profile == {"user_id": "U001", "name": "Alice"}
    assert session.cart == CART
    assert store.set_quantity(session_id, "SKU-SOCKS", 0) == 0
    assert store.remove_from_cart(session_id, "SKU-TEE-M") == 0
    assert store.get_cart(session_id) == {"SKU-RED-MUG": 2}
    assert store.touch(session_id, 60) is True and store.ttl(session_id) == 60
    assert store.delete(session_id) is True
    assert store.load(session_id) is None
    assert store.sessions_of("U001") == []


def test_rotate_on_a_cluster_is_one_atomic_move_in_the_same_slot(store, cluster):
    old = store.new_id(user_id="U001")
    store.create(old, PROFILE, user_id="U001")
    store.add_to_cart(old, "SKU-RED-MUG", 2)
    client = store.client
    before = client.hgetall(store.key(old))
    expiry = client.pexpiretime(store.key(old))
    new = store.rotate(old)
    assert len(new) == 43 and new != old
    assert slot(store, new) == slot(store, old)  # drawn in the same slot: one RENAME
    assert cluster.master_of(store.key(new)) is cluster.master_of(store.key(old))
    assert client.hgetall(store.key(new)) == before
    assert client.pexpiretime(store.key(new)) == expiry
    assert store.get(old) is None
    assert store.add_to_cart(old, "SKU-RED-MUG") is None
    assert store.patch(old, {"x": 1}) is False
    assert client.exists(store.key(old)) == 0
    assert [s.session_id for s in store.sessions_of("U001")] == [new]
    assert store.logout_everywhere("U001") == 1


def test_rotated_ids_still_spread_over_the_cluster(store):
    old_ids = [store.new_id() for _ in range(30)]
    for session_id in old_ids:
        store.create(session_id, {})
    new_ids = [store.rotate(session_id) for session_id in old_ids]
    assert len(set(new_ids)) == 30
    # each new id is drawn in its old id's slot, and random old ids spread: of 30, two share a
    # slot 2.6% of the time (birthday bound over 16384 slots), more than five practically never
    assert [slot(store, i) for i in new_ids] == [slot(store, i) for i in old_ids]
    assert len({slot(store, i) for i in new_ids}) >= 25
    assert all(store.get(i) == {} for i in new_ids)


def test_a_users_sessions_live_in_the_users_slot(store, cluster):
    ids = [store.new_id(user_id="U7") for _ in range(12)]
    assert len(set(ids)) == 12 and all(len(i) == 43 for i in ids)
    assert {slot(store, i) for i in ids} == {key_slot(store.user_key("U7").encode())}
    for session_id in ids:
        store.create(session_id, PROFILE, user_id="U7")
    assert sorted(s.session_id for s in store.sessions_of("U7")) == sorted(ids)
    assert store.logout_everywhere("U7", keep=ids[0]) == 11
    assert [s.session_id for s in store.sessions_of("U7")] == [ids[0]]
    assert all(store.get(i) is None for i in ids[1:])
    # the users themselves spread over the cluster, as anonymous ids do
    users = [f"U{n}" for n in range(30)]
    masters = {cluster.master_of(store.key(store.new_id(user_id=u))).port for u in users}
    assert len(masters) == 3


def test_a_linked_session_with_an_id_outside_its_users_slot_is_refused(store):
    session_id = store.new_id()
    while slot(store, session_id) == key_slot(store.user_key("U8").encode()):
        session_id = store.new_id()  # pragma: no cover - one chance in 16384
    with pytest.raises(InvalidSessionId, match=r"new_id\(user_id='U8'\)") as caught:
        store.create(session_id, PROFILE, user_id="U8")
    assert isinstance(caught.value, ValueError)
    assert session_id not in str(caught.value)  # the id is a secret: only its fingerprint
    assert store.client.exists(store.key(session_id)) == 0
    assert store.client.exists(store.user_key("U8")) == 0
    assert store.create(session_id, PROFILE) is True  # anonymous: any id


@pytest.mark.slow
def test_the_index_dies_with_its_sessions_when_they_idle_out_on_a_cluster(cluster):
    cluster.wait_until_ok()
    client = cluster.client()
    store = SessionStore(client, prefix=f"i{time.monotonic_ns()}", idle_ttl=1, absolute_ttl=3600)
    index_dies_with_its_sessions(store, "U1")
    client.close()


def test_the_index_expiry_follows_every_change_on_a_cluster(store):
    index_expiry_follows_every_change(store, "U1")


def anonymous_cart_outside(store, user_slot: int) -> tuple[str, dict, int]:
    """An anonymous session with a cart, in another slot than ``user_slot``: its id, its
    fields and its expiry (epoch ms)."""
    old = store.new_id()
    while slot(store, old) == user_slot:
        old = store.new_id()  # pragma: no cover - one chance in 16384
    store.create(old, {"theme": "dark"})
    store.add_to_cart(old, "SKU-RED-MUG", 2)
    return old, store.client.hgetall(store.key(old)), store.client.pexpiretime(store.key(old))


def test_a_login_rotate_moves_the_session_into_the_users_slot(store, cluster):
    client = store.client
    user_slot = key_slot(store.user_key("U5").encode())
    store.create(mine := store.new_id(user_id="U5"), PROFILE, user_id="U5")  # another device
    old, before, expiry = anonymous_cart_outside(store, user_slot)
    new = store.rotate(old, user_id="U5")
    assert len(new) == 43 and slot(store, new) == user_slot
    assert client.hgetall(store.key(new)) == {**before, "_u": "U5"}  # same _c, _a, profile, cart
    assert client.pexpiretime(store.key(new)) == expiry
    assert client.exists(store.key(old)) == 0 and store.get(old) is None
    assert sorted(s.session_id for s in store.sessions_of("U5")) == sorted([mine, new])
    assert_index_follows_its_sessions(store, "U5")
    again = store.rotate(new)  # linked now: the same slot, one script
    assert slot(store, again) == user_slot and store.load(again).cart == {"SKU-RED-MUG": 2}
    assert store.logout_everywhere("U5") == 2


def test_a_login_rotate_between_slots_resumes_after_each_step(store):
    """The caller dies after step 1 (the old id marked moved) or after step 2 (the new id
    written, the old key not deleted yet): the old id is dead for every use meanwhile, and the
    same login again finishes the move to the recorded id, losing nothing."""
    client = store.client
    user_slot = key_slot(store.user_key("U6").encode())
    for steps in (["mark"], ["mark", "move_in"]):
        old, before, expiry = anonymous_cart_outside(store, user_slot)
        recorded, moved_expiry, fields = store._run(
            "mark", 1, store.key(old), store.new_id(user_id="U6"), "U6"
        )
        assert moved_expiry == expiry and slot(store, recorded) == user_slot
        if "move_in" in steps:
            keys = [store.key(recorded), store.user_key("U6")]
            assert store._run("move_in", 2, *keys, moved_expiry, "", *fields) == 1
        # the old id is gone for every read and write, and for any other login
        assert store.get(old) is None and store.load(old) is None
        assert store.get_cart(old) == {} and store.ttl(old) is None
        assert store.patch(old, {"theme": "light"}) is False
        assert store.update(old, {}) is False
        assert store.add_to_cart(old, "SKU-RED-MUG") is None
        assert store.set_quantity(old, "SKU-RED-MUG", 5) is None
        assert store.remove_from_cart(old, "SKU-RED-MUG") is None
        assert store.touch(old) is False
        assert store.rotate(old) is None
        assert store.rotate(old, user_id="U-other") is None
        assert client.exists(store.key(old)) == 1  # kept for the resume
        # the same login again: the move finishes, to the recorded id
        assert store.rotate(old, user_id="U6") == recorded
        assert client.exists(store.key(old)) == 0
        assert client.hgetall(store.key(recorded)) == {**before, "_u": "U6"}
        assert client.pexpiretime(store.key(recorded)) == expiry
        assert [s.session_id for s in store.sessions_of("U6")] == [recorded]
        assert_index_follows_its_sessions(store, "U6")
        assert store.rotate(old, user_id="U6") is None  # done: the old id is simply gone
        assert store.logout_everywhere("U6") == 1


def test_max_sessions_per_user_on_a_cluster(cluster):
    cluster.wait_until_ok()
    client = cluster.client()
    store = SessionStore(client, prefix=f"m{time.monotonic_ns()}", max_sessions_per_user=3)
    ids = [store.new_id(user_id="U9") for _ in range(5)]
    for session_id in ids:
        store.create(session_id, PROFILE, user_id="U9")
        time.sleep(0.002)  # "oldest": created first (s), then the earlier deadline (ms)
    assert [s.session_id for s in store.sessions_of("U9")] == ids[2:]
    assert [store.get(i) for i in ids[:2]] == [None, None]
    client.close()


def test_a_cart_add_whose_reply_timed_out_is_applied_once(cluster):
    """A master stops answering for longer than the client's reply timeout: redis-py's own
    cluster client sends again, so a plain INCR script runs 2+ times; LabCluster's client
    never resends a write that may have reached the server: the store's add runs once, and
    the caller learns that its outcome is unknown."""
    cluster.wait_until_ok()
    node = next(node for node in cluster.nodes if node.running)
    control_client = plain_cluster_client(node, SOCKET_TIMEOUT)
    store = SessionStore(cluster.client(socket_timeout=SOCKET_TIMEOUT), prefix="once")
    session_id = "one-slot"
    control_key = "{one-slot}:control"  # same slot, same stalled master
    store.create(session_id, PROFILE)
    store.add_to_cart(session_id, "A")
    control = control_client.register_script("return redis.call('INCR', KEYS[1])")
    control(keys=[control_key])
    master = cluster.master_of(store.key(session_id))
    results: list[object] = [None, None]

    def run(index: int, call) -> None:
        try:
            results[index] = call()
        except Exception as error:
            results[index] = error

    threads = [
        threading.Thread(target=run, args=(0, lambda: control(keys=[control_key]))),
        threading.Thread(target=run, args=(1, lambda: store.add_to_cart(session_id, "A"))),
    ]
    os.kill(master.pid, signal.SIGSTOP)
    try:
        for thread in threads:
            thread.start()
        time.sleep(STALL)
    finally:
        os.kill(master.pid, signal.SIGCONT)
    for thread in threads:
        thread.join(30)
    assert int(control_client.get(control_key)) >= 3, results
    assert store.get_cart(session_id) == {"A": 2}, results
    assert isinstance(results[1], WriteOutcomeUnknown), results
    control_client.close()
    store.client.close()
