"""When a client sessionlab hands out sends a command again: only if it never reached Redis.

redis-py's default retry sends a command again after a reply timeout or a connection lost
after sending; a stalled server then runs both copies (one cart add of 1 became 2, issue 9).
The clients of :func:`~sessionlab.connect`, ``LabServer.client()`` and ``LabCluster.client()``
retry only a failure *while connecting* (TCP connect, AUTH/HELLO handshake): the command
itself was not sent yet, so sending it is its first run. Any later failure reaches the caller;
the store then raises :class:`~sessionlab.errors.WriteOutcomeUnknown` for a write. A cluster
client also retries what the cluster refused (``CLUSTERDOWN``, ``TRYAGAIN``, an uncovered
slot) and may resend a read-only command, which changes nothing however often it runs.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.exceptions as rex
from redis.backoff import ExponentialBackoff
from redis.commands.cluster import READ_COMMANDS
from redis.retry import Retry


class NotSent(rex.ConnectionError):
    """Connecting failed, so the command was never sent: safe to send again."""


class NotSentTimeout(NotSent, rex.TimeoutError):
    """Connecting timed out (still a ``TimeoutError`` for code that checks for one)."""


#: What the cluster answered without running the command: safe to send again.
REFUSED = (NotSent, rex.ClusterDownError, rex.TryAgainError, rex.SlotNotCoveredError)

_safe_classes: dict[type, type] = {}


def safe_connection_class(base: type[redis.Connection]) -> type[redis.Connection]:
    """``base`` whose connect failures raise :class:`NotSent` (one subclass per base class,
    so TLS and Unix-socket connections keep their own behaviour)."""
    if issubclass(base, _NotSentOnConnect):
        return base
    if base not in _safe_classes:
        _safe_classes[base] = type(f"NotSent{base.__name__}", (_NotSentOnConnect, base), {})
    return _safe_classes[base]


class _NotSentOnConnect:
    """Mixin for a redis-py ``Connection``: a failure while connecting is :class:`NotSent`."""

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().connect_check_health(*args, **kwargs)  # type: ignore[misc]
        except (NotSent, rex.AuthenticationError):
            raise  # a wrong password is not cured by sending again
        except rex.TimeoutError as error:
            raise NotSentTimeout(str(error)) from error
        except rex.ConnectionError as error:
            raise NotSent(str(error)) from error


def retry(retries: int = 3) -> Retry:
    """``retries`` quick retries (50 ms doubling, at most 1 s) of :class:`NotSent` only."""
    return Retry(ExponentialBackoff(cap=1.0, base=0.05), retries, supported_errors=(NotSent,))


def make_safe(client: redis.Redis, retries: int = 3) -> redis.Redis:
    """Give a plain ``redis.Redis`` (and its pipelines) this policy; returns ``client``."""
    pool = client.connection_pool
    pool.connection_class = safe_connection_class(pool.connection_class)
    pool.disconnect()  # a connection made before holds the old class
    client.set_retry(retry(retries))
    return client


def may_resend(error: BaseException, command: object) -> bool:
    """Whether a cluster client may send ``command`` again after ``error``."""
    if isinstance(error, REFUSED):
        return True
    name = command.decode() if isinstance(command, bytes) else str(command)
    return name.upper() in READ_COMMANDS
