"""Lesson 01 (connecting): the exercise checks, and the command counter the lesson measures with."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis

from ..checks import Wrong, check
from ..config import ENV_FILE_VARIABLE, load_settings, read_environment
from ..connection import connect
from ..errors import SessionError

#: Commands a measurement leaves out: the counter's own INFO, and a new connection's handshake.
NOT_COUNTED = ("info", "hello", "auth", "select", "client")


def _calls(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()})


@contextmanager
def count_commands(client: redis.Redis) -> Iterator[Counter[str]]:
    """Count the commands the server runs inside the block (``INFO commandstats`` before/after).

    Counts every client of that server, so measure on a server nothing else is using.
    """
    counted: Counter[str] = Counter()
    before = _calls(client)
    yield counted
    after = _calls(client)
    for name, calls in after.items():
        if calls > before[name] and not name.startswith(NOT_COUNTED):
            counted[name] = calls - before[name]


# -- exercise 1: a .env for the locked server -------------------------------------------------


def _check_env_values(my_env: Any) -> None:
    if not isinstance(my_env, Mapping):
        raise Wrong(
            f"my_env is a {type(my_env).__name__}: make it a dict like {{'REDIS_HOST': ...}}."
        )
    for name, value in my_env.items():
        if not isinstance(value, str):
            raise Wrong(
                f"{name} is {type(value).__name__} {value!r}: a .env file holds text, "
                f"so write it as a str (for a port: str(locked.port))."
            )


def _connects_to(settings_env: Mapping[str, str], server: Any) -> None:
    try:
        client = connect(load_settings(settings_env))
    except SessionError as error:
        raise Wrong(f"{type(error).__name__}: {error}") from None
    try:
        port = client.connection_pool.connection_kwargs.get("port")
        if port != server.port:
            raise Wrong("That is a server, but not the locked one: REDIS_PORT is str(locked.port).")
    finally:
        client.close()


@check
def env(my_env: Any, *, server: Any) -> str:
    """``load_settings(my_env)`` must point at ``server`` with its password."""
    _check_env_values(my_env)
    if not any(my_env.get(name) for name in ("REDIS_HOST", "REDIS_PORT", "REDIS_URL")):
        raise Wrong("my_env names no server: set REDIS_HOST, REDIS_PORT and REDIS_PASSWORD.")
    _connects_to(my_env, server)
    return "Connected to the locked server, with its password."


@check
def env_hidden(my_env: Any, *, server: Any) -> str:
    """The same variables, written to a real ``.env`` file and read back, still connect."""
    _check_env_values(my_env)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, ".env")
        with open(path, "w", encoding="utf-8") as out:
            out.writelines(f"{name}={value}\n" for name, value in my_env.items())
        _connects_to(read_environment({ENV_FILE_VARIABLE: path}), server)
    return "The same variables work from a .env file."


# -- exercise 2: one raw SET with options ----------------------------------------------------


def _run_command(my_command: Any, client: redis.Redis) -> Any:
    if not isinstance(my_command, list | tuple) or not my_command:
        raise Wrong("my_command is a list of words, e.g. ['SET', 'greeting', 'hello', ...].")
    if str(my_command[0]).upper() != "SET":
        raise Wrong(f"Your command starts with {my_command[0]!r}: this exercise needs SET.")
    if len(my_command) < 3 or my_command[1] != "greeting":
        raise Wrong("The key is the second word: ['SET', 'greeting', 'hello', ...].")
    return client.execute_command(*my_command)


@check
def raw_set(my_command: Any, *, client: redis.Redis) -> str:
    """Stores ``hello`` under ``greeting`` with a 60 s expiry."""
    client.delete("greeting")
    try:
        _run_command(my_command, client)
        value, ttl = client.get("greeting"), client.ttl("greeting")
    finally:
        client.delete("greeting")
    if value != "hello":
        raise Wrong(f"GET greeting gives {value!r} after your command: the value is 'hello'.")
    if ttl == -1:
        raise Wrong("greeting has no expiry: add the option EX followed by the seconds.")
    if ttl != 60:
        raise Wrong(f"greeting expires in {ttl} s: it should be 60 (EX counts seconds).")
    return "SET greeting hello with a 60 s expiry."


@check
def raw_set_hidden(my_command: Any, *, client: redis.Redis) -> str:
    """Never overwrites a greeting that is already there (NX)."""
    client.set("greeting", "earlier", ex=600)
    try:
        reply = _run_command(my_command, client)
        value = client.get("greeting")
    finally:
        client.delete("greeting")
    if value != "earlier" or reply is not None:
        raise Wrong("It replaced an existing greeting: add NX (only if the key does not exist).")
    return "An existing greeting is left alone (NX)."


# -- exercise 3: predict how many commands a pipeline sends -------------------------------------


def _transaction_of_three(client: redis.Redis) -> int:
    keys = ("exercise:a", "exercise:b", "exercise:c")
    with count_commands(client) as counted:
        pipe = client.pipeline()
        for number, key in enumerate(keys):
            pipe.set(key, number)
        pipe.execute()
    client.delete(*keys)
    return sum(counted.values())


@check
def pipeline(my_prediction: Any, *, client: redis.Redis) -> str:
    """The number of commands Redis counts for ``pipeline()`` with three ``set`` calls."""
    if not isinstance(my_prediction, int) or isinstance(my_prediction, bool):
        raise Wrong(f"my_prediction is {my_prediction!r}: make it a whole number, like 4.")
    measured = _transaction_of_three(client)
    if my_prediction == measured:
        return f"Right: {measured} commands (MULTI, 3 x SET, EXEC) in one round trip."
    if my_prediction == 3:
        raise Wrong(
            "3 counts the SETs only: pipeline() is a transaction by default. What wraps it?"
        )
    if my_prediction == 1:
        raise Wrong("1 is the number of round trips: Redis still runs each command of the batch.")
    direction = "more" if my_prediction < measured else "fewer"
    raise Wrong(
        f"Not {my_prediction}: Redis counts {direction}. A transaction has a start and an end."
    )
