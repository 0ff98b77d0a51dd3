"""`verify` walks a long chain in two halves at once; a problem in either half, or at the seam
between them, is named exactly as the one-process walk names it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from flannel_bot.ports.clock import SystemClock
from flannel_bot.store import SqliteStore, database

EVENTS = 40  # the middle is event 20


def build(path: Path) -> SqliteStore:
    store = SqliteStore(path, SystemClock())
    with store.transaction() as tx:
        for i in range(EVENTS):
            tx.record("action_finished", actor="bob", run_id=None, source={"n": i}, data={"i": i})
    return store


@pytest.mark.parametrize("event_id", [3, 20, 21, 39, EVENTS])
def test_a_tampered_event_is_named_as_the_one_process_walk_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, event_id: int
) -> None:
    store = build(tmp_path / "audit.db")
    conn = sqlite3.connect(store.path)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("UPDATE events SET actor = 'mallory' WHERE id = ?", (event_id,))
    conn.commit()
    conn.close()
    monkeypatch.setattr(database, "PARALLEL_FROM", 10**9)
    one = store.verify()
    halves = in_halves(store, monkeypatch)
    assert not one.ok
    assert one.event_id == event_id
    assert halves == one


def test_an_intact_chain_reads_the_same_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = build(tmp_path / "audit.db")
    monkeypatch.setattr(database, "PARALLEL_FROM", 10**9)
    one = store.verify()
    assert in_halves(store, monkeypatch) == one
    assert one.ok


def in_halves(store: database.SqliteStore, monkeypatch: pytest.MonkeyPatch) -> object:
    """store.verify() through the two-halves walk, which it must take (whatever threads the test
    process has left running: the walk forks only a process with one thread)."""
    monkeypatch.setattr(database, "PARALLEL_FROM", 2)
    monkeypatch.setattr(database.threading, "active_count", lambda: 1)
    walked: list[int] = []
    original = database.SqliteStore._walk_halves

    def spy(self: database.SqliteStore, *args: object, **kwargs: object) -> object:
        walked.append(1)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(database.SqliteStore, "_walk_halves", spy)
    report = store.verify()
    assert walked, "the two-halves walk did not run"
    return report
