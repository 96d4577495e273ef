"""Private servers and their data directories never outlive the process that owns them.

Why not just ``atexit``: a Jupyter kernel is restarted with SIGTERM/SIGKILL, a terminal
closes with SIGHUP, and no exit hook runs then. Why not ``PR_SET_PDEATHSIG``: it is Linux
only (most students have macOS) and it removes no directory.

So each owner process starts one **watchdog**: this file, run by the same Python with only
the standard library, in its own session (a kernel restart kills the kernel's process group,
not the watchdog). The owner keeps the write end of a pipe whose read end is the watchdog's
stdin, and tells it (one JSON object per line) which server processes and data directories
it holds, and which it has cleaned up itself. When the pipe reaches end of file -- the owner
exited or was killed, by any signal, on Linux or macOS -- the watchdog kills the servers
still listed and removes the directories.

Each temporary data directory also holds a marker naming its owner by pid *and* process
start time (so a reused pid is not mistaken for the owner). If even the watchdog could not
run (owner and watchdog killed together), the next ``LabServer`` sweeps the directories
whose owner is gone (:func:`sweep`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

#: Temporary data directories start with this; only those are ever swept.
DIR_PREFIX = "sessionlab-"
#: The marker file in each temporary data directory.
MARKER = ".sessionlab-owner"
#: How long the watchdog and the sweep wait for a killed server to be gone.
KILL_WAIT = 5.0


# -- processes, identified by pid and start time ---------------------------------------------


def start_time(pid: int) -> str | None:
    """An opaque token for when ``pid`` started; ``None`` if no such live process.

    A pid and its start time name one process for good: pids are reused, start times are not.
    Linux reads ``/proc`` (clock ticks since boot); elsewhere (macOS) ``ps -o lstart``.
    A zombie counts as gone.
    """
    if pid <= 0:
        return None
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return None if fields[0] == b"Z" else fields[19].decode()
    try:
        out = subprocess.run(
            ["ps", "-o", "stat=", "-o", "lstart=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split(None, 1)[1] if " " in out else out


#: How :func:`start_time` reads a start time here: markers written another way (another OS
#: build, another version) are never judged by comparing start times.
CLOCK = "proc-stat" if sys.platform.startswith("linux") else "ps-lstart"


def exists(pid: int) -> bool:
    """True if some process (any user's, any age) has this pid."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is another user's
        return True
    return True


def alive(pid: int, started: str | None) -> bool:
    """True while the process ``pid`` that started at ``started`` runs."""
    return started is not None and start_time(pid) == started


def kill(pid: int, started: str | None) -> None:
    """SIGKILL that process (never a newer one with the same pid) and wait until it is gone."""
    if not alive(pid, started):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    deadline = time.monotonic() + KILL_WAIT
    while alive(pid, started) and time.monotonic() < deadline:
        time.sleep(0.01)


# -- the marker and the sweep ---------------------------------------------------------------


def write_marker(directory: Path, owner: int, owner_started: str | None, **more: Any) -> None:
    """Record in ``directory`` who owns it (and which server runs in it)."""
    text = json.dumps({"owner": owner, "owner_started": owner_started, "clock": CLOCK, **more})
    path = directory / MARKER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as marker:
        marker.write(text)


def sweep(parent: str | None = None) -> list[Path]:
    """Remove ``sessionlab-*`` directories (of this user) whose owner process is gone.

    A server still running in such a directory is killed first (only if its pid and start
    time match the marker). Directories without a marker are left alone: whose they are
    cannot be known. Returns the directories removed.
    """
    removed = []
    parent = parent or tempfile.gettempdir()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(DIR_PREFIX):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
                continue
            marker = json.loads((Path(entry.path) / MARKER).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(marker, dict) or not _owner_gone(marker):
            continue
        if marker.get("server"):
            kill(int(marker["server"]), marker.get("server_started"))
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def _owner_gone(marker: dict[str, Any]) -> bool:
    """No process has the owner's pid, or (same clock) the one that has it started later."""
    pid = int(marker.get("owner", 0))
    if not exists(pid):
        return True
    return marker.get("clock") == CLOCK and not alive(pid, marker.get("owner_started"))


# -- the owner's side -------------------------------------------------------------------------


class _Owner:
    """This process's watchdog and what it has been told (one per process, reset after fork)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.dirs: set[str] = set()
        self.servers: dict[int, str | None] = {}

    @functools.cached_property
    def started(self) -> str | None:
        return start_time(self.pid)


_lock = threading.RLock()
_owner = _Owner()
_abandoned: list[Any] = []  # a parent's watchdog handle, kept (not closed) in a forked child


def owner() -> tuple[int, str | None]:
    """This process as an owner: ``(pid, start time)``."""
    _check_fork()
    return _owner.pid, _owner.started


def claim_dir(directory: Path) -> None:
    """The watchdog removes ``directory`` if this process ends without :func:`release_dir`."""
    with _lock:
        _check_fork()
        write_marker(directory, _owner.pid, _owner.started)
        _owner.dirs.add(str(directory))
        _send({"dir": str(directory)})


def release_dir(directory: Path) -> None:
    with _lock:
        _check_fork()
        if str(directory) in _owner.dirs:
            _owner.dirs.discard(str(directory))
            _send({"forget_dir": str(directory)})


def claim_server(pid: int, directory: Path | None) -> str | None:
    """The watchdog kills ``pid`` if this process ends first; returns its start time.

    ``directory`` (a temporary one) also records the server, for :func:`sweep`.
    """
    started = start_time(pid)
    with _lock:
        _check_fork()
        if directory is not None:
            write_marker(directory, _owner.pid, _owner.started, server=pid, server_started=started)
        _owner.servers[pid] = started
        _send({"server": pid, "started": started})
    return started


def release_server(pid: int) -> None:
    with _lock:
        _check_fork()
        if _owner.servers.pop(pid, "absent") != "absent":
            _send({"forget_server": pid})


def private_directory(name: str) -> Path:
    """A fresh 0700 temporary directory that is removed even if this process is killed
    (the watchdog removes it); :func:`remove_directory` removes it now."""
    sweep()
    path = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{name}-"))
    claim_dir(path)
    return path


def remove_directory(path: Path) -> None:
    """Remove a :func:`private_directory` and everything in it."""
    shutil.rmtree(path, ignore_errors=True)
    release_dir(path)


def end_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Stop a child that :func:`claim_server` registered: SIGTERM (it cleans up after itself),
    SIGKILL if it is still there after ``timeout`` seconds; then the watchdog forgets it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    release_server(process.pid)


def close() -> None:
    """End the lifeline now (normal exit): the watchdog cleans what is left, then exits."""
    with _lock:
        watchdog, _owner.watchdog = _owner.watchdog, None
        if watchdog is None or _owner.pid != os.getpid():
            return
        assert watchdog.stdin is not None
        try:
            watchdog.stdin.close()
            watchdog.wait(KILL_WAIT + 5)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _send(message: dict[str, Any]) -> None:
    """Tell the watchdog, starting it (again) if needed; a new one is told everything."""
    line = (json.dumps(message) + "\n").encode()
    for _ in range(2):
        if _owner.watchdog is None or _owner.watchdog.poll() is not None:
            try:
                _start_watchdog()
            except OSError:  # no usable interpreter (embedded Python): the sweep still works
                _owner.watchdog = None
                return
            line = b""  # the new watchdog was told the whole state
        assert _owner.watchdog is not None and _owner.watchdog.stdin is not None
        try:
            _owner.watchdog.stdin.write(line)
            _owner.watchdog.stdin.flush()
            return
        except OSError:  # the watchdog died (someone killed it): start a new one
            _owner.watchdog = None


def _start_watchdog() -> None:
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", __file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the kernel's process group, which a restart kills
        close_fds=True,
    )
    state = [{"dir": d} for d in sorted(_owner.dirs)]
    state += [{"server": pid, "started": s} for pid, s in _owner.servers.items()]
    assert watchdog.stdin is not None
    watchdog.stdin.write("".join(json.dumps(m) + "\n" for m in state).encode())
    watchdog.stdin.flush()
    _owner.watchdog = watchdog


def _check_fork() -> None:
    """In a forked child, start afresh: the parent's servers and directories are not ours."""
    global _owner
    if _owner.pid != os.getpid():
        _after_fork_in_child()


def _after_fork_in_child() -> None:
    global _owner
    if _owner.watchdog is not None:
        _abandoned.append(_owner.watchdog)
        if _owner.watchdog.stdin is not None:
            # Close our copy of the write end: the parent's death must still reach EOF.
            with contextlib.suppress(OSError):
                os.close(_owner.watchdog.stdin.fileno())
    _owner = _Owner()


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the watchdog -----------------------------------------------------------------------------


def watch(stream: int = 0) -> None:
    """Read the owner's messages until end of file, then clean up what is still listed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C or hang-up meant for the owner
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    dirs: set[str] = set()
    servers: dict[int, str | None] = {}
    buffer = b""
    while True:
        try:
            chunk = os.read(stream, 65536)
        except InterruptedError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "dir" in message:
                dirs.add(message["dir"])
            elif "forget_dir" in message:
                dirs.discard(message["forget_dir"])
            elif "server" in message:
                servers[int(message["server"])] = message.get("started")
            elif "forget_server" in message:
                servers.pop(int(message["forget_server"]), None)
    for pid, started in servers.items():
        kill(pid, started)
    for directory in dirs:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    watch()
