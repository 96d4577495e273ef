"""Eviction on real servers (sessionlab.eviction, .memory): refused writes, who survives a full
server, split sessions, what a session costs."""

from __future__ import annotations

import itertools
import json

import pytest
import redis.exceptions as rex

from sessionlab import LabServer, SessionStore
from sessionlab.errors import InvalidSetting, SessionError, StoreFull
from sessionlab.eviction import (
    STEPS,
    experiment,
    fill_until_refused,
    shop_profile,
    write_two_keys,
)
from sessionlab.memory import (
    compact_thresholds,
    encoding,
    memory_usage,
    parse_memory,
    per_million,
    server_build,
    session_bytes,
    session_keys,
    used_memory,
)
from sessionlab.widgets.eviction import EvictionPanel

BIG_VALUE = "x" * 2000


def set_until_refused(
    client, ttl: int | None = None, limit: int = 10_000, prefix: str = "k"
) -> int:
    """SET 2 KB values (keys ``<prefix>:<n>``) until Redis refuses; return how many were stored."""
    for number in itertools.count():
        if number >= limit:
            raise AssertionError(f"{limit} writes were never refused")
        try:
            client.set(f"{prefix}:{number}", BIG_VALUE, ex=ttl)
        except rex.OutOfMemoryError:
            return number
    raise AssertionError("unreachable")


@pytest.fixture
def full_noeviction():
    with LabServer(maxmemory="2mb", maxmemory_policy="noeviction") as server:
        client = server.client()
        stored = set_until_refused(client)
        yield server, client, stored
        client.close()


# -- what a full server does ------------------------------------------------------------------


def test_noeviction_refuses_writes_but_reads_and_deletes_work(full_noeviction):
    _, client, stored = full_noeviction
    assert stored > 100
    # Full, it goes on refusing new writes, though not always the very next one: used_memory
    # sits just over maxmemory, and once the client idles ~0.3 s the server's cron frees its
    # query buffer (~15 KB on Redis 7.0). Measured after an idle second: 3 more 2 KB values
    # fit on Redis 7.0, 9-10 on Valkey 9.1 (a CI run on a busy machine met exactly this).
    extra = set_until_refused(client, limit=stored // 20, prefix="more")
    assert client.get("k:0") == BIG_VALUE
    assert client.delete("k:0") == 1
    assert client.info("stats")["evicted_keys"] == 0
    assert client.dbsize() == stored + extra - 1


def test_fill_until_refused_counts_the_logins_that_fitted():
    with LabServer(maxmemory="2mb", maxmemory_policy="noeviction") as server:
        client = server.client()
        store = SessionStore(client)
        fitted = fill_until_refused(store)
        assert 100 < fitted < 5000
        assert client.dbsize() == fitted
        # Refused again within a few more (the cron frees a buffer: see the test above).
        extra = fill_until_refused(store, first=fitted, limit=fitted // 20)
        client.config_set("maxmemory-policy", "allkeys-lru")
        with pytest.raises(InvalidSetting, match="evicts"):
            fill_until_refused(store, first=fitted + extra + 1, limit=300)
        client.close()


def test_store_writes_on_a_full_server_are_out_of_memory_errors(full_noeviction):
    """The store raises StoreFull, a redis-py OutOfMemoryError: the experiment counts it."""
    _, client, stored = full_noeviction
    store = SessionStore(client)
    with pytest.raises(StoreFull) as raised:
        for number in range(stored // 20):  # refused within a few (the cron: see above)
            store.create(f"late-user-{number}", shop_profile(1))
    assert isinstance(raised.value, rex.OutOfMemoryError)


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-ttl"])
def test_volatile_policy_with_keys_without_ttl_refuses_writes(policy):
    with LabServer(maxmemory="2mb", maxmemory_policy=policy) as server:
        client = server.client()
        stored = set_until_refused(client, ttl=None)
        assert stored > 100
        assert client.info("stats")["evicted_keys"] == 0
        client.close()


def test_volatile_policy_evicts_keys_that_have_a_ttl():
    with LabServer(maxmemory="2mb", maxmemory_policy="volatile-lru") as server:
        client = server.client()
        for number in range(2000):  # ~4 MB of 2 KB values into 2 MB: must evict, never refuse
            client.set(f"k:{number}", BIG_VALUE, ex=3600)
        assert client.info("stats")["evicted_keys"] > 0
        client.close()


def test_hot_sessions_survive_lru_and_lfu_but_not_random():
    steps = []
    results = experiment(["allkeys-lru", "allkeys-lfu", "allkeys-random"], progress=steps.append)
    assert steps == [1] * STEPS
    results = {r.policy: r for r in results}
    lru, lfu, rand = results["allkeys-lru"], results["allkeys-lfu"], results["allkeys-random"]
    for result in results.values():
        assert result.refused == 0
        assert result.evicted_keys > 0
        assert result.hot == 50
    assert lru.hot_kept >= 45
    assert lfu.hot_kept >= 35  # the store's own writes touch a key several times, too
    assert rand.hot_kept < lru.hot_kept
    # LRU evicts idle sessions first: far fewer cold ones survive than under random
    assert lru.cold_kept < rand.cold_kept
    # LFU cannot tell a brand-new login from an idle one (a new key starts with a low
    # counter): it evicts new logins that LRU keeps (measured: 13-19% under LFU, 0 under LRU)
    assert lru.new_kept == lru.sessions
    assert lfu.new_lost > lfu.sessions // 20


def test_noeviction_and_volatile_without_ttl_refuse_logins_in_the_experiment():
    results = experiment(["noeviction", "volatile-lru"], ttl=None, layout="two-keys")
    for result in results:
        assert result.refused > 0
        assert result.evicted_keys == 0
        assert result.hot_kept == result.hot  # nothing is evicted; the old sessions stay
        assert result.new_kept < result.sessions


def test_volatile_ttl_with_sliding_expiry_keeps_hot_sessions():
    """Hot users slide their TTL forward, so volatile-ttl evicts the idle sessions first."""
    (result,) = experiment(["volatile-ttl"])
    assert result.evicted_keys > 0
    assert result.refused == 0
    assert result.hot_kept >= 45


def test_fixed_session_count():
    (result,) = experiment(["allkeys-lru"], maxmemory="4mb", sessions=200, pause=1.1)
    assert result.sessions == 200
    assert result.evicted_keys == 0  # 400 sessions fit into 4 MB
    assert result.hot_kept == result.hot
    assert result.new_kept == 200


def test_two_key_sessions_are_split_by_eviction():
    """Eviction removes keys: a profile can survive without its cart, or the reverse."""
    (result,) = experiment(["allkeys-random"], layout="two-keys", pause=0)
    assert result.evicted_keys > 0
    assert result.split > 0


def test_write_two_keys_writes_a_profile_string_and_a_cart_hash(fresh_client):
    write_two_keys(fresh_client, "session:{a}", {"name": "A"}, {"SKU-1": 2}, ttl=60)
    assert fresh_client.get("session:{a}") == '{"name":"A"}'
    assert fresh_client.hgetall("session:{a}:cart") == {"SKU-1": "2"}
    assert 0 < fresh_client.ttl("session:{a}:cart") <= 60
    assert session_keys(fresh_client, "session:{a}") == ["session:{a}", "session:{a}:cart"]


def test_store_without_ttl_is_refused_before_any_server_starts():
    with pytest.raises(InvalidSetting, match="two-keys"):
        experiment(["noeviction"], ttl=None)
    with pytest.raises(InvalidSetting, match="layout"):
        experiment(["noeviction"], layout="three-keys")


# -- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("2mb", 2 * 2**20), ("2m", 2_000_000), ("1500kb", 1500 * 1024), ("3000000", 3_000_000)],
)
def test_parse_memory_units_as_in_redis_conf(text, size):
    assert parse_memory(text) == size
    assert parse_memory(size) == size


@pytest.mark.parametrize("text", ["lots", "", "0", "0mb", "-1mb", "2 parsecs", True])
def test_parse_memory_rejects_nonsense(text):
    with pytest.raises(InvalidSetting, match="memory limit"):
        parse_memory(text)


def test_unknown_policy_is_rejected_before_any_server_starts():
    with pytest.raises(InvalidSetting, match="allkeys-lru"):
        experiment(["allkeys-newest"])


def test_limit_below_an_empty_server_says_how_much_it_uses():
    with pytest.raises(InvalidSetting, match="already uses") as raised:
        experiment(["allkeys-lru"], maxmemory="500kb")
    assert isinstance(raised.value, SessionError)
    assert "Use at least" in str(raised.value)


# -- memory --------------------------------------------------------------------------------------


@pytest.fixture
def fresh_client():
    """A client of a server of its own: these tests count its keys and bytes."""
    with LabServer() as server:
        redis_client = server.client()
        yield redis_client
        redis_client.close()


def test_compact_thresholds_named_for_the_running_version(fresh_client):
    thresholds = compact_thresholds(fresh_client)
    version = tuple(int(p) for p in fresh_client.info("server")["redis_version"].split("."))
    name = "listpack" if version >= (7, 0) else "ziplist"
    assert thresholds == {f"hash-max-{name}-entries": 512, f"hash-max-{name}-value": 64}


def test_hash_leaves_compact_encoding_past_the_thresholds(fresh_client):
    entries = next(v for k, v in compact_thresholds(fresh_client).items() if k.endswith("entries"))
    fresh_client.hset("small", mapping={f"f{n}": n for n in range(entries)})
    fresh_client.hset("big", mapping={f"f{n}": n for n in range(entries + 1)})
    fresh_client.hset("long-value", mapping={"f": "v" * 65})
    assert encoding(fresh_client, "small") in ("ziplist", "listpack")
    assert encoding(fresh_client, "big") == "hashtable"
    assert encoding(fresh_client, "long-value") == "hashtable"
    assert memory_usage(fresh_client, "big") > 2 * memory_usage(fresh_client, "small")


def test_session_bytes_and_extrapolation(fresh_client):
    store = SessionStore(fresh_client)
    store.create("alice", shop_profile(1))
    profile_only = session_bytes(store, "alice")
    store.add_to_cart("alice", "SKU-1", 2)
    whole = session_bytes(store, "alice")
    assert profile_only > len(json.dumps(shop_profile(1)))
    # not "whole > profile_only": a hash table that was rehashing frees its old table on the next
    # write, so MEMORY USAGE can drop by more than one small field adds (seen on Redis 7.0)
    assert whole > len(json.dumps(shop_profile(1)))
    assert store.get_cart("alice") == {"SKU-1": 2}
    assert per_million(whole) == pytest.approx(whole / 1000)  # bytes -> GB per million
    assert memory_usage(fresh_client, "missing") is None
    assert session_bytes(store, "bob") is None


def test_session_keys_escape_glob_characters(fresh_client):
    fresh_client.set("a*", 1)
    fresh_client.set("ab", 1)
    assert session_keys(fresh_client, "a*") == ["a*"]


def test_server_build_names_the_allocator(fresh_client):
    build = server_build(fresh_client)
    assert build.startswith(("Redis ", "Valkey "))
    assert build.endswith(fresh_client.info("memory")["mem_allocator"])


def test_empty_server_uses_about_a_megabyte(fresh_client):
    assert 0.5 * 2**20 < used_memory(fresh_client) < 1.5 * 2**20


# -- the widget ----------------------------------------------------------------------------------


def test_panel_runs_the_experiment_and_charts_it():
    panel = EvictionPanel()
    panel.policy.value = "allkeys-lru"
    panel.maxmemory.value = "2mb"
    panel.run.click()
    assert "sl-error" not in panel.status.value, panel.status.value
    assert panel.result is not None and panel.result.policy == "allkeys-lru"
    assert panel.result.hot_kept >= 45
    assert "hot sessions kept" in panel.status.value
    assert panel.chart.value.count("sl-eviction-bar") == 1
    assert repr(panel) == "<EvictionPanel>"


def test_panel_without_ttl_under_volatile_shows_refused_logins():
    panel = EvictionPanel(policy="volatile-lru")
    panel.ttl.value = False
    panel.run.click()
    assert panel.result is not None
    assert panel.result.refused > 0
    assert "(no TTL)" in panel.chart.value


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("lots", "not a size"),
        ("500kb", "already uses"),
        ("0", "no limit"),
        ("64gb", "at most 8mb"),
    ],
)
def test_panel_shows_bad_limits_in_the_status_line(limit, message):
    panel = EvictionPanel()
    panel.maxmemory.value = limit
    panel.run.click()
    assert "sl-error" in panel.status.value
    assert message in panel.status.value
    assert "InvalidSetting" in panel.status.value
    assert panel.result is None
    assert panel.chart.value == ""
