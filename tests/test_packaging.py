"""`pip install sessionlab` without extras: only redis-py and python-dotenv, and the store works.

A throwaway venv (no pip of its own) gets this checkout's package and the two base
dependencies, nothing else (``--no-deps``), from pip's cache or the index. Then a fresh
interpreter in it imports ``sessionlab`` and uses the store on a real server.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import venv

import check_platforms as platforms
import pytest
from helpers import ROOT

BASE = {"redis", "python-dotenv"}

USE_THE_STORE = """
import importlib.metadata, json, sys
import sessionlab
from sessionlab import LabServer, SessionStore

requires = importlib.metadata.requires("sessionlab") or []
base = sorted(r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires
              if "extra ==" not in r)
with LabServer() as server:
    store = SessionStore(server.client(), prefix="pkg")
    sid = store.new_id()
    store.create(sid, {"user_id": "U001", "name": "Rohith"})
    profile = store.get(sid)
    quantity = store.add_to_cart(sid, "SKU-1", 2)
    deleted = store.delete(sid)
distributions = sorted(d.metadata["Name"] for d in importlib.metadata.distributions())
print(json.dumps({"base": base, "profile": profile, "quantity": quantity, "deleted": deleted,
                  "distributions": distributions}))
"""


@pytest.mark.slow
@pytest.mark.pinned_only
def test_base_install_has_only_redis_and_dotenv_and_the_store_works(tmp_path):
    source = tmp_path / "source"  # a copy: building must not write into the checkout
    shutil.copytree(ROOT / "sessionlab", source / "sessionlab")
    for name in ["pyproject.toml", "README.md"]:
        shutil.copy2(ROOT / name, source / name)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in sorted(BASE)]
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet"]
    subprocess.run([*install, "--no-deps", *pins, str(source)], check=True, timeout=300)

    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    done = subprocess.run(
        [str(python), "-I", "-c", USE_THE_STORE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result["base"]) == BASE  # pyproject's dependencies, without extras
    assert set(result["distributions"]) == BASE | {"sessionlab"}
    assert result["profile"] == {"user_id": "U001", "name": "Rohith"}
    assert result["quantity"] == 2
    assert result["deleted"] is True


def test_the_platforms_index_hides_only_files_pip_could_not_pick() -> None:
    """tests/check_platforms.py's local index drops files before pip sees them; it may drop
    only files that no target (4 platforms x CPython 3.11-3.14) installs, or other versions of
    a pinned project."""
    pins = platforms.pinned_versions("redis==8.1.0\nflask>=3\n-e .[lab]\nhiredis==3.5.0  # C\n")
    assert {name: str(v) for name, v in pins.items()} == {"redis": "8.1.0", "hiredis": "3.5.0"}
    pick = platforms.could_pick
    pinned = pins["hiredis"]
    for kept in [
        "hiredis-3.5.0-cp313-cp313-manylinux_2_17_aarch64.manylinux2014_aarch64.whl",
        "hiredis-3.5.0-cp314-cp314t-macosx_11_0_arm64.whl",
        "hiredis-3.5.0-cp38-abi3-macosx_10_9_universal2.whl",
        "hiredis-3.5.0-py3-none-any.whl",
        "hiredis-3.5.0.tar.gz",
    ]:
        assert pick(kept, pinned), kept
    for dropped in [
        "hiredis-3.4.0-cp313-cp313-manylinux_2_17_x86_64.whl",  # not the pinned version
        "hiredis-3.5.0-cp313-cp313-win_amd64.whl",
        "hiredis-3.5.0-cp313-cp313-musllinux_1_2_x86_64.whl",
        "hiredis-3.5.0-cp313-cp313-manylinux_2_17_i686.whl",
        "hiredis-3.5.0-cp310-cp310-manylinux_2_17_x86_64.whl",
        "hiredis-3.5.0-pp310-pypy310_pp73-manylinux_2_17_x86_64.whl",
        "hiredis-3.5.0-py2-none-any.whl",
    ]:
        assert not pick(dropped, pinned), dropped
    assert pick("anything-1.0-cp312-cp312-macosx_10_13_x86_64.whl", None)  # unpinned: any version
