"""Persistence on real servers (sessionlab.persistence, .aof, .crash): what a SIGKILL loses in
each mode, TTLs across restarts, waiting for BGSAVE / BGREWRITEAOF, the AOF files, the panel.

Runs against ``$REDIS_SERVER_BIN`` (the pinned Valkey 9.1 by default); run it again with
``REDIS_SERVER_BIN=/usr/bin/redis-server`` for 7.0.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator

import pytest

from sessionlab import LabServer, SessionStore
from sessionlab.aof import aof_commands, aof_files, aof_size
from sessionlab.crash import (
    EVERYSEC_LOSS_BOUND,
    CrashLab,
    CrashResult,
    Throughput,
    count_sessions,
    crash_experiment,
    measure_write_throughput,
    spreads,
    write_sessions,
)
from sessionlab.errors import InvalidPersistenceSetting, PersistenceError, SessionError
from sessionlab.persistence import (
    MODES,
    RDB_SAVE_POINTS,
    bgsave,
    mode_directives,
    rewrite_aof,
    wait_for_aof_rewrite,
    wait_for_bgsave,
)
from sessionlab.sample import numbered
from sessionlab.server import find_redis_server, server_version
from sessionlab.widgets.persistence import PersistencePanel

VERSION = server_version(find_redis_server())
AOF_MODES = ["aof-always", "aof-everysec", "aof-no"]
SAVE_POINTS = " ".join(map(str, RDB_SAVE_POINTS))


@pytest.fixture
def server_in(request) -> Iterator:
    """``server_in("rdb", rdb_key_save_delay=...)`` starts a LabServer; all are closed after."""
    servers: list[LabServer] = []

    def start(mode: str, **extra) -> LabServer:
        server = LabServer(**mode_directives(mode), **extra).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


# -- modes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(MODES))
def test_each_mode_configures_the_server_as_named(server_in, mode):
    config = server_in(mode).client().config_get("*")
    if mode == "none":
        assert (config["save"], config["appendonly"]) == ("", "no")
    elif mode == "rdb":
        assert (config["save"], config["appendonly"]) == (SAVE_POINTS, "no")
    else:
        assert (config["save"], config["appendonly"]) == ("", "yes")
        assert config["appendfsync"] == mode.removeprefix("aof-")


def test_rdb_directives_differ_where_redis_62_reads_save_differently():
    # 6.2 turns snapshots off when one --save carries several points: rely on its defaults.
    assert mode_directives("rdb", (6, 2, 14))["save"] is None
    assert mode_directives("rdb", (7, 0, 15))["save"] == list(RDB_SAVE_POINTS)


@pytest.mark.parametrize("bad", ["aof", "RDB", "", None, 3])
def test_unknown_mode_is_a_readable_error(bad):
    with pytest.raises(InvalidPersistenceSetting, match=r"unknown persistence mode.*aof-everysec"):
        mode_directives(bad)
    with pytest.raises(InvalidPersistenceSetting):
        crash_experiment(bad, 10)


@pytest.mark.parametrize("count", [0, -5, 1.5, "10", True, 2_000_000])
def test_bad_session_counts_are_readable_errors(count):
    with pytest.raises(InvalidPersistenceSetting, match="number of sessions"):
        crash_experiment("none", count)


def test_errors_are_sessionlab_errors():
    assert issubclass(InvalidPersistenceSetting, SessionError)
    assert issubclass(InvalidPersistenceSetting, ValueError)
    assert issubclass(PersistenceError, SessionError)


# -- what a crash loses ------------------------------------------------------------------


def test_no_persistence_loses_every_session():
    result = crash_experiment("none", 300)
    assert (result.written, result.survived, result.lost) == (300, 0, 300)


def test_rdb_loses_exactly_the_writes_after_the_snapshot():
    result = crash_experiment("rdb", 300, more_after_bgsave=70)
    assert (result.written, result.snapshot, result.survived, result.lost) == (370, 300, 300, 70)


def test_rdb_before_any_save_point_fired_loses_everything():
    # The first save point is "3600 s and 1 write": nothing is on disk after a few seconds.
    result = crash_experiment("rdb", 200)
    assert (result.survived, result.lost) == (0, 200)


@pytest.mark.parametrize("mode", ["aof-always", "aof-no"])
def test_aof_that_writes_before_replying_loses_nothing_on_a_process_crash(mode):
    result = crash_experiment(mode, 300, more_after_bgsave=50)
    assert (result.written, result.survived, result.lost) == (350, 350, 0)
    assert result.oldest_lost_age is None and result.within_everysec_bound()


def test_aof_everysec_loses_at_most_the_latest_seconds_on_a_process_crash():
    # Usually nothing; on a slow disk the writes held back behind a running fsync (<= ~2 s).
    result = crash_experiment("aof-everysec", 300, more_after_bgsave=50)
    assert result.written == 350 and result.survived >= 300  # the snapshot is on disk
    assert result.within_everysec_bound(), result


def test_the_everysec_bound_fails_for_old_or_out_of_order_losses():
    assert CrashResult("aof-everysec", 10, 10).within_everysec_bound()
    assert CrashResult("aof-everysec", 10, 7, None, 1.5, True).within_everysec_bound()
    assert not CrashResult(
        "aof-everysec", 10, 7, None, EVERYSEC_LOSS_BOUND + 0.1, True
    ).within_everysec_bound()
    assert not CrashResult("aof-everysec", 10, 7, None, 0.5, False).within_everysec_bound()


def test_crash_lab_reports_which_sessions_were_lost_and_how_old_they_were():
    with CrashLab("rdb") as lab:
        lab.write(20)
        lab.snapshot()
        lab.write(5)
        lab.crash()
        lab.restart()
        result = lab.result()
    assert (result.survived, result.lost, result.lost_are_latest) == (20, 5, True)
    assert 0 <= result.oldest_lost_age < 60


def test_custom_directives_are_tried_as_given():
    assert crash_experiment({"appendonly": True, "appendfsync": "always"}, 100).survived == 100
    assert crash_experiment({"save": "", "appendonly": False}, 100).survived == 0


def test_survivors_are_the_same_sessions_with_the_same_data(server_in):
    # aof-always: every acknowledged write is on disk. (With everysec, Redis may hold back the
    # write itself for up to 2 s while the last fsync runs, and a SIGKILL then loses the newest
    # writes; seen in CI. Lesson 03 shows that bound.)
    server = server_in("aof-always")
    ids = write_sessions(SessionStore(server.client()), 20)
    server.crash()
    server.start()
    store = SessionStore(server.client())
    assert [store.get(i) for i in ids] == [profile for _, profile in numbered(20)]


# -- TTLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["rdb", "aof-everysec"])
def test_ttls_are_absolute_across_a_restart(server_in, mode):
    server = server_in(mode)
    store = SessionStore(server.client())
    store.create("stays", numbered(1, 1)[0][1], ttl=3600)
    store.create("expires-while-down", numbered(1, 2)[0][1], ttl=2)
    assert count_sessions(store, ["stays", "expires-while-down"]) == 2
    if mode == "rdb":
        bgsave(store.client)
    server.crash()
    time.sleep(2.2)  # the server is down while the short session's 2 s run out
    server.start()
    store = SessionStore(server.client())
    assert store.get("stays") == numbered(1, 1)[0][1]
    assert store.get("expires-while-down") is None
    # The clock ran on while the server was down: 2.2 s of the 3600 are gone, not restarted.
    assert 3500 < store.ttl("stays") <= 3598


# -- waiting for BGSAVE and BGREWRITEAOF --------------------------------------------------------


def test_wait_for_bgsave_returns_once_the_snapshot_is_written(server_in):
    # rdb-key-save-delay (µs per key) makes this BGSAVE take ~0.4 s: a wait that returns
    # early would see rdb_bgsave_in_progress:1 and no dump.rdb.
    server = server_in("rdb", rdb_key_save_delay=2000)
    client = server.client()
    write_sessions(SessionStore(client), 200)
    assert client.execute_command("BGSAVE") in ("Background saving started", True)
    info = wait_for_bgsave(client, timeout=30)
    assert info["rdb_bgsave_in_progress"] == 0
    assert info["rdb_last_bgsave_status"] == "ok"
    assert info["rdb_changes_since_last_save"] == 0
    assert "dump.rdb" in server.files()
    server.crash()
    server.start()
    assert server.client().dbsize() == 200


def test_wait_for_bgsave_times_out_with_a_sessionlab_error(server_in):
    server = server_in("rdb", rdb_key_save_delay=100_000)  # 0.1 s per key: 20 s in all
    client = server.client()
    write_sessions(SessionStore(client), 200)
    client.execute_command("BGSAVE")
    with pytest.raises(PersistenceError, match=r"BGSAVE still running after 0.2 s"):
        wait_for_bgsave(client, timeout=0.2)


@pytest.mark.parametrize("timeout", [0, -1, "5", None])
def test_wait_for_bgsave_rejects_a_bad_timeout(server_in, timeout):
    with pytest.raises(InvalidPersistenceSetting, match="timeout"):
        wait_for_bgsave(server_in("none").client(), timeout=timeout)


def test_bgsave_waits_for_a_running_save_before_starting_its_own(server_in):
    server = server_in("rdb", rdb_key_save_delay=1000)
    client = server.client()
    write_sessions(SessionStore(client), 200)
    client.execute_command("BGSAVE")
    info = bgsave(client)  # a plain second BGSAVE now would be an error
    assert info["rdb_bgsave_in_progress"] == 0


def test_bgsave_waits_for_a_running_aof_rewrite(server_in):
    server = server_in("aof-everysec", rdb_key_save_delay=1000)
    client = server.client()
    write_sessions(SessionStore(client), 200)
    client.execute_command("BGREWRITEAOF")  # a plain BGSAVE now would be refused
    info = bgsave(client)
    assert (info["rdb_bgsave_in_progress"], info["rdb_last_bgsave_status"]) == (0, "ok")
    assert "dump.rdb" in server.files()


def test_a_failed_bgsave_is_a_sessionlab_error(server_in):
    server = server_in("rdb")
    client = server.client()
    write_sessions(SessionStore(client), 10)
    shutil.rmtree(server.dir)  # the snapshot's temporary file cannot be created any more
    client.execute_command("BGSAVE")
    with pytest.raises(PersistenceError, match="the last BGSAVE failed"):
        wait_for_bgsave(client)
    server.crash()  # a clean shutdown would try (and fail) to save again, for 10 s


def test_bgrewriteaof_shrinks_the_aof_and_keeps_every_session(server_in):
    server = server_in("aof-everysec", rdb_key_save_delay=1000)
    store = SessionStore(server.client())
    ids = write_sessions(store, 200)
    for round_ in range(5):  # every update appends a command; only the last one matters
        for number, session_id in enumerate(ids, start=1):
            store.update(session_id, numbered(1, number + round_)[0][1])
    before = aof_size(server)
    store.client.execute_command("BGREWRITEAOF")
    info = wait_for_aof_rewrite(store.client, timeout=30)
    assert (info["aof_rewrite_in_progress"], info["aof_last_bgrewrite_status"]) == (0, "ok")
    after = aof_size(server)
    assert after < before / 3
    server.crash()
    server.start()
    store = SessionStore(server.client())
    assert [store.get(i) for i in ids] == [numbered(1, n + 4)[0][1] for n in range(1, 201)]


def test_rewrite_aof_helper_returns_after_the_rewrite(server_in):
    server = server_in("aof-no", rdb_key_save_delay=1000)
    write_sessions(SessionStore(server.client()), 200)
    info = rewrite_aof(server.client())
    assert info["aof_rewrite_in_progress"] == 0
    assert info["aof_rewrite_scheduled"] == 0


# -- files on disk --------------------------------------------------------------------------


def test_aof_layout_of_the_running_version(server_in):
    server = server_in("aof-everysec")
    write_sessions(SessionStore(server.client()), 3)
    names = [path.name for path in aof_files(server)]
    if VERSION >= (7,):
        assert names == [
            "appendonly.aof.manifest",
            "appendonly.aof.1.base.rdb",
            "appendonly.aof.1.incr.aof",
        ]
        assert all(f.startswith("appendonlydir/") for f in server.files())
    else:
        assert names == ["appendonly.aof"]
        assert server.files() == ["appendonly.aof"]
    assert aof_size(server) > 0


def test_the_aof_holds_session_writes_with_absolute_expiry(server_in):
    server = server_in("aof-always")
    SessionStore(server.client()).create("abc", numbered(1)[0][1], ttl=3600)
    commands = aof_commands(aof_files(server)[-1], limit=30)
    writes = [c for c in commands if len(c) > 1 and c[1] == "session:{abc}"]
    assert [c[0] for c in writes if c[0] != "DEL"][:1] == ["HSET"]
    # An expiry is logged as an absolute deadline in Unix ms: replaying it later keeps it.
    (expiry,) = [c for c in writes if c[0] in ("PEXPIREAT", "PEXPIRE", "EXPIRE")]
    assert expiry[0] == "PEXPIREAT"
    assert abs(int(expiry[2]) - (time.time() + 3600) * 1000) < 60_000


def test_rdb_snapshot_is_dump_rdb(server_in):
    server = server_in("rdb")
    write_sessions(SessionStore(server.client()), 10)
    assert "dump.rdb" not in server.files()
    bgsave(server.client())
    assert "dump.rdb" in server.files()
    # The RDB magic: REDIS0009-0011 from Redis, VALKEY080 from Valkey 9.
    assert re.match(rb"REDIS\d{4}|VALKEY\d{3}", (server.dir / "dump.rdb").read_bytes()[:9])


# -- throughput -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "aof-always"])
def test_throughput_measures_the_writes_it_made(mode):
    result = measure_write_throughput(mode, 200)
    assert (result.mode, result.writes) == (mode, 200)
    assert result.seconds > 0
    assert result.ops_per_second == pytest.approx(200 / result.seconds)


def test_throughput_rejects_bad_input():
    with pytest.raises(InvalidPersistenceSetting, match="number of writes"):
        measure_write_throughput("none", 0)
    with pytest.raises(InvalidPersistenceSetting, match="unknown persistence mode"):
        measure_write_throughput("fsync", 10)


# -- the panel --------------------------------------------------------------------------------


@pytest.fixture
def panel() -> Iterator[PersistencePanel]:
    made = PersistencePanel(sessions=300)
    yield made
    made.close()
    assert made.lab is None


def test_panel_none_mode_loses_everything(panel):
    panel.write_button.click()
    assert panel.found == 300
    assert "written: 300 · found: 300 · lost: 0" in panel.result.value
    panel.crash_button.click()
    assert "server down" in panel.result.value
    panel.restart_button.click()
    assert "written: 300 · found: 0 · lost: 300" in panel.result.value
    assert "0 of 300 sessions survived" in panel.status_text


def test_panel_rdb_shows_the_writes_after_bgsave_as_lost(panel):
    panel.mode.value = "rdb"
    panel.write_button.click()
    panel.bgsave_button.click()
    assert "Snapshot on disk" in panel.status_text
    panel.sessions.value = 40
    panel.write_button.click()
    panel.crash_button.click()
    panel.restart_button.click()
    assert (panel.written, panel.found, panel.lost) == (340, 300, 40)
    assert "written: 340 · found: 300 · lost: 40" in panel.result.value
    assert "rdb_bgsave_in_progress:0" in panel.log_text


@pytest.mark.parametrize("mode", ["aof-always", "aof-no"])  # everysec: see the crash tests
def test_panel_aof_loses_nothing(panel, mode):
    panel.mode.value = mode
    panel.write_button.click()
    panel.crash_button.click()
    panel.restart_button.click()
    assert "written: 300 · found: 300 · lost: 0" in panel.result.value
    assert "appendonly yes" in panel.log_text


@pytest.mark.parametrize(
    ("sessions", "message"),
    [(0, "number of sessions is 0: use 1 to"), (-3, "use 1 to"), (500_000, "at most 100,000")],
)
def test_panel_shows_bad_counts_in_the_status_line(panel, sessions, message):
    panel.sessions.value = sessions
    panel.write_button.click()
    assert "InvalidPersistenceSetting" in panel.status_text
    assert message in panel.status_text
    assert panel.lab is None  # nothing was started for a bad request


def test_panel_explains_buttons_clicked_out_of_order(panel):
    panel.crash_button.click()
    assert "No server to crash: click Write sessions first." in panel.status_text
    panel.restart_button.click()
    assert "click Write sessions first" in panel.status_text
    panel.write_button.click()
    panel.crash_button.click()
    panel.write_button.click()
    assert "The server is down (crashed): click Restart first" in panel.status_text
    panel.bgsave_button.click()
    assert "The server is down" in panel.status_text


def test_panel_new_mode_throws_the_old_server_away(panel):
    panel.write_button.click()
    old = panel.lab
    assert old is not None and old.running
    panel.mode.value = "aof-always"
    assert panel.lab is None and not old.running
    assert (panel.written, panel.found) == (0, None)
    assert "Mode aof-always" in panel.status_text


def test_panel_rejects_an_unknown_mode():
    with pytest.raises(InvalidPersistenceSetting, match="unknown persistence mode 'fast'"):
        PersistencePanel(mode="fast")


def test_spreads_group_runs_by_mode_with_median_and_range():
    runs = [Throughput("none", 100, 0.01), Throughput("rdb", 100, 0.02)]
    runs += [Throughput("none", 100, 0.02), Throughput("none", 100, 0.04)]
    found = spreads(runs)
    assert list(found) == ["none", "rdb"]
    assert (found["none"].median, found["none"].low, found["none"].high) == (5000, 2500, 10000)
    assert "median   5,000 writes/s  (range 2,500-10,000 in 3 runs)" in str(found["none"])


# -- the crash lab: one flow for the lesson, the panel and crash_experiment -------------------


def test_crash_lab_counts_what_a_restart_finds():
    with CrashLab("rdb") as lab:
        assert lab.write(30) == [f"s{n:06d}" for n in range(1, 31)]
        lab.snapshot()
        lab.write(5)
        lab.crash()
        assert not lab.running
        assert lab.restart() == 30
        result = lab.result()
    assert (result.written, result.snapshot, result.survived, result.lost) == (35, 30, 30, 5)
    assert not lab.server.dir.exists()  # close() removed the data directory


def test_crash_lab_twice_in_a_row_is_harmless():
    with CrashLab("aof-always") as lab:
        lab.write(10)
        lab.crash()
        lab.crash()
        assert lab.restart() == 10
        assert lab.restart() == 10  # already running: counts again


# -- lesson 03's exercise 1 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "directives", [{"appendonly": True}, {"appendonly": "yes", "appendfsync": "everysec"}]
)
def test_exercise_refuses_everysec_whatever_the_disk_did(directives):
    from sessionlab.exercises import lesson03

    verdict = repr(lesson03.no_loss(directives))
    assert verdict.startswith("❌") and "everysec" in verdict


def test_exercise_accepts_always():
    from sessionlab.exercises import lesson03

    assert repr(lesson03.no_loss({"appendonly": True, "appendfsync": "always"})).startswith("✅")
