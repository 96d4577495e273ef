"""The one shared helper of every lesson's exercise checks (see README, "Coursework").

A check takes the learner's answer and returns a :class:`Verdict`: one line that starts with
``✅`` or ``❌`` and says what is wrong and how to fix it. A check never raises, whatever the
answer (the untouched stub ``...``, a function that raises, a wrong type), so Run All of the
student edition never stops at an exercise; and its line never contains a port, an id or a
time, so it is the same on every run (nbval compares it, Otter's doctests compare it).

Lesson modules (``sessionlab/exercises/lessonNN.py``) write checks like this::

    @check
    def env(my_env):
        if my_env.get("REDIS_PORT") != ...:
            raise Wrong("REDIS_PORT is not the locked server's port: use str(locked.port).")
        return "Connected to the locked server."
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

OK = "✅"
NO = "❌"
NOT_ANSWERED = (
    f"{NO} Not answered yet: replace the `...` with your answer, then run this cell again."
)


class Wrong(Exception):
    """Raised inside a check to say what is wrong with the answer and how to fix it."""


class Verdict:
    """What a check returns: shown as its one line, truthy when the answer is right.

    The line is the ``repr`` so that a check at the end of a cell shows exactly that line,
    and an Otter doctest (``>>> check(...)``) compares exactly that line.
    """

    def __init__(self, ok: bool, line: str) -> None:
        self.ok = ok
        self.line = line

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return self.line

    __str__ = __repr__


def unanswered(answer: Any) -> bool:
    """Whether ``answer`` is Otter's stub: ``...``, or a function whose body is ``...``."""
    if answer is Ellipsis:
        return True
    if callable(answer):
        try:
            source = inspect.getsource(answer)
        except (OSError, TypeError):
            return False
        return any(line.strip() == "..." for line in source.splitlines())
    return False


def check(function: Callable[..., str]) -> Callable[..., Verdict]:
    """Turn ``function`` (returns the ✅ text, raises :class:`Wrong`) into a never-raising check.

    Positional arguments are the learner's answers (pass context such as a server as keywords):
    any that is still a stub gives the "not answered yet" line; any other
    exception (raised by the learner's code the check calls) becomes a ❌ line naming it.
    """

    @functools.wraps(function)
    def wrapper(*answers: Any, **options: Any) -> Verdict:
        if any(unanswered(answer) for answer in answers):
            return Verdict(False, NOT_ANSWERED)
        try:
            return Verdict(True, f"{OK} {function(*answers, **options)}")
        except Wrong as wrong:
            return Verdict(False, f"{NO} {wrong}")
        except Exception as error:  # the learner's code failed: say so, never a traceback
            text = str(error).splitlines()[0] if str(error) else ""
            return Verdict(
                False,
                f"{NO} Your code raised {type(error).__name__}"
                f"{': ' + text if text else ''}. Fix it and run your cell, then this one, again.",
            )

    return wrapper
