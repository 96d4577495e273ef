"""sessionlab.flask on a real server, a real threaded WSGI server (waitress) and real HTTP.

Interleavings that matter (two requests of one session overlapping, a logout while a
request runs) are forced with a gate: an ``after_request`` hook that holds a request after
its view ran and before its session is saved, until the test opens the gate. So each test
shows one exact interleaving, every time, instead of hoping a load test hits it.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask, jsonify, request, session
from helpers import unique_prefix, wait_until

from sessionlab import LabServer, SessionStore, UnserializableData
from sessionlab.bench_web import Client, count_round_trips
from sessionlab.flask import current_session, current_session_id, init_app
from sessionlab.shop import ShopServer
from sessionlab.store import fingerprint, random_id


class Gates:
    """Hold requests that carry ``X-Gate: <name>`` between their view and their save."""

    def __init__(self, app: Flask) -> None:
        self.entered: dict[str, threading.Event] = {}
        self.open: dict[str, threading.Event] = {}
        app.after_request(self._hold)

    def _hold(self, response: Any) -> Any:
        name = request.headers.get("X-Gate")
        if name:
            self.entered.setdefault(name, threading.Event()).set()
            assert self.open.setdefault(name, threading.Event()).wait(10), f"gate {name} stuck"
        return response

    def send(self, client: Client, method: str, path: str, sid: str, name: str, **kw: Any):
        """Start a request that will wait at gate ``name``; returns (thread, result holder)."""
        self.entered.setdefault(name, threading.Event())
        self.open.setdefault(name, threading.Event())
        result: dict[str, requests.Response] = {}

        def run() -> None:
            result["response"] = client.call(method, path, sid, headers={"X-Gate": name}, **kw)

        thread = threading.Thread(target=run)
        thread.start()
        assert self.entered[name].wait(10), f"request {name} never reached its gate"
        return thread, result

    def release(self, name: str, thread: threading.Thread) -> None:
        self.open[name].set()
        thread.join(10)


def make_app(store: SessionStore, **options: Any) -> Flask:
    """A minimal app on the adapter: every route just does what its name says."""
    app = Flask(__name__)
    init_app(app, store, **options)

    @app.post("/login")
    def login() -> Any:
        current_session().login(request.form["user_id"])
        return {"sid": current_session_id()}

    @app.get("/whoami")
    def whoami() -> Any:
        return {"sid": current_session_id(), "profile": dict(session)}

    @app.post("/set")
    def set_field() -> Any:
        session[request.args["key"]] = request.args["value"]
        return {"ok": True}

    @app.post("/del")
    def del_field() -> Any:
        del session[request.args["key"]]
        return {"ok": True}

    @app.post("/prefs")
    def prefs() -> Any:
        session.setdefault("prefs", {})["theme"] = request.args["theme"]  # changed in place
        return {"ok": True}

    @app.post("/add")
    def add() -> Any:
        return jsonify(quantity=current_session().add_to_cart("SKU-MUG", 1))

    @app.post("/rotate")
    def rotate() -> Any:
        return {"sid": current_session().rotate()}

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return {"ok": True}

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[LabServer]:
    """A private server: MONITOR and key counts see only this module's traffic."""
    with LabServer() as lab:
        yield lab


@pytest.fixture
def store(server: LabServer) -> Iterator[SessionStore]:
    raw = server.client()
    yield SessionStore(raw, prefix=unique_prefix())
    raw.close()


@pytest.fixture
def web(store: SessionStore) -> Iterator[tuple[Client, Gates, SessionStore]]:
    app = make_app(store)
    gates = Gates(app)
    with ShopServer(app, threads=8) as shop:
        client = Client(shop.url)
        yield client, gates, store
        client.close()


def login(client: Client) -> str:
    return client.call("POST", "/login", data={"user_id": "U001"}).json()["sid"]


# -- cookies ---------------------------------------------------------------------------------


def test_login_cookie_is_httponly_lax_and_lives_as_long_as_the_session(web) -> None:
    client, _, store = web
    response = client.call("POST", "/login", data={"user_id": "U001"})
    cookie = response.headers["Set-Cookie"]
    sid = response.json()["sid"]
    assert cookie.startswith(f"sid={sid};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert f"Max-Age={store.ttl(sid)}" in cookie or f"Max-Age={store.ttl(sid) + 1}" in cookie


def test_secure_option_marks_the_cookie_secure(store: SessionStore) -> None:
    with ShopServer(make_app(store, secure=True), threads=2) as shop:
        response = requests.post(shop.url + "/login", data={"user_id": "U001"}, timeout=10)
    assert "; Secure" in response.headers["Set-Cookie"]


def test_cookie_is_renewed_when_the_idle_expiry_slides(web) -> None:
    client, _, store = web
    sid = login(client)
    store.client.expire(store.key(sid), 100)  # as if the user had been idle a while
    response = client.call("GET", "/whoami", sid)
    ttl = store.ttl(sid)
    assert ttl > 100, "load() should have slid the idle expiry"
    assert f"Max-Age={ttl}" in response.headers["Set-Cookie"] or (
        f"Max-Age={ttl + 1}" in response.headers["Set-Cookie"]
    )


def test_no_cookie_renewal_when_asked_not_to(store: SessionStore) -> None:
    with ShopServer(make_app(store, refresh_each_request=False), threads=2) as shop:
        client = Client(shop.url)
        sid = login(client)
        response = client.call("GET", "/whoami", sid)
        client.close()
    assert response.json()["sid"] == sid
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("cookie", ["abc{def}", "x" * 43, "", "a b", "é" * 10, "x" * 500])
def test_garbage_or_unknown_cookie_is_no_session(web, cookie: str) -> None:
    client, _, _ = web
    response = client.http().get(client.url + "/whoami", headers={"Cookie": f"sid={cookie}"})
    assert response.status_code == 200
    assert response.json() == {"sid": None, "profile": {}}


def test_expired_session_is_no_session_and_its_cookie_is_dropped(web) -> None:
    client, _, store = web
    sid = login(client)
    store.client.pexpire(store.key(sid), 1)
    assert wait_until(lambda: store.client.exists(store.key(sid)) == 0)
    response = client.call("GET", "/whoami", sid)
    assert response.json() == {"sid": None, "profile": {}}
    assert response.headers["Set-Cookie"].startswith("sid=;")  # told to forget it
    assert store.client.exists(store.key(sid)) == 0


def test_a_key_that_is_not_a_session_is_no_session(web, caplog) -> None:
    """Served as "no session", and logged with the id's fingerprint, never the id itself."""
    client, _, store = web
    sid = random_id()
    store.client.set(store.key(sid), "<html>")
    with caplog.at_level("WARNING"):
        response = client.call("GET", "/whoami", sid)
    assert response.status_code == 200 and response.json()["sid"] is None
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert fingerprint(sid) in logged
    assert sid not in logged
    store.client.delete(store.key(sid))


# -- only what a request changed is written ----------------------------------------------------


def test_two_overlapping_requests_changing_different_fields_both_win(web) -> None:
    client, gates, store = web
    sid = login(client)
    client.call("POST", "/set", sid, params={"key": "b", "value": "0"})
    thread, _ = gates.send(client, "POST", "/set", sid, "a", params={"key": "a", "value": "1"})
    # "a" loaded b=0 and set a in memory, not saved yet; b=2 runs start to end meanwhile. Writing
    # back what it loaded would put b=0 again:
    assert client.call("POST", "/set", sid, params={"key": "b", "value": "2"}).status_code == 200
    gates.release("a", thread)
    assert store.get(sid) == {"a": "1", "b": "2"}


def test_a_change_in_place_is_written_and_del_removes_the_field(web) -> None:
    client, _, store = web
    sid = login(client)
    client.call("POST", "/prefs", sid, params={"theme": "dark"})
    client.call("POST", "/prefs", sid, params={"theme": "light"})
    assert store.get(sid)["prefs"] == {"theme": "light"}
    client.call("POST", "/del", sid, params={"key": "prefs"})
    assert store.get(sid) == {}


def test_a_value_json_cannot_hold_is_refused_in_the_view(store: SessionStore) -> None:
    app = make_app(store)
    with app.test_request_context():
        session = app.session_interface.open_session(app, request)
        with pytest.raises(UnserializableData, match="datetime"):
            session["when"] = datetime.datetime(2026, 1, 1)
        assert "when" not in session


def test_flasks_permanent_flag_is_not_a_profile_field(store: SessionStore) -> None:
    app = make_app(store)
    with app.test_request_context():
        session = app.session_interface.open_session(app, request)
        session.permanent = True
        assert session.permanent is True
        assert dict(session) == {} and session.changes() == ({}, [])


def test_a_request_that_changes_nothing_writes_nothing(web, server: LabServer) -> None:
    client, _, store = web
    sid = login(client)
    store.load_scripts()  # a server that does not know a script answers NOSCRIPT first
    counts = count_round_trips(server, lambda: client.call("GET", "/whoami", sid))
    assert sum(counts.values()) == 1, counts  # the load, and nothing else


def test_each_request_loads_its_session_in_one_round_trip(web, server: LabServer) -> None:
    client, _, store = web
    sid = login(client)
    store.load_scripts()  # a server that does not know a script answers NOSCRIPT first
    counts = count_round_trips(
        server, lambda: [client.call("GET", "/whoami", sid) for _ in range(5)]
    )
    assert sum(counts.values()) == 5, counts
    counts = count_round_trips(
        server, lambda: client.call("POST", "/set", sid, params={"key": "a", "value": "1"})
    )
    assert sum(counts.values()) == 2, counts  # load + one patch


# -- logout and login ---------------------------------------------------------------------------


def test_a_request_in_flight_cannot_undo_a_logout(web) -> None:
    client, gates, store = web
    sid = login(client)
    setter, set_result = gates.send(
        client, "POST", "/set", sid, "s", params={"key": "a", "value": "1"}
    )
    assert client.call("POST", "/logout", sid).status_code == 200
    gates.release("s", setter)
    assert store.client.exists(store.key(sid)) == 0, "the patch brought the session back"
    assert set_result["response"].headers["Set-Cookie"].startswith("sid=;")
    assert client.call("GET", "/whoami", sid).json()["sid"] is None


def test_a_cart_add_after_a_logout_adds_nothing(web) -> None:
    client, _, store = web
    sid = login(client)
    client.call("POST", "/logout", sid)
    assert client.call("POST", "/add", sid).json() == {"quantity": None}
    assert store.client.exists(store.key(sid)) == 0


def test_login_gives_a_fresh_id_and_kills_the_old_one(web) -> None:
    client, _, store = web
    old = login(client)
    new = client.call("POST", "/login", old, data={"user_id": "U002"}).json()["sid"]
    assert new != old
    assert store.load(old) is None
    assert store.get(new) == {} and store.load(new).user_id == "U002"


def test_rotate_keeps_the_data_under_a_new_id(web) -> None:
    client, _, store = web
    sid = login(client)
    client.call("POST", "/add", sid)
    response = client.call("POST", "/rotate", sid)
    new = response.json()["sid"]
    assert new not in (None, sid)
    assert response.headers["Set-Cookie"].startswith(f"sid={new};")
    assert store.load(sid) is None
    assert store.get_cart(new) == {"SKU-MUG": 1}


def test_login_keeps_an_anonymous_cart_under_a_new_linked_id(web) -> None:
    """An anonymous visitor's session (a cart, a field) is rotated at login: the data moves,
    the old id is dead, and the user's index lists the new id (log out everywhere finds it)."""
    client, _, store = web
    anonymous = client.call("POST", "/set", params={"key": "theme", "value": "dark"})
    old = anonymous.cookies["sid"]
    client.call("POST", "/add", old)
    new = client.call("POST", "/login", old, data={"user_id": "U003"}).json()["sid"]
    assert new != old and store.load(old) is None
    session = store.load(new)
    assert session.profile == {"theme": "dark"}  # the user id is the link, not a field
    assert session.cart == {"SKU-MUG": 1} and session.user_id == "U003"
    assert [info.session_id for info in store.sessions_of("U003")] == [new]
    store.logout_everywhere("U003")


def test_login_as_another_user_carries_nothing_over(web) -> None:
    client, _, store = web
    first = login(client)  # U001
    client.call("POST", "/add", first)
    new = client.call("POST", "/login", first, data={"user_id": "U004"}).json()["sid"]
    assert store.load(first) is None
    assert store.get(new) == {} and store.get_cart(new) == {}
    assert store.load(new).user_id == "U004"
    store.logout_everywhere("U004")


# -- a write whose reply never came: 503, never 500, never sent twice ----------------------------


def stall_during(server: LabServer, seconds: float, start, finish) -> None:
    """``start()`` a request that waits at a gate; stop the server (SIGSTOP), ``finish()`` (open
    the gate), keep the server stopped ``seconds`` (past the client's reply timeout), resume."""
    import os
    import signal
    import time

    start()
    os.kill(server.pid, signal.SIGSTOP)
    try:
        finish()
        time.sleep(seconds)
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
def slow_reply_web(server: LabServer) -> Iterator[tuple[Client, Gates, SessionStore, Flask]]:
    """The app on a store whose client waits 0.3 s for a reply, with a gate BEFORE the view's
    cart add (``X-Before``) as well as the usual one before the save."""
    raw = server.client(socket_timeout=0.3)
    store = SessionStore(raw, prefix=unique_prefix())
    app = make_app(store)
    before = threading.Event()
    reached = threading.Event()

    @app.post("/add-later")
    def add_later() -> Any:
        reached.set()
        assert before.wait(10)
        return jsonify(quantity=current_session().add_to_cart("SKU-MUG", 1))

    app.extensions["test-gate"] = (reached, before)
    gates = Gates(app)
    with ShopServer(app, threads=4) as shop:
        client = Client(shop.url)
        yield client, gates, store, app
        client.close()
    raw.close()


def test_a_cart_add_whose_reply_is_lost_answers_503_and_is_applied_once(
    slow_reply_web, server: LabServer
) -> None:
    client, _, store, app = slow_reply_web
    reached, before = app.extensions["test-gate"]
    sid = login(client)
    store.load_scripts()  # else a stalled write could come back NOSCRIPT: not run at all
    result: dict[str, requests.Response] = {}
    thread = threading.Thread(
        target=lambda: result.update(r=client.call("POST", "/add-later", sid))
    )
    stall_during(server, 1.5, lambda: (thread.start(), reached.wait(10)), before.set)
    thread.join(10)
    response = result["r"]
    assert response.status_code == 503, response.text
    assert "may or may not have been saved" in response.json()["error"]
    assert sid not in response.text
    assert store.get_cart(sid) == {"SKU-MUG": 1}  # sent once, run once when Redis resumed


def test_a_save_whose_reply_is_lost_answers_503(slow_reply_web, server: LabServer) -> None:
    """The view ran; the patch of its changed field at the end of the request gets no reply."""
    client, gates, store, _ = slow_reply_web
    sid = login(client)
    store.load_scripts()  # else a stalled write could come back NOSCRIPT: not run at all
    held: dict[str, Any] = {}

    def start() -> None:
        held["thread"], held["result"] = gates.send(
            client, "POST", "/set", sid, "save", params={"key": "a", "value": "1"}
        )

    stall_during(server, 1.5, start, lambda: gates.open["save"].set())
    held["thread"].join(10)
    response = held["result"]["response"]
    assert response.status_code == 503, response.text
    assert "may or may not have been saved" in response.json()["error"]
    assert store.get(sid) == {"a": "1"}  # the patch ran once, on resume
    assert client.call("POST", "/set", sid, params={"key": "a", "value": "2"}).status_code == 200
