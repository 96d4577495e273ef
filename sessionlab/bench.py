"""How much the store's guarantees cost: ``python -m sessionlab.bench`` (``make bench``).

On one private :class:`~sessionlab.server.LabServer`, the store's create/get/update against
raw redis-py doing what the seed notebook does (``set(key, json, ex=3600)``, ``get`` +
``json.loads``, ``set``), same server, same client, same data (the seed's profile). Raw and
store run op by op in turns, so that load from other processes slows both alike; the ratio
is the median over batches, the ops/s those of the fastest batch.
Also prints bytes per session, a JSON string against a hash for the seed's profile, and how
long a LabServer takes from start to first PING.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import timeit
from collections.abc import Callable

import redis

from .server import LabServer
from .store import SessionStore, dump, load

PROFILE = {"user_id": "U001", "name": "Rohith", "preferences": {"theme": "dark", "browser": "Edge"}}
UPDATED = {
    "user_id": "U001",
    "name": "Alice",
    "preferences": {"theme": "light", "browser": "chrome"},
}
CART = {"SKU-1001": 1, "SKU-2002": 2, "SKU-3003": 3}
GOALS = {"create": 0.8, "get": 0.9, "update": 0.9}


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
    """(operation, raw ops/s, store ops/s, store/raw) for create, get, update.

    Each round runs ``ops`` of each operation both ways, in batches of :data:`CHUNK`; the
    ops/s are those of the fastest batch, the ratio is the median of the batches' ratios.
    """
    ids = [f"bench-{n}" for n in range(ops)]
    raw_key = "raw:{}".format  # the seed keys sessions by their bare id; a prefix keeps them apart

    raw = {
        "create": lambda i: client.set(raw_key(i), json.dumps(PROFILE), ex=3600),
        "get": lambda i: json.loads(client.get(raw_key(i))),
        "update": lambda i: client.set(raw_key(i), json.dumps(UPDATED)),
    }
    ours = {
        "create": lambda i: store.create(i, PROFILE),
        "get": lambda i: store.get(i),
        "update": lambda i: store.update(i, UPDATED),
    }
    results = []
    for name in ("create", "get", "update"):
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
    """``MEMORY USAGE`` in bytes of one session in each layout."""
    store.create("mem", PROFILE)
    for sku, quantity in CART.items():
        store.add_to_cart("mem", sku, quantity)
    client.set("mem:json", json.dumps(PROFILE), ex=3600)  # the seed's layout
    flat = {
        "user_id": PROFILE["user_id"],
        "name": PROFILE["name"],
        "preferences.theme": PROFILE["preferences"]["theme"],
        "preferences.browser": PROFILE["preferences"]["browser"],
    }
    client.hset("mem:hash", mapping=flat)
    client.expire("mem:hash", 3600)
    usage = {
        "profile": client.memory_usage(store.key("mem")),
        "cart": client.memory_usage(store.cart_key("mem")),
        "seed": client.memory_usage("mem:json"),
        "hash": client.memory_usage("mem:hash"),
    }
    usage["session"] = usage["profile"] + usage["cart"]
    return usage


def server_costs(client: redis.Redis) -> dict[str, float]:
    """Microseconds per call inside Redis (``INFO commandstats``) since the last reset."""
    stats = client.info("commandstats")
    return {
        name: stats[f"cmdstat_{name}"]["usec_per_call"]
        for name in ("set", "get", "evalsha")
        if f"cmdstat_{name}" in stats
    }


def client_costs() -> dict[str, float]:
    """Microseconds per call of the client-side work that differs (no network)."""
    text = json.dumps(PROFILE)
    work = {
        "json.dumps": lambda: json.dumps(PROFILE),
        "store dump": lambda: dump(PROFILE),  # check every value, then encode
        "json.loads": lambda: json.loads(text),
        "store load": lambda: load(text, "key"),
    }
    return {
        name: min(timeit.repeat(call, number=5000, repeat=7)) / 5000 * 1e6
        for name, call in work.items()
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
        version = ".".join(map(str, server.version))
        client = server.client()
        store = SessionStore(client, prefix="bench")
        print(
            f"Redis {version} ({server.binary}), redis-py {redis.__version__}, "
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
                f"{name:<10}{raw:>12,.0f}{ours:>13,.0f}{ratio:>11.2f}{GOALS[name]:>7.1f}  {verdict}"
            )
        inside = server_costs(client)
        usage = memory(client, store)
        client.close()

    outside = client_costs()
    print()
    print("Where the difference goes (microseconds per call)")
    print(
        "  in Redis (INFO commandstats):  "
        + "  ".join(f"{name.upper()} {usec:.1f}" for name, usec in inside.items())
        + "  (EVALSHA = create, with its SET and DEL)"
    )
    print(
        "  in Python, no network:         "
        + "  ".join(f"{name} {usec:.1f}" for name, usec in outside.items())
    )

    print()
    print("Memory (MEMORY USAGE, bytes)")
    rows = [
        ("one session: profile + cart of 3 items", usage["session"]),
        ("the seed's profile as the seed stores it (json.dumps)", usage["seed"]),
        ("the seed's profile as compact JSON (the store)", usage["profile"]),
        ("the seed's profile as a hash of its 4 fields", usage["hash"]),
    ]
    for label, size in rows:
        print(f"  {label:<56}{size:>5}")
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
