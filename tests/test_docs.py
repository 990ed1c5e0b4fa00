"""The docs cannot drift from the code: every ``yaml`` example in the docs is valid YAML, and every
module ``config:`` in one is accepted by the module's own `parse_config` — unless the block is
marked as a deliberate error with an HTML comment ``<!-- invalid: KEY -->`` on the line before
its fence, and then it must be refused naming KEY. (The metrics table is checked against a real
scrape in `test_metrics`.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from synapse_rendezvous import _core

DOCS = Path(__file__).resolve().parent.parent / "docs"
MODULE = "synapse_rendezvous.RendezvousModule"
_BLOCK = re.compile(
    r"(?:<!--\s*invalid:\s*(?P<invalid>[\w.\[\]]+)\s*-->\s*\n)?```yaml\n(?P<body>.*?)```",
    re.DOTALL,
)


def _blocks() -> list[tuple[str, str, str | None]]:
    found = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("body"))
            found.append((f"{path.name}:{line}", match["body"], match["invalid"]))
    return found


BLOCKS = _blocks()


def test_the_docs_have_examples() -> None:
    assert len([b for b in BLOCKS if b[0].startswith("configuration.md")]) >= 20


@pytest.mark.parametrize(("where", "body", "invalid"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_every_yaml_example_is_valid(where: str, body: str, invalid: str | None) -> None:
    document = yaml.safe_load(body)
    entries = document.get("modules", []) if isinstance(document, dict) else []
    configs = [
        e.get("config") for e in entries if isinstance(e, dict) and e.get("module") == MODULE
    ]
    if invalid is None:
        for config in configs:
            _core.parse_config(config)
        return
    assert configs, f"{where}: an example marked invalid has no module config"
    with pytest.raises(_core.ConfigError) as refused:
        _core.parse_config(configs[0])
    assert refused.value.key == invalid, f"{where}: {refused.value}"
