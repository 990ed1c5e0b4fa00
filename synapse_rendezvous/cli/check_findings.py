"""Findings of ``check`` and the report that collects, prints and serialises them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["VERDICTS", "Finding", "Report", "Verdict", "format_finding", "format_totals"]

Verdict = Literal["OK", "WARN", "FAIL"]
VERDICTS: tuple[Verdict, ...] = ("OK", "WARN", "FAIL")

_ID_WIDTH = 16
#: C0 and C1 control characters: summaries quote what the server sent (URLs, headers, error
#: messages), and a terminal must not take an escape sequence from it for a command.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Finding:
    """One verdict about one aspect of the homeserver, with a one-line fix unless OK."""

    id: str
    verdict: Verdict
    summary: str
    fix: str | None = None

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "verdict": self.verdict, "summary": self.summary, "fix": self.fix}


@dataclass
class Report:
    """The findings of one run, in the order they were made.

    ``on_finding`` is called with each finding as soon as it is added (progress output).
    """

    target: str
    on_finding: Callable[[Finding], None] | None = None
    base_url: str | None = None
    session_url: str | None = None
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> Finding:
        self.findings.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)
        return finding

    def ok(self, id: str, summary: str) -> Finding:
        return self.add(Finding(id, "OK", summary))

    def warn(self, id: str, summary: str, fix: str) -> Finding:
        return self.add(Finding(id, "WARN", summary, fix))

    def fail(self, id: str, summary: str, fix: str) -> Finding:
        return self.add(Finding(id, "FAIL", summary, fix))

    def get(self, id: str) -> Finding | None:
        """The finding called ``id``, if it was made."""
        return next((f for f in self.findings if f.id == id), None)

    @property
    def verdict(self) -> Verdict:
        """The worst verdict of all findings (FAIL if there are none)."""
        if not self.findings:
            return "FAIL"
        return max((f.verdict for f in self.findings), key=VERDICTS.index)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise."""
        return 1 if self.verdict == "FAIL" else 0

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "base_url": self.base_url,
            "session_url": self.session_url,
            "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
        }


def format_finding(finding: Finding) -> str:
    """``OK    versions          summary``, plus an indented ``fix:`` line unless OK.

    Control characters are shown escaped (``\\x1b``).
    """
    line = f"{finding.verdict:<4}  {finding.id:<{_ID_WIDTH}}  {_printable(finding.summary)}"
    if finding.fix:
        line += f"\n{'':<4}  {'':<{_ID_WIDTH}}  fix: {_printable(finding.fix)}"
    return line


def _printable(text: str) -> str:
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def format_totals(report: Report) -> str:
    """``Result: FAIL (12 OK, 1 WARN, 1 FAIL)``."""
    counts = ", ".join(f"{sum(f.verdict == v for f in report.findings)} {v}" for v in VERDICTS)
    return f"Result: {report.verdict} ({counts})"
