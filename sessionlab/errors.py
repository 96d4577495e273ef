"""Every error sessionlab raises, under one base class.

Each also inherits the built-in a caller would naturally catch (``ValueError`` for a bad
argument, ``TypeError`` for data JSON cannot hold, redis-py's ``ConnectionError`` for a
server that cannot be reached), so ``except ValueError`` keeps working too.
"""

from __future__ import annotations

import redis.exceptions


class SessionError(Exception):
    """Base class of every sessionlab error."""


class ConfigError(SessionError, ValueError):
    """A setting in the environment or ``.env`` has a value that cannot be used."""


class InvalidSessionId(SessionError, ValueError):
    """A session id is empty, too long, or has characters a key must not hold."""


class InvalidTTL(SessionError, ValueError):
    """A time to live is not a positive whole number of seconds."""


class InvalidCartItem(SessionError, ValueError):
    """A cart SKU or quantity cannot be stored."""


class UnserializableData(SessionError, TypeError):
    """Session data holds a value that JSON cannot represent."""


class CorruptSession(SessionError):
    """What Redis holds under a session key is not a session this library wrote."""


class StoreFull(SessionError, redis.exceptions.OutOfMemoryError):
    """Redis refused a write: ``maxmemory`` is reached and the policy evicts nothing.

    Also a redis-py ``OutOfMemoryError``, as a plain command would raise on every version.
    """


class ConnectError(SessionError, redis.exceptions.ConnectionError):
    """The configured Redis server cannot be used: refused, timed out, wrong password, TLS."""

    # redis-py's errors show as "network:ConnectError" in repr(): show the message instead.
    __repr__ = Exception.__repr__


class ServerError(SessionError):
    """A private ``redis-server`` could not be found, started or stopped."""


class InvalidPersistenceSetting(SessionError, ValueError):
    """A persistence mode, session count or timeout that a persistence experiment cannot use."""


class PersistenceError(SessionError):
    """A snapshot (BGSAVE) or AOF rewrite failed, or did not finish in time."""


class InvalidSetting(SessionError, ValueError):
    """A setting asked of sessionlab cannot be used: a lab experiment's maxmemory or policy,
    an option of the Flask adapter."""


class InvalidServerOption(ServerError, ValueError):
    """An argument of ``LabServer``/``LabCluster`` cannot be used: a directive that would undo
    the password lock or the server's lifecycle, an unusable ``dir=``, an empty password."""


class SaveFailed(ServerError):
    """A private server was stopped but its data was not saved: its final save failed."""


class EmbeddedServerWarning(UserWarning):
    """A script (not a notebook, not an interactive interpreter) started a private server:
    other processes cannot see its sessions unless they share one server via ``REDIS_URL``."""


class InvalidStoreSetting(SessionError, ValueError):
    """A ``SessionStore`` setting (prefix, timeouts, sessions per user) cannot be used."""


class InvalidUserId(SessionError, ValueError):
    """A user id is empty, too long, or has characters a key must not hold."""


class UnsupportedClient(SessionError, TypeError):
    """The client given to ``SessionStore`` is not one it can use (e.g. an asyncio client)."""


class StoreReadOnly(SessionError, redis.exceptions.ResponseError):
    """Redis refuses every write: its last save to disk failed (``MISCONF``) or it is a replica.

    Also a redis-py ``ResponseError``, as the plain command would raise.
    """


class WriteOutcomeUnknown(SessionError, redis.exceptions.ConnectionError):
    """A write was sent but its reply never came (timeout, connection lost): it may or may
    not have been applied, and it was not sent again (that could apply it twice)."""


class InvalidInput(SessionError, ValueError):
    """A value typed into a panel's form cannot be used (an empty name, an unknown node)."""
