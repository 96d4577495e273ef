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
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .lab import NOTEBOOKS, ROOT, Lab, lab_command, start_port, stop, wait_ready

ARTIFACTS = ROOT / "test-artifacts"
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
        port = start_port()
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
        if wait_ready(server, process):
            break
        stop(process)
    else:
        pytest.fail(f"JupyterLab did not start; its log:\n{log.read_text()[-3000:]}")
    try:
        yield server
    finally:
        with contextlib.suppress(OSError):
            server.api("/api/shutdown", method="POST")  # stops the kernels, then itself
        stop(process)
        shutil.rmtree(scratch, ignore_errors=True)


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
