"""The shop under load: sessionlab's adapter against Flask-Session, counted over real HTTP.

``python -m sessionlab.bench_web`` starts a private server, both shops on waitress (16
threads each) and drives them from 16 client threads with ``requests``:

- 400 concurrent ``POST /cart/add`` on one cookie: how many adds the cart shows;
- 40 concurrent ``POST /profile`` of *different* fields on one cookie: how many landed;
- logout while requests of the same session are in flight: how often the session came back;
- keys without a TTL, bytes per session (``MEMORY USAGE``), round trips per request
  (``MONITOR``, commands run inside Lua scripts not counted), requests/s and latency.

The load stays small (loopback, a few hundred requests) so it runs on a shared laptop.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import redis
import requests

from . import sample
from .server import LabServer
from .shop import (
    FLASK_SESSION_PREFIX,
    SESSION_COOKIE,
    ShopServer,
    create_app,
    create_flask_session_app,
)
from .store import SessionStore

CLIENT_THREADS = 16
SERVER_THREADS = 16
#: The course's sample session as the shop stores it: profile fields are strings, set one by one.
SHOP_PROFILE = {"name": sample.PROFILE["name"], **sample.PROFILE["preferences"]}
SHOP_CART = sample.CART


# -- a real HTTP client, one keep-alive connection per thread ------------------------------


class Client:
    """``requests`` from many threads: each thread has its own ``requests.Session``.

    Cookies are never stored: every call says which session it speaks for (``sid=``),
    so a response that renews or deletes the cookie cannot change what the next call sends.
    """

    def __init__(self, url: str, threads: int = CLIENT_THREADS) -> None:
        self.url = url
        self.threads = threads
        # One pool for every burst: its threads keep their keep-alive connections, so the
        # shop sees at most ``threads`` connections (waitress accepts 100 at most).
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="sl-http")
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def http(self) -> requests.Session:
        http = getattr(self._local, "http", None)
        if http is None:
            http = requests.Session()
            http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
            self._local.http = http
            with self._lock:
                self._all.append(http)
        return http

    def call(self, method: str, path: str, sid: str | None = None, **kwargs: Any) -> Any:
        cookies = {SESSION_COOKIE: sid} if sid else {}
        return self.http().request(method, self.url + path, cookies=cookies, timeout=30, **kwargs)

    def login(self, user_id: str = "U001") -> str:
        response = self.call("POST", "/login", data={"user_id": user_id})
        response.raise_for_status()
        return response.cookies[SESSION_COOKIE]

    def close(self) -> None:
        self.pool.shutdown()
        with self._lock:
            for http in self._all:
                http.close()
            self._all.clear()


@dataclass
class Fired:
    """What a burst of concurrent requests got back, and how long each took."""

    statuses: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, one per request
    seconds: float = 0.0  # wall time of the whole burst

    @property
    def ok(self) -> int:
        return sum(status == 200 for status in self.statuses)

    @property
    def per_second(self) -> float:
        return len(self.statuses) / self.seconds if self.seconds else 0.0

    @property
    def p50_ms(self) -> float:
        return 1000 * statistics.median(self.latencies)

    @property
    def p95_ms(self) -> float:
        return 1000 * statistics.quantiles(self.latencies, n=20)[-1]


def fire(client: Client, calls: list[tuple[str, str, dict[str, Any]]], sid: str | None) -> Fired:
    """Send ``calls`` ((method, path, kwargs)) at once from the client's threads."""

    def one(call: tuple[str, str, dict[str, Any]]) -> tuple[int, float]:
        method, path, kwargs = call
        started = time.perf_counter()
        status = client.call(method, path, sid, **kwargs).status_code
        return status, time.perf_counter() - started

    started = time.perf_counter()
    results = list(client.pool.map(one, calls))
    return Fired(
        [status for status, _ in results],
        [latency for _, latency in results],
        time.perf_counter() - started,
    )


# -- the three races -----------------------------------------------------------------------


@dataclass
class Race:
    """One race on one shop: how many writes were sent, answered 200, and are really there."""

    sent: int
    answered_ok: int
    landed: int
    fired: Fired

    @property
    def lost(self) -> int:
        """Writes the server acknowledged (HTTP 200) that are not in the session afterwards."""
        return self.answered_ok - self.landed


def cart_race(client: Client, n: int = 400) -> Race:
    """``n`` concurrent adds of one item to one cart; ``landed`` is the quantity afterwards."""
    sid = client.login()
    fired = fire(client, [("POST", "/cart/add", {"params": {"sku": "SKU-RACE"}})] * n, sid)
    landed = client.call("GET", "/cart", sid).json().get("SKU-RACE", 0)
    return Race(n, fired.ok, landed, fired)


def profile_race(client: Client, n: int = 40) -> Race:
    """``n`` concurrent changes of *different* profile fields; ``landed`` counts those kept."""
    sid = client.login()
    calls = [("POST", "/profile", {"params": {"key": f"f{i}", "value": f"v{i}"}}) for i in range(n)]
    fired = fire(client, calls, sid)
    profile = client.call("GET", "/profile", sid).json()
    landed = sum(profile.get(f"f{i}") == f"v{i}" for i in range(n))
    return Race(n, fired.ok, landed, fired)


def logout_race(client: Client, trials: int = 10, inflight: int = 8) -> int:
    """Log out while ``inflight`` requests of the same session run; how often it came back.

    A session "came back" if, after every request has finished, its cookie still opens it.
    """
    undone = 0
    for _ in range(trials):
        sid = client.login()
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/profile", {"params": {"key": f"f{i}", "value": "x"}})
            for i in range(inflight)
        ]
        calls.insert(inflight // 2, ("POST", "/logout", {}))
        fire(client, calls, sid)
        if client.call("GET", "/profile", sid).status_code == 200:
            undone += 1
            client.call("POST", "/logout", sid)
    return undone


# -- what Redis sees -----------------------------------------------------------------------


def keys_without_ttl(raw: redis.Redis, pattern: str) -> tuple[int, int]:
    """(keys matching ``pattern``, those with no expiry): SCAN is fine on a lab server."""
    keys = list(raw.scan_iter(match=pattern, count=1000))
    return len(keys), sum(raw.ttl(key) == -1 for key in keys)


def count_round_trips(server: LabServer, action: Callable[[], None]) -> dict[str, int]:
    """The commands clients sent while ``action`` ran, by name (``MONITOR``).

    Commands a Lua script runs are shown by MONITOR as ``[0 lua]`` and are not round trips:
    they are left out. A sentinel ``ECHO`` marks the end.
    """
    sentinel = f"sessionlab-end-{time.monotonic_ns()}"
    counts: dict[str, int] = {}
    ready = threading.Event()
    watcher = server.client()
    ender = server.client()
    ender.ping()  # connect now: its handshake (HELLO) must not be counted

    def watch() -> None:
        with watcher.monitor() as monitor:
            ready.set()
            while True:
                seen = monitor.next_command()
                if seen["command"] == f"ECHO {sentinel}":
                    return
                if seen["client_type"] != "lua":
                    name = seen["command"].split(" ", 1)[0].upper()
                    counts[name] = counts.get(name, 0) + 1

    thread = threading.Thread(target=watch, name="sl-monitor", daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.05)  # MONITOR is registered once the server answered it: give it a moment
    try:
        action()
    finally:
        ender.echo(sentinel)
        thread.join(10)
        watcher.close()
        ender.close()
    return counts


def round_trips_per_request(server: LabServer, client: Client, n: int = 10) -> dict[str, float]:
    """Round trips to Redis per request, for each kind of request (sequential, ``n`` each)."""
    sid = client.login()
    kinds = {
        "GET /cart": ("GET", "/cart", {}),
        "POST /cart/add": ("POST", "/cart/add", {"params": {"sku": "SKU-RT"}}),
        "POST /profile": ("POST", "/profile", {"params": {"key": "theme", "value": "dark"}}),
    }
    result = {}
    for name, (method, path, kwargs) in kinds.items():
        counts = count_round_trips(
            server,
            lambda m=method, p=path, k=kwargs: [client.call(m, p, sid, **k) for _ in range(n)],
        )
        result[name] = sum(counts.values()) / n
    client.call("POST", "/logout", sid)
    return result


def bytes_per_session(
    client: Client, raw: redis.Redis, keys_of: Callable[[str], list[str]]
) -> list[int]:
    """``MEMORY USAGE`` of one shop session (all its keys): login, 3 profile fields, 3 items."""
    sid = client.login()
    for key, value in SHOP_PROFILE.items():
        client.call("POST", "/profile", sid, params={"key": key, "value": value})
    for sku, quantity in SHOP_CART.items():
        client.call("POST", "/cart/add", sid, params={"sku": sku, "qty": quantity})
    return [int(raw.memory_usage(key, samples=0) or 0) for key in keys_of(sid)]


# -- both shops side by side ---------------------------------------------------------------


@dataclass
class Shop:
    """One shop under test: its name, its waitress server, a client for it, its keys."""

    name: str
    server: ShopServer
    client: Client
    keys_of: Callable[[str], list[str]]  # every key one session occupies
    pattern: str


class WebLab:
    """A lab for lesson 06: a private server (or ``server``) with both shops on waitress.

    ``lab.shops`` is ``[sessionlab shop, Flask-Session shop]`` (also ``lab.sessionlab`` and
    ``lab.flask_session``), each with a :class:`Client` of ``CLIENT_THREADS`` threads.
    :meth:`close` stops the shops, and the server if the lab started it.
    """

    def __init__(self, server: LabServer | None = None, threads: int = SERVER_THREADS) -> None:
        self._owns_server = server is None
        self.server = server if server is not None else LabServer().start()
        self.raw = self.server.client()
        self.store = SessionStore(self.server.client(), prefix="session")
        self._fs_raw = self.server.client(decode_responses=False)  # Flask-Session: msgpack bytes
        self.shops: list[Shop] = []
        try:
            web = ShopServer(create_app(self.store), threads=threads)
            self.shops.append(
                Shop("sessionlab", web, Client(web.url), _sessionlab_keys(self.store), "session:*")
            )
            web = ShopServer(create_flask_session_app(self._fs_raw), threads=threads)
            self.shops.append(
                Shop(
                    "Flask-Session",
                    web,
                    Client(web.url),
                    lambda sid: [FLASK_SESSION_PREFIX + sid],
                    FLASK_SESSION_PREFIX + "*",
                )
            )
        except BaseException:
            self.close()
            raise

    @property
    def sessionlab(self) -> Shop:
        return self.shops[0]

    @property
    def flask_session(self) -> Shop:
        return self.shops[1]

    def close(self) -> None:
        """Stop both shops and their clients; stop the server if this lab started it."""
        for shop in self.shops:
            shop.client.close()
            shop.server.close()
        self.shops = []
        for raw in (self.raw, self.store.client, self._fs_raw):
            raw.close()
        if self._owns_server:
            self.server.close()

    def __enter__(self) -> WebLab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.shops else "closed"
        return f"<WebLab {state}: sessionlab and Flask-Session shops on {self.server.url}>"


def _sessionlab_keys(store: SessionStore) -> Callable[[str], list[str]]:
    """A session is its one hash (the user's index is shared by all of that user's sessions)."""
    return lambda sid: [store.key(sid)]


@dataclass
class Report:
    """Every figure of one shop."""

    name: str
    cart: Race
    profile: Race
    undone_logouts: int
    logout_trials: int
    keys: int
    keys_without_ttl: int
    bytes_per_session: list[int]  # per key of the session (one key on both shops)
    round_trips: dict[str, float]


def measure(
    server: LabServer, shop: Shop, n_cart: int = 400, n_profile: int = 40, logout_trials: int = 10
) -> Report:
    """All figures for one shop, on ``server`` (which it shares with the other shop)."""
    raw = server.client()
    cart = cart_race(shop.client, n_cart)
    profile = profile_race(shop.client, n_profile)
    undone = logout_race(shop.client, logout_trials)
    size = bytes_per_session(shop.client, raw, shop.keys_of)
    trips = round_trips_per_request(server, shop.client)
    keys, immortal = keys_without_ttl(raw, shop.pattern)
    raw.close()
    return Report(shop.name, cart, profile, undone, logout_trials, keys, immortal, size, trips)


def table(reports: list[Report]) -> str:
    """The figures side by side, one row per figure."""
    rows: list[tuple[str, ...]] = [("", *(r.name for r in reports))]
    rows.append(
        ("cart adds answered 200", *(f"{r.cart.answered_ok}/{r.cart.sent}" for r in reports))
    )
    rows.append(("cart adds in the cart", *(str(r.cart.landed) for r in reports)))
    rows.append(("lost cart adds", *(str(r.cart.lost) for r in reports)))
    rows.append(("lost profile changes", *(f"{r.profile.lost}/{r.profile.sent}" for r in reports)))
    rows.append(("undone logouts", *(f"{r.undone_logouts}/{r.logout_trials}" for r in reports)))
    rows.append(("keys without TTL", *(f"{r.keys_without_ttl}/{r.keys}" for r in reports)))
    rows.append(("bytes per session", *(_bytes(r.bytes_per_session) for r in reports)))
    base = sum(reports[-1].bytes_per_session)  # the last column: Flask-Session, the reference
    rows.append(("bytes vs Flask-Session", *(_ratio(r.bytes_per_session, base) for r in reports)))
    for kind in reports[0].round_trips:
        rows.append((f"round trips {kind}", *(f"{r.round_trips[kind]:.1f}" for r in reports)))
    rows.append(("cart adds/s", *(f"{r.cart.fired.per_second:.0f}" for r in reports)))
    rows.append(("latency p50", *(f"{r.cart.fired.p50_ms:.1f} ms" for r in reports)))
    rows.append(("latency p95", *(f"{r.cart.fired.p95_ms:.1f} ms" for r in reports)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _ratio(sizes: list[int], base: int) -> str:
    return f"{sum(sizes) / base:.2f}x" if base else "-"


def _bytes(sizes: list[int]) -> str:
    return str(sizes[0]) if len(sizes) == 1 else f"{sum(sizes)} ({' + '.join(map(str, sizes))})"


def main() -> None:
    with WebLab() as lab:
        version = ".".join(map(str, lab.server.version))
        print(
            f"{Path(lab.server.binary).name} {version}, waitress {SERVER_THREADS} threads per "
            f"shop, {CLIENT_THREADS} client threads, loopback"
        )
        reports = [measure(lab.server, shop) for shop in lab.shops]
        print(table(reports))


if __name__ == "__main__":
    main()
