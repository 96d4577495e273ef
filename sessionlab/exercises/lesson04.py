"""The exercise checks of lesson 04 (eviction). Each runs the learner's answer on servers of
its own, so it can run twice and never touches the lesson's servers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis

from ..checks import Wrong, check
from ..doctor import Report, doctor
from ..errors import SessionError
from ..eviction import POLICIES, experiment
from ..memory import session_keys
from ..server import LabServer

PROFILE = {"user_id": "U042", "name": "Ada", "preferences": {"theme": "dark"}}
CART = {"SKU-RED-MUG": 2, "SKU-SOCKS": 1}


def _configured(configure: Callable[[redis.Redis], Any]) -> tuple[Report, str]:
    """doctor() and the policy of a fresh server with Redis's defaults after ``configure(r)``."""
    server = LabServer().start()
    client = server.client()
    try:
        configure(client)
        return doctor(client), client.config_get("maxmemory-policy")["maxmemory-policy"]
    finally:
        client.close()
        server.close()


@check
def configure(my_configure: Any) -> str:
    report, _ = _configured(my_configure)
    problems = [f"{f.setting} ({f.level})" for f in report if f.level != "ok"]
    if problems:
        raise Wrong(f"doctor() still reports: {', '.join(problems)}. Print doctor(r) to see why.")
    return "doctor() finds nothing that loses or refuses sessions."


@check
def configure_hidden(my_configure: Any) -> str:
    _, policy = _configured(my_configure)
    if policy != "allkeys-lru":
        raise Wrong("use allkeys-lru: it evicts idle sessions and keeps brand-new logins.")
    return "allkeys-lru, with a limit and an append-only file."


#: Experiments already run in this kernel, by (policy, maxmemory): the exercise cell and its
#: test cell check the same answer, and one eviction experiment takes ~5 s.
_MEASURED: dict[tuple[str, str], Any] = {}


def _run(policy: Any, maxmemory: Any) -> Any:
    if policy not in POLICIES:
        raise Wrong(f"my_policy is {policy!r}: use one of {', '.join(POLICIES)}.")
    answer = (policy, repr(maxmemory))
    if answer not in _MEASURED:
        try:
            (_MEASURED[answer],) = experiment([policy], maxmemory=maxmemory)
        except SessionError as error:
            raise Wrong(str(error)) from None
    result = _MEASURED[answer]
    if result.refused:
        raise Wrong(f"{policy} refused new logins: the shop is closed to newcomers.")
    if result.hot_kept < 45:
        raise Wrong(f"{policy} logged out active users: pick a policy that knows who is active.")
    if result.new_kept < 0.95 * result.sessions:
        raise Wrong(f"{policy} evicted brand-new logins: which policy keeps the newest users?")
    return result


@check
def policy(my_policy: Any, my_maxmemory: Any) -> str:
    _run(my_policy, my_maxmemory)
    return f"{my_policy} kept the active users and the new logins, and refused nobody."


@check
def policy_hidden(my_policy: Any, my_maxmemory: Any) -> str:
    _run(my_policy, "3mb")
    return f"{my_policy} also works at 3mb."


def _saved(save_session: Callable[..., Any], cart: dict[str, int]) -> tuple[list[str], dict, int]:
    with LabServer() as server:
        client = server.client()
        save_session(client, "ex-1", PROFILE, CART, 600)
        save_session(client, "ex-1", PROFILE, cart, 600)
        keys = session_keys(client, "session:{ex-1}")
        stored = client.hgetall("session:{ex-1}") if client.type("session:{ex-1}") == "hash" else {}
        ttl = client.ttl("session:{ex-1}")
        client.close()
    return keys, stored, ttl


def _expected(cart: dict[str, int]) -> dict[str, str]:
    fields = {f"p:{name}": json.dumps(value) for name, value in PROFILE.items()}
    return {**fields, **{f"c:{sku}": str(quantity) for sku, quantity in cart.items()}}


@check
def one_key(my_save_session: Any) -> str:
    keys, stored, ttl = _saved(my_save_session, CART)
    if keys != ["session:{ex-1}"]:
        raise Wrong(f"the session is stored as {len(keys)} keys {keys}: write one hash.")
    if not stored:
        raise Wrong("session:{ex-1} is not a hash: use HSET with a mapping of fields.")
    expected = _expected(CART)
    if {k: v for k, v in stored.items() if k.startswith("p:")} != {
        k: v for k, v in expected.items() if k.startswith("p:")
    }:
        raise Wrong("the profile fields are not p:<name> -> json.dumps(value).")
    if {k: v for k, v in stored.items() if k.startswith("c:")} != {
        k: v for k, v in expected.items() if k.startswith("c:")
    }:
        raise Wrong("the cart fields are not c:<sku> -> quantity.")
    if not 0 < ttl <= 600:
        raise Wrong(f"TTL is {ttl}: give the key the session's TTL (EXPIRE).")
    return "One hash per session, with its TTL: eviction takes all of it or nothing."


@check
def one_key_hidden(my_save_session: Any) -> str:
    smaller = {"SKU-SOCKS": 5}
    _, stored, _ = _saved(my_save_session, smaller)
    if {k: v for k, v in stored.items() if k.startswith("c:")} != {"c:SKU-SOCKS": "5"}:
        raise Wrong("saving again left the old cart's items: replace the whole session (DEL).")
    return "Saving again replaces the whole session."
