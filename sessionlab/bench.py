"""How much the store's guarantees cost: ``python -m sessionlab.bench`` (``make bench``).

On one private :class:`~sessionlab.server.LabServer`, each store call against the plain
redis-py command a hand-written store would send for the same job, same server, same client,
same data (the course's sample session, :mod:`sessionlab.sample`):

    create  store.create(...)          vs  json.dumps + SET key <json> EX 3600
    load    store.load(...)            vs  GET key + json.loads   (load also slides the expiry)
    get     store.get(...)             vs  GET key + json.loads
    add     store.add_to_cart(...)     vs  HINCRBY key sku 1
    patch   store.patch(one field)     vs  json.dumps + HSET key field <json>

Both sides encode or decode the data on each call, as a hand-written store would.

Raw and store run op by op in turns, so that load from other processes slows both alike; the
ratio is the median over batches, the ops/s those of the fastest batch.

Then the floors: for create, load and add, what designs that do less than the store (no checks,
no parsing, no script, or a script that does nothing) score against the same raw command, the
same way. A bar above a floor cannot be met by any store with that floor's shape.

Also prints bytes per session (43-character id) in the store's hash against one JSON string
under one key (what Flask-Session stores), and how long a LabServer takes from start to first
PING.
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
from .store import _ENCODER, SessionStore, profile_fields

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


def compare(
    raw: Callable[[str], object],
    ours: Callable[[str], object],
    ids: list[str],
    rounds: int,
) -> tuple[float, float, float]:
    """(raw ops/s, ours ops/s, ours/raw): ``rounds`` times over ``ids``, in batches of
    :data:`CHUNK`; the ops/s are those of the fastest batch, the ratio the median of the
    batches' ratios."""
    batches = [
        paired_batch(raw, ours, ids[start : start + CHUNK])
        for _ in range(rounds)
        for start in range(0, len(ids), CHUNK)
    ]
    return (
        1 / min(r for r, _ in batches),
        1 / min(o for _, o in batches),
        statistics.median(r / o for r, o in batches),
    )


def throughput(
    client: redis.Redis, store: SessionStore, ops: int, rounds: int, inside: dict, below: list
) -> list[tuple[str, float, float, float]]:
    """(operation, raw ops/s, store ops/s, store/raw) for each operation of :data:`GOALS`;
    ``inside[operation]`` gets what Redis spent per call (:func:`server_costs`), ``below``
    the floors of the operation (:func:`floors`: operation, design, ratio), measured right
    after it on the same sessions.

    Each round runs ``ops`` of each operation both ways.
    """
    ids = [store.new_id() for _ in range(ops)]
    raw = raw_calls(client)
    ours: dict[str, Callable[[str], object]] = {
        "create": lambda i: store.create(i, PROFILE),
        "load": store.load,
        "get": store.get,
        "add": lambda i: store.add_to_cart(i, "SKU-RED-MUG", 1),
        "patch": lambda i: store.patch(i, {"name": "Alice"}),
    }
    lower = floors(client, store)
    results = []
    for name in GOALS:
        client.config_resetstat()
        results.append((name, *compare(raw[name], ours[name], ids, rounds)))
        inside[name] = server_costs(client)
        for design, call in lower.get(name, {}).items():
            below.append((name, design, compare(raw[name], call, ids, rounds)[2]))
    return results


def raw_calls(client: redis.Redis) -> dict[str, Callable[[str], object]]:
    """What a hand-written store sends for each operation of :data:`GOALS`, by session id."""

    def raw_key(session_id: str) -> str:
        return f"raw:{session_id}"

    return {
        "create": lambda i: client.set(raw_key(i), json.dumps(PROFILE), ex=3600),
        "load": lambda i: json.loads(client.get(raw_key(i))),
        "get": lambda i: json.loads(client.get(raw_key(i))),
        "add": lambda i: client.hincrby(raw_key(i) + ":cart", "SKU-RED-MUG", 1),
        "patch": lambda i: client.hset(raw_key(i) + ":h", "p:name", json.dumps("Alice")),
    }


def floors(client: redis.Redis, store: SessionStore) -> dict[str, dict[str, Callable]]:
    """For create, load and add: designs that do less than the store, by session id.

    Each keeps only part of the store's work, so each is a lower bound of the store's time: the
    store's own script sent bare (what its Python checks and parsing cost is the gap to the
    store), for create also with the fields JSON-encoded on each call but not checked (the
    least a hash of one field per profile key costs the client); a script that does nothing
    with the same arguments (the least any Lua design costs); and the plain commands without a
    script (a transaction that writes the same hash, or HGETALL alone: no slide, no TTL, no
    parsing). Writes go to keys of their own.
    """
    execute = client.execute_command
    store.load_scripts()
    sha = {name: script.sha for name, script in store._scripts.items()}
    empty = client.script_load("return 1")
    returns_hash = client.script_load(
        "#!lua flags=no-writes\nreturn redis.call('HGETALL', KEYS[1])"
    )
    idle, absolute = store.idle_ttl, store.absolute_ttl
    head = (idle, absolute, "", "")  # CREATE's arguments before the fields: no user, no limit
    fields = profile_fields(PROFILE)
    mapping = {**dict(zip(fields[::2], fields[1::2], strict=True)), "_c": 0, "_a": 0, "_i": idle}

    def floor_key(session_id: str) -> str:
        return f"floor:{{{session_id}}}"

    def transaction(session_id: str) -> object:
        key = floor_key(session_id)
        pipe = client.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=mapping)
        pipe.expire(key, idle)
        return pipe.execute()

    def encoded_unchecked(session_id: str) -> object:  # the store's encoder, not its checks
        each = [x for name, value in PROFILE.items() for x in (f"p:{name}", _ENCODER.encode(value))]
        return execute("EVALSHA", sha["create"], 1, floor_key(session_id), *head, *each)

    return {
        "create": {
            "the store's script, sent bare": lambda i: execute(
                "EVALSHA", sha["create"], 1, floor_key(i), *head, *fields
            ),
            "the same, each field encoded, unchecked": encoded_unchecked,
            "a script that does nothing": lambda i: execute(
                "EVALSHA", empty, 1, floor_key(i), *head, *fields
            ),
            "no script: MULTI DEL HSET EXPIRE EXEC": transaction,
        },
        "load": {
            "the store's script, sent bare": lambda i: execute(
                "EVALSHA", sha["load"], 1, store.key(i)
            ),
            "a script that only returns HGETALL": lambda i: execute(
                "EVALSHA", returns_hash, 1, store.key(i)
            ),
            "no script: HGETALL alone, not parsed": lambda i: execute("HGETALL", store.key(i)),
        },
        "add": {
            "the store's script, sent bare": lambda i: execute(
                "EVALSHA", sha["add"], 1, store.key(i), "c:SKU-RED-MUG", 1
            ),
            "a script that does nothing": lambda i: execute(
                "EVALSHA", empty, 1, store.key(i), "c:SKU-RED-MUG", 1
            ),
        },
    }


def memory(client: redis.Redis, store: SessionStore) -> dict[str, int]:
    """``MEMORY USAGE`` in bytes of one sample session (43-character id) in each layout."""
    session_id = store.new_id()
    store.create(session_id, PROFILE)
    for sku, quantity in CART.items():
        store.set_quantity(session_id, sku, quantity)
    leftover = [
        k for k in client.scan_iter(f"{store.prefix}:*{session_id}*") if k != store.key(session_id)
    ]
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
        "other keys": sum(client.memory_usage(k) or 0 for k in leftover),  # none: one key
    }
    client.delete(flask, one_field)
    return usage


def server_costs(client: redis.Redis) -> tuple[float, float]:
    """Microseconds per call inside Redis (``INFO commandstats``) since the last reset: the raw
    command's, and the store's script's (EVALSHA; the commands it calls are counted in it)."""
    stats = client.info("commandstats")
    raw = [
        stats[f"cmdstat_{name}"]["usec_per_call"]
        for name in ("set", "get", "hincrby", "hset")
        if f"cmdstat_{name}" in stats
    ]
    return (raw[0] if raw else 0.0), stats.get("cmdstat_evalsha", {}).get("usec_per_call", 0.0)


def logout_scaling(
    client: redis.Redis, sizes: tuple[int, ...], per_user: int = 5, repeats: int = 30
) -> list[tuple[int, float, float, int]]:
    """(total sessions, logout_everywhere s, sessions_of s, Redis commands run for both): the
    median times for one user with ``per_user`` sessions while the server holds ``size``
    sessions in all, and how many commands Redis ran for them (scripts' inner calls included).

    The filler sessions are written through a pipeline (no user); 100 more users with
    ``per_user`` sessions each are linked as usual, so the user index is not alone either.
    """
    store = SessionStore(client, prefix="scale")
    filler = SessionStore(client.pipeline(transaction=False), prefix="scale")
    for n in range(100):
        for k in range(per_user):
            store.create(f"u{n}-{k}", PROFILE, user_id=f"U{n}")
    written = 100 * per_user
    store.create("warm-up", PROFILE, user_id="ME")  # loads the scripts: not timed
    store.logout_everywhere("ME")
    results = []
    for size in sizes:
        while written < size:
            batch = min(1000, size - written)
            for n in range(written, written + batch):
                filler.create(f"f{n}", PROFILE)
            filler.client.execute()
            written += batch
        logout, listing = [], []
        for _ in range(repeats):
            for k in range(per_user):
                store.create(f"me-{k}", PROFILE, user_id="ME")
            client.config_resetstat()
            started = time.perf_counter()
            store.sessions_of("ME")
            listed = time.perf_counter()
            ended = store.logout_everywhere("ME")
            logout.append(time.perf_counter() - listed)
            listing.append(listed - started)
            assert ended == per_user
        stats = client.info("commandstats")  # of the last repeat: load-independent
        commands = sum(entry["calls"] for entry in stats.values())
        results.append(
            (written + per_user, statistics.median(logout), statistics.median(listing), commands)
        )
    return results


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
    parser.add_argument(
        "--logout",
        action="store_true",
        help="only: logout_everywhere/sessions_of of one user as total sessions grow 1k -> 100k",
    )
    args = parser.parse_args(argv)
    if args.logout:
        return main_logout(args.quick)
    if args.quick:
        args.ops, args.rounds = 2 * CHUNK, 1

    with LabServer() as server:
        client = server.client()
        allocator = client.info("memory").get("mem_allocator", "?")
        store = SessionStore(client, prefix="bench")
        print(
            f"{server_name(client.info('server'))} ({server.binary}, {allocator}), "
            f"redis-py {redis.__version__} ({reply_parser()}), "
            f"{args.ops} ops x {args.rounds} rounds, one client; raw and store op by op in turns"
        )
        print()
        print(f"{'operation':<10}{'raw ops/s':>12}{'store ops/s':>13}{'store/raw':>11}{'goal':>7}")
        missed = []
        inside: dict[str, tuple[float, float]] = {}
        below: list[tuple[str, str, float]] = []
        measured = throughput(client, store, args.ops, args.rounds, inside, below)
        for name, raw, ours, ratio in measured:
            verdict = "ok" if ratio >= GOALS[name] else "MISSED"
            if verdict != "ok":
                missed.append(name)
            print(
                f"{name:<10}{raw:>12,.0f}{ours:>13,.0f}{ratio:>11.2f}{GOALS[name]:>7.2f}  {verdict}"
            )
        usage = memory(client, store)
        client.close()

    print()
    print(
        "In Redis (INFO commandstats, microseconds per call, raw / store): "
        + "  ".join(f"{name} {raw:.1f} / {ours:.1f}" for name, (raw, ours) in inside.items())
    )
    print()
    print("Floors: designs doing less than the store, against the same raw command, the same way")
    print(f"{'operation':<10}{'design':<42}{'ratio':>7}{'goal':>7}")
    for name, design, ratio in below:
        verdict = "" if ratio >= GOALS[name] else "below the goal"
        print(f"{name:<10}{design:<42}{ratio:>7.2f}{GOALS[name]:>7.2f}  {verdict}".rstrip())
    print()
    ratio = (usage["session"] + usage["other keys"]) / usage["json"]
    print("Memory (MEMORY USAGE, bytes; sample profile + 3-item cart, 43-character id)")
    rows = [
        ("one session in the store (one hash)", usage["session"]),
        ("the same data as one JSON string (Flask-Session)", usage["json"]),
        ("the store's hash with the profile as one JSON field", usage["one field"]),
        ("other keys of that session (none: it is one key)", usage["other keys"]),
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


def reply_parser() -> str:
    """Which reply parser redis-py uses: hiredis (C) when installed, else pure Python."""
    from redis.utils import HIREDIS_AVAILABLE

    if HIREDIS_AVAILABLE:
        import hiredis

        return f"hiredis {hiredis.__version__}"
    return "Python parser, no hiredis"


def server_name(info: dict) -> str:
    """``Redis 7.0.15`` or ``Valkey 9.1.2`` (Valkey also reports a Redis-compatible version)."""
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


def main_logout(quick: bool) -> int:
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    with LabServer() as server:
        client = server.client()
        info = client.info("server")
        print(f"{server_name(info)}: one user with 5 sessions, others around it")
        print()
        print(
            f"{'sessions':>9}{'logout_everywhere ms':>22}{'sessions_of ms':>16}{'vs first':>10}"
            f"{'Redis commands':>16}"
        )
        rows = logout_scaling(client, sizes, repeats=5 if quick else 30)
        for keys, logout, listing, commands in rows:
            print(
                f"{keys:>9,}{logout * 1000:>22.2f}{listing * 1000:>16.2f}"
                f"{logout / rows[0][1]:>10.2f}{commands:>16}"
            )
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
