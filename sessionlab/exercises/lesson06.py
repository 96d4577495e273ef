"""Checks of lesson 06 (a real shop under load): one ✅/❌ line each, never raising.

The checks that run the learner's code start what they need (a shop on waitress, a store
under a fresh prefix) on the lesson's server, passed as ``server=``, and stop it again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request

from ..bench_web import Client, fire
from ..checks import Wrong, check
from ..flask import current_session, init_app
from ..server import LabServer
from ..shop import ShopServer
from ..store import SessionStore

SHOPS = ("sessionlab", "Flask-Session")


def _fresh(name: str) -> str:
    return f"lesson06:{name}:{uuid.uuid4().hex[:12]}"


# -- 1. predict two overlapping cart adds ----------------------------------------------------


@check
def predict_overlap(my_prediction: Any) -> str:
    if not isinstance(my_prediction, dict) or set(my_prediction) != set(SHOPS):
        raise Wrong(
            'Answer with a dict of both shops: {"sessionlab": ..., "Flask-Session": ...} '
            "(the number of mugs in the cart after both requests)."
        )
    if my_prediction["sessionlab"] != 2:
        raise Wrong(
            "sessionlab: each add is one HINCRBY inside Redis, applied to what the cart holds "
            "at that moment, so no add can overwrite the other. How many mugs then?"
        )
    if my_prediction["Flask-Session"] != 1:
        raise Wrong(
            "Flask-Session: both requests loaded an empty cart, each wrote back its own copy "
            "(1 mug) with SET. The second SET replaces the first: how many mugs are left?"
        )
    return "Right: sessionlab keeps both adds (2), Flask-Session keeps the last write (1)."


# -- 2. a cart view that never loses an add --------------------------------------------------


def _cart_shop(my_cart_add: Callable[[str, int], Any], store: SessionStore) -> Flask:
    app = Flask("lesson06.exercise")
    init_app(app, store)

    @app.post("/login")
    def login() -> Any:
        current_session().login("U-EX")
        return {"ok": True}

    @app.post("/cart/add")
    def add() -> Any:
        return jsonify(quantity=my_cart_add(request.args["sku"], int(request.args["qty"])))

    @app.post("/logout")
    def logout() -> Any:
        current_session().clear()
        return {"ok": True}

    return app


def _run_cart_view(
    my_cart_add: Callable[[str, int], Any], server: LabServer, adds: int, logout_first: bool
) -> dict[str, int] | None:
    """Serve ``my_cart_add`` on waitress; fire ``adds`` concurrent adds; the cart afterwards."""
    raw = server.client()
    store = SessionStore(raw, prefix=_fresh("cart"))
    client: Client | None = None
    try:
        with ShopServer(_cart_shop(my_cart_add, store), threads=8) as shop:
            client = Client(shop.url, threads=8)
            response = client.call("POST", "/login", data={"user_id": "U-EX"})
            sid = response.cookies["sid"]
            if logout_first:
                client.call("POST", "/logout", sid)
            calls = [("POST", "/cart/add", {"params": {"sku": "SKU-MUG", "qty": 1}})] * adds
            fired = fire(client, calls, sid)
            if any(status != 200 for status in fired.statuses):
                raise Wrong(
                    "Some requests failed (HTTP 500): run your function's code in a cell of "
                    "its own to see the error."
                )
            loaded = store.load(sid)
            return None if loaded is None else loaded.cart
    finally:
        if client is not None:
            client.close()
        raw.close()


@check
def atomic_cart_view(my_cart_add: Any, *, server: LabServer) -> str:
    cart = _run_cart_view(my_cart_add, server, adds=50, logout_first=False)
    if cart is None:
        raise Wrong("The session is gone after the adds: your function must not end it.")
    if cart.get("SKU-MUG", 0) < 50:
        raise Wrong(
            "Some of 50 concurrent adds were lost: change the cart with one atomic call, "
            "current_session().add_to_cart(sku, qty), not by reading and writing it back."
        )
    if cart.get("SKU-MUG", 0) > 50:
        raise Wrong("The cart holds more than the 50 mugs added: add qty once per call.")
    return "50 concurrent adds, 50 mugs in the cart."


@check
def atomic_cart_view_hidden(my_cart_add: Any, *, server: LabServer) -> str:
    cart = _run_cart_view(my_cart_add, server, adds=10, logout_first=True)
    if cart is not None:
        raise Wrong("Adds after a logout brought the session back: they must add nothing.")
    return "Adds after a logout add nothing and never bring the session back."


# -- 3. set one profile field, only if the session exists (Lua) --------------------------------


def _try_script(my_script: str, server: LabServer) -> dict[str, Any]:
    if not isinstance(my_script, str) or "redis.call" not in my_script:
        raise Wrong("my_script should be the text of a Lua script that uses redis.call(...).")
    with server.client() as raw:
        key, missing = _fresh("patch") + ":{s}", _fresh("patch") + ":{gone}"
        raw.hset(key, mapping={"p:name": '"Rohith"', "p:theme": '"dark"'})
        raw.expire(key, 600)
        try:
            result = raw.eval(my_script, 1, key, "p:theme", '"light"')
            after = raw.hgetall(key)
            ttl = raw.ttl(key)
            on_missing = raw.eval(my_script, 1, missing, "p:theme", '"light"')
            created = raw.exists(missing)
        finally:
            raw.delete(key, missing)
    return {
        "result": result,
        "after": after,
        "ttl": ttl,
        "on_missing": on_missing,
        "created": created,
    }


@check
def patch_script(my_script: Any, *, server: LabServer) -> str:
    seen = _try_script(my_script, server)
    if seen["after"].get("p:theme") != '"light"':
        raise Wrong("The field was not set: HSET KEYS[1] ARGV[1] ARGV[2] when the key exists.")
    if seen["after"].get("p:name") != '"Rohith"':
        raise Wrong("Another field changed: set only the field ARGV[1], leave the rest alone.")
    if not 590 <= seen["ttl"] <= 600:
        raise Wrong("The TTL changed: HSET keeps it; do not SET, DEL or EXPIRE the key.")
    if seen["created"]:
        raise Wrong(
            "Called on a session that does not exist, your script created it (a logout undone):"
            " check redis.call('EXISTS', KEYS[1]) == 1 first, in the same script."
        )
    return "One field set, the others and the TTL kept, no session brought back."


@check
def patch_script_hidden(my_script: Any, *, server: LabServer) -> str:
    seen = _try_script(my_script, server)
    if seen["result"] != 1 or seen["on_missing"] not in (0, None):
        raise Wrong("Return 1 when the field was set and 0 when the session does not exist.")
    return "Returns 1 when it wrote, 0 when the session is gone."


# -- 4. predict the multi-process trap -------------------------------------------------------


@check
def predict_split(my_prediction: Any) -> str:
    if isinstance(my_prediction, bool) or not isinstance(my_prediction, int):
        raise Wrong("Answer with a whole number: how many of the 20 requests get 401?")
    if my_prediction != 10:
        raise Wrong(
            "Every request that reaches process B asks B's own private server, which has never "
            "seen this session; every request to A finds it. Alternating A, B, A, B, ...: "
            "how many of 20 go to B?"
        )
    return "Right: the 10 requests that reach B get 401, those to A work."
