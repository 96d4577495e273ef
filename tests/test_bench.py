"""`python -m sessionlab.bench --quick` runs and prints its table (the numbers are not checked)."""

from __future__ import annotations

import re

from helpers import run_python


def test_bench_quick_runs():
    out = run_python(
        "from sessionlab.bench import main; raise SystemExit(main(['--quick']))"
    ).stdout
    for operation in ("create", "get", "update"):
        assert re.search(
            rf"^{operation}\s+[\d,]+\s+[\d,]+\s+\d+\.\d\d\s+0\.\d\s+(ok|MISSED)$", out, re.M
        ), out
    assert re.search(r"one session: profile \+ cart of 3 items\s+\d+$", out, re.M)
    assert re.search(r"as the seed stores it \(json.dumps\)\s+\d+$", out, re.M)
    assert re.search(r"as compact JSON \(the store\)\s+\d+$", out, re.M)
    assert re.search(r"as a hash of its 4 fields\s+\d+$", out, re.M)
    assert re.search(r"in Redis \(INFO commandstats\):\s+SET [\d.]+\s+GET [\d.]+\s+EVALSHA", out)
    assert re.search(r"in Python, no network:\s+json.dumps [\d.]+\s+store dump [\d.]+", out)
    assert re.search(r"LabServer start to first PING: median \d+ ms", out)
