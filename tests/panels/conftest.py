"""Panels driven kernel-side, as a student would (``.value``, ``.click()``), on a private server.

Each test gets its own real redis-server (a panel may stop or crash it) and a raw client of its
own, to check what Redis really holds besides what the panel shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from sessionlab import LabServer, SessionStore


@pytest.fixture
def server() -> Iterator[LabServer]:
    with LabServer() as lab:
        yield lab


@pytest.fixture
def raw(server: LabServer) -> redis.Redis:
    """The test's own client: what Redis really holds, independent of the panels."""
    return server.client()


@pytest.fixture
def store(server: LabServer) -> SessionStore:
    return SessionStore(server.client())


@pytest.fixture(autouse=True)
def callbacks_must_not_raise(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Outside a kernel, ipywidgets only logs an exception a click callback raised: fail on it."""
    with caplog.at_level(logging.WARNING, logger="traitlets"):
        yield
    records = caplog.get_records("setup") + caplog.get_records("call")
    crashed = [r.getMessage() for r in records if "Exception in callback" in r.getMessage()]
    assert not crashed, crashed
