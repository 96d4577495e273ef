"""Lesson 03's experiments: what a crash loses in each persistence mode, and what a mode costs.

One flow, defined once in :class:`CrashLab` and used by the lesson, its panel and
:func:`crash_experiment`: start a server in a mode, write sessions with the
:class:`~sessionlab.store.SessionStore`, optionally ``BGSAVE``, kill the server with SIGKILL,
start it again on the same data directory and count the sessions the store still finds.

It also notes when each write was acknowledged and when the server was killed, so a loss can be
checked against what a mode promises: ``appendfsync always`` and ``no`` write every command to
the AOF before replying (a process crash loses nothing); ``everysec`` may hold that ``write()``
back for up to 2 s while a slow background ``fsync()`` runs, after the client had its reply.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .errors import InvalidPersistenceSetting
from .persistence import bgsave, check_mode, mode_directives
from .sample import numbered
from .server import LabServer, find_redis_server, server_version
from .store import SessionStore

#: More sessions than this per call would keep a lesson busy for minutes.
MAX_SESSIONS = 1_000_000
#: ``appendfsync everysec``: the server holds the AOF ``write()`` back while a background
#: ``fsync()`` is still running, for up to 2 s (then it writes anyway and counts
#: ``aof_delayed_fsync``). A SIGKILL in that window loses writes that were already
#: acknowledged: at most those of the last ~2 s. The bound checked allows 1 s more for the
#: server's 100 ms timer and for scheduling delays on a busy machine.
EVERYSEC_HOLD_BACK = 2.0
EVERYSEC_LOSS_BOUND = 3.0


def check_count(count: object, what: str = "number of sessions", minimum: int = 1) -> int:
    """Return ``count`` if it is an int from ``minimum`` to :data:`MAX_SESSIONS`."""
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidPersistenceSetting(
            f"{what} must be a whole number, not {type(count).__name__}: {count!r}"
        )
    if not minimum <= count <= MAX_SESSIONS:
        raise InvalidPersistenceSetting(f"{what} is {count}: use {minimum} to {MAX_SESSIONS:,}.")
    return count


def write_sessions(
    store: SessionStore, count: int, first: int = 1, acked: list[float] | None = None
) -> list[str]:
    """Create ``count`` numbered sample sessions from ``first``, one write each; their ids.

    If ``acked`` is given, the ``time.monotonic()`` of each reply is appended to it.
    """
    check_count(count)
    check_count(first, "first session number")
    sessions = numbered(count, first)  # the course's numbered sample sessions
    for session_id, profile in sessions:
        store.create(session_id, profile)
        if acked is not None:
            acked.append(time.monotonic())
    return [session_id for session_id, _ in sessions]


def count_sessions(store: SessionStore, ids: Iterable[str]) -> int:
    """How many of ``ids`` the store still finds (expired or lost ones are ``None``)."""
    return sum(store.get(session_id) is not None for session_id in ids)


@dataclass(frozen=True)
class CrashResult:
    """What a crash did: ``written`` sessions acknowledged, ``survived`` after the restart."""

    mode: str
    written: int
    survived: int
    snapshot: int | None = None  # sessions in the last snapshot (BGSAVE), if there was one
    #: Seconds from the reply to the oldest lost write to the SIGKILL (None: nothing lost).
    oldest_lost_age: float | None = None
    #: The lost sessions are the last ones written (the AOF keeps order); True if none lost.
    lost_are_latest: bool = True

    @property
    def lost(self) -> int:
        return self.written - self.survived

    def within_everysec_bound(self) -> bool:
        """What ``appendfsync everysec`` promises for a process crash: only the latest writes,
        acknowledged at most :data:`EVERYSEC_LOSS_BOUND` s before the kill, may be lost."""
        age = self.oldest_lost_age
        return self.lost_are_latest and (age is None or age <= EVERYSEC_LOSS_BOUND)

    def __str__(self) -> str:
        return f"{self.mode}: {self.survived}/{self.written} survived, {self.lost} lost"


class CrashLab:
    """A private server in one persistence mode, and the sessions written to it.

    ``mode`` is a name from :data:`~sessionlab.persistence.MODES` or a dict of directives.
    Call :meth:`start`, then :meth:`write`, :meth:`snapshot`, :meth:`crash`, :meth:`restart`
    in any order; :meth:`close` stops the server and removes its data directory.
    """

    def __init__(
        self, mode: str | Mapping[str, Any] = "none", *, binary: str | None = None
    ) -> None:
        if isinstance(mode, Mapping):
            self.mode, directives = "custom", dict(mode)
        else:
            self.mode = check_mode(mode)
            directives = mode_directives(mode, server_version(find_redis_server(binary)))
        self.server = LabServer(binary=binary, **directives)
        self.ids: list[str] = []
        self.acked_at: list[float] = []  # time.monotonic() of each write's reply, as ids
        self.killed_at: float | None = None  # time.monotonic() of the last SIGKILL
        self.snapshot_size: int | None = None
        self._client: redis.Redis | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "down"
        return f"<CrashLab {self.mode} {state}, {len(self.ids)} sessions written>"

    def __enter__(self) -> CrashLab:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self.server.running

    @property
    def client(self) -> redis.Redis:
        """A client of the server as it runs now (a new one after each restart)."""
        if self._client is None:
            self._client = self.server.client()
        return self._client

    @property
    def store(self) -> SessionStore:
        return SessionStore(self.client)

    def start(self) -> CrashLab:
        """Start the server (on the same data directory after a crash)."""
        self.server.start()
        return self

    def write(self, count: int) -> list[str]:
        """Write ``count`` more numbered sample sessions; their ids."""
        ids = write_sessions(self.store, count, first=len(self.ids) + 1, acked=self.acked_at)
        self.ids += ids
        return ids

    def snapshot(self) -> dict[str, Any]:
        """``BGSAVE`` and wait until it is on disk; ``INFO persistence`` after it."""
        info = bgsave(self.client)
        self.snapshot_size = self.count()  # not len(ids): an earlier crash may have lost some
        return info

    def crash(self) -> None:
        """SIGKILL the server: no shutdown code runs, nothing more is saved."""
        self._forget_client()
        self.killed_at = time.monotonic()
        self.server.crash()

    def restart(self) -> int:
        """Start the server again on the same data directory; how many sessions it still has."""
        self._forget_client()
        self.server.start()
        return self.count()

    def count(self) -> int:
        """How many of the sessions written so far the store finds now."""
        return count_sessions(self.store, self.ids)

    def result(self) -> CrashResult:
        """What the crash lost: how many, whether the newest, and how old the oldest of them."""
        store = self.store
        found = [store.get(session_id) is not None for session_id in self.ids]
        lost = [index for index, there in enumerate(found) if not there]
        age = None
        if lost and self.killed_at is not None:
            age = self.killed_at - self.acked_at[lost[0]]
        latest = not lost or lost == list(range(lost[0], len(self.ids)))
        return CrashResult(self.mode, len(self.ids), sum(found), self.snapshot_size, age, latest)

    def close(self) -> None:
        self._forget_client()
        self.server.close()

    def _forget_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def crash_experiment(
    mode: str | Mapping[str, Any],
    sessions: int = 1000,
    more_after_bgsave: int | None = None,
    *,
    binary: str | None = None,
) -> CrashResult:
    """Write ``sessions``, maybe BGSAVE and write ``more_after_bgsave`` more, SIGKILL, restart."""
    check_count(sessions)
    if more_after_bgsave is not None:
        check_count(more_after_bgsave, "number of sessions after the BGSAVE", minimum=0)
    with CrashLab(mode, binary=binary) as lab:
        lab.write(sessions)
        if more_after_bgsave is not None:
            lab.snapshot()
            if more_after_bgsave:
                lab.write(more_after_bgsave)
        lab.crash()
        lab.restart()
        return lab.result()


# -- what a mode costs ---------------------------------------------------------------------


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
    mode: str, writes: int = 500, *, binary: str | None = None
) -> Throughput:
    """Time ``writes`` session creations on a fresh server in ``mode``.

    One client writes in sequence, so each write waits for its reply: with
    ``appendfsync always`` that includes the fsync. Startup is not timed.
    """
    check_mode(mode)
    check_count(writes, "number of writes")
    with CrashLab(mode, binary=binary) as lab:
        lab.store.create("warm-up", numbered(1)[0][1])  # loads the Lua script; not timed
        started = time.perf_counter()
        lab.write(writes)
        return Throughput(mode, writes, time.perf_counter() - started)


@dataclass(frozen=True)
class Spread:
    """Several runs of one mode: the median and the range of writes per second."""

    mode: str
    runs: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def low(self) -> float:
        return min(self.runs)

    @property
    def high(self) -> float:
        return max(self.runs)

    def __str__(self) -> str:
        return (
            f"{self.mode:13} median {self.median:7,.0f} writes/s  "
            f"(range {self.low:,.0f}-{self.high:,.0f} in {len(self.runs)} runs)"
        )


def spreads(results: Iterable[Throughput]) -> dict[str, Spread]:
    """Group repeated measurements by mode, in the order the modes first appear."""
    runs: dict[str, list[float]] = {}
    for result in results:
        runs.setdefault(result.mode, []).append(result.ops_per_second)
    return {mode: Spread(mode, tuple(values)) for mode, values in runs.items()}
