"""No leftovers and no orphans: servers and their data directories end with their owner.

However the owner ends (normal exit, SIGTERM, SIGHUP, SIGKILL, a Jupyter kernel restart),
its servers stop and its temporary directories go: the watchdog at the other end of the
owner's lifeline does it when no code of the owner can run. When even the watchdog was
killed, the next LabServer sweeps what is left. A forked child never touches its parent's
servers. Every test counts ``sessionlab-*`` directories in a temporary directory of its own
(``TMPDIR``), so other test runs on the machine do not disturb the count.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
from helpers import ROOT, pid_alive, run_python, wait_until

from sessionlab import LabServer, ServerError, lifeline

# How our processes end and clean up does not depend on the server's version.
pytestmark = pytest.mark.pinned_only

# The owner takes the default action on a hang-up or SIGTERM, as a process in a terminal does,
# even when the test run itself ignores them (under `nohup`, which children inherit).
OWNER = """
import signal, sys, time
signal.signal(signal.SIGHUP, signal.SIG_DFL)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
from sessionlab import lifeline
from sessionlab.server import LabServer
running = [LabServer().start(), LabServer(save=[3600, 1]).start()]
running[1].client().set("k", "v")
crashed = LabServer().start()
crashed.crash()
stopped = LabServer().start()
stopped.stop()
never_started = LabServer()
print(" ".join(str(s.pid) for s in running), lifeline._owner.watchdog.pid, flush=True)
if sys.argv[1] == "wait":
    time.sleep(120)
"""


def our_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob("sessionlab-*"))


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This process's and its children's temporary directories go to ``tmp_path``."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def start_owner(how: str) -> tuple[subprocess.Popen[str], list[int], int]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, how], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert owner.stdout is not None
    *servers, watchdog = map(int, owner.stdout.readline().split())
    return owner, servers, watchdog


@pytest.mark.parametrize("how", ["exit", "SIGTERM", "SIGHUP", "SIGKILL"])
def test_owner_ends_in_any_way_and_leaves_nothing(private_tmp, how):
    owner, servers, watchdog = start_owner("exit" if how == "exit" else "wait")
    try:
        if how != "exit":
            assert len(our_dirs(private_tmp)) == 5  # 2 running, crashed, stopped, never started
            assert all(pid_alive(pid) for pid in servers)
            owner.send_signal(getattr(signal, how))
        owner.wait(30)
        assert wait_until(lambda: not any(pid_alive(pid) for pid in servers), timeout=15)
        assert wait_until(lambda: our_dirs(private_tmp) == [], timeout=15), our_dirs(private_tmp)
        assert wait_until(lambda: not pid_alive(watchdog), timeout=15), "the watchdog lingers"
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
        for pid in servers:  # if the test failed, leave no orphan behind either
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_when_owner_and_watchdog_die_together_the_next_start_sweeps(private_tmp):
    owner, servers, watchdog = start_owner("wait")
    try:
        os.kill(watchdog, signal.SIGKILL)
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert wait_until(lambda: not pid_alive(watchdog))
        # No code of ours ran: the servers are orphans and the directories are left.
        assert all(pid_alive(pid) for pid in servers)
        assert len(our_dirs(private_tmp)) == 5
        with LabServer() as fresh:
            assert our_dirs(private_tmp) == [fresh.dir]
            assert not any(pid_alive(pid) for pid in servers)
    finally:
        owner.stdout.close()
        for pid in servers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert our_dirs(private_tmp) == []


def test_the_sweep_knows_a_reused_pid_and_keeps_what_it_cannot_judge(private_tmp):
    me = os.getpid()
    clock = lifeline.CLOCK
    cases = {
        "mine": {"owner": me, "owner_started": lifeline.start_time(me), "clock": clock},
        "reused-pid": {"owner": me, "owner_started": "not when it started", "clock": clock},
        "gone": {"owner": 2**22 + 1, "owner_started": "1", "clock": clock},
        # Written by a build that reads start times another way: only a pid nobody has
        # proves its owner gone.
        "other-clock": {"owner": me, "owner_started": "?", "clock": "another"},
        "other-clock-gone": {"owner": 2**22 + 1, "owner_started": "?", "clock": "another"},
    }
    for name, marker in cases.items():
        (private_tmp / f"sessionlab-{name}").mkdir()
        (private_tmp / f"sessionlab-{name}" / lifeline.MARKER).write_text(json.dumps(marker))
    (private_tmp / "sessionlab-no-marker").mkdir()
    (private_tmp / "other-dir").mkdir()
    removed = lifeline.sweep(str(private_tmp))
    assert sorted(path.name for path in removed) == [
        "sessionlab-gone",
        "sessionlab-other-clock-gone",
        "sessionlab-reused-pid",
    ]
    assert sorted(path.name for path in private_tmp.iterdir()) == [
        "other-dir",
        "sessionlab-mine",
        "sessionlab-no-marker",
        "sessionlab-other-clock",
    ]


@pytest.mark.parametrize("round_", range(5))
def test_failed_starts_inside_with_leave_nothing(private_tmp, tmp_path_factory, round_):
    not_a_binary = tmp_path_factory.mktemp("bin") / "redis-server"
    not_a_binary.write_text("this is not a program\n")
    not_a_binary.chmod(0o755)
    taken = LabServer().start()
    try:
        attempts = [
            lambda: LabServer(maxmemory_policy="keep-everything"),  # Redis refuses it
            lambda: LabServer(port=taken.port),  # the port is taken
            lambda: LabServer(binary=str(not_a_binary)),  # cannot be executed
        ]
        for make in attempts:
            with pytest.raises(ServerError), make():
                pass
        assert our_dirs(private_tmp) == [taken.dir]
    finally:
        taken.close()
    assert our_dirs(private_tmp) == []


def test_crash_or_stop_without_close_then_exit_leaves_nothing(private_tmp):
    run_python(
        "from sessionlab import LabServer\n"
        "a = LabServer().start(); a.crash()\n"
        "b = LabServer().start(); b.stop()\n"
        "c = LabServer(save=[3600, 1]).start(); c.client().set('k', 'v'); c.stop(); c.start()\n"
    )
    assert our_dirs(private_tmp) == []


def test_an_unreferenced_server_is_killed_and_its_dir_removed(private_tmp):
    import gc

    server = LabServer().start()
    pid, directory = server.pid, server.dir
    del server
    gc.collect()
    assert wait_until(lambda: not pid_alive(pid))
    assert not directory.exists()


FORK = """
import os, sys
from sessionlab import LabServer
with LabServer(save=[3600, 1]) as server:
    server.client().set("k", "parent's")
    child = os.fork()
    if child == 0:
        # The child leaves the with block (close) and exits normally (atexit hooks run).
        try:
            server.stop()
        except Exception as error:
            print("refused:", type(error).__name__)
    else:
        os.waitpid(child, 0)
        print(server.running, server.dir.is_dir(), server.client().get("k"))
"""


def test_a_forked_child_never_touches_its_parents_server(private_tmp):
    out = run_python(FORK).stdout.split("\n")
    assert "refused: ServerError" in out  # the child may not stop it
    assert "True True parent's" in out  # its exit stopped and removed nothing
    assert our_dirs(private_tmp) == []  # and the parent cleaned up after itself


@pytest.mark.slow
def test_five_jupyter_kernel_restarts_leave_nothing(private_tmp):
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(ROOT), env={**os.environ, "TMPDIR": str(private_tmp)})
    kernel = manager.client()
    kernel.start_channels()
    code = (
        "import sessionlab\n"
        "from sessionlab import LabServer\n"
        "lab = LabServer(save=[3600, 1]).start()\n"
        "sessionlab.connect().set('k', 'v')\n"
        "print(lab.pid, sessionlab.embedded_server().pid)"
    )
    pids: list[int] = []

    def start_servers() -> None:
        printed: list[str] = []

        def collect(message):
            if message["msg_type"] == "stream":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                printed.append("\n".join(message["content"]["traceback"]))

        kernel.wait_for_ready(timeout=60)
        reply = kernel.execute_interactive(code, output_hook=collect, timeout=60)
        assert reply["content"]["status"] == "ok", printed
        started = [int(pid) for pid in "".join(printed).split()]
        assert all(pid_alive(pid) for pid in started)
        pids.extend(started)

    try:
        for round_ in range(5):
            start_servers()
            manager.restart_kernel(now=round_ % 2 == 0)  # SIGKILL, or a shutdown request
            assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30)
        start_servers()
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    assert len(pids) == 12
    assert wait_until(lambda: not any(pid_alive(pid) for pid in pids), timeout=30)
    assert wait_until(lambda: our_dirs(private_tmp) == [], timeout=30), our_dirs(private_tmp)


def test_servers_are_children_of_their_owner_not_of_the_watchdog():
    with LabServer() as server:
        assert psutil.Process(server.pid).ppid() == os.getpid()
        watchdog = lifeline._owner.watchdog
        assert watchdog is not None and watchdog.poll() is None
        # In its own session: a kernel restart kills the kernel's process group, not it.
        assert os.getsid(watchdog.pid) != os.getsid(0)
