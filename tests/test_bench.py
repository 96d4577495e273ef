"""`python -m sessionlab.bench --quick` runs and prints its table (the numbers are not checked)."""

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
    assert re.search(r"write memory \(:w\), only for 2 minutes after a write\s+\d+$", out, re.M)
    assert re.search(r"store / JSON string: \d\.\d\d \(bar 1\.2, goal 1\.0\)\s+(ok|MISSED)", out)
    assert re.search(
        r"In Redis \(INFO commandstats, microseconds per call, raw / store\): create [\d.]+ / "
        r"[\d.]+  load",
        out,
    )
    assert re.search(r"LabServer start to first PING: median \d+ ms", out)


def test_bench_logout_scaling_quick_runs():
    out = run_python(
        "from sessionlab.bench import main; raise SystemExit(main(['--logout', '--quick']))"
    ).stdout
    rows = re.findall(r"^\s+([\d,]+)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+\.\d\d)\s+(\d+)$", out, re.M)
    assert [row[0] for row in rows] == ["1,005", "10,005"], out
    assert rows[0][4] == rows[1][4], out  # the same Redis commands, whatever the total
