"""Verifying from a chained `audit_verified` marker: what a report walks, and what it refuses."""

from __future__ import annotations

import json
import sqlite3

from flannel_bot.ports.store import EventKind
from flannel_bot.runs.engine import Engine
from flannel_bot.slack.beacon import Beacon
from flannel_bot.store import SqliteStore
from flannel_bot.store.audit import event_hash
from tests.conftest import who
from tests.unit.test_audit import busy_log, tamper


def marked(engine: Engine, store: SqliteStore) -> int:
    """A busy log, a marker of its full verification, then a second run after it; the id of
    the last event the marker vouches for."""
    busy_log(engine)
    report = store.verify()
    assert store.record_verified(report) is not None
    busy_log(engine)
    return report.head_id


def test_a_report_walks_only_the_events_after_the_marker(
    engine: Engine, store: SqliteStore
) -> None:
    upto = marked(engine, store)
    head = store.last_event_id()
    recent = store.verify_recent()
    assert recent.ok, recent.describe()
    assert (recent.verified_from, recent.events, recent.head_id) == (upto, head - upto, head)
    assert recent.head_hash == store.verify().head_hash == store.head_hash()
    assert recent.marker == upto + 1 and recent.verified_at
    assert f"OK from event {upto} (verified at {recent.verified_at}" in recent.describe()


def test_verify_records_nothing_and_a_failed_check_is_never_marked(
    engine: Engine, store: SqliteStore
) -> None:
    busy_log(engine)
    before = store.last_event_id()
    store.verify()
    store.verify_recent()
    assert store.last_event_id() == before
    tamper(store.path, "UPDATE events SET actor = 'mallory' WHERE id = 2")
    assert store.record_verified(store.verify()) is None
    assert store.last_event_id() == before


def test_no_marker_verifies_everything(engine: Engine, store: SqliteStore) -> None:
    n = busy_log(engine)
    recent = store.verify_recent()
    assert recent.ok and recent.marker is None and recent.events == n


def test_tampering_after_the_marker_is_named(engine: Engine, store: SqliteStore) -> None:
    upto = marked(engine, store)
    tamper(store.path, "UPDATE events SET actor = 'mallory' WHERE id = ?", (upto + 3,))
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == upto + 3
    assert "altered" in recent.problem


def test_the_marker_itself_altered_is_named(engine: Engine, store: SqliteStore) -> None:
    upto = marked(engine, store)
    claim = {"upto": upto, "hash": "f" * 64, "first_id": 1, "first_hash": "x"}
    tamper(store.path, "UPDATE events SET data = ? WHERE id = ?", (json.dumps(claim), upto + 1))
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == upto + 1


def test_the_vouched_for_event_altered_is_named(engine: Engine, store: SqliteStore) -> None:
    upto = marked(engine, store)
    tamper(store.path, "UPDATE events SET actor = 'mallory' WHERE id = ?", (upto,))
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == upto and recent.marker is None


def test_an_event_before_the_marker_rewritten_into_one_is_refused(
    engine: Engine, store: SqliteStore
) -> None:
    """A marker forged in the middle of the log (an edited event claiming everything before it
    verified) does not hash, so the walk from it fails and the whole chain is walked."""
    busy_log(engine)
    store.record_verified(store.verify())
    busy_log(engine)
    forged_at = store.last_event_id() - 2
    prev = store.db.execute("SELECT hash FROM events WHERE id = ?", [forged_at - 1]).fetchone()[0]
    first = store.db.execute("SELECT hash FROM events WHERE id = 1").fetchone()[0]
    claim = {"upto": forged_at - 1, "hash": prev, "first_id": 1, "first_hash": first}
    tamper(store.path, "UPDATE events SET actor = 'mallory' WHERE id = 3")
    tamper(
        store.path,
        "UPDATE events SET kind = 'audit_verified', data = ? WHERE id = ?",
        (json.dumps(claim), forged_at),
    )
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == 3, recent.describe()


def test_a_marker_naming_a_hash_the_event_does_not_have_is_refused(
    engine: Engine, store: SqliteStore
) -> None:
    """A chained marker whose claim is not the chain's (the event it names has another hash)
    vouches for nothing: the whole chain is walked, and tampering before it is named."""
    busy_log(engine)
    upto = store.last_event_id()
    first = store.db.execute("SELECT hash FROM events WHERE id = 1").fetchone()[0]
    store.record(
        EventKind.AUDIT_VERIFIED,
        actor=None,
        data={"upto": upto, "hash": "0" * 64, "first_id": 1, "first_hash": first},
    )
    recent = store.verify_recent()
    assert recent.ok and recent.marker is None  # walked whole
    tamper(store.path, "UPDATE events SET actor = 'mallory' WHERE id = 2")
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == 2


def test_a_marker_appended_past_the_head_is_named(engine: Engine, store: SqliteStore) -> None:
    """A marker chained onto the end by hand, without the chain_head row moving with it."""
    busy_log(engine)
    head = store.verify()
    row = {
        "id": head.head_id + 1,
        "ts": "2026-11-21T09:00:00.000000Z",
        "kind": "audit_verified",
        "run_id": None,
        "actor": None,
        "source": "{}",
        "data": json.dumps(
            {
                "upto": head.head_id,
                "hash": head.head_hash,
                "first_id": 1,
                "first_hash": head.first_hash,
            }
        ),
    }
    conn = sqlite3.connect(store.path)
    conn.execute(
        "INSERT INTO events (id, ts, kind, run_id, actor, source, data, prev_hash, hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [*row.values(), head.head_hash, event_hash(head.head_hash, row)],
    )
    conn.commit()
    conn.close()
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == head.head_id + 1
    assert "inserted" in recent.problem


def test_the_start_of_the_log_deleted_after_the_marker_is_named(
    engine: Engine, store: SqliteStore
) -> None:
    marked(engine, store)
    tamper(store.path, "DELETE FROM events WHERE id <= 2")
    recent = store.verify_recent()
    assert not recent.ok and recent.event_id == 1


def test_names_and_values_the_fast_walk_does_not_write_take_the_exact_path(
    engine: Engine, store: SqliteStore
) -> None:
    """A non-ASCII name and a control character are hashed as `canonical_json` writes them, and
    a change to them is still named."""
    store.record(EventKind.COMMAND, actor="josé", data={"text": "diagnose\x01 ünïcode"})
    engine.start("flannel.restart-pods@1.1.0", {"nodes": "w2"}, who("alice"))
    assert store.verify().ok, store.verify().describe()
    tamper(store.path, "UPDATE events SET actor = 'josè' WHERE id = 1")
    report = store.verify()
    assert not report.ok and report.event_id == 1 and "altered" in report.problem


class PostedHeads:
    """What Beacon needs of the Slack client: the posts, kept."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def chat_postMessage(self, channel: str, text: str) -> None:
        self.texts.append(text)


def test_each_posted_head_leaves_the_marker_reports_start_from(
    engine: Engine, store: SqliteStore
) -> None:
    busy_log(engine)
    head = store.verify()
    client = PostedHeads()
    Beacon(store, client, "C0AUDIT").post("on schedule")  # type: ignore[arg-type]
    assert head.head_hash in client.texts[0]
    recent = store.verify_recent()
    assert recent.ok and recent.verified_from == head.head_id and recent.events == 1
    assert Beacon(store, client, "").post("no channel") is None
    assert store.verify_recent().marker == recent.marker  # nothing posted, nothing recorded
