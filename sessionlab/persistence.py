"""Persistence settings and saves: named modes, and waiting for a snapshot or AOF rewrite.

A *mode* is a name for a set of ``redis-server`` directives (:data:`MODES`)::

    with LabServer(**mode_directives("aof-everysec")) as server: ...

The experiments that crash servers in these modes are in :mod:`sessionlab.crash`; reading
the AOF files on disk is :mod:`sessionlab.aof`.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from .errors import InvalidPersistenceSetting, PersistenceError
from .server import find_redis_server, server_version

#: Mode name -> what it means, in one line.
MODES: dict[str, str] = {
    "none": "no persistence: memory only",
    "rdb": "RDB snapshots at the default save points",
    "aof-always": "append-only file, fsync after every write",
    "aof-everysec": "append-only file, fsync once a second",
    "aof-no": "append-only file, fsync left to the OS",
}

#: Redis's own default save points: "after 3600 s if 1 write, 300 s if 100, 60 s if 10000".
RDB_SAVE_POINTS = (3600, 1, 300, 100, 60, 10000)


def check_mode(mode: object) -> str:
    """Return ``mode`` if it names a mode in :data:`MODES`, else raise a readable error."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidPersistenceSetting(
            f"unknown persistence mode {mode!r}: use one of {', '.join(MODES)}."
        )
    return mode


def mode_directives(mode: str, version: tuple[int, ...] | None = None) -> dict[str, Any]:
    """The ``LabServer`` directives for ``mode`` on a Redis of ``version`` (default: the one run).

    Redis 6.2 reads only one save point per ``--save`` on the command line and silently
    turns snapshots *off* when given several, so on 6.2 "rdb" leaves ``save`` unset
    (``None``): its built-in default is the same :data:`RDB_SAVE_POINTS`.
    """
    check_mode(mode)
    if version is None:
        version = server_version(find_redis_server())
    if mode == "none":
        return {"save": "", "appendonly": False}
    if mode == "rdb":
        save = None if version < (7,) else list(RDB_SAVE_POINTS)
        return {"save": save, "appendonly": False}
    return {"save": "", "appendonly": True, "appendfsync": mode.removeprefix("aof-")}


# -- waiting for background saves --------------------------------------------------------


def wait_for_bgsave(client: redis.Redis, timeout: float = 30.0) -> dict[str, Any]:
    """Block until no RDB snapshot is being written; return ``INFO persistence``.

    Polls ``rdb_bgsave_in_progress`` rather than ``LASTSAVE``: ``LASTSAVE`` counts whole
    seconds, so two saves in the same second look like none happened.
    """
    info = _wait_until_idle(client, ("rdb_bgsave_in_progress",), timeout, "BGSAVE")
    if info.get("rdb_last_bgsave_status") != "ok":
        raise PersistenceError(
            "the last BGSAVE failed (rdb_last_bgsave_status:"
            f"{info.get('rdb_last_bgsave_status')}); the server log says why, often a full "
            "disk or a data directory it cannot write."
        )
    return info


def wait_for_aof_rewrite(client: redis.Redis, timeout: float = 30.0) -> dict[str, Any]:
    """Block until no AOF rewrite is running or scheduled; return ``INFO persistence``."""
    info = _wait_until_idle(
        client, ("aof_rewrite_in_progress", "aof_rewrite_scheduled"), timeout, "BGREWRITEAOF"
    )
    if info.get("aof_last_bgrewrite_status") != "ok":
        raise PersistenceError(
            "the last BGREWRITEAOF failed (aof_last_bgrewrite_status:"
            f"{info.get('aof_last_bgrewrite_status')}); the server log says why."
        )
    return info


def bgsave(client: redis.Redis, timeout: float = 30.0) -> dict[str, Any]:
    """``BGSAVE`` and wait until the snapshot is on disk; return ``INFO persistence``."""
    # BGSAVE while another save or an AOF rewrite runs is an error: let those finish first.
    _wait_until_idle(
        client, ("rdb_bgsave_in_progress", "aof_rewrite_in_progress"), timeout, "BGSAVE"
    )
    client.execute_command("BGSAVE")
    return wait_for_bgsave(client, timeout)


def rewrite_aof(client: redis.Redis, timeout: float = 30.0) -> dict[str, Any]:
    """``BGREWRITEAOF`` and wait until the compacted file replaced the old one."""
    client.execute_command("BGREWRITEAOF")
    return wait_for_aof_rewrite(client, timeout)


def _wait_until_idle(
    client: redis.Redis, fields: tuple[str, ...], timeout: float, what: str
) -> dict[str, Any]:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidPersistenceSetting(f"timeout must be a number of seconds > 0, not {timeout!r}")
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        info = client.info("persistence")
        if all(int(info.get(field, 0)) == 0 for field in fields):
            return info
        if time.monotonic() >= deadline:
            busy = ", ".join(f"{field}:{info.get(field)}" for field in fields)
            raise PersistenceError(
                f"{what} still running after {timeout:g} s ({busy}): a large dataset or a slow "
                "disk needs a longer timeout."
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
