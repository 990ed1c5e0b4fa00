"""``deploy/synapse-rendezvous-server.service``, checked by systemd's own tools: every key
is one this systemd knows (``systemd-analyze verify`` warns about unknown ones and still exits
0, so the test reads what it says), the commands it runs exist, and the sandbox it promises
holds (``systemd-analyze security`` rates it). No systemd runs here as PID 1, so the unit is
not started; the ``--check-config`` it runs first is tested in `test_standalone`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from devtools.standalone import binary

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "synapse-rendezvous-server.service"
INSTALLED = "/usr/local/bin/synapse-rendezvous-server"
#: systemd-analyze's exposure scale runs from 0 (fully sandboxed) to 10; below 2 is "OK".
MOST_EXPOSURE = 2.0


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(
            "systemd-analyze is missing (scripts/test installs it: apt-get install systemd)"
        )
    return found


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """The unit as the docs install it, with the binary where this checkout built it."""
    text = UNIT.read_text(encoding="utf-8")
    assert INSTALLED in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED, str(binary())), encoding="utf-8")
    return copy


def test_systemd_knows_every_key_of_the_unit(unit: Path) -> None:
    done = subprocess.run(
        [_analyze(), "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done
    assert done.stdout + done.stderr == "", done


def test_the_unit_is_sandboxed(unit: Path) -> None:
    done = subprocess.run(
        [_analyze(), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert found, done
    assert float(found.group(1)) < MOST_EXPOSURE, done.stdout
