"""Lesson 05 (Redis Cluster): the exercise checks.

Each check returns one ✅/❌ line (see :mod:`sessionlab.checks`); no line names a value that
depends on the learner's own correct choice (a slot of their key names), so every right answer
shows the same line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from redis.crc import key_slot
from redis.exceptions import RedisError

from ..checks import Wrong, check
from ..cluster import LabCluster, shard_letter, slot_ranges
from ..errors import SessionError
from ..store import SessionStore

#: The choices of the "a master without a replica dies" prediction, and the right one.
DEAD_MASTER_CHOICES = {
    "a": "only the dead master's slots fail; the other masters keep serving theirs",
    "b": "every command fails (CLUSTERDOWN), on every master, until the dead one is back",
    "c": "the other masters take over its slots, and its keys are lost",
}
DEAD_MASTER_ANSWER = "b"

#: Users of the hidden hash-tag check: several, so one tag for everybody shows.
MORE_USERS = ("7", "1001", "U042", "shop-9")


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis hashes when it has a non-empty ``{...}``, else None."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if start < 0 or end <= start + 1:
        return None
    return key[start + 1 : end]


# -- exercise 1: two keys in one slot -----------------------------------------------------


def _pair_slot(keys_for: Callable[[str], Any], user: str) -> int:
    pair = keys_for(user)
    if not (
        isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(k, str) and k for k in pair)
    ):
        raise Wrong(f"keys_for({user!r}) returned {pair!r}: return two key names, a tuple of str.")
    profile_key, cart_key = pair
    if profile_key == cart_key:
        raise Wrong(f"keys_for({user!r}) gives the same name twice: the two keys need two names.")
    if _slot(profile_key) != _slot(cart_key):
        raise Wrong(
            f"{profile_key!r} and {cart_key!r} are in slots {_slot(profile_key)} and "
            f"{_slot(cart_key)}: put the same {{hash tag}} in both names."
        )
    if _hash_tag(profile_key) is None or _hash_tag(cart_key) is None:
        raise Wrong(
            f"{profile_key!r} and {cart_key!r} share a slot by luck only: put a {{hash tag}} "
            "in both names, so it holds for every user."
        )
    return _slot(profile_key)


@check
def hash_tags(keys_for: Any) -> str:
    """User 42's two keys share a slot, thanks to a hash tag."""
    _pair_slot(keys_for, "42")
    return "User 42's two keys share one slot: one Lua script or MULTI can use both."


@check
def hash_tags_hidden(keys_for: Any) -> str:
    """Every user's keys share a slot, and users do not all share one slot."""
    slots = {_pair_slot(keys_for, user) for user in MORE_USERS}
    if len(slots) == 1:
        raise Wrong(
            f"Every user's keys land in slot {slots.pop()}: one master would hold every "
            "checkout. Put the user id inside the {hash tag}."
        )
    return "Each user's two keys share a slot, and different users spread over the slots."


# -- exercise 2: which master serves a key -------------------------------------------------


def _right_shard(slot: int) -> str:
    return next(shard_letter(i) for i, (a, b) in enumerate(slot_ranges(3)) if a <= slot <= b)


def _keys_in_slots(slots: Sequence[int]) -> list[str]:
    """A key name per slot (``probe-<n>``, the first n that hashes there)."""
    wanted, found, n = set(slots), {}, 0
    while wanted - found.keys():
        slot = _slot(f"probe-{n}")
        if slot in wanted and slot not in found:
            found[slot] = f"probe-{n}"
        n += 1
    return [found[slot] for slot in slots]


def _answer_for(shard_of: Callable[[str], Any], key: str) -> None:
    answer = shard_of(key)
    right = _right_shard(_slot(key))
    if answer == right:
        return
    if answer not in ("A", "B", "C"):
        raise Wrong(f'shard_of({key!r}) returned {answer!r}: return "A", "B" or "C".')
    raise Wrong(
        f"shard_of({key!r}) returned {answer!r}, but its slot {_slot(key)} is in master "
        f"{right}'s range: compare the slot with each (first, last) range, both ends included."
    )


@check
def which_master(shard_of: Any, *, key: str) -> str:
    """``shard_of(key)`` names the starting master (A, B or C) of ``key``'s slot."""
    _answer_for(shard_of, key)
    first, last = slot_ranges(3)[ord(_right_shard(_slot(key))) - ord("A")]
    return f"Right: {key} is in slot {_slot(key)}, in the range {first}-{last}."


@check
def which_master_hidden(shard_of: Any) -> str:
    """Right at both ends of every range (an off-by-one shows here)."""
    ends = [slot for first, last in slot_ranges(3) for slot in (first, last)]
    for key in _keys_in_slots(ends):
        _answer_for(shard_of, key)
    return "Right at both ends of every master's range."


# -- exercise 3: WAIT on the connection that wrote -----------------------------------------


def _resume(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _session_with_a_replica(cluster: LabCluster, store: SessionStore) -> tuple[str, Any]:
    """A fresh session id whose master has a running replica (a master added by the scale-out
    section has none), and that replica."""
    try:
        cluster.wait_until_ok()
        for n in range(64):
            session_id = f"exercise-wait-{n}"
            replicas = cluster.replicas_of(cluster.master_of(store.key(session_id)))
            if replicas:
                return session_id, replicas[0]
    except (SessionError, RedisError) as error:
        raise Wrong(
            f"The cluster is not ready ({type(error).__name__}): run cluster.heal(), then this "
            "cell again."
        ) from None
    raise Wrong("No master has a running replica: run cluster.heal(), then this cell again.")


def _confirmed(
    confirmed_update: Any, cluster: LabCluster, store: SessionStore, frozen: bool
) -> int:
    session_id, replica = _session_with_a_replica(cluster, store)
    after = {"user_id": "U0300", "name": "after", "frozen": frozen}
    store.create(session_id, {"user_id": "U0300", "name": "before"}, ttl=600)
    pid = replica.pid if frozen else None
    thaw = threading.Timer(2.0, _resume, (pid,))  # a WAIT with timeout 0 would block forever
    try:
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            thaw.start()
        answer = confirmed_update(session_id, after)
    finally:
        thaw.cancel()
        _resume(pid)
    updated = store.get(session_id) == after
    store.delete(session_id)  # the check leaves no key behind
    if answer is None:
        raise Wrong("confirmed_update returned None: return what WAIT answers.")
    if not updated:
        raise Wrong("The session was not updated: call store.update(session_id, profile) first.")
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise Wrong(f"It returned {answer!r}: return WAIT's answer, a number of replicas.")
    return answer


@check
def wait(confirmed_update: Any, *, cluster: LabCluster, store: SessionStore) -> str:
    """The update happens and WAIT answers 1 (the replica has it).

    A busy machine can keep a healthy replica's ack past 200 ms: three tries before a verdict.
    """
    for _ in range(3):
        answer = _confirmed(confirmed_update, cluster, store, frozen=False)
        if answer == 1:
            break
    if answer != 1:
        raise Wrong(f"WAIT answered {answer}, expected 1: ask for 1 replica, 200 ms at most.")
    return "The update reached the replica: WAIT answered 1."


@check
def wait_hidden(confirmed_update: Any, *, cluster: LabCluster, store: SessionStore) -> str:
    """With the replica frozen (SIGSTOP) the answer must be 0: WAIT was really asked."""
    answer = _confirmed(confirmed_update, cluster, store, frozen=True)
    if answer != 0:
        raise Wrong(
            f"The replica was frozen, yet your function answered {answer}: return what "
            "WAIT 1 200 answers on the connection that made the update."
        )
    return "With the replica frozen, WAIT answered 0: it counted acks of your own write."


# -- exercise 4: a master without a replica dies ------------------------------------------


@check
def dead_master(prediction: Any) -> str:
    """The prediction: the whole cluster stops (cluster-require-full-coverage yes)."""
    choices = ", ".join(f'"{letter}"' for letter in DEAD_MASTER_CHOICES)
    if not isinstance(prediction, str) or prediction.strip().lower() not in DEAD_MASTER_CHOICES:
        raise Wrong(f"{prediction!r} is not one of {choices}.")
    if prediction.strip().lower() != DEAD_MASTER_ANSWER:
        raise Wrong(
            f'Not "{prediction.strip().lower()}": think of cluster-require-full-coverage, '
            "yes by default. Then run the experiment below."
        )
    return f"Right: {DEAD_MASTER_CHOICES[DEAD_MASTER_ANSWER]}."
