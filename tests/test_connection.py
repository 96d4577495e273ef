"""connect(): the embedded server by default, or a named one, with errors that say what to do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest
import redis
from helpers import ROOT, pid_alive, run_python, wait_until
from redis.backoff import NoBackoff
from redis.retry import Retry

import sessionlab.connection
import sessionlab.server
from sessionlab import ConnectError, LabServer, SessionError, connect, embedded_server
from sessionlab.config import load_settings
from sessionlab.server import HOST, free_port, server_version

SECRET = "pw-S3cr3t-x9"


@pytest.fixture(autouse=True)
def _fresh(fresh_connection):
    """Every test starts with no default client and no embedded server."""


pytestmark = pytest.mark.filterwarnings("ignore::sessionlab.errors.EmbeddedServerWarning")


@pytest.fixture(scope="module")
def locked_server():
    with LabServer(requirepass=SECRET) as server:
        yield server


def connect_error(environ: dict[str, str]) -> ConnectError:
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        connect(load_settings(environ))
    caught.value.seconds = time.monotonic() - started
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    return caught.value


# -- the embedded default ------------------------------------------------------------------


def test_no_server_named_starts_the_embedded_one_once():
    assert embedded_server() is None
    client = connect()
    server = embedded_server()
    assert server is not None and server.running
    assert client.ping()
    assert client.connection_pool.connection_kwargs["port"] == server.port
    assert connect() is client  # the same client
    assert embedded_server() is server  # and no second server
    assert server.version == server_version(server.binary)
    pid = server.pid
    sessionlab.connection.reset()
    assert embedded_server() is None
    assert not pid_alive(pid) and not server.dir.exists()
    again = connect()
    assert again is not client and again.ping()
    assert embedded_server().pid != pid


def test_default_client_decodes_responses():
    client = connect()
    client.set("greeting", "héllo")
    assert client.get("greeting") == "héllo"


def test_embedded_server_uses_redis_server_bin(monkeypatch):
    binary = sessionlab.server.find_redis_server()
    monkeypatch.setenv("REDIS_SERVER_BIN", binary)
    connect()
    assert embedded_server().binary == binary


def test_embedded_server_restarted_if_it_died():
    first = connect()
    server = embedded_server()
    port, directory = server.port, server.dir
    server.crash()
    # connect() with explicit "no server" settings starts it again on demand, on the same
    # port and directory, so the default client made before reconnects.
    client = connect(load_settings({}))
    assert client.ping()
    assert embedded_server() is server and server.running
    assert (server.port, server.dir) == (port, directory)
    assert first.ping()


def redis_children() -> set[int]:
    """Child processes running the server binary (``redis-server`` or ``valkey-server``)."""
    name = os.path.basename(sessionlab.server.find_redis_server())
    return {p.pid for p in psutil.Process().children() if p.name() == name}


def test_first_connect_from_many_threads_starts_one_server():
    before = redis_children()
    with ThreadPoolExecutor(8) as pool:
        clients = list(pool.map(lambda _: connect(), range(8)))
    assert all(client is clients[0] for client in clients)
    server = embedded_server()
    assert redis_children() - before == {server.pid}
    # Started from a pool thread that has ended since: still alive.
    assert server.running and clients[0].ping()


def test_named_server_from_the_environment(monkeypatch, lab_server):
    monkeypatch.setenv("REDIS_URL", f"redis://:{lab_server.password}@{HOST}:{lab_server.port}/0")
    client = connect()
    assert embedded_server() is None
    assert client.connection_pool.connection_kwargs["port"] == lab_server.port
    assert connect() is client


def test_named_server_by_split_variables(lab_server):
    environ = {
        "REDIS_HOST": HOST,
        "REDIS_PORT": str(lab_server.port),
        "REDIS_PASSWORD": lab_server.password,
    }
    client = connect(load_settings(environ))
    assert client.ping()
    assert embedded_server() is None
    assert connect(load_settings(environ)) is not client
    assert connect(lab_server.settings()).ping()


def test_bad_setting_in_the_environment_is_a_config_error(monkeypatch):
    monkeypatch.setenv("REDIS_PORT", "abc")
    with pytest.raises(sessionlab.ConfigError, match="REDIS_PORT"):
        connect()
    assert embedded_server() is None


# -- failures ----------------------------------------------------------------------------------


def test_connect_error_types():
    assert issubclass(ConnectError, SessionError)
    assert issubclass(ConnectError, redis.exceptions.ConnectionError)
    port = free_port()
    with pytest.raises(redis.ConnectionError) as caught:  # what a seed-style `except` catches
        connect(load_settings({"REDIS_HOST": HOST, "REDIS_PORT": str(port)}))
    # repr shows the message (redis-py's own errors show only "network:ConnectionError").
    assert repr(caught.value) == f"ConnectError({str(caught.value)!r})"


@pytest.mark.parametrize("form", ["split", "url"])
def test_refused(form):
    port = free_port()
    environ = (
        {"REDIS_HOST": HOST, "REDIS_PORT": str(port), "REDIS_PASSWORD": SECRET}
        if form == "split"
        else {"REDIS_URL": f"redis://:{SECRET}@{HOST}:{port}/0"}
    )
    error = connect_error(environ)
    assert f"{HOST}:{port}" in str(error)
    assert "refused" in str(error)
    assert "REDIS_HOST/REDIS_PORT" in str(error)
    assert error.seconds < 2, "no retries with backoff for a refused connection"


@pytest.mark.pinned_only  # a socket that never answers: no server version involved
def test_silent_server_is_no_answer():
    # A socket that accepts connections (the kernel's backlog does) but never answers.
    with socket.socket() as silent:
        silent.bind((HOST, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = connect_error({"REDIS_HOST": HOST, "REDIS_PORT": str(port)})
    assert f"{HOST}:{port}" in str(error)
    assert "no answer" in str(error)
    assert error.seconds < 10


def test_missing_password(locked_server):
    for environ in (
        {"REDIS_HOST": HOST, "REDIS_PORT": str(locked_server.port)},
        {"REDIS_URL": f"redis://{HOST}:{locked_server.port}/0"},
    ):
        error = connect_error(environ)
        assert "requires a password" in str(error)
        assert "REDIS_PASSWORD" in str(error)
        assert f"{HOST}:{locked_server.port}" in str(error)
        assert error.seconds < 2


def test_wrong_password(locked_server):
    wrong = "not-" + SECRET[::-1]
    for environ in (
        {"REDIS_HOST": HOST, "REDIS_PORT": str(locked_server.port), "REDIS_PASSWORD": wrong},
        {"REDIS_URL": f"redis://:{wrong}@{HOST}:{locked_server.port}/0"},
        {"REDIS_URL": f"redis://default:{wrong}@{HOST}:{locked_server.port}/0"},
    ):
        error = connect_error(environ)
        assert "rejected the password" in str(error)
        assert wrong not in str(error)
        assert error.seconds < 2


def test_right_password(locked_server):
    for environ in (
        {"REDIS_HOST": HOST, "REDIS_PORT": str(locked_server.port), "REDIS_PASSWORD": SECRET},
        {"REDIS_URL": f"redis://:{SECRET}@{HOST}:{locked_server.port}/0"},
    ):
        client = connect(load_settings(environ))
        assert client.ping()
        client.close()


def test_rediss_to_a_plain_server(lab_server):
    error = connect_error({"REDIS_URL": f"rediss://{HOST}:{lab_server.port}/0"})
    assert "TLS" in str(error)
    assert "redis://" in str(error)
    assert f"{HOST}:{lab_server.port}" in str(error)


def test_db_out_of_range(lab_server):
    error = connect_error(
        {
            "REDIS_HOST": HOST,
            "REDIS_PORT": str(lab_server.port),
            "REDIS_PASSWORD": lab_server.password,
            "REDIS_DB": "99999",
        }
    )
    assert "REDIS_DB" in str(error)


def test_unix_socket_that_does_not_exist(tmp_path):
    path = tmp_path / "redis.sock"
    error = connect_error({"REDIS_URL": f"unix://{path}?password={SECRET}"})
    assert str(path) in str(error)


# -- TLS: a host that does not answer is not a failed handshake ----------------------------


def test_rediss_to_a_host_that_does_not_answer_is_not_a_tls_failure(monkeypatch):
    monkeypatch.setattr(sessionlab.connection, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as full:  # its accept queue is full: further SYNs get no answer
        full.bind((HOST, 0))
        full.listen(0)
        port = full.getsockname()[1]
        with socket.create_connection((HOST, port)):
            error = connect_error({"REDIS_URL": f"rediss://:{SECRET}@{HOST}:{port}/0"})
    assert "TLS" not in str(error)
    assert "no answer in time" in str(error)
    assert "REDIS_HOST and REDIS_PORT" in str(error)


@pytest.mark.pinned_only  # a socket that never answers: no server version involved
def test_rediss_to_a_port_that_never_speaks_tls_is_a_handshake_failure(monkeypatch):
    monkeypatch.setattr(sessionlab.connection, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as silent:  # accepts the TCP connection, never answers
        silent.bind((HOST, 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        error = connect_error({"REDIS_URL": f"rediss://{HOST}:{port}/0"})
    assert "TLS handshake failed" in str(error)


# -- a named server still loading its data -------------------------------------------------


def test_a_named_server_that_is_loading_is_waited_for(tmp_path):
    # Hidden redis.conf settings: key_load_delay makes loading 800 keys take ~4 s, and a
    # small loading_process_events_interval_bytes makes the server answer LOADING meanwhile
    # (as it does every 2 MB of a big data set).
    server = LabServer(
        dir=tmp_path,
        save=[3600, 1],
        key_load_delay=5_000,
        loading_process_events_interval_bytes=1024,
    )
    with server:
        server.client().mset({f"k{i}": "x" * 100 for i in range(800)})
        server.stop()
        starting = threading.Thread(target=server.start)
        starting.start()
        try:
            log = server.log_path
            assert wait_until(lambda: "Loading RDB" in log.read_text().rsplit("loaded", 1)[-1])
            assert not _refused(server.port)
            client = connect(server.settings())
            assert client.dbsize() == 800
        finally:
            starting.join()


def _refused(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return True
    return False


# -- the embedded server: its own, and never silently split -------------------------------


def test_connect_follows_its_embedded_server_and_never_talks_to_a_stranger():
    first = connect()
    first.set("k", "ours")
    server = embedded_server()
    old_port = server.port
    server.crash()
    assert connect() is first and first.get("k") is None  # restarted on the same port
    server.crash()
    stranger = subprocess.Popen(
        [server.binary, "--port", str(old_port), "--bind", HOST, "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    try:
        plain = redis.Redis(host=HOST, port=old_port, retry=Retry(NoBackoff(), 0))
        assert wait_until(lambda: _answers(plain))
        plain.set("k", "the stranger's")
        again = connect()  # starts it again: the old port is taken, so on a new one
        assert embedded_server() is server and server.port != old_port
        assert again is not first
        assert int(again.info("server")["process_id"]) == server.pid
        assert again.get("k") is None
        with pytest.raises(redis.ConnectionError, match="make a new client"):
            first.get("k")  # never the stranger's value
    finally:
        stranger.kill()
        stranger.wait()


def _answers(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


START_EMBEDDED = "import sessionlab; sessionlab.connect().ping()"


def test_a_script_that_starts_the_embedded_server_is_told_why_on_stderr():
    done = run_python(START_EMBEDDED)
    assert done.stdout == ""  # the library never prints
    assert "EmbeddedServerWarning" in done.stderr
    assert "private redis-server" in done.stderr and "REDIS_URL" in done.stderr
    assert "every other process" in done.stderr


def test_an_interactive_session_is_not_warned():
    done = subprocess.run(
        [sys.executable, "-i", "-c", START_EMBEDDED],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "EmbeddedServerWarning" not in done.stderr


def test_a_named_server_is_not_warned(lab_server):
    url = f"redis://:{lab_server.password}@{HOST}:{lab_server.port}/0"
    done = run_python(START_EMBEDDED, env={"REDIS_URL": url})
    assert "Warning" not in done.stderr and done.stdout == ""
