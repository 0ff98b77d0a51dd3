"""A damaged, locked or read-only audit log gets a named error saying what to do, never a raw
sqlite3 traceback; and the Slack delivery dedupe table does not grow forever."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path

import pytest

from flannel_bot.errors import AuditChainBroken, AuditLogBusy, AuditLogCorrupt, AuditLogUnwritable
from flannel_bot.store import SqliteStore
from flannel_bot.store.database import DELIVERY_KEEP
from tests.fakes import FakeClock


def some_events(store: SqliteStore, n: int = 3) -> None:
    for i in range(n):
        store.record("command", actor="alice", data={"text": f"status {i}"})


def test_a_file_that_is_not_a_database_is_named(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "audit.db"
    path.write_bytes(b"this is not SQLite\n" * 400)
    with pytest.raises(AuditLogCorrupt) as exc:
        SqliteStore(path, clock)
    assert str(path) in str(exc.value) and "backup" in str(exc.value)
    with pytest.raises(AuditLogCorrupt):
        SqliteStore(path, clock, read_only=True).verify()


def test_a_log_damaged_inside_is_named(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "audit.db"
    store = SqliteStore(path, clock)
    some_events(store, 200)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    for page in range(2, len(data) // 4096):  # every page's header, past the schema
        data[page * 4096 : page * 4096 + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(AuditLogCorrupt) as exc:
        SqliteStore(path, clock).verify()
    assert "malformed" in str(exc.value) and str(path) in str(exc.value)


def test_a_lock_held_too_long_is_named(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "audit.db"
    store = SqliteStore(path, clock, busy_timeout=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(AuditLogBusy) as exc:
            store.record("command", actor="alice", data={"text": "status"})
        message = str(exc.value)
        assert str(path) in message and "locked" in message and "0.2 s" in message
        assert "\n" not in message
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.record("command", actor="alice", data={"text": "status"})  # free again: it works
    assert store.verify().ok


def test_a_lock_held_while_opening_is_named(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "audit.db"
    SqliteStore(path, clock).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(AuditLogBusy):
            SqliteStore(path, clock, busy_timeout=0.2)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_missing_chain_head_is_named_and_nothing_is_recorded(
    store: SqliteStore, clock: FakeClock
) -> None:
    some_events(store)
    conn = sqlite3.connect(store.path)
    conn.execute("DELETE FROM chain_head")
    conn.commit()
    conn.close()
    with pytest.raises(AuditChainBroken) as exc:
        store.record("command", actor="alice", data={"text": "status"})
    assert "chain_head" in str(exc.value) and "audit verify" in str(exc.value)
    assert len(store.events()) == 3
    chain = store.verify()
    assert not chain.ok and "chain_head row is missing" in chain.problem
    assert chain.describe().startswith("audit chain BROKEN")


def test_a_chain_head_behind_the_log_is_named(store: SqliteStore) -> None:
    some_events(store)
    conn = sqlite3.connect(store.path)
    conn.execute("UPDATE chain_head SET last_event_id = 1")
    conn.commit()
    conn.close()
    with pytest.raises(AuditChainBroken, match="chain_head"):
        store.record("command", actor="alice", data={"text": "status"})


def test_a_read_only_store_verifies_and_writes_nothing(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "audit.db"
    store = SqliteStore(path, clock)
    some_events(store)
    store.close()
    path.chmod(0o444)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    listing = sorted(p.name for p in tmp_path.iterdir())
    copy = SqliteStore(path, clock, read_only=True)
    chain = copy.verify()
    assert chain.ok and chain.events == 3
    assert [e.id for e in copy.events()] == [1, 2, 3]
    with pytest.raises(AuditLogUnwritable, match="read-only"):
        copy.record("command", actor="alice", data={"text": "status"})
    copy.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_a_read_only_store_reads_a_live_log(tmp_path: Path, clock: FakeClock) -> None:
    """A writable, live file is opened `mode=ro` (not immutable), so it sees new commits."""
    path = tmp_path / "audit.db"
    live = SqliteStore(path, clock)
    some_events(live)
    reader = SqliteStore(path, clock, read_only=True)
    assert reader.verify().events == 3
    some_events(live, 2)
    assert reader.verify().events == 5 and reader.verify().ok


def test_verify_reads_one_snapshot_while_events_are_written(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The head, checkpoint, events and runs are read in one transaction: an event committed
    in between is not reported as inserted after the head."""
    path = tmp_path / "audit.db"
    writer = SqliteStore(path, clock)
    some_events(writer, 500)
    reader = SqliteStore(path, clock)
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            writer.record("command", actor="alice", data={"text": "status"})

    thread = threading.Thread(target=write)
    thread.start()
    try:
        results = [reader.verify() for _ in range(20)]
    finally:
        stop.set()
        thread.join()
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok][:1]


def test_old_deliveries_are_forgotten_on_write(store: SqliteStore, clock: FakeClock) -> None:
    with store.transaction() as tx:
        assert tx.first_delivery("command:T1", "slash_command")
    clock.advance(DELIVERY_KEEP.total_seconds() / 2)
    with store.transaction() as tx:
        assert not tx.first_delivery("command:T1", "slash_command")  # a retry: done once
        assert tx.first_delivery("command:T2", "slash_command")
    clock.advance(DELIVERY_KEEP.total_seconds() / 2 + 1)
    with store.transaction() as tx:
        assert tx.first_delivery("command:T3", "slash_command")
    keys = [r[0] for r in store.db.execute("SELECT key FROM deliveries ORDER BY key")]
    assert keys == ["command:T2", "command:T3"]
    assert DELIVERY_KEEP.total_seconds() >= 3600  # longer than Slack retries for (5 minutes)


def test_old_deliveries_are_read_by_index(store: SqliteStore) -> None:
    plan = store.db.execute(
        "EXPLAIN QUERY PLAN DELETE FROM deliveries WHERE received_at < ?", ["x"]
    ).fetchall()
    assert any("deliveries_received" in str(row) for row in plan), plan
