"""The shop's routes over real HTTP, under concurrent load, and beside Flask-Session 0.8.

Both shops run on waitress (16 threads) against one private server; requests come from 16
client threads. The load tests assert sessionlab's exact counts. Flask-Session's behaviour
is shown with forced interleavings (a gate holds a request between its view and the save
of its session), so what it loses is shown every time rather than most of the time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import request

from sessionlab import LabServer
from sessionlab.bench_web import (
    Client,
    Shop,
    WebLab,
    cart_race,
    keys_without_ttl,
    logout_race,
    measure,
    profile_race,
    round_trips_per_request,
    table,
)
from sessionlab.shop import ShopProcess, server_env
from sessionlab.widgets.web import LoadPanel


@pytest.fixture(scope="module")
def server() -> Iterator[LabServer]:
    with LabServer() as lab:
        yield lab


@pytest.fixture(scope="module")
def both(server: LabServer) -> Iterator[dict[str, Shop]]:
    with WebLab(server) as lab:
        yield {shop.name: shop for shop in lab.shops}


@pytest.fixture
def sessionlab_shop(both: dict[str, Shop]) -> Shop:
    return both["sessionlab"]


@pytest.fixture(params=["sessionlab", "Flask-Session"])
def any_shop(request: pytest.FixtureRequest, both: dict[str, Shop]) -> Shop:
    return both[request.param]


# -- routes --------------------------------------------------------------------------------------


def test_routes_answer_as_specified(any_shop: Shop) -> None:
    client = any_shop.client
    response = client.call("POST", "/login", data={"user_id": "U007"})
    assert response.status_code == 200 and response.json() == {"user_id": "U007"}
    sid = response.cookies["sid"]
    assert client.call("POST", "/cart/add", sid, params={"sku": "SKU-MUG"}).json() == {
        "sku": "SKU-MUG",
        "quantity": 1,
    }
    add = client.call("POST", "/cart/add", sid, params={"sku": "SKU-MUG", "qty": "3"})
    assert add.json() == {"sku": "SKU-MUG", "quantity": 4}
    assert client.call("GET", "/cart", sid).json() == {"SKU-MUG": 4}
    set_theme = client.call("POST", "/profile", sid, params={"key": "theme", "value": "dark"})
    assert set_theme.json() == {"key": "theme", "value": "dark"}
    assert client.call("GET", "/profile", sid).json() == {"user_id": "U007", "theme": "dark"}
    assert client.call("POST", "/logout", sid).json() == {"logged_out": True}
    assert client.call("GET", "/cart", sid).status_code == 401


@pytest.mark.parametrize(
    "method, path", [("GET", "/cart"), ("POST", "/cart/add"), ("GET", "/profile"),
                     ("POST", "/profile"), ("POST", "/logout")]
)  # fmt: skip
@pytest.mark.parametrize("cookie", [None, "abc{def}", "x" * 43, "%00"])
def test_without_a_valid_session_every_route_but_login_is_401(
    any_shop: Shop, method: str, path: str, cookie: str | None
) -> None:
    headers = {"Cookie": f"sid={cookie}"} if cookie is not None else {}
    response = any_shop.client.http().request(
        method,
        any_shop.client.url + path,
        headers=headers,
        params={"sku": "A", "key": "k", "value": "v"},
    )
    assert response.status_code == 401
    assert "login" in response.json()["error"]


@pytest.mark.parametrize(
    "params, words",
    [
        ({"qty": "2"}, "sku is missing"),
        ({"sku": "SKU-MUG", "qty": "two"}, "not a whole number"),
        ({"sku": "SKU-MUG", "qty": "0"}, "out of range"),
        ({"sku": "SKU-MUG", "qty": "-3"}, "out of range"),
        ({"sku": "a sku with spaces"}, "is not valid"),
    ],
)
def test_bad_cart_input_is_400_with_the_stores_message(
    sessionlab_shop: Shop, params: dict[str, str], words: str
) -> None:
    client = sessionlab_shop.client
    sid = client.login()
    response = client.call("POST", "/cart/add", sid, params=params)
    assert response.status_code == 400
    assert words in response.json()["error"]
    assert client.call("GET", "/cart", sid).json() == {}


def test_missing_login_or_profile_fields_are_400(sessionlab_shop: Shop) -> None:
    client = sessionlab_shop.client
    assert client.call("POST", "/login").status_code == 400
    sid = client.login()
    response = client.call("POST", "/profile", sid, params={"key": "theme"})
    assert response.status_code == 400 and "value is missing" in response.json()["error"]


# -- sessionlab under concurrent load --------------------------------------------------------------


def test_400_concurrent_cart_adds_all_count(sessionlab_shop: Shop) -> None:
    race = cart_race(sessionlab_shop.client, n=400)
    assert (race.answered_ok, race.landed) == (400, 400)


def test_40_concurrent_changes_of_different_profile_fields_all_land(sessionlab_shop: Shop) -> None:
    race = profile_race(sessionlab_shop.client, n=40)
    assert (race.answered_ok, race.landed) == (40, 40)


def test_logouts_with_requests_in_flight_stay_logged_out(sessionlab_shop: Shop) -> None:
    assert logout_race(sessionlab_shop.client, trials=5, inflight=8) == 0


def test_every_session_key_has_a_ttl_after_the_load(
    server: LabServer, sessionlab_shop: Shop
) -> None:
    client = sessionlab_shop.client
    for _ in range(3):
        sid = client.login()
        client.call("POST", "/cart/add", sid, params={"sku": "SKU-MUG"})
        client.call("POST", "/profile", sid, params={"key": "k", "value": "v"})
    with server.client() as raw:
        keys, immortal = keys_without_ttl(raw, sessionlab_shop.pattern)
    assert keys >= 3 and immortal == 0


def test_round_trips_per_request(server: LabServer, both: dict[str, Shop]) -> None:
    assert round_trips_per_request(server, both["sessionlab"].client, n=4) == {
        "GET /cart": 1.0,  # load (profile + cart + slide the expiry: one script)
        "POST /cart/add": 2.0,  # load + the atomic add
        "POST /profile": 2.0,  # load + a patch of that one field
    }
    assert round_trips_per_request(server, both["Flask-Session"].client, n=4) == {
        "GET /cart": 2.0,  # GET + SET of the whole session, every request
        "POST /cart/add": 2.0,
        "POST /profile": 2.0,
    }


# -- the same interleavings on both shops -----------------------------------------------------


class Gate:
    """Holds the requests that carry ``X-Gate`` between their view and their session's save."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def hold(self, response: Any) -> Any:
        if request.headers.get("X-Gate"):
            self.entered.set()
            self.opened.wait(10)
        return response


@pytest.fixture
def gated(any_shop: Shop) -> Iterator[tuple[Shop, Gate]]:
    gate = Gate()
    app = any_shop.server.app
    app.after_request_funcs.setdefault(None, []).append(gate.hold)
    yield any_shop, gate
    gate.opened.set()
    app.after_request_funcs[None].remove(gate.hold)


def held(client: Client, gate: Gate, path: str, sid: str, **params: str) -> threading.Thread:
    """Send a request that loads, runs its view, then waits at the gate before saving."""
    thread = threading.Thread(
        target=client.call,
        args=("POST", path, sid),
        kwargs={"params": params, "headers": {"X-Gate": "1"}},
    )
    thread.start()
    assert gate.entered.wait(10)
    return thread


#: What each shop keeps when a held request saves after another request of the same session.
EXPECTED = {
    "sessionlab": {"cart": 2, "profile": {"a": "1", "b": "2"}, "logout undone": False},
    "Flask-Session": {"cart": 1, "profile": {"a": "1", "b": "0"}, "logout undone": True},
}


def test_overlapping_cart_adds(gated: tuple[Shop, Gate]) -> None:
    shop, gate = gated
    sid = shop.client.login()
    thread = held(shop.client, gate, "/cart/add", sid, sku="SKU-MUG")
    shop.client.call("POST", "/cart/add", sid, params={"sku": "SKU-MUG"})
    gate.opened.set()
    thread.join(10)
    assert shop.client.call("GET", "/cart", sid).json() == {"SKU-MUG": EXPECTED[shop.name]["cart"]}


def test_overlapping_profile_changes(gated: tuple[Shop, Gate]) -> None:
    shop, gate = gated
    sid = shop.client.login()
    shop.client.call("POST", "/profile", sid, params={"key": "b", "value": "0"})
    thread = held(shop.client, gate, "/profile", sid, key="a", value="1")
    shop.client.call("POST", "/profile", sid, params={"key": "b", "value": "2"})
    gate.opened.set()
    thread.join(10)
    profile = shop.client.call("GET", "/profile", sid).json()
    assert profile == {"user_id": "U001", **EXPECTED[shop.name]["profile"]}


def test_logout_while_a_request_is_in_flight(gated: tuple[Shop, Gate]) -> None:
    shop, gate = gated
    sid = shop.client.login()
    thread = held(shop.client, gate, "/profile", sid, key="a", value="1")
    assert shop.client.call("POST", "/logout", sid).status_code == 200
    gate.opened.set()
    thread.join(10)
    undone = shop.client.call("GET", "/profile", sid).status_code == 200
    assert undone is EXPECTED[shop.name]["logout undone"]


# -- several processes, and the panel ----------------------------------------------------------


def alternate(a: ShopProcess, b: ShopProcess, n: int = 20) -> list[int]:
    """Log in at A, then send ``n`` GET /cart to A, B, A, B, ... as a load balancer would."""
    clients = Client(a.url, threads=1), Client(b.url, threads=1)
    sid = clients[0].login()
    codes = [clients[i % 2].call("GET", "/cart", sid).status_code for i in range(n)]
    for client in clients:
        client.close()
    return codes


@pytest.mark.pinned_only  # each process's own embedded server: no server version involved
def test_two_shop_processes_without_a_shared_server_split_the_session() -> None:
    with ShopProcess() as a, ShopProcess() as b:
        codes = alternate(a, b)
    assert codes == [200, 401] * 10  # every request that reaches B: B's own private server


def test_two_shop_processes_on_one_server_share_the_session(server: LabServer) -> None:
    env = server_env(server)
    with ShopProcess(env) as a, ShopProcess(env) as b:
        codes = alternate(a, b)
    assert codes == [200] * 20


def test_load_panel_counts_both_shops() -> None:
    panel = LoadPanel(requests=40)
    panel.fire.click()
    assert panel.last["sessionlab"] == (40, 40)
    assert panel.last["Flask-Session"][1] == 40
    assert "sessionlab 40/40" in panel.log_text
    panel.kind.value = "logouts"
    panel.fire.click()
    assert panel.last["sessionlab"] == (0, 2), panel.status_text
    panel.close()


def test_bench_table_shows_every_figure_for_both_shops(
    server: LabServer, both: dict[str, Shop]
) -> None:
    reports = [
        measure(server, shop, n_cart=20, n_profile=5, logout_trials=1) for shop in both.values()
    ]
    text = table(reports)
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()[1:]}
    assert rows["lost cart adds"][-2] == "0"  # the sessionlab column
    assert rows["lost profile changes"][-2] == "0/5"
    assert rows["undone logouts"][-2] == "0/1"
    assert rows["keys without TTL"][-2].startswith("0/")
    assert {"bytes per session", "cart adds/s", "latency p50", "latency p95"} <= set(rows)
