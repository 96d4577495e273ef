"""``doctor(client)``: read a live server's memory and persistence settings, and say which of
them lose or refuse sessions, and what to change.

It only reads (``CONFIG GET``, ``INFO``), so it is safe on production servers and on each node
of a Redis Cluster (pass a ``redis.Redis`` for the node). Where ``CONFIG`` is disabled or
renamed, as managed services often do, it says so in a finding instead of failing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import redis
import redis.exceptions as rex

Level = Literal["ok", "warning", "danger"]
LEVELS: tuple[Level, ...] = ("ok", "warning", "danger")
SETTINGS = ("maxmemory", "maxmemory-policy", "save", "appendonly", "appendfsync")
MARKS = {"ok": "✅", "warning": "⚠️", "danger": "❌"}


@dataclass(frozen=True)
class Finding:
    """One verdict: how bad (``ok``/``warning``/``danger``), about which setting, and why."""

    level: Level
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{MARKS[self.level]} {self.level.upper():<7} {self.setting}: {self.message}"


@dataclass(frozen=True)
class Report:
    """Every finding for one server, worst first when printed."""

    findings: tuple[Finding, ...]

    def __iter__(self) -> Iterator[Finding]:
        return iter(self.findings)

    def __len__(self) -> int:
        return len(self.findings)

    @property
    def worst(self) -> Level:
        return max((f.level for f in self.findings), key=LEVELS.index, default="ok")

    @property
    def ok(self) -> bool:
        """True when every finding is ``ok``."""
        return self.worst == "ok"

    def about(self, setting: str) -> list[Finding]:
        """The findings for one setting, e.g. ``report.about("maxmemory-policy")``."""
        return [f for f in self.findings if f.setting == setting]

    def __str__(self) -> str:
        ordered = sorted(self.findings, key=lambda f: -LEVELS.index(f.level))
        return "\n".join(str(f) for f in ordered)


def doctor(client: redis.Redis) -> Report:
    """Inspect ``maxmemory``, ``maxmemory-policy`` and persistence of the server ``client`` uses."""
    try:
        config = _config(client)
    except rex.ResponseError as error:  # unknown/renamed command, or ACL NOPERM
        return Report(
            (
                Finding(
                    "warning",
                    "CONFIG",
                    f"CONFIG GET is not allowed here ({error}), so maxmemory, the eviction "
                    "policy and persistence cannot be checked: run doctor() as a user allowed "
                    "CONFIG GET, or read them in redis.conf or your provider's console.",
                ),
            )
        )
    info = client.info()
    findings = [
        *_memory(config, info),
        *_policy(config, info),
        *_persistence(config),
    ]
    return Report(tuple(findings))


def _config(client: redis.Redis) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in SETTINGS:
        for key, value in client.config_get(name).items():
            found[_text(key)] = _text(value)
    return found


def _memory(config: dict[str, str], info: dict) -> list[Finding]:
    limit = int(config.get("maxmemory", "0"))
    if limit == 0:
        return [
            Finding(
                "warning",
                "maxmemory",
                "0 = no limit: Redis grows until the machine swaps (every request slows down) "
                "or the kernel's OOM killer kills it (every session lost). Set maxmemory to "
                "what the machine can spare, e.g. CONFIG SET maxmemory 2gb (and in redis.conf).",
            )
        ]
    findings = [
        Finding(
            "ok",
            "maxmemory",
            f"limit {_size(limit)}: Redis never grows past it; what it does when full "
            "is the maxmemory-policy's job.",
        )
    ]
    evicted = int(info.get("evicted_keys", 0))
    if evicted:
        findings.append(
            Finding(
                "warning",
                "maxmemory",
                f"{evicted} keys were evicted since the server started: those users were "
                "logged out or lost their carts. Raise maxmemory if that happens often.",
            )
        )
    return findings


def _policy(config: dict[str, str], info: dict) -> list[Finding]:
    policy = config.get("maxmemory-policy", "noeviction")
    keys, expiring = _key_counts(info)
    without_ttl = keys - expiring
    if policy == "noeviction":
        return [
            Finding(
                "danger",
                "maxmemory-policy",
                "noeviction: when memory is full every write fails with OOM, so new logins "
                "and cart updates are refused (reads still work). For sessions use "
                "CONFIG SET maxmemory-policy allkeys-lru.",
            )
        ]
    if policy == "allkeys-lru":
        return [
            Finding(
                "ok",
                "maxmemory-policy",
                "allkeys-lru: when full, Redis evicts the least recently used keys. Any session "
                "may go, but idle ones first; for sessions that is acceptable: the user logs in "
                "again (the cart is lost unless the shop also keeps it elsewhere).",
            )
        ]
    if policy == "allkeys-lfu":
        return [
            Finding(
                "warning",
                "maxmemory-policy",
                "allkeys-lfu: when full, Redis evicts the least frequently used keys, and a "
                "brand-new key starts with a low counter: fresh logins go before idle old "
                "sessions (lesson 04 measures it). For sessions use allkeys-lru.",
            )
        ]
    if policy == "allkeys-random":
        return [
            Finding(
                "warning",
                "maxmemory-policy",
                "allkeys-random: when full, active users are logged out as readily as idle "
                "ones. Use allkeys-lru, which evicts idle sessions first.",
            )
        ]
    # volatile-*: only keys with a TTL can be evicted
    if without_ttl > 0:
        return [
            Finding(
                "danger",
                "maxmemory-policy",
                f"{policy} evicts only keys with a TTL, and {without_ttl} of {keys} keys have "
                "no TTL: those can never be evicted, and once they fill the memory every write "
                "fails as with noeviction. Give every session a TTL (SET ... EX), or use "
                "allkeys-lru.",
            )
        ]
    level: Level = "warning" if policy == "volatile-random" else "ok"
    advice = (
        " Random eviction ignores activity: prefer volatile-lru or allkeys-lru."
        if level == "warning"
        else ""
    )
    return [
        Finding(
            level,
            "maxmemory-policy",
            f"{policy}: every key has a TTL now, so every session can be evicted; but a key "
            f"written without TTL later can never be (allkeys-lru has no such trap).{advice}",
        )
    ]


def _persistence(config: dict[str, str]) -> list[Finding]:
    save = config.get("save", "").strip()
    aof = config.get("appendonly", "no") == "yes"
    fsync = config.get("appendfsync", "everysec")
    if not save and not aof:
        return [
            Finding(
                "danger",
                "persistence",
                'no RDB snapshots (save "") and no AOF (appendonly no): any restart, '
                "crash or upgrade logs every user out and empties every cart. Turn on "
                "CONFIG SET appendonly yes (appendfsync everysec).",
            )
        ]
    findings = []
    if not aof:
        findings.append(
            Finding(
                "warning",
                "save",
                f"RDB snapshots only (save {save}): a crash loses every session created or "
                "changed since the last snapshot. Add AOF: CONFIG SET appendonly yes.",
            )
        )
        return findings
    if fsync == "always":
        findings.append(
            Finding(
                "ok",
                "appendfsync",
                "AOF with appendfsync always: nothing acknowledged is lost even on power loss, "
                "at the price of one disk flush per write (the slowest choice).",
            )
        )
    elif fsync == "everysec":
        findings.append(
            Finding(
                "ok",
                "appendfsync",
                "AOF with appendfsync everysec: a Redis crash loses nothing, or up to about "
                "the last 2 s of writes when the disk is slow; a power cut or OS crash about "
                "the last second. The usual choice for sessions.",
            )
        )
    else:
        findings.append(
            Finding(
                "warning",
                "appendfsync",
                f"AOF with appendfsync {fsync}: a Redis crash loses nothing, but on a power cut "
                "or OS crash the OS decides what reached the disk (on Linux up to ~30 s of "
                "sessions). Use CONFIG SET appendfsync everysec.",
            )
        )
    return findings


def _key_counts(info: dict) -> tuple[int, int]:
    """Keys and keys with a TTL, summed over every database (``INFO keyspace``)."""
    keys = expiring = 0
    for name, value in info.items():
        if name.startswith("db") and isinstance(value, dict):
            keys += int(value.get("keys", 0))
            expiring += int(value.get("expires", 0))
    return keys, expiring


def _size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 1024:.0f} KiB"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
