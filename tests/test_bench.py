"""`python -m sessionlab.bench --quick` runs and prints its tables, floors included (the numbers are
not checked)."""

from __future__ import annotations

import re

from helpers import run_python


def test_bench_quick_runs():
    out = run_python(
        "from sessionlab.bench import main; raise SystemExit(main(['--quick']))"
    ).stdout
    for operation in ("create", "load", "get", "add", "patch"):
        assert re.search(
            rf"^{operation}\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d\s+0\.\d\d\s+(ok|MISSED)$", out, re.M
        ), out
    assert re.search(r"one session in the store \(one hash\)\s+\d+$", out, re.M)
    assert re.search(r"as one JSON string \(Flask-Session\)\s+\d+$", out, re.M)
    assert re.search(r"profile as one JSON field\s+\d+$", out, re.M)
    assert re.search(r"other keys of that session \(none: it is one key\)\s+0$", out, re.M)
    assert re.search(r"store / JSON string: \d\.\d\d \(bar 1\.2, goal 1\.0\)\s+(ok|MISSED)", out)
    assert re.search(
        r"In Redis \(INFO commandstats, microseconds per call, raw / store\): create [\d.]+ / "
        r"[\d.]+  load",
        out,
    )
    assert re.search(r"LabServer start to first PING: median \d+ ms", out)
    section = out.split("\nFloors: ")[1].split("\nMemory ")[0]
    floors = re.findall(r"^(create|load|add)\s+(\S.*?)\s+(\d\.\d\d)\s+0\.\d\d", section, re.M)
    assert [(name, design) for name, design, _ in floors] == [
        ("create", "the store's script, sent bare"),
        ("create", "the same, each field encoded, unchecked"),
        ("create", "a script that does nothing"),
        ("create", "no script: MULTI DEL HSET EXPIRE EXEC"),
        ("load", "the store's script, sent bare"),
        ("load", "a script that only returns HGETALL"),
        ("load", "no script: HGETALL alone, not parsed"),
        ("add", "the store's script, sent bare"),
        ("add", "a script that does nothing"),
    ], out


def test_bench_logout_scaling_quick_runs():
    out = run_python(
        "from sessionlab.bench import main; raise SystemExit(main(['--logout', '--quick']))"
    ).stdout
    rows = re.findall(r"^\s+([\d,]+)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+)$", out, re.M)
    assert [row[0] for row in rows] == ["1,005", "10,005"], out
    assert rows[0][4] == rows[1][4], out  # the same Redis commands, whatever the total
