"""What survives a crash: persistence modes, waiting for saves, crash and cost experiments.

A *mode* is a name for a set of ``redis-server`` directives (:data:`MODES`)::

    with LabServer(**mode_directives("aof-everysec")) as server: ...

The experiments run on real servers: :func:`crash_experiment` writes sessions with the
:class:`~sessionlab.store.SessionStore`, kills the server with SIGKILL, starts it again on
the same data directory and counts what the store still finds; :func:`measure_write_throughput`
times the same session workload under a mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from .errors import InvalidPersistenceSetting, PersistenceError
from .server import LabServer, find_redis_server, server_version
from .store import SessionStore

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

MAX_SESSIONS = 1_000_000

#: A profile shaped like the seed notebook's; ``{i}`` makes each one different.
NAMES = ("Rohith", "Alice", "John", "Priya", "Chen", "Fatima", "Lucas", "Mia")
BROWSERS = ("Edge", "Chrome", "Firefox", "Safari")


def check_mode(mode: object) -> str:
    """Return ``mode`` if it names a mode in :data:`MODES`, else raise a readable error."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidPersistenceSetting(
            f"unknown persistence mode {mode!r}: use one of {', '.join(MODES)}."
        )
    return mode


def check_count(count: object, what: str = "number of sessions", minimum: int = 1) -> int:
    """Return ``count`` if it is an int from ``minimum`` to :data:`MAX_SESSIONS`."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidPersistenceSetting(
            f"{what} must be a whole number, not {type(count).__name__}: {count!r}"
        )
    if not minimum <= count <= MAX_SESSIONS:
        raise InvalidPersistenceSetting(f"{what} is {count}: use {minimum} to {MAX_SESSIONS:,}.")
    return count


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


# -- files on disk -----------------------------------------------------------------------


def aof_files(server: LabServer) -> list[Path]:
    """The files that make up the AOF now, for either layout.

    Redis 7.0+: the manifest in ``appendonlydir/`` and the base and incr files it lists
    (old ones left over from a rewrite are not part of it). Redis 6.2: ``appendonly.aof``.
    """
    folder = server.dir / str(server.directives.get("appenddirname") or "appendonlydir")
    manifests = sorted(folder.glob("*.manifest"))
    if manifests:
        files = [manifests[-1]]
        for line in manifests[-1].read_text().splitlines():
            parts = line.split()
            entry = dict(zip(parts[::2], parts[1::2], strict=False))
            if entry.get("type") in ("b", "i") and "file" in entry:
                files.append(folder / entry["file"].strip('"'))
        return files
    single = server.dir / str(server.directives.get("appendfilename") or "appendonly.aof")
    return [single] if single.is_file() else []


def aof_size(server: LabServer) -> int:
    """Bytes of AOF data on disk (base + incr files, or the one file), manifest excluded."""
    return sum(
        path.stat().st_size
        for path in aof_files(server)
        if path.suffix != ".manifest" and path.is_file()
    )


def aof_commands(path: Path, limit: int = 10) -> list[list[str]]:
    """The first ``limit`` commands in an AOF file (RESP), as lists of strings.

    An AOF is the write commands themselves, as clients send them. A file that starts with
    an RDB preamble (``REDIS...``, after a rewrite) holds a snapshot first: none returned.
    """
    commands: list[list[str]] = []
    with open(path, "rb") as aof:
        while len(commands) < limit:
            header = aof.readline()
            if not header.startswith(b"*"):
                break
            command = []
            for _ in range(int(header[1:])):
                size = int(aof.readline()[1:])
                command.append(aof.read(size + 2)[:-2].decode(errors="replace"))
            commands.append(command)
    return commands


# -- the session workload ----------------------------------------------------------------


def session_ids(count: int, first: int = 0, prefix: str = "user") -> list[str]:
    """Deterministic ids ``user-00000``, ``user-00001``, ...: reruns write the same keys."""
    return [f"{prefix}-{i:05d}" for i in range(first, first + count)]


def profile(i: int) -> dict[str, Any]:
    """The ``i``-th seed-like profile: user id, name and preferences."""
    return {
        "user_id": f"U{i:05d}",
        "name": NAMES[i % len(NAMES)],
        "preferences": {"theme": "dark" if i % 2 else "light", "browser": BROWSERS[i % 4]},
    }


def write_sessions(
    store: SessionStore, count: int, first: int = 0, ttl: int | None = None
) -> list[str]:
    """Create ``count`` sessions numbered from ``first``, one atomic write each; their ids."""
    check_count(count)
    check_count(first, "first session number", minimum=0)
    ids = session_ids(count, first)
    for number, session_id in enumerate(ids, start=first):
        store.create(session_id, profile(number), ttl)
    return ids


def count_sessions(store: SessionStore, ids: list[str]) -> int:
    """How many of ``ids`` the store still finds (expired or lost ones are ``None``)."""
    return sum(store.get(session_id) is not None for session_id in ids)


# -- experiments -------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashResult:
    """What a crash did to the sessions: ``written`` acknowledged, ``survived`` after restart."""

    mode: str
    written: int
    survived: int
    snapshot: int | None = None  # sessions written before the BGSAVE, if there was one

    @property
    def lost(self) -> int:
        return self.written - self.survived

    def __str__(self) -> str:
        return f"{self.mode}: {self.survived}/{self.written} survived, {self.lost} lost"


def crash_experiment(
    mode: str | Mapping[str, Any],
    sessions: int = 1000,
    more_after_bgsave: int | None = None,
    *,
    binary: str | None = None,
) -> CrashResult:
    """Write ``sessions``, optionally BGSAVE and write ``more_after_bgsave`` more, SIGKILL, restart.

    ``mode`` is a name from :data:`MODES` or a dict of directives (for "configure a server
    that loses nothing" exercises). Sessions are counted with the store after the restart.
    """
    check_count(sessions)
    if more_after_bgsave is not None:
        check_count(more_after_bgsave, "number of sessions after the BGSAVE", minimum=0)
    if isinstance(mode, Mapping):
        name, directives = "custom", dict(mode)
    else:
        name = check_mode(mode)
        directives = mode_directives(name, server_version(find_redis_server(binary)))
    with LabServer(binary=binary, **directives) as server:
        store = SessionStore(server.client())
        ids = write_sessions(store, sessions)
        snapshot = None
        if more_after_bgsave is not None:
            bgsave(store.client)
            snapshot = len(ids)
            ids += (
                write_sessions(store, more_after_bgsave, first=len(ids))
                if more_after_bgsave
                else []
            )
        server.crash()
        server.start()
        store = SessionStore(server.client())
        return CrashResult(name, len(ids), count_sessions(store, ids), snapshot)


@dataclass(frozen=True)
class Throughput:
    """``writes`` session creations under ``mode`` took ``seconds`` (one client, in sequence)."""

    mode: str
    writes: int
    seconds: float

    @property
    def ops_per_second(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else float("inf")

    def __str__(self) -> str:
        return f"{self.mode}: {self.ops_per_second:,.0f} writes/s"


def measure_write_throughput(
    mode: str, writes: int = 2000, *, binary: str | None = None
) -> Throughput:
    """Time ``writes`` session creations on a fresh server in ``mode``.

    One client writes in sequence, so each write waits for its reply: with
    ``appendfsync always`` that includes the fsync. Startup is not timed.
    """
    check_mode(mode)
    check_count(writes, "number of writes")
    directives = mode_directives(mode, server_version(find_redis_server(binary)))
    with LabServer(binary=binary, **directives) as server:
        store = SessionStore(server.client())
        store.create("warm-up", profile(0))  # loads the Lua script; not timed
        started = time.perf_counter()
        write_sessions(store, writes)
        return Throughput(mode, writes, time.perf_counter() - started)
