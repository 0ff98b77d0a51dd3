"""Redaction: how many realistic secrets are caught, how many look-alikes are spared, and at what
speed, for `bot.redaction` and, beside it, the six patterns flannel-bot had before.

The corpus is tests/secret_corpus.py: each secret a provider's documented example or a synthetic
value of the right shape, in the context it is met in (kubeconfig, env file, flag, JSON log line,
journal, HTTP header, ...), and look-alikes a flannel incident is made of (node and pod names,
addresses, CIDRs, image digests, plan hashes, Event names, flannel's own log lines). A secret
counts as caught when none of its fragments survives; a look-alike is a false positive when
redaction changes it at all; so is any file of tests/incidents (what ~150 real flannel issue
threads showed: pods, events, flanneld and kubelet logs, probe outputs) it changes. Speed is over
the probe outputs of a healthy lab node (tests/fixtures/lab-probes-healthy.json), which hold no
secret: the common case.

Run: `.venv/bin/python bench/redaction_corpus.py [--repeat 50]`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INCIDENTS = REPO / "tests" / "incidents"
if str(REPO) not in sys.path:  # `tests` is not installed; the corpus lives there
    sys.path.insert(0, str(REPO))

from flannel_bot.redaction import redact  # noqa: E402
from tests.secret_corpus import LOOK_ALIKES, SECRETS  # noqa: E402

# bot/store/redact.py as it was before bot.redaction
BEFORE: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S
        ),
        "[REDACTED PRIVATE KEY]",
    ),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}"), "[REDACTED SLACK TOKEN]"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"), "[REDACTED SLACK TOKEN]"),
    (
        re.compile(r"(?i)\b(authorization:\s*)?bearer\s+[A-Za-z0-9._~+/=-]{8,}"),
        r"\1Bearer [REDACTED]",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"), "[REDACTED JWT]"),
    (
        re.compile(
            r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*|\s+)(\"[^\"]*\"|'[^']*'|\S+)"
        ),
        r"\1\2[REDACTED]",
    ),
]


def before(text: str) -> str:
    for pattern, replacement in BEFORE:
        text = pattern.sub(replacement, text)
    return text


def measure(name: str, fn: Callable[[str], str], texts: list[str], repeat: int) -> dict[str, Any]:
    caught = [s for s in SECRETS if not any(f in fn(s.text) for f in s.leaks)]
    spared = [a for a in LOOK_ALIKES if fn(a.text) == a.text]
    started = time.perf_counter()
    for _ in range(repeat):
        for text in texts:
            fn(text)
    seconds = (time.perf_counter() - started) / repeat
    size = sum(len(t) for t in texts)
    missed = Counter(s.kind for s in SECRETS if s not in caught)
    incidents = [p.read_text() for p in sorted(INCIDENTS.rglob("*")) if p.is_file()]
    return {
        "incident_files": len(incidents),
        "incident_lines": sum(t.count("\n") for t in incidents),
        "incidents_changed": sum(fn(t) != t for t in incidents),
        "name": name,
        "caught": len(caught),
        "false_positives": len(LOOK_ALIKES) - len(spared),
        "mb_per_s": size / seconds / 1e6,
        "missed": dict(missed),
        "changed": [a.text[:60] for a in LOOK_ALIKES if a not in spared],
    }


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    fixture = json.loads((REPO / "tests" / "fixtures" / "lab-probes-healthy.json").read_text())
    texts = strings(fixture)
    kinds = len({s.kind for s in SECRETS})
    print(
        f"corpus: {len(SECRETS)} secrets of {kinds} kinds, {len(LOOK_ALIKES)} look-alikes; "
        f"speed over {len(texts)} probe outputs ({sum(map(len, texts)) / 1e3:.0f} kB), "
        f"{args.repeat} passes"
    )
    rows = [
        measure("before (6 patterns)", before, texts, args.repeat),
        measure("bot.redaction", redact, texts, args.repeat),
    ]
    files = rows[0]["incident_files"]
    print(
        f"{'':22} {'secrets caught':>16} {'false positives':>16} "
        f"{'incident files changed':>24} {'MB/s':>7}"
    )
    for r in rows:
        caught = f"{r['caught']} of {len(SECRETS)}"
        fps = f"{r['false_positives']} of {len(LOOK_ALIKES)}"
        changed = f"{r['incidents_changed']} of {files}"
        print(f"{r['name']:22} {caught:>16} {fps:>16} {changed:>24} {r['mb_per_s']:7.1f}")
    for r in rows:
        if r["missed"]:
            missed = ", ".join(f"{k} {n}" for k, n in sorted(r["missed"].items()))
            print(f"{r['name']} missed: {missed}")
        for text in r["changed"]:
            print(f"{r['name']} changed a look-alike: {text!r}")
    print(
        f"bot.redaction: caught {rows[1]['caught']} of {len(SECRETS)} secrets, "
        f"{rows[1]['false_positives']} false positives of {len(LOOK_ALIKES)}, "
        f"{rows[1]['incidents_changed']} of {files} real incident files "
        f"({rows[1]['incident_lines']} lines) changed; "
        f"{rows[1]['mb_per_s'] / rows[0]['mb_per_s']:.1f}x the speed of before"
    )


if __name__ == "__main__":
    main()
