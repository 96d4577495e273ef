"""doctor() on real servers configured each way: it flags what loses or refuses sessions."""

from __future__ import annotations

import pytest

from sessionlab import LabServer, SessionStore
from sessionlab.doctor import Finding, Report, doctor

GOOD = {"maxmemory": "2mb", "maxmemory_policy": "allkeys-lru", "appendonly": True}


def examine(directives: dict, keys_without_ttl: int = 0, decode: bool = True) -> Report:
    with LabServer(**directives) as server:
        client = server.client(decode_responses=decode)
        if not directives.get("cluster_enabled"):  # a lone cluster node serves no slots
            SessionStore(client).create("alice", {"user_id": "U001"}, 3600)
        for number in range(keys_without_ttl):
            client.set(f"pinned:{number}", "no ttl")
        report = doctor(client)
        client.close()
    return report


def levels(report: Report, setting: str) -> set[str]:
    return {finding.level for finding in report.about(setting)}


def test_a_good_session_server_passes():
    report = examine(GOOD)
    assert report.ok, str(report)
    assert report.worst == "ok"
    assert {f.setting for f in report} == {"maxmemory", "maxmemory-policy", "appendfsync"}
    assert "allkeys-lru" in report.about("maxmemory-policy")[0].message


def test_defaults_no_limit_noeviction_no_persistence_are_flagged():
    report = examine({})
    assert levels(report, "maxmemory") == {"warning"}
    assert "OOM killer" in report.about("maxmemory")[0].message
    assert levels(report, "maxmemory-policy") == {"danger"}
    assert "new logins" in report.about("maxmemory-policy")[0].message
    assert levels(report, "persistence") == {"danger"}
    assert "logs every user out" in report.about("persistence")[0].message
    assert report.worst == "danger"
    assert not report.ok


def test_noeviction_with_a_limit_refuses_new_logins():
    report = examine({**GOOD, "maxmemory_policy": "noeviction"})
    assert levels(report, "maxmemory-policy") == {"danger"}
    assert "allkeys-lru" in report.about("maxmemory-policy")[0].message  # what to change


@pytest.mark.parametrize("policy", ["volatile-lru", "volatile-lfu", "volatile-ttl"])
def test_volatile_policy_with_keys_without_ttl_is_dangerous(policy):
    report = examine({**GOOD, "maxmemory_policy": policy}, keys_without_ttl=3)
    (finding,) = report.about("maxmemory-policy")
    assert finding.level == "danger"
    assert "3 of 4 keys" in finding.message


def test_volatile_lru_when_every_key_has_a_ttl_is_ok_with_a_caveat():
    report = examine({**GOOD, "maxmemory_policy": "volatile-lru"})
    (finding,) = report.about("maxmemory-policy")
    assert finding.level == "ok"
    assert "without TTL" in finding.message


@pytest.mark.parametrize("policy", ["allkeys-random", "volatile-random"])
def test_random_policies_warn(policy):
    report = examine({**GOOD, "maxmemory_policy": policy})
    assert levels(report, "maxmemory-policy") == {"warning"}


def test_allkeys_lfu_warns_that_new_logins_go_first():
    report = examine({**GOOD, "maxmemory_policy": "allkeys-lfu"})
    (finding,) = report.about("maxmemory-policy")
    assert finding.level == "warning"
    assert "brand-new key starts with a low counter" in finding.message


def test_rdb_only_loses_sessions_since_the_last_snapshot():
    report = examine({**GOOD, "appendonly": False, "save": [3600, 1]})
    (finding,) = report.about("save")
    assert finding.level == "warning"
    assert "since the last snapshot" in finding.message
    assert "3600 1" in finding.message


@pytest.mark.parametrize(
    ("fsync", "level"), [("always", "ok"), ("everysec", "ok"), ("no", "warning")]
)
def test_appendfsync_tradeoffs(fsync, level):
    report = examine({**GOOD, "appendfsync": fsync})
    (finding,) = report.about("appendfsync")
    assert finding.level == level
    assert fsync in finding.message


def test_evictions_that_happened_are_reported():
    with LabServer(**GOOD) as server:
        client = server.client()
        for number in range(2000):
            client.set(f"k:{number}", "x" * 2000, ex=3600)
        report = doctor(client)
        client.close()
    assert any(f.level == "warning" and "evicted" in f.message for f in report.about("maxmemory"))


def test_works_with_a_bytes_client():
    report = examine(GOOD, decode=False)
    assert report.ok, str(report)


def test_cluster_node():
    report = examine({**GOOD, "cluster_enabled": True, "cluster_config_file": "nodes.conf"})
    assert report.ok, str(report)


def test_config_disabled_gives_a_finding_not_a_crash():
    report = examine({"rename_command": ["CONFIG", '""']})
    (finding,) = report
    assert finding.level == "warning"
    assert finding.setting == "CONFIG"
    assert "CONFIG GET" in finding.message


def test_report_prints_worst_first_with_marks():
    report = Report(
        (
            Finding("ok", "a", "fine"),
            Finding("danger", "b", "bad"),
            Finding("warning", "c", "meh"),
        )
    )
    lines = str(report).splitlines()
    assert [line.split()[1] for line in lines] == ["DANGER", "WARNING", "OK"]
    assert lines[0].startswith("❌")
    assert len(report) == 3
    assert Report(()).worst == "ok"
