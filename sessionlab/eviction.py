"""Lesson 04's experiment: what a full Redis does to logged-in users, per eviction policy.

The experiment mirrors a shop: a first wave of users logs in; a few of them (the *hot* ones)
come back and keep browsing; the rest (the *cold* ones) left. Then a second wave of *new*
users logs in and fills the server past ``maxmemory``. What survives depends on
``maxmemory-policy``, and on whether a session is one key or two:

* ``allkeys-lru`` evicts the idle users and keeps the hot and the new ones;
* ``allkeys-lfu`` keeps the hot ones too, but a new key starts with a low access counter, the
  same as an idle session's in its first minute, so it evicts many brand-new logins;
* ``allkeys-random`` evicts hot and cold alike;
* ``noeviction``, and ``volatile-*`` when keys have no TTL, refuse the new logins instead;
* eviction removes *keys*: a session kept as two keys (profile, cart) can lose one of them.

Every server samples :data:`SAMPLES` keys per eviction. Redis's LRU clock counts whole seconds,
so the experiment pauses ~2 s between writing, reading the hot sessions, and writing again:
otherwise every key looks equally old and LRU is indistinguishable from random. Several policies
run on their own servers side by side, so one pair of pauses serves them all. Memory
measurements are :mod:`sessionlab.memory`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex

from .errors import InvalidSetting
from .memory import parse_memory, used_memory
from .server import LabServer
from .store import SessionStore

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
#: "store": sessions written with SessionStore; "two-keys": the old layout, a profile string
#: and a cart hash, written with raw commands (lesson 04's "before").
LAYOUTS = ("store", "two-keys")
SESSION_TTL = 3600
PAUSE = 2.0  # > 1 s: the LRU clock's resolution, plus the cron tick that refreshes it
FILL = 0.7  # the first wave fills this much of the room; the second as much again: 140 %
FILL_BATCH = 25
MAX_WAVE = 20_000  # sessions per wave, at most
MIN_ROOM = 100 * 1024  # below this much room above an empty server, nothing meaningful fits
CART = {"SKU-1001": 2}
#: LFU ages counters in whole minutes (``lfu-decay-time 1``): an experiment that includes an LFU
#: policy starts at most this many seconds into a minute, so both waves fall in the same one.
LFU_LATEST_START = 45
#: Pages a hot user views when they come back. LFU counts accesses: a login and a cart update
#: already touch a key several times, so a hot user must do more than one request to stand out.
VISITS = 5
#: Keys the server samples per eviction (``maxmemory-samples``, default 5). With 5, allkeys-lru
#: kept 36 to 50 of 50 hot sessions in repeated runs on Valkey 9.1 (one-key sessions, 2 MB); with
#: 10, documented as close to true LRU, 50 every time: the experiment shows the policies, not
#: the sampling noise. Each eviction costs a little more CPU.
SAMPLES = 10
#: How often ``experiment`` calls ``progress``: servers up, wave 1, pause, hot users back,
#: pause, wave 2, counted.
STEPS = 7


def shop_profile(number: int) -> dict[str, Any]:
    """A realistic-size profile (~650 bytes of JSON): the seed's fields plus what a shop keeps.

    Bigger than the course's sample profile on purpose: a 2 MB server then holds a few hundred
    sessions, enough to see who is evicted, and few enough to write in a second.
    """
    return {
        "user_id": f"U{number:05d}",
        "name": "Rohith",
        "email": f"u{number:05d}@example.com",
        "preferences": {"theme": "dark", "browser": "Edge", "language": "en", "currency": "EUR"},
        "recently_viewed": [f"SKU-{1000 + (number * 7 + k) % 9000}" for k in range(40)],
        "csrf_token": hashlib.md5(f"csrf-{number}".encode()).hexdigest(),
    }


def check_policy(policy: str) -> str:
    """Return ``policy`` if Redis knows it, else raise :class:`InvalidSetting`."""
    if policy not in POLICIES:
        raise InvalidSetting(f"maxmemory-policy {policy!r} does not exist: use one of {POLICIES}.")
    return policy


def session_ids(start: int, stop: int) -> list[str]:
    """``user-00000``, ``user-00001``, ...: the experiment's ids, the same on every run."""
    return [f"user-{number:05d}" for number in range(start, stop)]


def fill_until_refused(store: SessionStore, first: int = 0, limit: int = MAX_WAVE) -> int:
    """Log shop users in (``user-<first>``, ...) until the server refuses one; how many fitted.

    :class:`InvalidSetting` if all ``limit`` fit: the server has room, or its policy evicts.
    """
    for number in range(first, first + limit):
        try:
            store.create(f"user-{number:05d}", shop_profile(number))
        except rex.OutOfMemoryError:  # the store's StoreFull is one
            return number - first
    raise InvalidSetting(
        f"all {limit} logins fitted: the server is not full, or its maxmemory-policy evicts."
    )


def write_two_keys(
    client: redis.Redis,
    key: str,
    profile: dict[str, Any],
    cart: dict[str, int],
    ttl: int | None,
) -> None:
    """The old layout, with raw commands: ``SET key json EX ttl``, ``HSET key:cart``, ``EXPIRE``.

    Redis sees two unrelated keys: it may evict one and keep the other.
    """
    client.set(key, json.dumps(profile, separators=(",", ":")), ex=ttl)
    client.hset(f"{key}:cart", mapping=cart)
    if ttl is not None:
        client.expire(f"{key}:cart", ttl)


# -- the experiment ------------------------------------------------------------------------


@dataclass(frozen=True)
class EvictionResult:
    """What one policy did to the sessions of one run."""

    policy: str
    maxmemory: int
    layout: str
    sessions: int  # per wave; two waves are written
    hot: int  # sessions of the first wave that came back
    hot_kept: int  # hot sessions still complete (profile and cart) at the end
    cold_kept: int  # first-wave sessions that did not come back, still complete
    new_kept: int  # second-wave sessions complete at the end
    split: int  # sessions that kept their profile but lost their cart, or the reverse
    refused: int  # session writes Redis refused with OOM
    evicted_keys: int  # INFO stats evicted_keys
    ttl: int | None

    @property
    def hot_kept_ratio(self) -> float:
        return self.hot_kept / self.hot if self.hot else 0.0

    @property
    def new_lost(self) -> int:
        """Brand-new logins of the second wave that were evicted or refused."""
        return self.sessions - self.new_kept

    def __str__(self) -> str:
        return (
            f"{self.policy:<15} hot kept {self.hot_kept:>3}/{self.hot}  "
            f"new kept {self.new_kept:>4}/{self.sessions}  "
            f"refused {self.refused:>4}  evicted_keys {self.evicted_keys:>4}"
        )


class _Run:
    """One policy's server and the sessions written to it."""

    def __init__(
        self, server: LabServer, policy: str, maxmemory: int, ttl: int | None, layout: str
    ) -> None:
        self.server = server
        self.policy = policy
        self.maxmemory = maxmemory
        self.ttl = ttl
        self.layout = layout
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
        self.client.config_set("maxmemory-samples", SAMPLES)
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
                if self.layout == "two-keys":
                    key = self.store.key(session_id)
                    write_two_keys(self.client, key, shop_profile(number), CART, self.ttl)
                else:
                    self.store.create(session_id, shop_profile(number), self.ttl)
                    for sku, quantity in CART.items():
                        self.store.add_to_cart(session_id, sku, quantity)
            except rex.OutOfMemoryError:  # the store's StoreFull is one too
                self.refused += 1

    def come_back(self, ids: Iterable[str]) -> None:
        """A hot user browses :data:`VISITS` pages: each reads the session and slides its expiry."""
        for session_id in ids:
            for _ in range(VISITS):
                if self.layout == "two-keys":
                    key = self.store.key(session_id)
                    self.client.get(key)
                    self.client.hgetall(f"{key}:cart")
                    if self.ttl is not None:
                        self.client.expire(key, self.ttl)
                        self.client.expire(f"{key}:cart", self.ttl)
                else:
                    self.store.load(session_id)  # one round trip: profile, cart, slide

    def parts(self, ids: Sequence[str]) -> list[tuple[bool, bool]]:
        """For each session: (profile there, cart there)."""
        if self.layout == "two-keys":
            pipe = self.client.pipeline(transaction=False)
            for session_id in ids:
                key = self.store.key(session_id)
                pipe.exists(key)
                pipe.exists(f"{key}:cart")
            replies = pipe.execute()
            return [(bool(p), bool(c)) for p, c in zip(replies[::2], replies[1::2], strict=True)]
        return [
            (self.store.get(session_id) is not None, bool(self.store.get_cart(session_id)))
            for session_id in ids
        ]

    def kept(self, ids: Sequence[str]) -> int:
        """How many of these sessions are still complete: profile and cart both present."""
        return sum(1 for profile, cart in self.parts(ids) if profile and cart)

    def split(self, ids: Sequence[str]) -> int:
        """How many of these sessions lost one part (profile or cart) and kept the other."""
        return sum(1 for profile, cart in self.parts(ids) if profile != cart)


def experiment(
    policies: Sequence[str] = ("allkeys-lru", "allkeys-lfu", "allkeys-random"),
    *,
    maxmemory: str | int = "2mb",
    sessions: int | None = None,
    fill: float = FILL,
    hot: int = 50,
    ttl: int | None = SESSION_TTL,
    layout: str = "store",
    pause: float = PAUSE,
    binary: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[EvictionResult]:
    """Run the hot/cold experiment once per policy, each on its own fresh server.

    First wave: ``sessions`` sessions (a profile and a 1-item cart, expiring after ``ttl``;
    ``ttl=None``: no expiry, only with ``layout="two-keys"``), or, if ``sessions`` is None,
    as many as fill ``fill`` of the room between the empty server and ``maxmemory``. Then a
    pause, the first ``hot`` sessions come back, another pause, and a second wave as large as
    the first. ``progress(1)`` is called after each of :data:`STEPS` steps (``tqdm.update``).
    """
    policies = [check_policy(policy) for policy in policies]
    limit = parse_memory(maxmemory)
    if layout not in LAYOUTS:
        raise InvalidSetting(f"layout={layout!r}: use one of {LAYOUTS}.")
    if ttl is None and layout == "store":
        raise InvalidSetting(
            "ttl=None: the store gives every session a TTL; use layout='two-keys' to write "
            "sessions without one, as the seed notebook's plain SET did."
        )
    if sessions is not None and not hot < sessions <= MAX_WAVE:
        raise InvalidSetting(
            f"sessions={sessions}: use more than hot={hot} and at most {MAX_WAVE}."
        )
    if not 0.1 <= fill <= 0.95:
        raise InvalidSetting(f"fill={fill}: use a fraction between 0.1 and 0.95.")
    if hot < 1:
        raise InvalidSetting(f"hot={hot}: at least one session must come back.")
    step = progress or (lambda _n: None)

    def run() -> list[EvictionResult]:
        return _experiment_once(
            policies, limit, sessions, fill, hot, ttl, layout, pause, binary, step
        )

    if not any(policy.endswith("-lfu") for policy in policies):
        return run()
    for _attempt in range(2):
        _start_early_in_a_minute()
        minute = int(time.time() // 60)
        results = run()
        # A busy machine can stretch the run over a minute's end, and then the first wave's
        # LFU counters drop: what happens after a minute, not in a burst. Run it once more.
        if int(time.time() // 60) == minute:
            break
    return results


def _experiment_once(
    policies: list[str],
    limit: int,
    sessions: int | None,
    fill: float,
    hot: int,
    ttl: int | None,
    layout: str,
    pause: float,
    binary: str | None,
    step: Callable[[int], object],
) -> list[EvictionResult]:
    runs: list[_Run] = []
    try:
        for policy in policies:
            server = LabServer(binary=binary)
            runs.append(_Run(server, policy, limit, ttl, layout))
            server.start()
        for run in runs:
            run.configure()
        step(1)
        if sessions is None:
            counts = [run.fill(fill, MAX_WAVE) for run in runs]
        else:
            for run in runs:
                run.write(session_ids(0, sessions))
            counts = [sessions] * len(runs)
        if min(counts) <= hot * 2:
            raise InvalidSetting(
                f"maxmemory {limit} bytes holds only {min(counts)} sessions, too few for "
                f"{hot} hot ones to mean anything: raise maxmemory (e.g. 2mb) or lower hot."
            )
        step(1)
        time.sleep(pause)
        step(1)
        for run in runs:
            run.come_back(session_ids(0, hot))
        step(1)
        time.sleep(pause)
        step(1)
        for run, count in zip(runs, counts, strict=True):
            run.write(session_ids(count, 2 * count))
        step(1)
        results = [
            EvictionResult(
                policy=run.policy,
                maxmemory=limit,
                layout=layout,
                sessions=count,
                hot=hot,
                hot_kept=run.kept(session_ids(0, hot)),
                cold_kept=run.kept(session_ids(hot, count)),
                new_kept=run.kept(session_ids(count, 2 * count)),
                split=run.split(session_ids(0, 2 * count)),
                refused=run.refused,
                evicted_keys=int(run.client.info("stats")["evicted_keys"]),
                ttl=ttl,
            )
            for run, count in zip(runs, counts, strict=True)
        ]
        step(1)
        return results
    finally:
        for run in runs:
            run.client.close()
            run.server.close()


def _start_early_in_a_minute() -> None:
    """Wait for the next minute if this one is nearly over (see :data:`LFU_LATEST_START`).

    An LFU counter drops by one per idle minute, counted on the wall clock: if the first wave
    is written in one minute and the second in the next, the first wave's counters have
    already dropped and LFU evicts it first, which is what happens after a minute, not in a
    burst. Waiting keeps the experiment about a burst on every run.
    """
    into_minute = time.time() % 60
    if into_minute > LFU_LATEST_START:
        time.sleep(60 - into_minute + 0.1)
