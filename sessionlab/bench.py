"""How much the store's guarantees cost: ``python -m sessionlab.bench`` (``make bench``).

On one private :class:`~sessionlab.server.LabServer`, each store call against the plain
redis-py command a hand-written store would send for the same job, same server, same client,
same data (the course's sample session, :mod:`sessionlab.sample`):

    create  store.create(...)          vs  SET key <json> EX 3600
    load    store.load(...)            vs  GET key + json.loads   (load also slides the expiry)
    get     store.get(...)             vs  GET key + json.loads
    add     store.add_to_cart(...)     vs  HINCRBY key sku 1
    patch   store.patch(one field)     vs  HSET key field <json>

Raw and store run op by op in turns, so that load from other processes slows both alike; the
ratio is the median over batches, the ops/s those of the fastest batch. Also prints bytes per
session (43-character id) in the store's hash against one JSON string under one key (what
Flask-Session stores), and how long a LabServer takes from start to first PING.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import redis

from .sample import CART, PROFILE
from .server import LabServer
from .store import SessionStore

GOALS = {"create": 0.9, "load": 0.9, "get": 0.9, "add": 0.85, "patch": 0.85}
MEMORY_GOAL = 1.2  # bytes per session, store / one JSON string: the bar (the goal is 1.0)
CHUNK = 250  # session ids per batch


def paired_batch(
    raw: Callable[[str], object], ours: Callable[[str], object], ids: list[str]
) -> tuple[float, float]:
    """Seconds per op of ``raw`` and of ``ours``, run op by op in turns (who goes first too).

    Side by side at this grain, a burst of load from another process slows both alike.
    """
    spent = [0.0, 0.0]
    clock = time.perf_counter
    for n, session_id in enumerate(ids):
        first, second = (raw, ours) if n % 2 else (ours, raw)
        t0 = clock()
        first(session_id)
        t1 = clock()
        second(session_id)
        t2 = clock()
        spent[n % 2 == 0] += t1 - t0
        spent[n % 2 == 1] += t2 - t1
    return spent[0] / len(ids), spent[1] / len(ids)


def throughput(
    client: redis.Redis, store: SessionStore, ops: int, rounds: int
) -> list[tuple[str, float, float, float]]:
    """(operation, raw ops/s, store ops/s, store/raw) for each operation of :data:`GOALS`.

    Each round runs ``ops`` of each operation both ways, in batches of :data:`CHUNK`; the
    ops/s are those of the fastest batch, the ratio is the median of the batches' ratios.
    """
    ids = [store.new_id() for _ in range(ops)]
    text = json.dumps(PROFILE)

    def raw_key(session_id: str) -> str:
        return f"raw:{session_id}"

    raw: dict[str, Callable[[str], object]] = {
        "create": lambda i: client.set(raw_key(i), text, ex=3600),
        "load": lambda i: json.loads(client.get(raw_key(i))),
        "get": lambda i: json.loads(client.get(raw_key(i))),
        "add": lambda i: client.hincrby(raw_key(i) + ":cart", "SKU-RED-MUG", 1),
        "patch": lambda i: client.hset(raw_key(i) + ":h", "p:name", '"Alice"'),
    }
    ours: dict[str, Callable[[str], object]] = {
        "create": lambda i: store.create(i, PROFILE),
        "load": store.load,
        "get": store.get,
        "add": lambda i: store.add_to_cart(i, "SKU-RED-MUG", 1),
        "patch": lambda i: store.patch(i, {"name": "Alice"}),
    }
    results = []
    for name in GOALS:
        batches = [
            paired_batch(raw[name], ours[name], ids[start : start + CHUNK])
            for _ in range(rounds)
            for start in range(0, ops, CHUNK)
        ]
        results.append(
            (
                name,
                1 / min(r for r, _ in batches),
                1 / min(o for _, o in batches),
                statistics.median(r / o for r, o in batches),
            )
        )
    return results


def memory(client: redis.Redis, store: SessionStore) -> dict[str, int]:
    """``MEMORY USAGE`` in bytes of one sample session (43-character id) in each layout."""
    session_id = store.new_id()
    store.create(session_id, PROFILE)
    for sku, quantity in CART.items():
        store.set_quantity(session_id, sku, quantity)
    written = client.memory_usage(f"{store.key(session_id)}:w") or 0
    client.delete(f"{store.key(session_id)}:w")  # what is left 2 minutes after the last write
    flask = f"session:{session_id}"  # Flask-Session: the whole session as one string
    client.set(flask, json.dumps({**PROFILE, "cart": CART}), ex=3600)
    one_field = f"onefield:{{{session_id}}}"
    client.hset(one_field, mapping=client.hgetall(store.key(session_id)))
    client.hdel(one_field, *(f"p:{name}" for name in PROFILE))
    client.hset(one_field, "p", json.dumps(PROFILE, separators=(",", ":")))
    client.expire(one_field, 3600)
    usage = {
        "session": client.memory_usage(store.key(session_id)),
        "json": client.memory_usage(flask),
        "one field": client.memory_usage(one_field),
        "write memory": written,
    }
    client.delete(flask, one_field)
    return usage


def server_costs(client: redis.Redis) -> dict[str, float]:
    """Microseconds per call inside Redis (``INFO commandstats``) since the last reset."""
    stats = client.info("commandstats")
    return {
        name: stats[f"cmdstat_{name}"]["usec_per_call"]
        for name in ("set", "get", "hincrby", "hset", "evalsha")
        if f"cmdstat_{name}" in stats
    }


def start_times(count: int) -> list[float]:
    """Seconds from ``LabServer.start()`` to its first answered PING, ``count`` times."""
    times = []
    for _ in range(count):
        server = LabServer()
        started = time.perf_counter()
        server.start()
        times.append(time.perf_counter() - started)
        server.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sessionlab.bench", description=__doc__)
    parser.add_argument("--ops", type=int, default=3000, help="operations per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions; the best counts")
    parser.add_argument("--quick", action="store_true", help="a few ops, to check it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.rounds = 2 * CHUNK, 1

    with LabServer() as server:
        client = server.client()
        info = client.info("server")
        name = f"Valkey {info['valkey_version']}" if "valkey_version" in info else "Redis"
        version = info["redis_version"] if name == "Redis" else ""
        allocator = client.info("memory").get("mem_allocator", "?")
        store = SessionStore(client, prefix="bench")
        print(
            f"{name} {version} ({server.binary}, {allocator}), redis-py {redis.__version__}, "
            f"{args.ops} ops x {args.rounds} rounds, one client; raw and store op by op in turns"
        )
        print()
        print(f"{'operation':<10}{'raw ops/s':>12}{'store ops/s':>13}{'store/raw':>11}{'goal':>7}")
        missed = []
        client.config_resetstat()
        for name, raw, ours, ratio in throughput(client, store, args.ops, args.rounds):
            verdict = "ok" if ratio >= GOALS[name] else "MISSED"
            if verdict != "ok":
                missed.append(name)
            print(
                f"{name:<10}{raw:>12,.0f}{ours:>13,.0f}{ratio:>11.2f}{GOALS[name]:>7.2f}  {verdict}"
            )
        inside = server_costs(client)
        usage = memory(client, store)
        client.close()

    print()
    print(
        "In Redis (INFO commandstats, microseconds per call): "
        + "  ".join(f"{name.upper()} {usec:.1f}" for name, usec in inside.items())
        + "  (EVALSHA: every store call but ttl)"
    )
    print()
    ratio = usage["session"] / usage["json"]
    print("Memory (MEMORY USAGE, bytes; sample profile + 3-item cart, 43-character id)")
    rows = [
        ("one session in the store (one hash)", usage["session"]),
        ("the same data as one JSON string (Flask-Session)", usage["json"]),
        ("the store's hash with the profile as one JSON field", usage["one field"]),
        ("write memory (:w), only for 2 minutes after a write", usage["write memory"]),
    ]
    for label, size in rows:
        print(f"  {label:<56}{size:>5}")
    verdict = "ok" if ratio <= MEMORY_GOAL else "MISSED"
    print(f"  store / JSON string: {ratio:.2f} (bar {MEMORY_GOAL}, goal 1.0)  {verdict}")
    starts = start_times(3 if args.quick else 10)
    print()
    print(
        f"LabServer start to first PING: median {statistics.median(starts) * 1000:.0f} ms, "
        f"best {min(starts) * 1000:.0f} ms ({len(starts)} starts)"
    )
    if missed and not args.quick:
        print(f"\nBelow goal: {', '.join(missed)} (numbers vary with machine load; run again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
