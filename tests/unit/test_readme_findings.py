"""The README's table of finding ids is the rule set: every rule is listed with the evidence
that establishes it, at its severity, and nothing else is."""

from __future__ import annotations

import re
from pathlib import Path

from flannel_bot.diagnosis.rules import RULES

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `([a-z0-9-]+)` \| (critical|warning|info) \| (.+) \|$", re.M)


def test_the_readme_lists_every_finding_id_once_with_its_severity_and_evidence() -> None:
    rows = ROW.findall(README.read_text())
    listed = [finding for finding, _, _ in rows]
    assert sorted(listed) == sorted(r.id for r in RULES)
    assert len(listed) == len(set(listed))
    severity = {r.id: r.severity for r in RULES}
    assert {f: s for f, s, _ in rows} == severity
    assert all(len(evidence.split()) >= 4 for _, _, evidence in rows)
