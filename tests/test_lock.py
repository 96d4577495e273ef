"""Every private server is locked: a random password, never in argv or a message, refused
connections without it, a 0700 data directory, and no directive that would undo any of it.

Checked for each kind of server sessionlab starts: LabServer, connect()'s embedded one and
every node of a LabCluster.
"""

from __future__ import annotations

import socket
import stat
import sys
import warnings
from collections.abc import Iterator

import psutil
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import sessionlab.connection
from sessionlab import LabCluster, LabServer, SessionError, connect, embedded_server
from sessionlab.errors import EmbeddedServerWarning, InvalidServerOption, ServerError
from sessionlab.server import HOST, LOCKED_DIRECTIVES, config_text

CHOSEN = 'lab pass with spaces "quotes" and \\ back'


def servers_of(kind: str) -> Iterator[list[LabServer]]:
    if kind == "labserver":
        with LabServer() as server:
            yield [server]
    elif kind == "chosen-password":
        with LabServer(requirepass=CHOSEN) as server:
            yield [server]
    elif kind == "embedded":
        sessionlab.connection.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", EmbeddedServerWarning)
            assert connect().ping()
        yield [embedded_server()]
        sessionlab.connection.reset()
    else:
        with LabCluster(masters=3, replicas=1) as cluster:
            client = cluster.client()
            assert client.set("k", "v") and client.get("k") == "v"
            client.close()
            yield cluster.nodes


@pytest.fixture(scope="module", params=["labserver", "chosen-password", "embedded", "cluster"])
def nodes(request):
    yield from servers_of(request.param)


def stranger(port: int, **kwargs) -> redis.Redis:
    """A client without our password (no retries: AuthenticationError is a ConnectionError)."""
    return redis.Redis(host=HOST, port=port, retry=Retry(NoBackoff(), 0), **kwargs)


def raw_reply(port: int, command: bytes) -> bytes:
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(200)


def test_a_connection_without_the_password_is_refused(nodes):
    for node in nodes:
        assert node.client().ping()  # the owner's client knows it
        assert raw_reply(node.port, b"PING\r\n").startswith(b"-NOAUTH")
        assert raw_reply(node.port, b"CONFIG GET dir\r\n").startswith(b"-NOAUTH")
        with pytest.raises(redis.AuthenticationError):
            stranger(node.port).get("k")
        with pytest.raises(redis.AuthenticationError):
            stranger(node.port, password="guess").get("k")


def test_the_password_is_in_no_argv_repr_or_log(nodes):
    for node in nodes:
        password = node.password
        assert len(password) >= 12
        # What every local user can read (/proc/<pid>/cmdline on Linux, ps elsewhere).
        assert not any(password in arg for arg in psutil.Process(node.pid).cmdline())
        for shown in (repr(node), str(node), node.url, repr(node.settings()), node.files()):
            assert password not in str(shown)
        assert password not in node.log_path.read_text()


def test_the_data_directory_is_private(nodes):
    for node in nodes:
        assert stat.S_IMODE(node.dir.stat().st_mode) == 0o700


def test_each_server_has_its_own_random_password():
    with LabServer() as one, LabServer() as two:
        assert one.password != two.password
        with pytest.raises(redis.AuthenticationError):
            stranger(one.port, password=two.password).ping()


def test_a_chosen_password_with_spaces_works_and_is_never_shown(tmp_path):
    with LabServer(requirepass=CHOSEN) as server:
        assert server.client().config_get("requirepass") == {"requirepass": CHOSEN}
        assert redis.Redis(host=HOST, port=server.port, password=CHOSEN).ping()
    # A start that fails prints the log tail: still no password in it.
    broken = LabServer(requirepass=CHOSEN, maxmemory_policy="keep-everything")
    with pytest.raises(ServerError) as caught:
        broken.start()
    broken.close()
    for word in CHOSEN.split():
        if len(word) > 4:
            assert word not in str(caught.value)
    assert "maxmemory-policy" in str(caught.value)


@pytest.mark.parametrize("bad", ["", 42, b"bytes"])
def test_an_unusable_chosen_password_is_refused(bad):
    with pytest.raises(InvalidServerOption, match="requirepass"):
        LabServer(requirepass=bad)


@pytest.mark.parametrize("name", sorted(LOCKED_DIRECTIVES))
def test_directives_that_would_undo_the_lock_or_lifecycle_are_refused(name, tmp_path):
    keyword = name.replace("-", "_").upper()  # names are case-insensitive, like Redis's
    before = set(tmp_path.iterdir())
    with pytest.raises(InvalidServerOption) as caught:
        LabServer(dir=tmp_path / "never", **{keyword: "yes"})
    error = caught.value
    assert isinstance(error, SessionError) and isinstance(error, ValueError)
    assert name in str(error) and "Remove it" in str(error)
    assert set(tmp_path.iterdir()) == before  # refused before anything was created


def test_a_directive_name_cannot_inject_a_config_line():
    with pytest.raises(InvalidServerOption, match="not a redis-server directive name"):
        LabServer(**{"maxmemory 1mb\nrequirepass": "x"})
    # A value cannot either: every argument is quoted, a newline stays inside it.
    text = config_text({"maxmemory_policy": "noeviction\nrequirepass x"})
    assert text.count("\n") == 1


def test_lab_cluster_refuses_locked_directives_and_its_own_password():
    with pytest.raises(InvalidServerOption, match="requirepass"):
        LabCluster(requirepass="mine")
    with pytest.raises(InvalidServerOption, match="daemonize"):
        LabCluster(daemonize=True)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_the_password_is_not_in_the_arguments_the_server_was_started_with():
    # Redis overwrites its process title once running; with that off, /proc shows the
    # argv it was started with, which every local user can read.
    for options in ({}, {"requirepass": CHOSEN}):
        with LabServer(set_proc_title=False, **options) as server:
            with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")
            assert argv[1:] == [b"-", b""]  # the configuration comes on stdin
            assert server.password.encode() not in b" ".join(argv)
