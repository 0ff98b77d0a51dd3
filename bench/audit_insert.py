"""Audit insert rate: what `synchronous=FULL` costs, side by side in one run.

Every event flannel-bot records is one transaction on a WAL-mode SQLite file with
`synchronous=FULL` (each commit waits for fsync), so a crash never loses a committed event. This
appends N events (default 2,000) the way the engine does — `Store.transaction()` with one
`record` (hash chain, redaction) — and, beside it, the same with `synchronous=NORMAL`
(WAL's default: a power cut may lose the last commits) and with FULL but 100 events per
transaction. Prints events/s and the ratios. Run: `.venv/bin/python bench/audit_insert.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flannel_bot.ports.clock import SystemClock
from flannel_bot.store import SqliteStore

DATA = {
    "render": "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-x7v5t  (on w2)",
    "stdout": "pod kube-flannel/kube-flannel-ds-x7v5t deleted\n" * 4,
    "exit_code": 0,
}


def run(path: Path, n: int, per_tx: int, synchronous: str) -> float:
    store = SqliteStore(path, SystemClock())
    store.db.execute(f"PRAGMA synchronous={synchronous}")
    started = time.perf_counter()
    for start in range(0, n, per_tx):
        with store.transaction() as tx:
            for _ in range(min(per_tx, n - start)):
                tx.record(
                    "action_finished", actor=None, run_id=1, source={"adapter": "bench"}, data=DATA
                )
    elapsed = time.perf_counter() - started
    assert store.verify().ok and store.last_event_id() == n
    store.close()
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[Path], float]]] = [
        ("FULL, 1 event per commit (flannel-bot)", lambda p: run(p, args.events, 1, "FULL")),
        ("NORMAL, 1 event per commit", lambda p: run(p, args.events, 1, "NORMAL")),
        ("FULL, 100 events per commit", lambda p: run(p, args.events, 100, "FULL")),
    ]
    with tempfile.TemporaryDirectory(prefix="flannel-bench-audit-") as tmp:
        rates = [(name, fn(Path(tmp) / f"{i}.db")) for i, (name, fn) in enumerate(cases)]
    base = rates[0][1]
    print(f"{args.events} audit events appended through Store.transaction() (hash chain, WAL)")
    for name, rate in rates:
        print(f"  {name:<42} {rate:>9,.0f} events/s   {rate / base:5.1f}x")
    print(
        "FULL waits for fsync at every commit: the price of never losing a committed event; the "
        "engine commits once per step boundary, so a run writes tens of events, not thousands."
    )


if __name__ == "__main__":
    main()
