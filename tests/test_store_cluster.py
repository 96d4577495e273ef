"""SessionStore on a real Redis Cluster (``LabCluster``, 3 masters): every guarantee holds.

A session is one key, so each call is one single-slot script. The only calls that span slots
are a user's index (``session:user:{uid}``, its own slot) and rotation, whose new id is drawn
in the old id's slot so the move stays one atomic RENAME.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.crc import key_slot

from sessionlab import LabCluster, SessionStore, WriteOutcomeUnknown
from sessionlab.sample import CART, PROFILE
from sessionlab.server import HOST

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
    session_id = store.new_id()
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
    old = store.new_id()
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


def test_a_users_sessions_across_slots_and_masters(store, cluster):
    ids = [store.new_id() for _ in range(12)]
    for session_id in ids:
        store.create(session_id, PROFILE, user_id="U7")
    masters = {cluster.master_of(store.key(i)).port for i in ids}
    assert len(masters) > 1  # the sessions really are spread
    assert sorted(s.session_id for s in store.sessions_of("U7")) == sorted(ids)
    assert store.logout_everywhere("U7", keep=ids[0]) == 11
    assert [s.session_id for s in store.sessions_of("U7")] == [ids[0]]
    assert all(store.get(i) is None for i in ids[1:])


def test_max_sessions_per_user_on_a_cluster(cluster):
    cluster.wait_until_ok()
    client = cluster.client()
    store = SessionStore(client, prefix=f"m{time.monotonic_ns()}", max_sessions_per_user=3)
    ids = [store.new_id() for _ in range(5)]
    for session_id in ids:
        store.create(session_id, PROFILE, user_id="U9")
        time.sleep(0.002)  # "oldest" is by absolute deadline, in ms: no two in the same one
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
    control_client = RedisCluster(  # redis-py's own retry rule, on the locked cluster
        host=HOST,
        port=node.port,
        password=node.password,
        socket_timeout=SOCKET_TIMEOUT,
        decode_responses=True,
    )
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
