"""Checks of lesson 07's exercises (Securing sessions); format: README, "Coursework".

Each check works on fresh keys and users of its own and removes them, so it can run twice.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import redis

from ..checks import Wrong, check
from ..security import create_acl_user, store_workout
from ..server import LabServer
from ..store import SessionStore

# -- exercise 1: when does a constantly touched session die? ---------------------------------

TOUCHED, LEFT_ALONE = 5, 2  # idle_ttl=2, absolute_ttl=5 in the lesson's experiment


def _seconds(prediction: Any, name: str) -> float:
    if not isinstance(prediction, dict) or name not in prediction:
        raise Wrong(
            f'my_prediction must be a dict with the keys "touched" and "left alone", e.g. '
            f'{{"touched": 3, "left alone": 1}}; it has no {name!r}.'
        )
    value = prediction[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Wrong(f"my_prediction[{name!r}] must be a number of seconds, not {value!r:.30}.")
    return float(value)


@check
def death_time(my_prediction: Any) -> str:
    touched = _seconds(my_prediction, "touched")
    if touched == TOUCHED:
        return "Right: touches slide the idle clock, never the absolute deadline (5 s)."
    if touched == LEFT_ALONE:
        raise Wrong(
            "2 s is the idle timeout, but every touch restarts the idle clock. Which clock "
            "does a touch never move?"
        )
    if touched > TOUCHED:
        raise Wrong(
            f"{touched:g} s is past the absolute timeout: no touch can move that deadline. "
            "Look at absolute_ttl."
        )
    raise Wrong(
        f"{touched:g} s is too early: a touch every half second keeps the idle clock (2 s) "
        "from running out. What stops the session then?"
    )


@check
def death_time_hidden(my_prediction: Any) -> str:
    alone = _seconds(my_prediction, "left alone")
    if alone != LEFT_ALONE:
        raise Wrong(
            f"left alone: {alone:g} s is not it. Nobody touches that session: which timeout "
            "runs out first, idle (2 s) or absolute (5 s)?"
        )
    return "Right: a session nobody uses dies at the idle timeout (2 s)."


# -- exercise 2: a login that rotates the session id --------------------------------------------


def _try_login(my_login: Callable[..., Any], store: SessionStore) -> tuple[str, str, str]:
    """Run the learner's login on a fresh anonymous session with a cart: (old, new, user)."""
    user = f"ex07-{secrets.token_hex(4)}"
    old = store.new_id()
    store.create(old, {"visits": 1})
    store.add_to_cart(old, "SKU-RED-MUG", 2)
    new = my_login(store, old, user, "Rohith")
    if not isinstance(new, str):
        store.delete(old)
        raise Wrong(
            f"my_login returned {new!r:.40}: return the session id the browser must use from "
            "now on (the one store.rotate gave you)."
        )
    if new == old:
        store.delete(old)
        raise Wrong(
            "my_login kept the id the browser came with, so whoever planted it rides the "
            "logged-in session. Call store.rotate(session_id) and return the new id."
        )
    return old, new, user


@check
def rotating_login(my_login: Any, *, store: SessionStore) -> str:
    old, new, user = _try_login(my_login, store)
    try:
        if store.get(old) is not None:
            raise Wrong("the old id still reads the session: rotate it (store.rotate) at login.")
        session = store.load(new)
        if session is None:
            raise Wrong("the id you returned holds no session: return what store.rotate returned.")
        if session.cart != {"SKU-RED-MUG": 2}:
            raise Wrong(
                f"the cart is {session.cart}, not {{'SKU-RED-MUG': 2}}: rotate the session "
                "instead of creating a new one, so the cart moves with it."
            )
        if session.profile.get("name") != "Rohith":
            raise Wrong("the new session's profile has no name: patch the name into it.")
        if session.user_id != user or new not in [i.session_id for i in store.sessions_of(user)]:
            raise Wrong(
                "the session is not linked to the user, so 'log out everywhere' would miss it: "
                "pass the user to the rotation, store.rotate(session_id, user_id=user_id)."
            )
    finally:
        store.delete(new)
        store.delete(old)
    return "The old id is dead, the new one holds the cart and the user: fixation fails."


@check
def rotating_login_hidden(my_login: Any, *, store: SessionStore) -> str:
    old, new, _user = _try_login(my_login, store)
    try:
        if store.patch(old, {"address": "attacker's"}):
            raise Wrong("a write to the old id still works after login: rotate at login.")
        profile = store.get(new) or {}
        if "address" in profile:
            raise Wrong("the attacker's write reached the logged-in session.")
        if len(new) < 43:
            raise Wrong("the new id is shorter than 43 characters: use the id store.rotate gives.")
    finally:
        store.delete(new)
        store.delete(old)
    return "An attacker holding the old id can neither read nor write after the login."


# -- exercise 3: the web app's ACL user ---------------------------------------------------------


def _rules(my_rules: Any) -> list[str]:
    if isinstance(my_rules, str):
        my_rules = my_rules.split()
    if not isinstance(my_rules, Sequence) or not all(isinstance(r, str) for r in my_rules):
        raise Wrong("my_rules must be a list of rule strings, e.g. ['on', '~session:*', ...].")
    if any(r.startswith((">", "#", "<", "!")) or r == "nopass" for r in my_rules):
        raise Wrong("leave passwords out of my_rules: the check (and the lesson) adds its own.")
    return list(my_rules)


def _dry_run(admin: redis.Redis, user: str, *command: str) -> bool:
    """Whether ``user`` may run ``command`` (``ACL DRYRUN``: nothing is executed)."""
    reply = admin.execute_command("ACL", "DRYRUN", user, *command)
    return reply in ("OK", b"OK", True)


def _with_user(
    my_rules: Any, server: LabServer, test: Callable[[redis.Redis, str, SessionStore], str]
) -> str:
    rules = _rules(my_rules)
    admin = server.client()
    name = f"ex07-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    try:
        try:
            create_acl_user(admin, name, password, rules)
        except redis.exceptions.ResponseError as error:
            raise Wrong(f"Redis refused the rules: {str(error).replace(name, '<user>')}") from None
        client = server.client(username=name, password=password)
        try:
            return test(admin, name, SessionStore(client))
        finally:
            client.close()
    finally:
        admin.execute_command("ACL", "DELUSER", name)
        admin.close()


@check
def acl_rule(my_rules: Any, *, server: LabServer) -> str:
    def test(admin: redis.Redis, name: str, store: SessionStore) -> str:
        try:
            store_workout(store, f"{name}-user")
        except redis.exceptions.ResponseError as error:  # NOPERM, or an ACL failure in a script
            text = str(error)
            # NOPERM, Valkey's "ACL failure in script", Redis 7.0's "can't run this command"
            if not any(mark in text for mark in ("permission", "ACL", "can't run this command")):
                raise
            found = re.search(r"'([a-z|]+)' command", text)
            needed = f"the command {found.group(1)!r}" if found else "a key or command"
            raise Wrong(
                f"the store cannot work through this user: it needs {needed}, which your rules "
                "refuse. Allow every command in `used` and the keys session:*."
            ) from None
        for command in (["FLUSHALL"], ["CONFIG", "GET", "*"], ["KEYS", "*"]):
            if _dry_run(admin, name, *command):
                raise Wrong(f"{command[0]} is allowed: start with -@all, then allow only `used`.")
        if _dry_run(admin, name, "HGETALL", "user:42:profile"):  # a command the store uses
            raise Wrong("the user may read keys outside session:*: use ~session:* (resetkeys).")
        return "The store works through this user; FLUSHALL, CONFIG, KEYS and other keys refused."

    return _with_user(my_rules, server, test)


@check
def acl_rule_hidden(my_rules: Any, *, server: LabServer) -> str:
    def test(admin: redis.Redis, name: str, _store: SessionStore) -> str:
        for command in (
            ["SHUTDOWN"],
            ["ACL", "SETUSER", name, "+@all"],
            ["DEBUG", "SLEEP", "0"],
            ["SCRIPT", "FLUSH"],
            ["MODULE", "LIST"],
        ):
            if _dry_run(admin, name, *command):
                raise Wrong(f"{' '.join(command[:2])} is allowed: the app never needs it.")
        if _dry_run(admin, name, "PUBLISH", "orders", "x"):
            raise Wrong("the user may publish to channels: add resetchannels.")
        return "SHUTDOWN, ACL, DEBUG, SCRIPT FLUSH, MODULE and channels are refused too."

    return _with_user(my_rules, server, test)
