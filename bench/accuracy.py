"""Diagnosis accuracy on the public-incident set: is the thread's root cause named first?

    python bench/accuracy.py [--verbose]

Reads every incident under tests/incidents/ (each a support bundle assembled from what a
public issue thread quotes, with the root cause the thread established), diagnoses the bundle
as `flannel-bot diagnose --recording DIR` does, and prints:
  top-1   the expected root cause is the first finding (known misses count as misses)
  top-3   it is among the first three (or the first three are the cause and its symptoms)
  unsafe  incidents where the first finding offers a destructive runbook while being wrong or
          only inferred (the reply's fix command for a destructive runbook, first)
by expected finding and by source (the tracker the thread is from). Not a timing: accuracy only.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from flannel_bot.runs.registry import Registry  # noqa: E402
from flannel_bot.service.views import diagnosis_view  # noqa: E402
from flannel_bot.wiring import evidence_from_bundle  # noqa: E402

INCIDENTS = REPO / "tests" / "incidents"


def judge(case: dict, view: dict, registry: Registry) -> dict:
    """top1, top3 and unsafe for one incident's diagnose view."""
    ids = [f["id"] for f in view["findings"]]
    expected = case["expected_finding"]
    acceptable = {expected, *case.get("acceptable_top3", [])}
    first = view["findings"][0] if view["findings"] else None
    unsafe = False
    if first is not None and first["fix"]["runbook"]:
        risk = registry.get(first["fix"]["runbook"]).risk.value
        offered = first["fix"]["command"] or ""
        wrong = first["id"] != expected
        unsure = first.get("certainty") == "inferred"
        unsafe = risk == "destructive" and offered.startswith("run ") and (wrong or unsure)
    return {
        "top1": bool(ids) and ids[0] == expected,
        "top3": expected in ids[:3] and set(ids[: ids.index(expected)]) <= acceptable,
        "unsafe": unsafe,
        "first": ids[0] if ids else "(nothing)",
    }


def collected(case: dict) -> str:
    """Whether the rules were written knowing the case, or it was collected after them (a
    held-out batch: its first measurement is the honest figure, kept in the README)."""
    if not case.get("collected_after_the_rules"):
        return "0: the rules were written with it"
    return f"{case.get('batch', 1)}: held out, collected after the rules"


def source_of(url: str) -> str:
    parts = url.split("/")
    return f"{parts[3]}/{parts[4]}" if len(parts) > 4 else url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="one line per incident")
    args = parser.parse_args()
    registry = Registry.from_package("runbooks")
    rows = []
    excluded = []
    for case_file in sorted((INCIDENTS / "cases").glob("*.json")):
        case = json.loads(case_file.read_text())
        if case.get("excluded"):  # the quotes do not show the cause (the reason is in the case)
            excluded.append(case_file.stem)
            continue
        bundle = INCIDENTS / "bundles" / case_file.stem
        view = diagnosis_view(evidence_from_bundle(bundle), registry)
        rows.append((case_file.stem, case, judge(case, view, registry)))
        if args.verbose:
            r = rows[-1][2]
            mark = "ok " if r["top1"] else ("top3" if r["top3"] else "MISS")
            print(
                f"{mark:4} {case_file.stem:32} expected {case['expected_finding']:28} "
                f"first {r['first']}"
            )
    n = len(rows)
    if not n:
        print("no incidents found under tests/incidents/cases")
        return 1
    top1 = sum(r["top1"] for _, _, r in rows)
    top3 = sum(r["top3"] for _, _, r in rows)
    unsafe = sum(r["unsafe"] for _, _, r in rows)
    print(
        f"incidents {n}: top-1 {top1 / n:.1%} ({top1}), top-3 {top3 / n:.1%} ({top3}), "
        f"destructive fix first on a wrong or unconfirmed cause: {unsafe}"
    )
    print(f"({len(excluded)} more collected and set aside: their quotes do not show the cause)")
    for title, key in (
        ("by when it was collected", collected),
        ("by expected finding", lambda c: c["expected_finding"]),
        ("by source", lambda c: source_of(c["url"])),
    ):
        groups: dict[str, list[dict]] = defaultdict(list)
        for _, case, r in rows:
            groups[key(case)].append(r)
        print(f"\n{title}:")
        for name, results in sorted(groups.items()):
            k = len(results)
            print(
                f"  {name:34} {k:3}  top-1 {sum(r['top1'] for r in results) / k:6.1%}"
                f"  top-3 {sum(r['top3'] for r in results) / k:6.1%}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
