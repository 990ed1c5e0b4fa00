"""The wheel an admin installs: built by ``scripts/wheel`` (abi3, manylinux2014), installed
into a fresh venv together with matrix-synapse and no Rust toolchain on PATH, it boots inside a
real Synapse and serves a whole exchange. This is what the matrixdotorg/synapse image and
Debian's venv get: no cargo, no system OpenSSL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.http_client import create_session, delete, get, put
from support.no_rust import without_rust

from devtools.synapse import SynapseServer

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT = 900
INSTALL_TIMEOUT = 600


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [str(ROOT / "scripts/wheel"), "--out", str(out)],
        check=True,
        timeout=BUILD_TIMEOUT,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and matrix-synapse, built with no Rust on PATH."""
    root = tmp_path_factory.mktemp("venv")
    env = without_rust(dict(os.environ))
    assert shutil.which("cargo", path=env["PATH"]) is None
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, timeout=120, env=env)
    pip = [str(root / "bin/python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [*pip, str(wheel), "matrix-synapse[redis]"],
        check=True,
        timeout=INSTALL_TIMEOUT,
        env=env,
    )
    return root


def test_the_wheel_is_abi3_manylinux_and_links_only_libc(wheel: Path) -> None:
    assert "-cp310-abi3-manylinux" in wheel.name, wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "synapse_rendezvous/_core.abi3.so" in names
    assert "synapse_rendezvous/py.typed" in names
    # The dev tools (devtools/, tests/support/) stay out of what admins install.
    top = {name.split("/", 1)[0] for name in names}
    assert {"devtools", "tests", "bench"}.isdisjoint(top), sorted(top)


def test_the_installed_wheel_serves_an_exchange_in_synapse(venv: Path) -> None:
    python = str(venv / "bin/python")
    linked = subprocess.run(
        [python, "-c", "import synapse_rendezvous._core as c; print(c.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=60,
    ).stdout.strip()
    assert linked.startswith(str(venv)), linked
    libraries = subprocess.run(
        ["ldd", linked], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    assert "ssl" not in libraries, libraries
    assert "crypto" not in libraries, libraries
    with SynapseServer(mode="takeover", module_config={}, python=python) as server:
        url, created = create_session(server, b"offer")
        assert get(server, url).body == b"offer"
        written = put(server, url, b"answer", etag=created.header("ETag") or "")
        assert written.status == 202, written
        assert delete(server, url).status == 204
        assert "synapse_rendezvous serving MSC4108" in server.log_text()
