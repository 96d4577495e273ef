"""The checks of lesson 05's exercises (Redis Cluster).

Each check returns one line, ``✅ ...`` or ``❌ what is wrong``, shown as the cell's result
(the library never prints), and never raises: a student's Run All goes on past an unanswered
exercise (``...``) or a broken function, and the line is what a grader's doctest compares.
Success lines name no value that depends on the student's own (correct) choice, so every
right answer shows the same line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Sequence
from typing import Any

from redis.crc import key_slot

from .cluster import LabCluster, shard_letter, slot_ranges
from .store import SessionStore

#: The choices of the "a master without a replica dies" prediction, and the right one.
DEAD_MASTER_CHOICES = {
    "a": "only the dead master's slots fail; the other masters keep serving theirs",
    "b": "every command fails (CLUSTERDOWN), on every master, until the dead one is back",
    "c": "the other masters take over its slots, and its keys are lost",
}
DEAD_MASTER_ANSWER = "b"


class Verdict(str):
    """A check's one line; its repr is the line itself, so a notebook shows it unquoted."""

    def __repr__(self) -> str:
        return str(self)

    @property
    def passed(self) -> bool:
        return self.startswith("✅")


def _unanswered(value: Any) -> bool:
    return value is Ellipsis or value is None


def _slot(key: str) -> int:
    return key_slot(key.encode())


def check_hash_tag_keys(keys_for: Any, users: Sequence[str] = ("42",)) -> Verdict:
    """Exercise 1: ``keys_for(user_id)`` names a user's two keys so that they share a slot.

    With several ``users`` it also checks that users do not all share one slot (one master
    would then hold every checkout).
    """
    if not callable(keys_for):
        return Verdict("❌ define keys_for(user_id) so that it returns (profile_key, cart_key)")
    slots = []
    for user in users:
        try:
            pair = keys_for(user)
        except Exception as error:  # the student's code: report, never raise
            return Verdict(f"❌ keys_for({user!r}) raised {type(error).__name__}: {error}")
        if (
            not isinstance(pair, tuple)
            or len(pair) != 2
            or not all(isinstance(key, str) and key for key in pair)
        ):
            return Verdict(
                f"❌ keys_for({user!r}) returned {pair!r}: return two key names, a tuple of str"
            )
        profile_key, cart_key = pair
        if profile_key == cart_key:
            return Verdict(
                f"❌ keys_for({user!r}) gives the same name twice: the two keys need two names"
            )
        if _slot(profile_key) != _slot(cart_key):
            return Verdict(
                f"❌ {profile_key!r} and {cart_key!r} are in slots {_slot(profile_key)} and "
                f"{_slot(cart_key)}: put the same {{hash tag}} in both names"
            )
        if _hash_tag(profile_key) is None or _hash_tag(cart_key) is None:
            return Verdict(
                f"❌ {profile_key!r} and {cart_key!r} share a slot by luck only: put a "
                "{hash tag} in both names so it holds for every user"
            )
        slots.append(_slot(profile_key))
    if len(users) > 1 and len(set(slots)) == 1:
        return Verdict(
            f"❌ every user's keys land in slot {slots[0]}: one master would hold every "
            "checkout; put the user id inside the {hash tag}"
        )
    if len(users) == 1:
        return Verdict(
            f"✅ user {users[0]}'s two keys share one slot: one Lua script or MULTI can use both"
        )
    else:
        return Verdict(
            "✅ each user's two keys share a slot, and different users spread over the slots"
        )


def check_owner_prediction(answer: Any, key: str) -> Verdict:
    """Exercise 2: which of the 3 starting masters (shard letter) serves ``key``."""
    slot = _slot(key)
    ranges = slot_ranges(3)
    right = next(shard_letter(i) for i, (a, b) in enumerate(ranges) if a <= slot <= b)
    first, last = ranges[ord(right) - ord("A")]
    if _unanswered(answer):
        return Verdict('❌ no answer yet: set it to "A", "B" or "C"')
    elif not isinstance(answer, str) or answer.strip().upper() not in ("A", "B", "C"):
        return Verdict(f'❌ {answer!r} is not a master of this cluster: answer "A", "B" or "C"')
    elif answer.strip().upper() != right:
        return Verdict(
            f"❌ not {answer.strip().upper()}: compute the slot of {key!r} "
            "(CLUSTER KEYSLOT) and find the master whose range holds it"
        )
    else:
        return Verdict(
            f"✅ right: {key} is in slot {slot}, in master {right}'s range {first}-{last}"
        )


def check_confirmed_update(
    confirmed_update: Any,
    cluster: LabCluster,
    store: SessionStore,
    *,
    frozen_replica: bool = False,
) -> Verdict:
    """Exercise 3: ``confirmed_update(session_id, profile)`` updates, then returns WAIT's count.

    With ``frozen_replica`` the replica is stopped (SIGSTOP) during the call: a WAIT on the
    connection that wrote must answer 0; one on a connection that wrote nothing answers 1.
    """
    if not callable(confirmed_update):
        return Verdict("❌ define confirmed_update(session_id, profile) first")
    session_id = "exercise-wait"
    before = {"user_id": "U0300", "name": "before"}
    after = {"user_id": "U0300", "name": "after", "frozen": frozen_replica}
    try:
        store.create(session_id, before, ttl=600)
        cluster.wait_until_ok()
        replica = cluster.replica_of(store.key(session_id))
    except Exception as error:
        return Verdict(
            f"❌ the cluster is not ready ({type(error).__name__}: {error}): re-run the setup cell"
        )
    pid = replica.pid if frozen_replica else None
    # Thaw the replica after 2 s whatever happens: a WAIT with timeout 0 would block forever.
    thaw = threading.Timer(2.0, _resume, (pid,))
    try:
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)
            thaw.start()
        answer = confirmed_update(session_id, after)
    except Exception as error:  # the student's code: report, never raise
        return Verdict(f"❌ confirmed_update raised {type(error).__name__}: {error}")
    finally:
        thaw.cancel()
        _resume(pid)
    if _unanswered(answer):
        return Verdict(
            "❌ confirmed_update returned nothing: return what WAIT answers (replicas that have it)"
        )
    elif store.get(session_id) != after:
        return Verdict(
            "❌ the session was not updated: call store.update(session_id, profile) first"
        )
    elif isinstance(answer, bool) or not isinstance(answer, int):
        return Verdict(f"❌ it returned {answer!r}: return WAIT's answer, a number of replicas")
    elif frozen_replica and answer != 0:
        return Verdict(
            f"❌ the replica was frozen, yet your function answered {answer}: return what "
            "WAIT 1 200 answers on the connection that made the update"
        )
    elif not frozen_replica and answer != 1:
        return Verdict(
            f"❌ WAIT answered {answer}, expected 1: ask for 1 replica with a timeout (200 ms)"
        )
    elif frozen_replica:
        return Verdict(
            "✅ with the replica frozen WAIT answered 0: it counted acks of your own write"
        )
    else:
        return Verdict("✅ the update reached the replica: WAIT answered 1")


def check_dead_master_prediction(answer: Any) -> Verdict:
    """Exercise 4: what a cluster does when a master without a replica dies."""
    choices = ", ".join(f'"{letter}"' for letter in DEAD_MASTER_CHOICES)
    if _unanswered(answer):
        return Verdict(f"❌ no answer yet: set it to one of {choices}")
    elif not isinstance(answer, str) or answer.strip().lower() not in DEAD_MASTER_CHOICES:
        return Verdict(f"❌ {answer!r} is not one of {choices}")
    elif answer.strip().lower() != DEAD_MASTER_ANSWER:
        return Verdict(
            f'❌ not "{answer.strip().lower()}": with cluster-require-full-coverage yes (the '
            "default) a cluster that cannot serve every slot serves none"
        )
    else:
        return Verdict(f"✅ right: {DEAD_MASTER_CHOICES[DEAD_MASTER_ANSWER]}")


def _resume(pid: int | None) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis hashes when it has a non-empty ``{...}``, else None."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    if start < 0 or end <= start + 1:
        return None
    return key[start + 1 : end]
