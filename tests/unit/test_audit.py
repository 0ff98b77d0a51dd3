from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.ports.store import EventFilter
from flannel_bot.runs.engine import Engine
from flannel_bot.store import SqliteStore, audit
from flannel_bot.store.audit import event_hash
from flannel_bot.store.migrations import MIGRATIONS
from tests.conftest import who
from tests.fakes import FakeClock


def busy_log(engine: Engine) -> int:
    """A realistic log: a run requested, self-approval refused, approved, applied, verified."""
    run = engine.start("flannel.restart-pods@1.1.0", {"nodes": "w2"}, who("alice"))
    engine.approve(run.id, who("bob"))
    return len(engine.store.events())


def tamper(path: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    """What someone with the file would do: drop the append-only triggers, then edit."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS events_no_update")
    conn.execute("DROP TRIGGER IF EXISTS events_no_delete")
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def test_untouched_chain_verifies(engine: Engine, store: SqliteStore) -> None:
    n = busy_log(engine)
    report = store.verify()
    assert report.ok and report.events == n
    assert report.head_hash == store.events()[-1].hash


def test_events_are_append_only_in_sqlite(engine: Engine, store: SqliteStore) -> None:
    busy_log(engine)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("UPDATE events SET actor = 'mallory' WHERE id = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM events WHERE id = 1")


def test_every_edited_row_is_named(engine: Engine, store: SqliteStore) -> None:
    n = busy_log(engine)
    path = store.path
    for event_id in range(1, n + 1):
        original = store.db.execute("SELECT actor FROM events WHERE id = ?", [event_id]).fetchone()
        tamper(path, "UPDATE events SET actor = 'mallory' WHERE id = ?", (event_id,))
        report = store.verify()
        assert not report.ok and report.event_id == event_id, report
        assert "altered" in report.problem
        tamper(path, "UPDATE events SET actor = ? WHERE id = ?", (original[0], event_id))
    assert store.verify().ok


def test_every_deleted_row_is_named(
    tmp_path: Path, make_engine: object, engine: Engine, store: SqliteStore
) -> None:
    n = busy_log(engine)
    for event_id in range(1, n + 1):
        copy = tmp_path / f"copy{event_id}.db"
        src = sqlite3.connect(store.path)
        dst = sqlite3.connect(copy)
        src.backup(dst)
        src.close()
        dst.close()
        tamper(copy, "DELETE FROM events WHERE id = ?", (event_id,))
        report = SqliteStore(copy, FakeClock()).verify()
        assert not report.ok and report.event_id == event_id, (event_id, report)
        assert "deleted" in report.problem


def test_inserted_row_is_named_even_with_a_valid_hash(engine: Engine, store: SqliteStore) -> None:
    busy_log(engine)
    last = store.events()[-1]
    row = {
        "id": last.id + 1,
        "ts": last.ts,
        "kind": "approved",
        "run_id": 1,
        "actor": "mallory",
        "source": "{}",
        "data": "{}",
    }
    digest = event_hash(last.hash, row)
    tamper(
        store.path,
        "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)",
        (*row.values(), last.hash, digest),
    )
    report = store.verify()
    assert not report.ok and report.event_id == last.id + 1 and "inserted" in report.problem


def test_inserted_row_in_the_middle_is_named(engine: Engine, store: SqliteStore) -> None:
    busy_log(engine)
    # shift the tail up by one and slip a forged event in at id 3
    tamper(store.path, "UPDATE events SET id = id + 1000 WHERE id >= 3")
    tamper(store.path, "UPDATE events SET id = id - 999 WHERE id >= 1003")
    tamper(
        store.path,
        "INSERT INTO events VALUES (3, 'x', 'approved', 1, 'mallory', '{}', '{}', "
        "'forged', 'forged')",
    )
    report = store.verify()
    assert not report.ok and report.event_id == 3 and "inserted" in report.problem


def test_outputs_are_redacted_and_capped(store: SqliteStore) -> None:
    secret_output = (
        "token: xoxb-1234567890-abcdefghij\nAuthorization: Bearer abc.def.ghijklmnop\n"
        "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
        "mysql --password=hunter2\n" + "x" * 40000
    )
    with store.transaction() as tx:
        tx.record(
            "action_finished",
            actor=None,
            data={"stdout": secret_output, "argv": ["curl", "-H", "token=s3cr3t"]},
        )
    raw = store.db.execute("SELECT data FROM events").fetchone()[0]
    for leaked in ("xoxb-1234567890", "ghijklmnop", "AAAA", "hunter2", "s3cr3t"):
        assert leaked not in raw
    assert "more characters not kept" in json.loads(raw)["stdout"]
    assert store.verify().ok


def test_durability_settings_and_migrations(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "a.db", clock)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    with store.transaction() as tx:
        tx.record("command", actor="alice", data={"text": "help"})
    again = SqliteStore(tmp_path / "a.db", clock)  # re-opening does not re-apply migrations
    versions = [r[0] for r in again.db.execute("SELECT version FROM schema_migrations")]
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    assert again.verify().ok and again.verify().events == 1


def test_a_delivery_is_first_exactly_once_across_threads(tmp_path: Path, clock: FakeClock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = SqliteStore(tmp_path / "d.db", clock)

    def arrive(_: int) -> bool:
        with store.transaction() as tx:
            return tx.first_delivery("action:UBOB:approve:1700000000.1", "approve")

    with ThreadPoolExecutor(20) as pool:
        firsts = list(pool.map(arrive, range(40)))
    assert firsts.count(True) == 1


def _events(store: SqliteStore, clock: FakeClock, count: int, every: float = 3600) -> None:
    for i in range(count):
        with store.transaction() as tx:
            tx.record("command", actor="alice", data={"text": f"diagnose w{i}"})
        clock.advance(every)


def test_pruning_keeps_the_chain_verifiable(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "p.db", clock)
    _events(store, clock, 10)  # one an hour
    cutoff = clock.now() - timedelta(hours=5, minutes=30)  # the first five are older
    result = store.prune(cutoff)
    assert result["events"] == 5 and result["pruned_through"] == 5
    kept = store.events()
    assert [e.id for e in kept] == [6, 7, 8, 9, 10, 11]
    assert kept[-1].kind == "audit_pruned" and kept[-1].data["last_hash"] == result["last_hash"]
    report = store.verify()
    assert report.ok and report.events == 6, report.describe()
    # a second prune continues from the first checkpoint
    _events(store, clock, 2)
    assert store.prune(clock.now() - timedelta(hours=1, minutes=30))["events"] == 7
    assert store.verify().ok


def test_after_pruning_tampering_is_still_named(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "p.db", clock)
    _events(store, clock, 6)
    store.prune(clock.now() - timedelta(hours=3, minutes=30))
    store.close()
    tamper(tmp_path / "p.db", "DELETE FROM events WHERE id = 4")  # the oldest kept event
    report = SqliteStore(tmp_path / "p.db", clock).verify()
    assert not report.ok and report.event_id == 4 and "deleted" in report.problem


def test_events_cannot_be_deleted_outside_pruning(tmp_path: Path, clock: FakeClock) -> None:
    store = SqliteStore(tmp_path / "p.db", clock)
    _events(store, clock, 3)
    store.prune(clock.now() - timedelta(hours=2, minutes=30))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM events WHERE id = 2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        store.db.execute("DELETE FROM checkpoints")


def test_events_of_a_run_still_waiting_are_never_pruned(
    engine: Engine, store: SqliteStore, clock: FakeClock
) -> None:
    run = engine.start("flannel.restart-pods@1.1.0", {"nodes": "w2"}, who("alice"))
    assert run.status == "awaiting_approval"
    first_of_run = min(e.id for e in store.events(run_id=run.id))
    clock.advance(86400 * 400)
    result = store.prune(clock.now())
    assert result["events"] is not None
    assert all(e.id >= first_of_run for e in store.events()) and store.verify().ok
    assert store.events(run_id=run.id)[0].id == first_of_run


_text = st.text(max_size=60)


@given(
    st.fixed_dictionaries(
        {
            "id": st.integers(min_value=0, max_value=2**63 - 1),
            "ts": _text,
            "kind": _text,
            "run_id": st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1),
            "actor": st.none() | _text,
            "source": _text,
            "data": _text,
        }
    )
)
def test_the_fast_canonical_form_is_byte_for_byte_json_dumps(row: dict[str, object]) -> None:
    """The hash input is defined by json.dumps; the hand-built form must never differ, or an
    intact chain would fail to verify."""
    assert audit._canonical_fast(row) == audit.canonical_json(row)


def test_unexpected_shapes_take_the_reference_path() -> None:
    row = {"id": True, "ts": "t", "kind": "k", "run_id": "5", "actor": 3, "source": "", "data": ""}
    assert audit._canonical_fast(row) is None
    expected = hashlib.sha256(f"{'0' * 64}\n{audit.canonical_json(row)}".encode()).hexdigest()
    assert audit.event_hash("0" * 64, row) == expected


@pytest.mark.parametrize(
    ("key", "value", "index"),
    [("channel", "C2", "events_channel"), ("thread", "3.4", "events_thread")],
)
def test_reports_by_channel_or_thread_read_by_index(
    store: SqliteStore, key: str, value: str, index: str
) -> None:
    """The query `events_matching` runs uses the expression index rather than scanning the log."""
    with store.transaction() as tx:
        tx.record("command", actor="a", source={"channel": "C1", "thread_ts": "1.2"})
        tx.record("command", actor="a", source={"channel": "C2", "thread_ts": "3.4"})
    ran: list[str] = []
    store.db.conn.set_trace_callback(ran.append)
    try:
        found = store.events_matching(EventFilter(**{key: value}))
    finally:
        store.db.conn.set_trace_callback(None)
    assert [e.id for e in found] == [2]
    query = next(q for q in ran if q.lstrip().upper().startswith("SELECT"))
    plan = store.db.execute(f"EXPLAIN QUERY PLAN {query}").fetchall()
    assert any(f"USING INDEX {index}" in str(row) for row in plan), (query, plan)


def test_an_event_altered_and_re_hashed_is_the_one_named(
    engine: Engine, store: SqliteStore
) -> None:
    """Rewriting an event's hash to match its new content moves the break to the link after
    it; the verifier still names the event that was changed, not its neighbour."""
    n = busy_log(engine)
    for event_id in range(1, n + 1):
        row = next(store.db.query("SELECT * FROM events WHERE id = ?", [event_id]))
        forged = {**row, "actor": "mallory"}
        tamper(
            store.path,
            "UPDATE events SET actor = 'mallory', hash = ? WHERE id = ?",
            (event_hash(row["prev_hash"], forged), event_id),
        )
        report = store.verify()
        assert not report.ok and report.event_id == event_id, (event_id, report)
        assert "altered and re-hashed" in report.problem
        tamper(
            store.path,
            "UPDATE events SET actor = ?, hash = ? WHERE id = ?",
            (row["actor"], row["hash"], event_id),
        )
    assert store.verify().ok


def test_events_matching_iterated_in_batches_equal_the_list(store: SqliteStore) -> None:
    """The batched reader an export streams from gives the same events, in the same order, as
    the list a report builds from, across batch boundaries and with a filter."""
    with store.transaction() as tx:
        for i in range(23):
            tx.record("command", actor=f"u{i % 3}", source={"channel": f"C{i % 2}"})
    for where in (EventFilter(), EventFilter(channel="C1")):
        listed = store.events_matching(where)
        for batch in (1, 4, 1000):
            assert list(store.iter_events_matching(where, batch=batch)) == listed
    stopped = store.iter_events_matching(EventFilter(), batch=4)
    assert next(stopped) == store.events_matching(EventFilter())[0]
    stopped.close()  # left early: the cursor is closed and the store still writes
    with store.transaction() as tx:
        tx.record("command", actor="late")
    assert store.events_matching(EventFilter())[-1].actor == "late"
