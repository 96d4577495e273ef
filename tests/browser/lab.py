"""JupyterLab as ``make lab`` starts it, for the browser tests: its command line, and a handle
(``Lab``) to its REST API. The ``lab`` fixture in conftest.py starts one per test session."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LAB_SETTINGS = ROOT / "sessionlab" / "lab_settings"
#: Where the lessons come from; a developer may point it at a scratch copy.
NOTEBOOKS = Path(os.environ.get("SESSIONLAB_BROWSER_NOTEBOOKS") or ROOT / "notebooks")
LAB_READY_TIMEOUT = 60.0
LAB_STOP_TIMEOUT = 20.0


def lessons() -> list[Path]:
    """Every lesson, so lessons added later are covered without touching the tests."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


# -- JupyterLab --------------------------------------------------------------------------------


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
            data=b"" if method == "POST" else None,
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every notebook session: its kernel stops, and its redis-servers with it."""
        for session in self.api("/api/sessions"):
            self.api(f"/api/sessions/{session['id']}", method="DELETE")


def lab_command(root: Path, port: int, token: str, settings: Path) -> list[str]:
    """``make lab``'s command line plus what a test needs (a fixed port, a token, no browser)."""
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        # as in the Makefile's `lab` target:
        f"--ServerApp.root_dir={root}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        f"--LabApp.app_settings_dir={LAB_SETTINGS}",
        # test only:
        "--no-browser",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={settings / 'user-settings'}",
        f"--LabApp.workspaces_dir={settings / 'workspaces'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    return command


def start_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(lab: Lab, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + LAB_READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            lab.api("/api/status")
            return True
        time.sleep(0.1)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for a clean exit, then kill whatever is left of the process group."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(LAB_STOP_TIMEOUT)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
            break
