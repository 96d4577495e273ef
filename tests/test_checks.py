"""The exercise checks: one line, never raising, and each able to say ❌ to a wrong answer."""

from __future__ import annotations

import json

import pytest
import redis

from sessionlab.checks import NOT_ANSWERED, Verdict, Wrong, check, unanswered
from sessionlab.exercises import lesson01, lesson02


@check
def _is_five(x: object) -> str:
    if x != 5:
        raise Wrong("x is not 5: set it to 5.")
    return "x is 5."


def test_verdict_is_one_line_and_truthy_only_when_right() -> None:
    right, wrong = _is_five(5), _is_five(4)
    assert isinstance(right, Verdict)
    assert (repr(right), bool(right)) == ("✅ x is 5.", True)
    assert (repr(wrong), bool(wrong)) == ("❌ x is not 5: set it to 5.", False)


def test_stubs_are_not_answered() -> None:
    def stub_function(key): ...

    assert repr(_is_five(...)) == NOT_ANSWERED
    assert unanswered(stub_function)
    assert unanswered({"REDIS_PORT": ...}) and unanswered(["SET", ...])
    assert not unanswered({"REDIS_PORT": "1"}) and not unanswered(len)


def test_the_learners_exception_becomes_a_line() -> None:
    @check
    def calls(function: object) -> str:
        function()  # type: ignore[operator]
        return "called"

    def broken():
        return {}["missing"]

    verdict = calls(broken)
    assert repr(verdict) == (
        "❌ Your code raised KeyError: 'missing'. Fix it and run your cell, then this one, again."
    )


def test_raw_set_checks(client: redis.Redis) -> None:
    right = ["SET", "greeting", "hello", "EX", "60", "NX"]
    assert lesson01.raw_set(right, client=client) and lesson01.raw_set_hidden(right, client=client)
    no_nx = right[:-1]
    assert lesson01.raw_set(no_nx, client=client)
    assert "NX" in repr(lesson01.raw_set_hidden(no_nx, client=client))
    assert "no expiry" in repr(lesson01.raw_set(["SET", "greeting", "hello"], client=client))
    assert "needs SET" in repr(lesson01.raw_set(["GET", "greeting"], client=client))


@pytest.mark.parametrize(
    ("prediction", "ok"), [(5, True), (3, False), (1, False), ("5", False), (True, False)]
)
def test_pipeline_prediction(client: redis.Redis, prediction: object, ok: bool) -> None:
    assert bool(lesson01.pipeline(prediction, client=client)) is ok


def test_update_checks_catch_the_seeds_bugs(client: redis.Redis) -> None:
    def seed(key, data):  # the seed: check-then-act, plain SET
        if client.exists(key):
            client.set(key, json.dumps(data))
            return True
        return False

    def fixed(key, data):
        return bool(client.set(key, json.dumps(data), xx=True, keepttl=True))

    def two_commands(key, data):  # keeps the TTL but still checks first
        return bool(client.exists(key)) and bool(client.set(key, json.dumps(data), keepttl=True))

    assert "TTL was lost" in repr(lesson02.update(seed, client=client))
    assert lesson02.update(fixed, client=client) and lesson02.update_hidden(fixed, client=client)
    assert lesson02.update(two_commands, client=client)
    assert "EXISTS x1" in repr(lesson02.update_hidden(two_commands, client=client))


def test_add_item_checks(client: redis.Redis) -> None:
    def atomic(key, sku, quantity):
        return client.hincrby(key, f"c:{sku}", quantity)

    def read_then_write(key, sku, quantity):
        new = int(client.hget(key, f"c:{sku}") or 0) + quantity
        client.hset(key, f"c:{sku}", new)
        return new

    assert lesson02.add_item(atomic, client=client)
    assert lesson02.add_item_hidden(atomic, client=client)
    assert lesson02.add_item(read_then_write, client=client)
    assert "HGET x1" in repr(lesson02.add_item_hidden(read_then_write, client=client))


@pytest.mark.parametrize(("prediction", "ok"), [(-1, True), (3600, False), (-2, False)])
def test_seed_ttl_prediction(prediction: int, ok: bool) -> None:
    assert bool(lesson02.seed_ttl(prediction)) is ok
