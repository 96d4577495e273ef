"""Lesson 02 (session CRUD): the exercise checks.

Each check works on keys of its own (``exercise:...``) and deletes them, so it can run again.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from ..checks import Wrong, check
from ..store import SessionStore
from .lesson01 import count_commands

SEED_KEY = "exercise:seed:{ttl}"
THREADS, ADDS = 8, 250
#: Commands an answer might send; others (a panel's countdown in the same kernel) are ignored.
STRING_COMMANDS = {"set", "setex", "get", "exists", "expire", "persist", "del", "getset"}
HASH_COMMANDS = {"hget", "hset", "hincrby", "hmget", "hgetall", "hsetnx", "hmset", "hincrbyfloat"}


def _sent(counted: dict[str, int], relevant: set[str]) -> dict[str, int]:
    return {name: n for name, n in counted.items() if name in relevant}


def _describe(sent: dict[str, int]) -> str:
    return ", ".join(f"{name.upper()} x{n}" for name, n in sorted(sent.items())) or "nothing"


def _whole_number(value: Any, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise Wrong(f"{name} is {value!r}: make it a whole number, like 42.")


# -- exercise 1: predict the TTL after the seed's update ----------------------------------------


@check
def seed_ttl(my_prediction: Any) -> str:
    """What ``TTL`` shows after the seed's plain ``SET`` on a key that had an expiry: -1."""
    _whole_number(my_prediction, "my_prediction")
    if my_prediction == -1:
        return "Right: -1, the key no longer expires. Run the next cell to see it."
    if my_prediction == -2:
        raise Wrong("-2 means the key does not exist: the seed's SET did write it. Try again.")
    if my_prediction > 0:
        raise Wrong(
            f"{my_prediction} would mean the expiry survived. Does a plain SET keep it? "
            "(TTL has two special answers: -1 and -2.)"
        )
    raise Wrong(f"{my_prediction} is not a TTL Redis gives: it answers -2, -1 or the seconds left.")


# -- exercise 2: fix the seed's update -------------------------------------------------------


def _call_update(my_update: Any, key: str, data: dict[str, Any]) -> Any:
    if not callable(my_update):
        raise Wrong("my_update must be a function: def my_update(key, new_user_data): ...")
    return my_update(key, data)


@check
def update(my_update: Any, *, client: redis.Redis) -> str:
    """Writes the new JSON and keeps the remaining TTL."""
    key = SEED_KEY.format(ttl=600)
    client.set(key, json.dumps({"name": "before"}), ex=600)
    try:
        wrote = _call_update(my_update, key, {"name": "after"})
        value, ttl = client.get(key), client.ttl(key)
    finally:
        client.delete(key)
    if value is None or json.loads(value) != {"name": "after"}:
        raise Wrong(f"After my_update the key holds {value!r}: store json.dumps(new_user_data).")
    if ttl == -1:
        raise Wrong("The TTL was lost (TTL is -1): add keepttl=True to r.set(...).")
    if not 590 <= ttl <= 600:
        raise Wrong(
            f"The TTL is {ttl} s instead of about 600: keep the remaining TTL, do not set one."
        )
    if wrote is not True:
        raise Wrong(f"my_update returned {wrote!r} after writing: return True (e.g. bool(...)).")
    return "It writes the new data and keeps the TTL."


@check
def update_hidden(my_update: Any, *, client: redis.Redis) -> str:
    """No resurrection of a missing key, and one command (no EXISTS first)."""
    key = SEED_KEY.format(ttl="gone")
    client.delete(key)
    try:
        with count_commands(client) as counted:
            wrote = _call_update(my_update, key, {"name": "ghost"})
        exists = client.exists(key)
    finally:
        client.delete(key)
    if exists:
        raise Wrong("It created a session that did not exist: add xx=True (only if it exists).")
    if wrote is not False:
        raise Wrong(f"For a missing session it returned {wrote!r}: return False.")
    sent = _sent(counted, STRING_COMMANDS)
    if sent != {"set": 1}:
        raise Wrong(f"It sent {_describe(sent)}: use exactly one SET (check-then-act has a race).")
    return "A missing session stays missing, in one SET."


# -- exercise 3: one HINCRBY on the session's hash ----------------------------------------------


def _store(client: redis.Redis) -> SessionStore:
    return SessionStore(client, prefix="exercise")


@check
def add_item(my_add_item: Any, *, client: redis.Redis) -> str:
    """Adds to the ``c:<sku>`` field of the session hash and returns the new quantity."""
    if not callable(my_add_item):
        raise Wrong("my_add_item must be a function: def my_add_item(key, sku, quantity): ...")
    store = _store(client)
    sid = "cart-check"
    store.create(sid, {"name": "check"}, ttl=600)
    try:
        first = my_add_item(store.key(sid), "SKU-RED-MUG", 2)
        second = my_add_item(store.key(sid), "SKU-RED-MUG", 1)
        cart, ttl = store.get_cart(sid), store.ttl(sid)
    finally:
        store.delete(sid)
    if cart.get("SKU-RED-MUG") != 3:
        raise Wrong(
            f"After adding 2 then 1 the store sees {cart}: add to the field 'c:' + sku "
            "of the session's hash (HINCRBY key field amount)."
        )
    if (first, second) != (2, 3):
        raise Wrong(f"It returned {first!r} then {second!r}: return what HINCRBY returns (2, 3).")
    if ttl is None or ttl < 590:
        raise Wrong(f"The session's TTL changed to {ttl}: only add to the field, nothing else.")
    return "HINCRBY adds to the cart item and returns the new quantity."


@check
def add_item_hidden(my_add_item: Any, *, client: redis.Redis) -> str:
    """One HINCRBY per call (atomic), nothing read first."""
    store = _store(client)
    sid = "cart-check-hidden"
    store.create(sid, {"name": "check"}, ttl=600)
    try:
        with count_commands(client) as counted:
            my_add_item(store.key(sid), "SKU-TEE-M", 5)
    finally:
        store.delete(sid)
    sent = _sent(counted, HASH_COMMANDS)
    if sent != {"hincrby": 1}:
        raise Wrong(f"It sent {_describe(sent)}: one HINCRBY is atomic, read-then-write is not.")
    return "One atomic HINCRBY per call."


# -- exercise 4: predict the quantity after concurrent adds -------------------------------------


@check
def concurrent(my_prediction: Any) -> str:
    """8 threads x 250 atomic adds of one item: 2000."""
    _whole_number(my_prediction, "my_prediction")
    expected = THREADS * ADDS
    if my_prediction == expected:
        return f"Right: {expected}. Every HINCRBY counts, whatever the interleaving."
    if my_prediction < expected:
        raise Wrong(
            f"{my_prediction} would mean lost updates. Can two HINCRBY on one field overwrite "
            "each other? Redis runs one command at a time."
        )
    raise Wrong(f"{my_prediction} is more than the {THREADS} x {ADDS} adds that are made.")
