"""The two ways docs/standalone.md installs the standalone server, run as written there but
in the debug profile, which this checkout's tests built already (seconds, not the minutes of
a cold release build; the profile does not change how either is installed):

- ``cargo install --locked --path rust/server``, into a root of the test's own;
- ``pip wheel --no-deps -w dist ./rust/server``, a wheel (maturin's ``bin`` bindings) that must
  carry the binary as a console command, installed into a fresh venv with no Rust toolchain on
  PATH.

Each installed command then serves a whole exchange: create, read, write and delete.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.http_client import SESSION_ROOT, delete, get, put, request
from support.no_rust import without_rust

from devtools.standalone import BINARY_ENV, StandaloneServer, target_dir

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 900
COMMAND = "synapse-rendezvous-server"


def _serves(program: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``program`` starts as the server and serves a whole exchange."""
    monkeypatch.setenv(BINARY_ENV, str(program))
    with StandaloneServer({"rate_limit": {"enabled": False}}) as server:
        created = request(
            server, "POST", SESSION_ROOT, body=b"offer", headers=(("Content-Type", "text/plain"),)
        )
        assert created.status == 201, created
        url = created.json_dict()["url"]
        assert isinstance(url, str)
        assert get(server, url).body == b"offer"
        written = put(server, url, b"answer", etag=created.header("ETag") or "")
        assert written.status == 202, written
        assert delete(server, url).status == 204


def test_cargo_install_from_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    subprocess.run(
        [
            "cargo",
            "install",
            "--locked",
            "--path",
            "rust/server",
            "--root",
            str(root),
            # The debug profile this checkout's tests built already: seconds, not minutes.
            "--debug",
            "--target-dir",
            str(target_dir()),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    program = root / "bin" / COMMAND
    version = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    assert version.stdout.startswith(f"{COMMAND} "), version
    _serves(program, monkeypatch)


def test_pip_installs_the_server_without_rust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(dist),
            "./rust/server",
        ],
        cwd=ROOT,
        # maturin builds the debug profile the tests built already (seconds, not the minutes
        # of a cold release build); the profile does not change what the wheel holds.
        env={**os.environ, "MATURIN_PEP517_ARGS": "--profile dev"},
        check=True,
        capture_output=True,
        timeout=BUILD_TIMEOUT,
    )
    (wheel,) = dist.glob("synapse_rendezvous_server-*.whl")
    # A binary only: one wheel serves every Python version of the platform.
    assert "-py3-none-" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as archive:
        scripts = [name for name in archive.namelist() if name.endswith(f".data/scripts/{COMMAND}")]
    assert len(scripts) == 1, scripts

    venv = tmp_path / "venv"
    env = without_rust(dict(os.environ))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env)
    subprocess.run(
        [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
        env=env,
    )
    program = venv / "bin" / COMMAND
    version = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, check=True, timeout=30, env=env
    )
    assert version.stdout.startswith(f"{COMMAND} "), version
    _serves(program, monkeypatch)
