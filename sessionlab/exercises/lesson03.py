"""The exercise checks of lesson 03 (persistence). Each runs the learner's answer on servers
of its own, so it can run twice and never touches the lesson's servers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from ..checks import Wrong, check
from ..crash import CrashLab, crash_experiment
from ..errors import SessionError

RDB_BEFORE, RDB_AFTER = 800, 150  # the scenario of the prediction exercise


def _lost(directives: Any, sessions: int, more_after_bgsave: int | None = None) -> int:
    if not isinstance(directives, Mapping):
        raise Wrong(
            f"my_directives is a {type(directives).__name__}: write a dict such as "
            '{"appendonly": True}.'
        )
    _refuse_everysec(directives)
    try:
        return crash_experiment(dict(directives), sessions, more_after_bgsave).lost
    except SessionError:
        raise Wrong(
            "redis-server refused these directives: check each name (as in redis.conf, with _ "
            "for -) and value."
        ) from None


def _refuse_everysec(directives: Mapping[Any, Any]) -> None:
    """An AOF with ``appendfsync everysec`` (also the default) often loses nothing in the
    experiment, but may lose the last ~2 s on a slow disk: judged from the directives, so the
    verdict does not depend on how busy the disk was."""
    appendonly = str(directives.get("appendonly", "")).lower() in ("true", "yes")
    fsync = str(directives.get("appendfsync", "everysec")).lower()
    if appendonly and fsync == "everysec":
        raise Wrong(
            "appendfsync everysec (also the default) lets Redis reply before the write reaches "
            "the file when the disk is slow, so a crash can lose the last ~2 s of sessions. "
            "Which appendfsync writes (and syncs) every command before Redis replies?"
        )


@check
def no_loss(my_directives: Any) -> str:
    lost = _lost(my_directives, 300)
    if lost:
        raise Wrong(
            f"{lost} of 300 sessions were lost in the crash. Which setting writes every "
            "command to a file before Redis replies?"
        )
    return "No session was lost: all 300 were back after the SIGKILL and restart."


@check
def no_loss_hidden(my_directives: Any) -> str:
    lost = _lost(my_directives, 200, more_after_bgsave=50)
    if lost:
        raise Wrong(
            f"{lost} sessions written after a snapshot were lost: snapshots alone do not "
            "protect the latest writes."
        )
    return "Nothing lost, also for writes after a snapshot."


@check
def predict_rdb(my_prediction: Any) -> str:
    if isinstance(my_prediction, bool) or not isinstance(my_prediction, int):
        raise Wrong(f"my_prediction is {my_prediction!r}: write a whole number of sessions.")
    found = crash_experiment("rdb", RDB_BEFORE, more_after_bgsave=RDB_AFTER).survived
    if my_prediction == found:
        return f"Right: {found} of {RDB_BEFORE + RDB_AFTER} sessions came back."
    hint = "fewer" if my_prediction > found else "more"
    raise Wrong(
        f"{my_prediction} is wrong: {hint} came back. What does dump.rdb hold, and when was "
        "it written?"
    )


@check
def predict_rdb_hidden(my_prediction: Any) -> str:
    if my_prediction != RDB_BEFORE:
        raise Wrong("the snapshot holds the sessions written before the BGSAVE, and only those.")
    return "The snapshot holds exactly the sessions written before it."


def _snapshot_on(lab: CrashLab, my_snapshot: Callable[[redis.Redis], Any]) -> dict[str, Any]:
    """Run the learner's function with a 10 s limit; INFO persistence right after it returns."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            my_snapshot(lab.client)
        except BaseException as error:  # reported below, in the check's one line
            errors.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        raise Wrong("my_snapshot did not return within 10 s: does its loop ever end?")
    if errors:
        raise errors[0]
    return lab.client.info("persistence")


@check
def snapshot(my_snapshot: Any) -> str:
    # rdb-key-save-delay (µs per key): 200 keys take ~0.3 s to save, so returning early shows.
    with CrashLab({"save": "", "rdb_key_save_delay": 1500}) as lab:
        lab.write(200)
        info = _snapshot_on(lab, my_snapshot)
        if info["rdb_bgsave_in_progress"]:
            raise Wrong(
                "my_snapshot returned while the snapshot was still being written "
                "(rdb_bgsave_in_progress:1). Wait until INFO persistence says 0."
            )
        if info["rdb_changes_since_last_save"]:
            raise Wrong("no snapshot finished: did my_snapshot start one with BGSAVE?")
        lab.crash()
        if lab.restart() != 200:
            raise Wrong("the snapshot on disk does not hold the 200 sessions.")
    return "my_snapshot returns once dump.rdb holds every session."


@check
def snapshot_hidden(my_snapshot: Any) -> str:
    # Two snapshots in the same second: a loop on LASTSAVE (whole seconds) waits forever here.
    with CrashLab({"save": ""}) as lab:
        lab.write(50)
        _snapshot_on(lab, my_snapshot)
        lab.write(50)
        info = _snapshot_on(lab, my_snapshot)
        if info["rdb_bgsave_in_progress"] or info["rdb_changes_since_last_save"]:
            raise Wrong("the second snapshot in a row was not complete when my_snapshot returned.")
    return "Two snapshots in a row, each complete on return."
