"""LabCluster and the SessionStore on a real Redis Cluster (3 masters + 3 replicas).

One cluster serves the whole module (bring-up takes ~2 s); tests that kill a node wait
until the cluster is whole again before they end, so the next test starts from a healthy
cluster. Tests that change a cluster's shape (a new master, moved slots) or break it on purpose
bring up their own: tests/test_cluster_shape.py, a module of its own so that it runs beside
this one (together they made this module the last unit of run 2, 37-40 s on one worker).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import redis
from helpers import plain_cluster_client, wait_until
from redis.cluster import RedisCluster
from redis.crc import key_slot as crc_slot
from redis.exceptions import ClusterCrossSlotError, MovedError, RedisClusterException

from sessionlab import (
    LabCluster,
    LabServer,
    ServerError,
    SessionStore,
    WriteOutcomeUnknown,
)
from sessionlab.checks import NOT_ANSWERED, Verdict
from sessionlab.cluster import FAILOVER_ERRORS, SLOTS, FailoverTolerantCluster, slot_ranges
from sessionlab.exercises import lesson05 as check
from sessionlab.store import random_id
from sessionlab.widgets.cluster import ClusterMapPanel

PROFILE = {"user_id": "U001", "name": "Rohith", "preferences": {"theme": "dark"}}


@pytest.fixture(scope="module")
def cluster():
    with LabCluster(masters=3, replicas=1) as lab:
        yield lab


@pytest.fixture
def healthy(cluster):
    cluster.wait_until_ok()
    yield cluster
    cluster.wait_until_ok()


@pytest.fixture
def store(healthy):
    client = healthy.client()
    yield SessionStore(client, prefix="t")
    client.close()


def ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(count)]


# -- bring-up ------------------------------------------------------------------------------


def test_bring_up_gives_three_masters_with_all_slots_and_three_linked_replicas(healthy):
    rows = healthy.cluster_map()
    masters = [row for row in rows if row.role == "master"]
    replicas = [row for row in rows if row.role == "replica"]
    assert len(rows) == 6
    assert len(masters) == 3 and len(replicas) == 3
    assert sorted(range_ for row in masters for range_ in row.slots) == slot_ranges(3)
    assert sum(row.slot_count for row in masters) == SLOTS
    assert all(row.link_up for row in replicas)
    assert sorted(row.master for row in replicas) == sorted(row.name for row in masters)
    for node in healthy.nodes:
        info = node.client().execute_command("CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert "cluster_known_nodes:6" in info


def test_shards_name_a_master_and_its_replicas_and_each_row_reads_as_one_line(healthy):
    rows = healthy.cluster_map()
    by_shard = {}
    for row in rows:
        by_shard.setdefault(row.shard, []).append(row)
    assert sorted(by_shard) == ["A", "B", "C"]
    for letter, (first, _last) in zip("ABC", slot_ranges(3), strict=True):
        master = next(row for row in by_shard[letter] if row.role == "master")
        replica = next(row for row in by_shard[letter] if row.role == "replica")
        assert master.slots[0][0] == first
        assert replica.master == master.name
        assert str(master) == (
            f"{master.name}  shard {letter}  master   slots {master.slot_text()} "
            f"({master.slot_count} slots), {master.keys} keys"
        )
        assert (
            str(replica)
            == f"{replica.name}  shard {letter}  replica  follows {master.name}, link up"
        )


def test_shard_counts_agree_with_master_of_each_key(healthy):
    keys = [f"t:{{count-{n}}}" for n in range(300)]
    expected = {}
    for key in keys:
        letter = healthy.shard(healthy.master_of(key))
        expected[letter] = expected.get(letter, 0) + 1
    assert healthy.shard_counts(keys) == dict(sorted(expected.items()))
    assert sum(expected.values()) == 300 and len(expected) == 3


def test_client_is_a_cluster_client_that_sees_every_node(healthy):
    client = healthy.client()
    try:
        assert isinstance(client, RedisCluster)
        assert isinstance(client, FailoverTolerantCluster)
        assert len(client.get_primaries()) == 3
        assert client.set("plain-key", "v") and client.get("plain-key") == "v"
    finally:
        client.close()


def test_only_seven_dot_zero_nodes_get_the_replication_delay_directive(cluster):
    version = cluster.nodes[0].version
    if version >= (7, 0, 0):
        delay = cluster.nodes[0].client().config_get("repl-diskless-sync-delay")
        assert delay == {"repl-diskless-sync-delay": "0"}
    else:
        assert "repl_diskless_sync_delay" not in cluster.directives


# -- the session store, unchanged, on the cluster ----------------------------------------


def test_store_crud_ttl_and_touch_work_on_the_cluster(store):
    assert store.create("crud", PROFILE, ttl=120)
    assert store.get("crud") == PROFILE
    assert 0 < store.ttl("crud") <= 120
    assert store.update("crud", {**PROFILE, "name": "Alice"})
    assert store.get("crud")["name"] == "Alice"
    assert 0 < store.ttl("crud") <= 120  # update keeps the TTL
    assert store.touch("crud", ttl=900)
    assert 120 < store.ttl("crud") <= 900
    assert store.delete("crud")
    assert store.get("crud") is None
    assert store.update("crud", PROFILE) is False
    assert store.touch("crud") is False


def test_cart_lua_scripts_work_on_the_cluster(store):
    store.create("cart", PROFILE, ttl=300)
    assert store.add_to_cart("cart", "sku-1", 2) == 2
    assert store.add_to_cart("cart", "sku-1", 3) == 5
    assert store.add_to_cart("cart", "sku-2") == 1
    assert store.remove_from_cart("cart", "sku-1", 1) == 4
    assert store.remove_from_cart("cart", "sku-2") == 0
    assert store.get_cart("cart") == {"sku-1": 4}
    assert 0 < store.client.ttl(store.key("cart")) <= 300  # the cart is in the session's hash
    assert store.add_to_cart("no-such-session", "sku-1") is None
    store.delete("cart")
    assert store.get_cart("cart") == {}


def test_a_sessions_two_keys_share_a_slot_and_the_server_agrees(healthy, store):
    raw = healthy.nodes[0].client()
    for session_id in ["a", "user-0001", random_id()]:
        profile, cart = store.key(session_id), store.key(session_id) + ":cart"
        slot = healthy.slot(profile)
        assert slot == healthy.slot(cart)
        assert raw.execute_command("CLUSTER", "KEYSLOT", profile) == slot
        assert raw.execute_command("CLUSTER", "KEYSLOT", cart) == slot
    # Without the hash tag the two keys would land in different slots.
    assert healthy.slot("session:user-0001") != healthy.slot("session:user-0001:cart")


def test_cross_slot_mget_raises_in_the_client_and_on_the_server(healthy, store):
    a, b = store.key("user-0001"), store.key("user-0002")
    assert healthy.slot(a) != healthy.slot(b)
    with pytest.raises(RedisClusterException):
        store.client.mget(a, b)
    owner = healthy.master_of(a)
    with pytest.raises(ClusterCrossSlotError, match="don't hash to the same slot"):
        owner.client().mget(a, b)
    assert store.client.mget(store.key("x"), store.key("x") + ":note") == [None, None]


def test_a_plain_client_on_the_wrong_node_gets_moved(healthy):
    key = "t:{moved}"
    owner = healthy.master_of(key)
    other = next(node for node in healthy.masters if node is not owner)
    with pytest.raises(MovedError) as moved:  # redis-py keeps "slot host:port" of "MOVED ..."
        other.client().get(key)
    assert str(moved.value) == f"{healthy.slot(key)} 127.0.0.1:{owner.port}"


def test_master_and_replica_of_a_key(healthy):
    key = "t:{user-0001}"
    master, replica = healthy.master_of(key), healthy.replica_of(key)
    assert master in healthy.masters and replica in healthy.replicas
    assert replica.client().info("replication")["master_port"] == master.port
    first, last = next(
        r for row in healthy.cluster_map() if row.port == master.port for r in row.slots
    )
    assert first <= healthy.slot(key) <= last


# -- failover ------------------------------------------------------------------------------


def test_killing_a_master_loses_no_acknowledged_session(healthy):
    client = healthy.client()
    store = SessionStore(client, prefix="fo")
    sessions = ids("fo", 400)
    for number, session_id in enumerate(sessions):
        store.create(session_id, {**PROFILE, "n": number}, ttl=3600)
        store.add_to_cart(session_id, "sku-1", number % 7 + 1)
    # WAIT on the connections that wrote: each master's replica has acknowledged it all.
    for node in client.get_primaries():
        assert client.get_redis_connection(node).wait(1, 2000) == 1

    victim_key = store.key(sessions[1])
    master, replica = healthy.master_of(victim_key), healthy.replica_of(victim_key)
    master.crash()

    impatient = healthy.client(failover_timeout=0)
    with pytest.raises((redis.ConnectionError, redis.exceptions.ClusterDownError)):
        impatient.get(victim_key)
    # The default client waits the failover out instead of failing.
    assert store.get(sessions[1]) == {**PROFILE, "n": 1}
    healthy.wait_until_ok()
    assert healthy.master_of(victim_key) is replica
    assert master not in healthy.nodes or not master.running

    missing = [s for s in sessions if store.get(s) is None]
    wrong_carts = [s for n, s in enumerate(sessions) if store.get_cart(s) != {"sku-1": n % 7 + 1}]
    assert missing == [] and wrong_carts == []

    # The old master comes back empty-handed and follows its former replica.
    master.start()
    healthy.wait_until_ok()
    assert healthy.replicas_of(replica) == [master]
    assert master.client().info("replication")["role"] == "slave"
    assert healthy.master_of(victim_key) is replica
    assert all(store.get(s) is not None for s in sessions)
    impatient.close()
    client.close()


def test_failover_timeout_zero_fails_before_the_promotion_the_default_waits(healthy):
    key = "t:{impatient}"
    impatient = healthy.client(failover_timeout=0)
    patient = healthy.client()
    try:
        impatient.set(key, "v")
        master, replica = healthy.master_of(key), healthy.replica_of(key)
        master.crash()
        with pytest.raises(FAILOVER_ERRORS):
            impatient.get(key)
        assert patient.get(key) == "v"  # waited for the replica's promotion
        healthy.wait_until_ok()
        assert healthy.master_of(key) is replica
    finally:
        healthy.heal()
        impatient.close()
        patient.close()


STALL, REPLY_TIMEOUT = 0.5, 0.25  # lesson 05, section 6: a stall longer than a reply may take,
# shorter than cluster-node-timeout (1 s), so no failover starts meanwhile


def during_a_stall(master: LabServer, write):
    """Run ``write`` while ``master`` is stopped (SIGSTOP) for STALL seconds, then SIGCONT."""
    os.kill(master.pid, signal.SIGSTOP)
    goes_on = threading.Timer(STALL, os.kill, (master.pid, signal.SIGCONT))
    goes_on.start()
    try:
        return write()
    finally:
        goes_on.join()
        os.kill(master.pid, signal.SIGCONT)


def test_a_stalled_master_runs_plain_redis_pys_add_twice_and_the_stores_once(healthy):
    """Lesson 05's demo: plain redis-py resends a write whose reply timed out (applied twice);
    the course's client does not: the store's add is applied once and raises."""
    store = SessionStore(healthy.client(), prefix="stall")
    store.create("s", PROFILE)
    key = store.key("s")
    master = healthy.master_of(key)
    entry = next(node for node in healthy.masters if node is not master)
    plain = plain_cluster_client(entry, REPLY_TIMEOUT)
    course = SessionStore(healthy.client(socket_timeout=REPLY_TIMEOUT), prefix="stall")
    try:
        plain.hgetall(key)
        course.add_to_cart("s", "tee", 1)  # connected, and the master knows the cart script
        assert during_a_stall(master, lambda: plain.hincrby(key, "c:socks", 1)) == 2
        with pytest.raises(WriteOutcomeUnknown, match="may or may not have been applied"):
            during_a_stall(master, lambda: course.add_to_cart("s", "mug", 1))
        assert store.get_cart("s") == {"tee": 1, "socks": 2, "mug": 1}
    finally:
        store.delete("s")
        plain.close()
        course.client.close()
        store.client.close()


def test_a_cart_add_in_flight_when_its_master_dies_raises_and_was_not_applied(healthy):
    """Lesson 05: the same WriteOutcomeUnknown can mean "not applied"; a read, then a new add,
    both wait out the failover."""
    client = healthy.client()
    store = SessionStore(client, prefix="inflight")
    store.create("s", PROFILE)
    store.add_to_cart("s", "tee", 1)
    key = store.key("s")
    master, replica = healthy.master_of(key), healthy.replica_of(key)
    assert client.get_redis_connection(client.get_node_from_key(key)).wait(1, 2000) == 1
    outcome: list[object] = []

    def add_mug() -> None:
        try:
            outcome.append(store.add_to_cart("s", "mug", 1))
        except Exception as error:
            outcome.append(error)

    os.kill(master.pid, signal.SIGSTOP)  # the add reaches the master's socket, not its loop
    adder = threading.Thread(target=add_mug)
    try:
        adder.start()
        time.sleep(0.3)
        master.crash()  # SIGKILL: the add dies unread
        adder.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], WriteOutcomeUnknown), outcome
        assert store.get_cart("s") == {"tee": 1}  # waited for the replica: the add never ran
        # the client saw the promotion; every node's map follows by gossip a moment later
        assert wait_until(lambda: healthy.master_of(key) is replica)
        assert store.add_to_cart("s", "mug", 1) == 1
        assert store.get_cart("s") == {"tee": 1, "mug": 1}
    finally:
        healthy.heal()
        store.delete("s")
        client.close()


# -- the exercises' checks -----------------------------------------------------------------


def test_hash_tag_checks_accept_a_tag_per_user_and_explain_each_mistake():
    def tagged(user):
        return f"p:{{{user}}}", f"c:{{{user}}}"

    def stub(user):  # what otter assign leaves of a solved function
        ...

    good = check.hash_tags(tagged)
    assert isinstance(good, Verdict) and good and repr(good).startswith("✅")
    assert check.hash_tags_hidden(tagged)
    assert repr(check.hash_tags(stub)) == NOT_ANSWERED
    cases = {
        "returned None": lambda user: None,
        "ZeroDivisionError": lambda user: 1 / 0,
        "same name twice": lambda user: (f"k:{{{user}}}", f"k:{{{user}}}"),
        "put the same {hash tag}": lambda user: (f"p:{user}", f"c:{user}"),
    }
    for message, keys_for in cases.items():
        verdict = check.hash_tags(keys_for)
        assert not verdict and message in repr(verdict), verdict

    def one_tag(user):
        return "p:{shop}", "c:{shop}"

    assert check.hash_tags(one_tag)  # the visible check looks at one user only...
    hidden = check.hash_tags_hidden(one_tag)  # ... the hidden one at several
    assert not hidden and "one master would hold every checkout" in repr(hidden)


def test_which_master_checks_find_an_off_by_one_at_the_range_ends():
    ranges = slot_ranges(3)

    def right(key):
        slot = crc_slot(key.encode())
        return next("ABC"[i] for i, (a, b) in enumerate(ranges) if a <= slot <= b)

    def off_by_one(key):  # treats each range's last slot as the next master's
        slot = crc_slot(key.encode())
        for letter, (_first, last) in zip("ABC", ranges, strict=True):
            if slot < last:
                return letter
        return "C"

    key = "session:{user-2024}"
    assert check.which_master(right, key=key)
    assert check.which_master_hidden(right)
    assert check.which_master(off_by_one, key=key)  # slot 6341 is far from any end
    hidden = check.which_master_hidden(off_by_one)
    assert not hidden and "both ends included" in repr(hidden)
    assert 'return "A", "B" or "C"' in repr(check.which_master(lambda k: 2, key=key))


def test_dead_master_check():
    assert check.dead_master("b") and check.dead_master(" B ")
    assert repr(check.dead_master(...)) == NOT_ANSWERED
    assert "is not one of" in repr(check.dead_master("z"))
    assert "cluster-require-full-coverage" in repr(check.dead_master("a"))


def test_wait_checks_need_a_real_wait_on_the_writing_connection(healthy, store):
    client = store.client

    def right(session_id, profile):
        store.update(session_id, profile)
        node = client.get_node_from_key(store.key(session_id))
        return client.get_redis_connection(node).wait(1, 200)

    def no_wait(session_id, profile):
        store.update(session_id, profile)
        return 1  # what a replica usually says, but nobody asked it

    context = {"cluster": healthy, "store": store}
    assert check.wait(right, **context)
    assert check.wait_hidden(right, **context)
    assert check.wait(no_wait, **context)  # the visible check cannot tell...
    hidden = check.wait_hidden(no_wait, **context)  # ... the hidden one freezes the replica
    assert not hidden and "connection that made the update" in repr(hidden)
    assert "returned None" in repr(check.wait(lambda s, p: None, **context))
    assert "not updated" in repr(check.wait(lambda s, p: 1, **context))
    assert "ZeroDivisionError" in repr(check.wait(lambda s, p: 1 / 0, **context))
    assert repr(check.wait(..., **context)) == NOT_ANSWERED
    assert all(node.running for node in healthy.nodes)  # the frozen replica was thawed
    healthy.wait_until_ok()

    # A master without a replica (like master D after the scale-out) is skipped, not an error.
    orphaned = healthy.master_of(store.key("exercise-wait-0"))
    for replica in healthy.replicas_of(orphaned):
        replica.crash()
    try:
        assert check.wait_hidden(right, **context)
    finally:
        healthy.heal()


# -- scaling out (the reshards themselves: tests/test_cluster_shape.py) ----------------------


def test_move_slots_rejects_bad_input(healthy):
    with pytest.raises(ServerError, match="slots must be numbers"):
        healthy.move_slots([SLOTS], healthy.nodes[0])
    with pytest.raises(ServerError, match="is a replica"):
        healthy.move_slots([0], healthy.replicas[0])
    stranger = LabServer()  # never started: not a node of this cluster
    try:
        with pytest.raises(ServerError, match="running node of this cluster"):
            healthy.move_slots([0], stranger)
    finally:
        stranger.close()


# -- the widget ----------------------------------------------------------------------------


def test_cluster_map_widget_crash_refresh_restart(healthy):
    panel = ClusterMapPanel(healthy)
    assert "sl-cluster-map" in panel._dom_classes
    assert panel.table.value.count("<tr>") == 1 + 6
    assert panel.table.value.count("sl-role-master") == 3
    assert list(panel.node.options) == [f"node {i}" for i in range(1, 7)]

    master = healthy.master_of("t:{widget}")
    replica = healthy.replica_of("t:{widget}")
    panel.node.value = healthy.name(master)
    panel.crash_button.click()
    assert not master.running
    assert "sl-role-down" in panel.table.value
    assert "SIGKILL " + healthy.name(master) in panel.log.outputs[-1]["text"]
    assert "sl-ok" in panel.status.value

    panel.crash_button.click()  # a dead node cannot die twice: a readable error, no traceback
    assert "sl-error" in panel.status.value and "already down" in panel.status.value

    healthy.wait_until_ok()
    panel.refresh_button.click()
    promoted = next(row for row in panel.rows if row.port == replica.port)
    assert promoted.role == "master" and promoted.slot_count > 0

    panel.restart_button.click()
    assert master.running
    healthy.wait_until_ok()
    panel.refresh_button.click()
    back = next(row for row in panel.rows if row.port == master.port)
    assert back.role == "replica" and back.master == healthy.name(replica) and back.link_up
    assert repr(panel) == "<ClusterMapPanel>"
