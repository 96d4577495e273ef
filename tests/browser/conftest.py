"""A real JupyterLab, started as ``make lab`` starts it, driven by Debian's headless Chromium.

One Lab server per test session, on a temporary copy of ``notebooks/`` (the tests never
rewrite the repo's lessons), with the course's settings (``sessionlab/lab_settings``: kernel
auto-start, no news toasts) and the widgets extension from the venv. At the end the server
shuts its kernels down (they stop their redis-servers) and its process group is killed.

Without Chromium or Playwright the browser tests skip with a loud reason, except under
``CI=true``, where that is a failure: CI must prove the lessons render.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAB_SETTINGS = ROOT / "sessionlab" / "lab_settings"
ARTIFACTS = ROOT / "test-artifacts"
#: Where the lessons come from; a developer may point it at a scratch copy.
NOTEBOOKS = Path(os.environ.get("SESSIONLAB_BROWSER_NOTEBOOKS") or ROOT / "notebooks")
CHROMIUM = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAB_READY_TIMEOUT = 60.0
LAB_STOP_TIMEOUT = 20.0


def lessons() -> list[Path]:
    """Every lesson, so lessons added later are covered without touching the tests."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _browser_missing() -> str | None:
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_BIN)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install -r requirements.txt)"
    return None


MISSING = _browser_missing()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if MISSING is None or os.environ.get("CI", "").lower() == "true":
        return  # under CI a missing browser fails in the `chromium` fixture instead
    skip = pytest.mark.skip(reason=f"BROWSER TESTS SKIPPED: {MISSING}")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MISSING is not None and os.environ.get("CI", "").lower() != "true":
        terminalreporter.write_sep("!", f"BROWSER TESTS SKIPPED: {MISSING}", red=True, bold=True)


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    scratch = Path(tempfile.mkdtemp(prefix="sessionlab-lab-"))
    root = scratch / "notebooks"
    shutil.copytree(NOTEBOOKS, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for entry in ROOT.iterdir():  # lessons may read ../.env.example and the like
        if entry.name not in ("notebooks", ".git"):
            (scratch / entry.name).symlink_to(entry)
    token, log = secrets.token_hex(16), scratch / "jupyter-lab.log"
    process = None
    for _attempt in range(3):  # a port can be taken between choosing and binding it
        port = _free_port()
        with open(log, "ab") as out:
            process = subprocess.Popen(
                lab_command(root, port, token, scratch),
                cwd=scratch,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole at the end
            )
        server = Lab(f"http://127.0.0.1:{port}", token, root, log)
        if _wait_ready(server, process):
            break
        _stop(process)
    else:
        pytest.fail(f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}")
    try:
        yield server
    finally:
        with contextlib.suppress(OSError):
            server.api("/api/shutdown", method="POST")  # stops the kernels, then itself
        _stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


def _wait_ready(lab: Lab, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + LAB_READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        with contextlib.suppress(OSError):
            lab.api("/api/status")
            return True
        time.sleep(0.1)
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Wait for a clean exit, then kill whatever is left of the process group."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(LAB_STOP_TIMEOUT)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
            break


# -- Chromium -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if MISSING is not None:
        pytest.fail(f"CI=true but the browser tests cannot run: {MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any, lab: Lab) -> Iterator[Any]:
    """A fresh browser tab; afterwards the kernels it started are shut down."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()
        lab.shutdown_kernels()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
