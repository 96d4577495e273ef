"""Helpers the tests share: polling, process checks, fresh interpreters, unique key prefixes,
plain redis-py clients.

Plain functions, imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path);
fixtures stay in ``conftest.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psutil
from redis.cluster import RedisCluster

from sessionlab import LabServer
from sessionlab.server import HOST

ROOT = Path(__file__).resolve().parent.parent


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


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


def plain_cluster_client(node: LabServer, socket_timeout: float) -> RedisCluster:
    """redis-py's own cluster client, with its own retry rule (it sends a command again after
    a timeout), on a locked lab cluster: what the course's clients are compared with."""
    return RedisCluster(
        host=HOST,
        port=node.port,
        password=node.password,
        socket_timeout=socket_timeout,
        decode_responses=True,
    )
