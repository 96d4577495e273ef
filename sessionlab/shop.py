"""A small Flask shop on the sessionlab adapter, and the same shop on Flask-Session's Redis.

Routes (both shops, same answers)::

    POST /login             form field user_id; sets the cookie "sid"
    POST /cart/add?sku=X&qty=N  qty defaults to 1    -> {"sku": X, "quantity": new}
    GET  /cart              -> {sku: quantity}
    POST /profile?key=K&value=V                     -> {"key": K, "value": V}
    GET  /profile           -> {field: value}
    POST /logout            -> {"logged_out": true}

Without a valid session every route but ``/login`` answers 401; bad input answers 400 with
``{"error": "..."}`` (the store's own messages). :func:`serve` runs an app on waitress, a real
threaded WSGI server, in a background thread of this process (a notebook kernel, a test).

``python -m sessionlab.shop --port 8000`` serves the sessionlab shop over :func:`connect`:
with ``REDIS_URL`` unset, each such process starts its own private server (lesson 06).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from typing import Any

import redis
import waitress
from flask import Flask, jsonify, request, session
from waitress import wasyncore

from . import lifeline
from .config import ENV_FILE_VARIABLE, SERVER_VARIABLES
from .errors import InvalidCartItem, ServerError, SessionError, StoreFull
from .flask import current_session, init_app
from .server import LabServer, free_port, wait_until
from .store import SessionStore, check_quantity, check_sku

SESSION_COOKIE = "sid"
#: Flask-Session's key prefix in the comparison shop, apart from sessionlab's "session:".
FLASK_SESSION_PREFIX = "fs:"


class BadRequest(SessionError, ValueError):
    """A required query or form parameter is missing or malformed."""


def create_app(store: SessionStore, *, secure: bool = False) -> Flask:
    """The shop on :mod:`sessionlab.flask`: atomic cart calls, only changed fields written."""
    app = Flask("sessionlab.shop")
    init_app(app, store, cookie_name=SESSION_COOKIE, secure=secure)
    _errors_as_json(app)

    @app.before_request
    def require_session() -> Any:
        if request.endpoint != "login" and current_session().session_id is None:
            return _no_session()
        return None

    @app.post("/login")
    def login() -> Any:
        user_id = _param(request.form, "user_id")
        current_session().login(user_id)  # a new id (rotate): an id known before is dead
        return {"user_id": user_id}

    @app.post("/cart/add")
    def cart_add() -> Any:
        sku, quantity = _param(request.args, "sku"), _quantity(request.args.get("qty", "1"))
        new = current_session().add_to_cart(sku, quantity)  # one atomic store call
        if new is None:  # logged out while this request ran
            return _no_session()
        return {"sku": sku, "quantity": new}

    @app.get("/cart")
    def cart() -> Any:
        return current_session().cart  # loaded with the profile, in the same round trip

    @app.post("/profile")
    def set_profile() -> Any:
        key, value = _param(request.args, "key"), _param(request.args, "value")
        session[key] = value  # only this field is written, at the end of the request
        return {"key": key, "value": value}

    @app.get("/profile")
    def profile() -> Any:
        # the user id is the session's link to its user (one home), not a profile field
        return {"user_id": current_session().user_id, **session}

    @app.post("/logout")
    def logout() -> Any:
        session.clear()  # deletes the session now; no in-flight request can bring it back
        return {"logged_out": True}

    return app


def create_flask_session_app(client: redis.Redis, *, secure: bool = False) -> Flask:
    """The same shop on Flask-Session 0.8's Redis backend, written the way its docs show.

    The whole session (profile fields and the cart) is one msgpack value that every request
    reads at its start and writes back whole at its end (``SET ... EX``). ``client`` must
    return bytes (``decode_responses=False``): Flask-Session stores msgpack.
    """
    from flask_session import Session  # optional: only the comparison needs it

    app = Flask("sessionlab.shop.flask_session")
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=client,
        SESSION_KEY_PREFIX=FLASK_SESSION_PREFIX,
        SESSION_COOKIE_NAME=SESSION_COOKIE,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
    )
    Session(app)
    _errors_as_json(app)

    @app.before_request
    def require_session() -> Any:
        if request.endpoint != "login" and "user_id" not in session:
            return _no_session()
        return None

    @app.post("/login")
    def login() -> Any:
        user_id = _param(request.form, "user_id")
        app.session_interface.regenerate(session)  # Flask-Session's advice against fixation
        session.clear()
        session["user_id"] = user_id
        return {"user_id": user_id}

    @app.post("/cart/add")
    def cart_add() -> Any:
        sku, quantity = _param(request.args, "sku"), _quantity(request.args.get("qty", "1"))
        check_sku(sku)
        cart = session.setdefault("cart", {})
        cart[sku] = cart.get(sku, 0) + quantity
        session.modified = True  # a nested change: tell Flask-Session to save
        return {"sku": sku, "quantity": cart[sku]}

    @app.get("/cart")
    def cart() -> Any:
        return session.get("cart", {})

    @app.post("/profile")
    def set_profile() -> Any:
        key, value = _param(request.args, "key"), _param(request.args, "value")
        session[key] = value
        return {"key": key, "value": value}

    @app.get("/profile")
    def profile() -> Any:
        return {k: v for k, v in session.items() if k not in ("cart", "_permanent")}

    @app.post("/logout")
    def logout() -> Any:
        session.clear()
        return {"logged_out": True}

    return app


# -- shared by both shops ------------------------------------------------------------------


def _no_session() -> Any:
    return jsonify(error="no valid session: POST /login first"), 401


def _param(source: Any, name: str) -> str:
    value = source.get(name, "")
    if not value:
        raise BadRequest(f"{name} is missing: pass {name}=... (see the shop's routes).")
    return str(value)


def _quantity(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        raise InvalidCartItem(f"qty={text!r} is not a whole number: use e.g. qty=2.")
    return check_quantity(int(text))


def _errors_as_json(app: Flask) -> None:
    """Bad input (a SessionError that is a ValueError or TypeError) -> 400 with its message."""

    @app.errorhandler(SessionError)
    def session_error(error: SessionError) -> Any:
        if isinstance(error, StoreFull):
            return jsonify(error=str(error)), 503
        if isinstance(error, (ValueError, TypeError)):
            return jsonify(error=str(error)), 400
        raise error


# -- running a shop on waitress --------------------------------------------------------------


class ShopServer:
    """A WSGI app served by waitress (``threads`` worker threads) on 127.0.0.1, in a thread.

    ``with ShopServer(app) as shop: requests.get(shop.url + "/cart")``. :meth:`close` stops
    accepting, closes every connection and joins the worker threads.
    """

    def __init__(self, app: Any, threads: int = 16, port: int = 0) -> None:
        # waitress warns "Task queue depth is N" whenever requests wait for a free thread:
        # expected under a load test, and it would print into notebook cells.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self.app = app
        self._map: dict[int, Any] = {}
        self._server = waitress.create_server(
            app, map=self._map, host="127.0.0.1", port=port, threads=threads, ident="shop"
        )
        self.port: int = self._server.effective_port  # type: ignore[union-attr]
        self.threads = threads
        self._stopping = threading.Event()
        self._closing = threading.Lock()  # the trigger must not be closed while pulled
        self._thread = threading.Thread(target=self._serve, name="sl-shop", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        """waitress's loop, one select at a time, closing its sockets in this same thread
        (closing them from another thread while select() waits on them fails with EBADF).

        The worker threads end first: a worker still finishing a request whose response the
        client already has pulls the trigger once more, and on a closed trigger waitress logs
        "Exception when servicing" (EBADF) to stderr, which a kernel shows in the running cell.
        """
        while not self._stopping.is_set():
            wasyncore.loop(timeout=1.0, map=self._map, count=1)
        self._server.task_dispatcher.shutdown()
        with self._closing:
            wasyncore.close_all(self._map)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        with self._closing:
            if self._stopping.is_set() or not self._thread.is_alive():
                return
            self._stopping.set()
            self._server.pull_trigger()  # wake the select() at once
        self._thread.join(10)

    def __enter__(self) -> ShopServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ShopServer 127.0.0.1:{self.port} {state}, {self.threads} threads>"


class ShopProcess:
    """``python -m sessionlab.shop`` in a child process: a second "web server machine".

    ``env`` is added to this process's environment (e.g. :func:`server_env` to share a
    server). The child dies with this process, even on SIGKILL, and :meth:`close` stops it
    cleanly (its embedded server, if it started one, with it). Its output goes to a log
    file that :meth:`log` returns.
    """

    def __init__(self, env: dict[str, str] | None = None, threads: int = 4) -> None:
        self.port = free_port(bus=False)
        self._dir = lifeline.private_directory("shop")
        self._log = self._dir / "shop.log"
        environment = {**os.environ, **(env or {})}
        if env is None or not any(name in env for name in SERVER_VARIABLES):
            for name in SERVER_VARIABLES:  # no server named: the child starts its own
                environment.pop(name, None)
            environment[ENV_FILE_VARIABLE] = os.devnull  # nor in a .env file
        with open(self._log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sessionlab.shop", "--port", str(self.port),
                 "--threads", str(threads)],
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        # The watchdog kills the shop and removes its directory if this process dies first.
        lifeline.claim_server(self.process.pid, None)
        try:
            wait_until(self._listening, "the shop process to listen", 30.0)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise ServerError(f"the shop process exited at start:\n{self.log()}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True

    def log(self) -> str:
        """What the process printed (its stderr and stdout)."""
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM (the shop stops its embedded server and removes its files), then wait."""
        lifeline.end_process(self.process)
        lifeline.remove_directory(self._dir)

    def __enter__(self) -> ShopProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.process.poll() is None else "stopped"
        return f"<ShopProcess 127.0.0.1:{self.port} {state}>"


def server_env(server: LabServer) -> dict[str, str]:
    """The environment that makes ``connect()`` in another process use ``server``.

    The password travels in the environment (readable only by this user), never in argv.
    """
    return {
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(server.port),
        "REDIS_PASSWORD": server.password,  # every LabServer is locked
    }


def main(argv: list[str] | None = None) -> None:
    """Serve the sessionlab shop over :func:`sessionlab.connect` until interrupted."""
    from .connection import connect

    parser = argparse.ArgumentParser(prog="python -m sessionlab.shop", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    # SIGTERM ends the process through SystemExit, so atexit hooks run: an embedded server
    # this process started is stopped and its directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = create_app(SessionStore(connect()))
    waitress.serve(app, host="127.0.0.1", port=args.port, threads=args.threads, _quiet=True)


if __name__ == "__main__":
    main()
