"""Getting a working redis-py client: :func:`connect`.

If the environment or ``.env`` names a server, connect there and PING it, turning every way
that can fail into a :class:`~sessionlab.errors.ConnectError` that says where and what to do.
Otherwise start the embedded default: a private, password-locked
:class:`~sessionlab.server.LabServer` (a script that does so is warned: see
:class:`~sessionlab.errors.EmbeddedServerWarning`).
"""

from __future__ import annotations

import errno
import socket
import ssl
import sys
import threading
import warnings

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from .config import Settings, load_settings
from .errors import ConnectError, EmbeddedServerWarning, ServerError
from .retry import make_safe, retry
from .server import DRIVER_INFO, LabServer, wait_until

CONNECT_TIMEOUT = 3.0
COMMAND_TIMEOUT = 5.0
#: Once connected, retry a command whose connection failed before sending it (retry.py).
RETRY = retry(3)

_default_client: redis.Redis | None = None
_embedded: LabServer | None = None
_lock = threading.RLock()  # two threads' first connect() must not start two servers


def connect(settings: Settings | None = None) -> redis.Redis:
    """A verified client: to the configured server, or to the embedded one.

    Without arguments the settings come from the environment and ``.env``, and repeated
    calls return the same client. With ``settings``, a new client is made and checked.
    """
    global _default_client
    with _lock:
        if settings is not None:
            return _open(settings)
        if _default_client is not None and _embedded is not None and not _embedded.running:
            # It crashed: start it again. If another process took its port meanwhile it
            # moves to a new one, and the default client must move with it.
            _embedded.start()
            if _default_client.connection_pool.connection_kwargs.get("port") != _embedded.port:
                _default_client.close()
                _default_client = _embedded.client()
        if _default_client is None:
            _default_client = _open(load_settings())
        return _default_client


def embedded_server() -> LabServer | None:
    """The private server :func:`connect` started, if it started one."""
    return _embedded


def reset() -> None:
    """Forget the default client and stop the embedded server (the next connect starts anew)."""
    global _default_client, _embedded
    with _lock:
        if _default_client is not None:
            _default_client.close()
            _default_client = None
        if _embedded is not None:
            _embedded.close()
            _embedded = None


def _open(settings: Settings) -> redis.Redis:
    global _embedded
    if not settings.names_server:
        if _embedded is None:
            _embedded = LabServer(binary=settings.server_bin)
            if not _interactive():
                warnings.warn(EMBEDDED_WARNING, EmbeddedServerWarning, stacklevel=3)
        # After a crash: the same port and directory, so clients made before reconnect, and
        # no second data directory is left behind in /tmp.
        _embedded.start()
        return _embedded.client()
    options = {
        "retry": Retry(NoBackoff(), 0),  # the first PING fails fast; RETRY is set after it
        "decode_responses": True,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "driver_info": DRIVER_INFO,
    }
    if settings.url is not None:
        client = redis.Redis.from_url(settings.url, **options)
    else:
        client = redis.Redis(
            host=settings.host,
            port=settings.port,
            password=settings.password,
            db=settings.db,
            **options,
        )
    make_safe(client, retries=0)
    tls = (settings.url or "").startswith("rediss://")
    check(client, settings.address, tls)
    client.set_retry(RETRY)
    return client


EMBEDDED_WARNING = (
    "sessionlab started a private redis-server for this process, because no server is "
    "configured (REDIS_URL, or REDIS_HOST/REDIS_PORT, in the environment or .env). Its "
    "sessions live only as long as this process, and every other process (another web "
    "worker, a script) starts its own, empty one. To share sessions between processes, "
    "run one Redis and set REDIS_URL=redis://[:password@]host:port/0 for all of them."
)


def _interactive() -> bool:
    """True in a Jupyter kernel, IPython, or ``python -i``/the REPL: a person is watching."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    ipython = sys.modules.get("IPython")
    return ipython is not None and getattr(ipython, "get_ipython", lambda: None)() is not None


def check(client: redis.Redis, address: str, tls: bool = False) -> None:
    """PING ``client``; on failure raise :class:`ConnectError` explaining why and what to do.

    A server that is still loading its data (``LOADING``) is waited for, as long as it loads.
    """
    try:
        try:
            client.ping()
        except rex.BusyLoadingError:
            wait_until(client.ping, f"Redis at {address} to load its data", CONNECT_TIMEOUT)
    except ServerError as error:
        client.close()
        raise ConnectError(f"Cannot use Redis at {address}: {error}") from None
    except Exception as error:  # every failure is translated below, none is swallowed
        client.close()
        handshake = tls and _tcp_reachable(client)
        raise ConnectError(
            f"Cannot use Redis at {address}: {explain(error, tls, handshake)}"
        ) from None


def _tcp_reachable(client: redis.Redis) -> bool:
    """True if a plain TCP connection to the client's host and port opens in time."""
    options = client.connection_pool.connection_kwargs
    try:
        with socket.create_connection(
            (options.get("host", "localhost"), options.get("port", 6379)), CONNECT_TIMEOUT
        ):
            return True
    except OSError:
        return False


def explain(error: BaseException, tls: bool = False, handshake: bool | None = None) -> str:
    """One sentence on what went wrong when connecting, and how to fix it.

    ``handshake`` says whether the TCP connection itself opened (when known): a TLS timeout
    after it did is a handshake failure; before it, the host or port does not answer.
    """
    text = str(error)
    cause = _root_cause(error)
    status = getattr(error, "status_code", None) or text.split(" ", 1)[0]
    if status == "NOAUTH" or "Authentication required" in text:
        return "the server requires a password; set REDIS_PASSWORD (or put it in REDIS_URL)."
    if status == "WRONGPASS" or isinstance(error, rex.AuthenticationError):
        return (
            "the server rejected the password; check REDIS_PASSWORD (or the password in REDIS_URL)."
        )
    timed_out = isinstance(error, rex.TimeoutError) or isinstance(cause, TimeoutError)
    if isinstance(cause, ssl.SSLError) or "SSL" in text or (tls and timed_out and handshake):
        return (
            "the TLS handshake failed; use rediss:// only for a server with TLS enabled, "
            "redis:// otherwise."
        )
    if timed_out:
        return (
            f"no answer in time (connect timeout {CONNECT_TIMEOUT:.0f} s, reply timeout "
            f"{COMMAND_TIMEOUT:.0f} s). Is the host reachable, and is that port a Redis port? "
            "Check REDIS_HOST and REDIS_PORT, and any firewall."
        )
    if isinstance(cause, ConnectionRefusedError) or "refused" in text.lower():
        return (
            "connection refused: no Redis is listening there. Start it, fix REDIS_HOST/REDIS_PORT, "
            "or remove them from .env to use the embedded server."
        )
    if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "the host cannot be reached from this machine; check REDIS_HOST and your network."
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "the host name cannot be resolved; check REDIS_HOST for typos."
    if isinstance(error, rex.ConnectionError):
        return f"the connection failed ({text}); check REDIS_HOST, REDIS_PORT and that it is Redis."
    if isinstance(error, rex.ResponseError):
        return f"the server answered with an error ({text}); check REDIS_DB and the server's ACL."
    return f"{type(error).__name__}: {text}"


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error
