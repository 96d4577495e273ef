"""sessionlab: keep e-commerce user sessions in Redis, and learn how.

The four functions of the seed notebook work here unchanged, on a default store over
:func:`connect` (the server named in ``.env``, or a private embedded one)::

    from sessionlab import create_session, get_session_data, update_session_data, delete_session
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .cluster import LabCluster
from .config import Settings, load_settings
from .connection import connect, embedded_server
from .doctor import doctor
from .errors import (
    ConfigError,
    ConnectError,
    CorruptSession,
    EmbeddedServerWarning,
    InvalidCartItem,
    InvalidInput,
    InvalidPersistenceSetting,
    InvalidServerOption,
    InvalidSessionId,
    InvalidSetting,
    InvalidStoreSetting,
    InvalidTTL,
    InvalidUserId,
    PersistenceError,
    SaveFailed,
    ServerError,
    SessionError,
    StoreFull,
    StoreReadOnly,
    UnserializableData,
    UnsupportedClient,
    WriteOutcomeUnknown,
)
from .server import LabServer, find_redis_server
from .store import DEFAULT_TTL, Session, SessionInfo, SessionStore

__all__ = [
    "DEFAULT_TTL",
    "ConfigError",
    "ConnectError",
    "CorruptSession",
    "EmbeddedServerWarning",
    "InvalidCartItem",
    "InvalidInput",
    "InvalidPersistenceSetting",
    "InvalidServerOption",
    "InvalidSessionId",
    "InvalidSetting",
    "InvalidStoreSetting",
    "InvalidTTL",
    "InvalidUserId",
    "LabCluster",
    "LabServer",
    "PersistenceError",
    "SaveFailed",
    "ServerError",
    "Session",
    "SessionError",
    "SessionInfo",
    "SessionStore",
    "Settings",
    "StoreFull",
    "StoreReadOnly",
    "UnserializableData",
    "UnsupportedClient",
    "WriteOutcomeUnknown",
    "connect",
    "create_session",
    "default_store",
    "delete_session",
    "doctor",
    "embedded_server",
    "find_redis_server",
    "get_session_data",
    "load_settings",
    "update_session_data",
]

_default_store: SessionStore | None = None


def default_store() -> SessionStore:
    """The store the seed functions use: prefix ``session`` over :func:`connect`."""
    global _default_store
    client = connect()
    if _default_store is None or _default_store.client is not client:
        _default_store = SessionStore(client)
    return _default_store


def create_session(
    session_id: str, user_data: Mapping[str, Any], expiration_seconds: int = DEFAULT_TTL
) -> bool:
    """Create a session that expires in ``expiration_seconds``; returns ``True``."""
    return default_store().create(session_id, user_data, expiration_seconds)


def get_session_data(session_id: str) -> dict[str, Any] | None:
    """The session's data, or ``None`` if it does not exist."""
    return default_store().get(session_id)


def update_session_data(session_id: str, new_user_data: Mapping[str, Any]) -> bool:
    """Replace the session's data, keeping its TTL; ``False`` if it does not exist."""
    return default_store().update(session_id, new_user_data)


def delete_session(session_id: str) -> bool:
    """Delete the session; ``False`` if it did not exist."""
    return default_store().delete(session_id)
