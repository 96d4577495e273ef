"""What a full Redis does to sessions: the hot/cold eviction experiment and memory helpers.

The experiment mirrors a shop: a first wave of users logs in; a few of them (the *hot* ones)
come back and keep browsing; the rest (the *cold* ones) left. Then a second wave logs in and
fills the server past ``maxmemory``. What survives depends on ``maxmemory-policy``:

* ``allkeys-lru`` / ``allkeys-lfu`` evict the idle users and keep the hot ones;
* ``allkeys-random`` evicts hot and cold alike;
* ``noeviction``, and ``volatile-*`` when keys have no TTL, refuse the new logins instead.

Redis's LRU clock counts whole seconds, so the experiment pauses ~2 s between writing,
reading the hot sessions, and writing again: otherwise every key looks equally old and LRU
is indistinguishable from random. Several policies run on their own servers side by side, so
one pair of pauses serves them all.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex

from .errors import InvalidSetting
from .server import LabServer
from .store import SessionStore, dump

POLICIES = (
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
SESSION_TTL = 3600
PAUSE = 2.0  # > 1 s: the LRU clock's resolution, plus the cron tick that refreshes it
FILL = 0.6  # the first wave fills this much of the room; the second as much again: 120 %
FILL_BATCH = 25
MAX_SESSIONS = 20_000
MIN_ROOM = 100 * 1024  # below this much room above an empty server, nothing meaningful fits
CART = {"SKU-1001": 2}

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*", re.IGNORECASE)
_UNITS = {
    None: 1,
    "b": 1,
    "k": 1000,
    "kb": 1024,
    "m": 1000**2,
    "mb": 1024**2,
    "g": 1000**3,
    "gb": 1024**3,
}


def sample_profile(number: int) -> dict[str, Any]:
    """The seed notebook's profile, numbered, plus what a shop keeps: recently viewed items."""
    return {
        "user_id": f"U{number:05d}",
        "name": "Rohith",
        "email": f"u{number:05d}@example.com",
        "preferences": {"theme": "dark", "browser": "Edge", "language": "en", "currency": "EUR"},
        "recently_viewed": [f"SKU-{1000 + (number * 7 + k) % 9000}" for k in range(40)],
        "csrf_token": hashlib.md5(f"csrf-{number}".encode()).hexdigest(),
    }


def parse_memory(value: str | int) -> int:
    """Bytes for a ``maxmemory`` value, with Redis's units: ``"2mb"`` is 2 MiB, ``"2m"`` 2 MB."""
    if isinstance(value, bool):
        raise InvalidSetting(f"memory limit {value!r} is not a size: use e.g. 2mb or 2097152.")
    if isinstance(value, int):
        number, unit = value, None
    else:
        found = _SIZE.fullmatch(str(value))
        if not found:
            raise InvalidSetting(
                f"memory limit {value!r} is not a size: use bytes or a unit as in redis.conf, "
                "e.g. 2mb, 1500kb, 3000000."
            )
        number = float(found.group(1))
        unit = found.group(2).lower() if found.group(2) else None
    size = int(number * _UNITS[unit])
    if size <= 0:
        raise InvalidSetting(
            f"memory limit {value!r} would be 0, which means *no limit* in Redis: use e.g. 2mb."
        )
    return size


def check_policy(policy: str) -> str:
    """Return ``policy`` if Redis knows it, else raise :class:`InvalidSetting`."""
    if policy not in POLICIES:
        raise InvalidSetting(f"maxmemory-policy {policy!r} does not exist: use one of {POLICIES}.")
    return policy


def is_out_of_memory(error: BaseException) -> bool:
    """True for Redis's "OOM command not allowed" reply, however redis-py wraps it.

    A plain command raises ``OutOfMemoryError``; inside a Lua script (the store's ``create``)
    Redis 6.2 reports it as a generic ``ResponseError`` ("Error running script ... -OOM").
    """
    if isinstance(error, rex.OutOfMemoryError):
        return True
    return isinstance(error, rex.ResponseError) and "OOM command not allowed" in str(error)


# -- the experiment ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvictionResult:
    """What one policy did to the sessions of one run."""

    policy: str
    maxmemory: int
    sessions: int  # per wave; two waves are written
    hot: int  # sessions of the first wave that came back
    hot_kept: int  # hot sessions still complete (profile and cart) at the end
    cold_kept: int  # first-wave sessions that did not come back, still complete
    new_kept: int  # second-wave sessions complete at the end
    refused: int  # session writes Redis refused with OOM
    evicted_keys: int  # INFO stats evicted_keys
    ttl: int | None

    @property
    def hot_kept_ratio(self) -> float:
        return self.hot_kept / self.hot if self.hot else 0.0

    def __str__(self) -> str:
        return (
            f"{self.policy:<15} hot kept {self.hot_kept:>3}/{self.hot}  "
            f"refused {self.refused:>4}  evicted_keys {self.evicted_keys:>4}"
        )


class _Run:
    """One policy's server and the sessions written to it."""

    def __init__(self, server: LabServer, policy: str, maxmemory: int, ttl: int | None) -> None:
        self.server = server
        self.policy = policy
        self.maxmemory = maxmemory
        self.ttl = ttl
        self.client = server.client()
        self.store = SessionStore(self.client, prefix="session")
        self.empty = 0
        self.refused = 0

    def configure(self) -> None:
        self.empty = used_memory(self.client)
        if self.maxmemory < self.empty + MIN_ROOM:
            raise InvalidSetting(
                f"maxmemory {self.maxmemory} bytes ({self.maxmemory / 2**20:.2f} MiB) leaves no "
                f"room for sessions: the empty server already uses {self.empty} bytes "
                f"({self.empty / 2**20:.2f} MiB). Use at least "
                f"{-(-(self.empty + MIN_ROOM) // 2**20)}mb."
            )
        self.client.config_set("maxmemory-policy", self.policy)
        self.client.config_set("maxmemory", self.maxmemory)

    def fill(self, fraction: float, limit: int) -> int:
        """Write sessions until ``fraction`` of the room above the empty server is used."""
        target = self.empty + fraction * (self.maxmemory - self.empty)
        written = 0
        while written < limit and used_memory(self.client) < target:
            batch = min(FILL_BATCH, limit - written)
            self.write(session_ids(written, written + batch))
            written += batch
        return written

    def write(self, ids: Sequence[str]) -> None:
        for session_id in ids:
            number = int(session_id.rsplit("-", 1)[1])
            try:
                if self.ttl is None:  # a session written without expiry, like the seed's SET
                    self.client.set(self.store.key(session_id), dump(sample_profile(number)))
                else:
                    self.store.create(session_id, sample_profile(number), self.ttl)
                for sku, quantity in CART.items():
                    self.store.add_to_cart(session_id, sku, quantity)
            except rex.ResponseError as error:
                if not is_out_of_memory(error):
                    raise
                self.refused += 1

    def come_back(self, ids: Iterable[str]) -> None:
        """A hot user browses: read profile and cart, slide the expiry (as a web app does)."""
        for session_id in ids:
            self.store.get(session_id)
            self.store.get_cart(session_id)
            if self.ttl is not None:
                self.store.touch(session_id, self.ttl)

    def kept(self, ids: Sequence[str]) -> int:
        """How many of these sessions are still complete: profile and cart both present."""
        pipe = self.client.pipeline(transaction=False)
        for session_id in ids:
            pipe.exists(self.store.key(session_id))
            pipe.hlen(self.store.cart_key(session_id))
        replies = pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        return sum(1 for profile, cart in pairs if profile and cart)


def session_ids(start: int, stop: int) -> list[str]:
    return [f"user-{number:05d}" for number in range(start, stop)]


def experiment(
    policies: Sequence[str] = ("allkeys-lru", "allkeys-lfu", "allkeys-random"),
    *,
    maxmemory: str | int = "2mb",
    sessions: int | None = None,
    fill: float = FILL,
    hot: int = 50,
    ttl: int | None = SESSION_TTL,
    pause: float = PAUSE,
    binary: str | None = None,
) -> list[EvictionResult]:
    """Run the hot/cold experiment once per policy, each on its own fresh server.

    First wave: ``sessions`` sessions (profile + a 2-item cart, expiring after ``ttl``;
    ``ttl=None`` writes profiles without expiry), or, if ``sessions`` is None, as many as fill
    ``fill`` of the room between the empty server and ``maxmemory``. Then a pause, the first
    ``hot`` sessions come back, another pause, and a second wave as large as the first.
    The servers run side by side so the pauses overlap.
    """
    policies = [check_policy(policy) for policy in policies]
    limit = parse_memory(maxmemory)
    if sessions is not None and not hot < sessions <= MAX_SESSIONS:
        raise InvalidSetting(
            f"sessions={sessions}: use more than hot={hot} and at most {MAX_SESSIONS}."
        )
    if not 0.1 <= fill <= 0.95:
        raise InvalidSetting(f"fill={fill}: use a fraction between 0.1 and 0.95.")
    if hot < 1:
        raise InvalidSetting(f"hot={hot}: at least one session must come back.")
    runs: list[_Run] = []
    try:
        for policy in policies:
            server = LabServer(binary=binary)
            runs.append(_Run(server, policy, limit, ttl))
            server.start()
        for run in runs:
            run.configure()
        if sessions is None:
            counts = [run.fill(fill, MAX_SESSIONS) for run in runs]
        else:
            for run in runs:
                run.write(session_ids(0, sessions))
            counts = [sessions] * len(runs)
        if min(counts) <= hot * 2:
            raise InvalidSetting(
                f"maxmemory {limit} bytes holds only {min(counts)} sessions, too few for "
                f"{hot} hot ones to mean anything: raise maxmemory (e.g. 2mb) or lower hot."
            )
        time.sleep(pause)
        for run in runs:
            run.come_back(session_ids(0, hot))
        time.sleep(pause)
        for run, count in zip(runs, counts, strict=True):
            run.write(session_ids(count, 2 * count))
        return [
            EvictionResult(
                policy=run.policy,
                maxmemory=limit,
                sessions=count,
                hot=hot,
                hot_kept=run.kept(session_ids(0, hot)),
                cold_kept=run.kept(session_ids(hot, count)),
                new_kept=run.kept(session_ids(count, 2 * count)),
                refused=run.refused,
                evicted_keys=int(run.client.info("stats")["evicted_keys"]),
                ttl=ttl,
            )
            for run, count in zip(runs, counts, strict=True)
        ]
    finally:
        for run in runs:
            run.client.close()
            run.server.close()


# -- memory ----------------------------------------------------------------------------------


def memory_usage(client: redis.Redis, key: str) -> int | None:
    """``MEMORY USAGE key SAMPLES 0``: bytes for the key, its value and their bookkeeping.

    ``None`` if the key does not exist (as Redis answers).
    """
    used = client.memory_usage(key, samples=0)
    return None if used is None else int(used)


def encoding(client: redis.Redis, key: str) -> str:
    """``OBJECT ENCODING key``: e.g. ``embstr``/``raw`` strings, ``ziplist``/``listpack`` hashes."""
    value = client.object("encoding", key)
    return value.decode() if isinstance(value, bytes) else str(value)


def compact_thresholds(client: redis.Redis) -> dict[str, int]:
    """The hash size limits below which Redis keeps a hash in its compact encoding.

    Redis 7.0 calls the encoding ``listpack`` (``hash-max-listpack-*``, old names still
    accepted); 6.2 calls it ``ziplist`` (``hash-max-ziplist-*``).
    """
    for name in ("listpack", "ziplist"):
        found = client.config_get(f"hash-max-{name}-*")
        found = {_text(k): int(v) for k, v in found.items()}
        entries, value = f"hash-max-{name}-entries", f"hash-max-{name}-value"
        if entries in found and value in found:
            return {entries: found[entries], value: found[value]}
    raise InvalidSetting("this server reports neither hash-max-listpack-* nor hash-max-ziplist-*.")


def flatten(data: dict[str, Any], parent: str = "") -> dict[str, str]:
    """``{"preferences": {"theme": "dark"}}`` -> ``{"preferences.theme": "dark"}`` for a hash."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{parent}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, str) else json.dumps(value)
    return flat


@dataclass(frozen=True)
class ProfileMemory:
    """One profile measured both ways on the same server."""

    json_bytes: int
    json_encoding: str
    hash_bytes: int
    hash_encoding: str
    hash_fields: int


def profile_memory(client: redis.Redis, profile: dict[str, Any]) -> ProfileMemory:
    """Store ``profile`` as a JSON string and as a flat hash (temporary keys), measure both."""
    string_key, hash_key = "sessionlab:measure:json", "sessionlab:measure:hash"
    fields = flatten(profile)
    try:
        client.set(string_key, dump(profile))
        client.hset(hash_key, mapping=fields)
        json_bytes, hash_bytes = memory_usage(client, string_key), memory_usage(client, hash_key)
        assert json_bytes is not None and hash_bytes is not None  # written just above
        return ProfileMemory(
            json_bytes=json_bytes,
            json_encoding=encoding(client, string_key),
            hash_bytes=hash_bytes,
            hash_encoding=encoding(client, hash_key),
            hash_fields=len(fields),
        )
    finally:
        client.delete(string_key, hash_key)


def session_bytes(store: SessionStore, session_id: str) -> int | None:
    """``MEMORY USAGE`` of a whole session: profile plus cart; ``None`` if there is no session."""
    profile = memory_usage(store.client, store.key(session_id))
    if profile is None:
        return None
    return profile + (memory_usage(store.client, store.cart_key(session_id)) or 0)


def per_million(bytes_per_session: float) -> float:
    """GB (10^9 bytes) that a million sessions of this size need, before any overhead."""
    return bytes_per_session * 1_000_000 / 1e9


def used_memory(client: redis.Redis) -> int:
    """``INFO memory`` ``used_memory``: what Redis has allocated, in bytes."""
    return int(client.info("memory")["used_memory"])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
