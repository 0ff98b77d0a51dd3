"""Verifying the audit chain: the hand-built hash input vs `json.dumps`, side by side in one run.

Every audit report and every chain-head post verifies the whole chain, and re-hashing each event
was most of that (70% of a report over a million events). `event_hash` now builds the canonical
JSON by hand for rows as SQLite returns them; `canonical_json` (json.dumps, sorted and compact) is
still the definition, and a property test holds the two byte-identical. This builds a real log of
N events (default 200,000, appended in batches through `Tx.record`, so hashing, redaction
and encoding are the store's own), then times `Store.verify()` both ways, best of `--repeat`, and
prints events/s and the ratio. Both must say OK.

With `--db PATH` it opens an existing log read-only instead and times `Store.verify()` in one
process beside the two halves walked at once (a forked worker takes the second), best of each.

Run: `.venv/bin/python bench/verify_chain.py [--events 200000] [--repeat 3] [--db PATH]`
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from flannel_bot.ports.clock import SystemClock
from flannel_bot.store import SqliteStore, audit, database

DATA = {
    "render": "DELETE /api/v1/namespaces/kube-flannel/pods/kube-flannel-ds-x7v5t  (on w2)",
    "stdout": "pod kube-flannel/kube-flannel-ds-x7v5t deleted\n" * 4,
    "exit_code": 0,
}
SOURCE = {"adapter": "slack", "channel": "C0123", "thread_ts": "1763700000.000100", "user": "bob"}


def build(path: Path, n: int) -> SqliteStore:
    store = SqliteStore(path, SystemClock())
    for start in range(0, n, 10_000):
        with store.transaction() as tx:
            for i in range(start, min(n, start + 10_000)):
                tx.record(
                    "action_finished", actor="bob" if i % 3 else None, run_id=i // 20,
                    source=SOURCE, data=DATA,
                )  # fmt: skip
    return store


def best(store: SqliteStore, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        report = store.verify()
        times.append(time.perf_counter() - started)
        assert report.ok, report.describe()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, help="an existing log, opened read-only (no json.dumps)")
    args = parser.parse_args()
    if args.db:
        halves_from = database.PARALLEL_FROM
        store = SqliteStore(args.db, SystemClock(), read_only=True)
        database.PARALLEL_FROM = 10**12  # one process
        one = best(store, args.repeat)
        database.PARALLEL_FROM = 1
        two = best(store, args.repeat)
        database.PARALLEL_FROM = halves_from
        n = store.verify().events
        print(f"Store.verify() over {n} events ({args.db}), best of {args.repeat}:")
        print(f"  one process             {one:6.2f} s  {n / one:9,.0f} events/s")
        print(f"  two halves at once      {two:6.2f} s  {n / two:9,.0f} events/s")
        print(f"  ratio                   {one / two:6.2f}x")
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = build(Path(tmp) / "audit.db", args.events)
        database.PARALLEL_FROM = 10**12  # the hash input compared in one process
        fast = best(store, args.repeat)
        hand_built = audit._canonical_fast
        audit._canonical_fast = lambda row: None  # every row takes json.dumps
        try:
            reference = best(store, args.repeat)
        finally:
            audit._canonical_fast = hand_built
    n = args.events
    print(f"Store.verify() over {n} events, best of {args.repeat}:")
    print(f"  json.dumps hash input   {reference:6.2f} s  {n / reference:9,.0f} events/s")
    print(f"  hand-built hash input   {fast:6.2f} s  {n / fast:9,.0f} events/s")
    print(f"  ratio                   {reference / fast:6.2f}x")


if __name__ == "__main__":
    main()
