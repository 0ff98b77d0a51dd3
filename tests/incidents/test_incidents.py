"""Real incidents from public issue threads, each a bundle built from what the thread quotes:
diagnose names the thread's root cause first, and never offers a destructive fix first for a
cause it got wrong or only inferred. `bench/accuracy.py` prints the same as figures."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest

from flannel_bot.runs.registry import Registry
from flannel_bot.service.views import diagnosis_view
from flannel_bot.wiring import evidence_from_bundle
from tests.incidents.assemble import BUNDLES, CASES, assemble

REGISTRY = Registry.from_package()
ALL = sorted(CASES.glob("*.json"))
INCLUDED = [c for c in ALL if not json.loads(c.read_text()).get("excluded")]


def test_the_set_is_large_enough_and_every_case_cites_its_thread() -> None:
    assert len(INCLUDED) >= 60
    for case_file in ALL:
        case = json.loads(case_file.read_text())
        assert case["url"].startswith("https://"), case_file.name
        assert case["evidence"], case_file.name
        assert case["expected_finding"], case_file.name


def same_tree(a: Path, b: Path) -> list[str]:
    diff = filecmp.dircmp(a, b)
    problems = [*diff.left_only, *diff.right_only, *diff.diff_files, *diff.funny_files]
    for sub in diff.common_dirs:
        problems += [f"{sub}/{p}" for p in same_tree(a / sub, b / sub)]
    return problems


@pytest.mark.parametrize("case_file", ALL, ids=lambda c: c.stem)
def test_the_committed_bundle_is_what_the_quotes_assemble_to(
    case_file: Path, tmp_path: Path
) -> None:
    fresh = assemble(json.loads(case_file.read_text()), tmp_path / "bundle")
    assert same_tree(BUNDLES / case_file.stem, fresh) == [], (
        "run `python -m tests.incidents.assemble` after editing a case"
    )


def known_miss(case_file: Path) -> list[pytest.MarkDecorator]:
    """A case the bot gets wrong today, kept in the set and counted as a miss by the bench."""
    reason = json.loads(case_file.read_text()).get("known_miss")
    return [pytest.mark.xfail(strict=True, reason=reason)] if reason else []


@pytest.mark.parametrize(
    "case_file", [pytest.param(c, marks=known_miss(c), id=c.stem) for c in INCLUDED]
)
def test_the_root_cause_is_named_first(case_file: Path) -> None:
    case = json.loads(case_file.read_text())
    view = diagnosis_view(evidence_from_bundle(BUNDLES / case_file.stem), REGISTRY)
    ids = [f["id"] for f in view["findings"]]
    assert ids and ids[0] == case["expected_finding"], (case["url"], ids[:5])
    first = view["findings"][0]
    if first["fix"]["runbook"] and first.get("certainty") == "inferred":
        assert REGISTRY.get(first["fix"]["runbook"]).risk.value != "destructive", first["fix"]
