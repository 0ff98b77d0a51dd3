"""Pruning checkpoints have to be vouched for by the chain itself, and the head posted to Slack
says where the kept log starts, so deleting the oldest events cannot pass for a prune."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from flannel_bot.errors import AuditChainBroken
from flannel_bot.ports.store import ChainReport
from flannel_bot.service.handler import Service
from flannel_bot.slack.beacon import head_message
from flannel_bot.store import SqliteStore
from flannel_bot.store.audit import event_hash
from tests.conftest import who
from tests.fakes import FakeClock

RUN = "run flannel.restart-pods@1.1.0 nodes=w2"


def approved_run_then_more(service: Service, clock: FakeClock) -> int:
    """An approved destructive run, then a few more commands; the `approved` event's id."""
    assert service.handle(RUN, who("alice")).data["status"] == "awaiting_approval"
    clock.advance(60)
    assert service.handle("approve 1", who("bob")).data["status"] == "succeeded"
    for _ in range(3):
        clock.advance(60)
        service.handle("status", who("carol"))
    return next(e.id for e in service.store.events(run_id=1) if e.kind == "approved")


def forge_prune(path: Path, through: int) -> None:
    """What someone with the file can do without touching the chain: delete the oldest events
    the way a prune does, and leave a checkpoint with the last deleted event's hash."""
    conn = sqlite3.connect(path)
    last_hash = conn.execute("SELECT hash, ts FROM events WHERE id = ?", [through]).fetchone()
    conn.execute("INSERT INTO prune_guard (id) VALUES (1)")
    conn.execute("DELETE FROM events WHERE id <= ?", [through])
    conn.execute("DELETE FROM prune_guard")
    conn.execute(
        "INSERT INTO checkpoints (pruned_through, last_hash, events, before, pruned_at) "
        "VALUES (?, ?, ?, ?, ?)",
        [through, last_hash[0], through, last_hash[1], last_hash[1]],
    )
    conn.commit()
    conn.close()


def test_a_forged_checkpoint_does_not_hide_deleted_history(
    service: Service, store: SqliteStore, clock: FakeClock
) -> None:
    approval = approved_run_then_more(service, clock)
    assert store.verify().ok
    forge_prune(store.path, approval)
    chain = store.verify()
    assert not chain.ok, chain.describe()
    assert chain.event_id == approval + 1
    assert "checkpoint" in chain.problem and "audit_pruned" in chain.problem
    report = service.handle("audit report run=1 format=md", who("carol"))
    assert report.data["report"]["chain"]["ok"] is False
    assert "BROKEN" in head_message(store.verify(), "after run 1")


def test_a_checkpoint_vouched_for_by_an_older_prune_is_refused(
    store: SqliteStore, clock: FakeClock
) -> None:
    """The vouching event has to name this checkpoint: an earlier, real prune does not cover
    a later deletion."""
    for i in range(10):
        store.record("command", actor="alice", data={"text": f"status {i}"})
        clock.advance(3600)
    store.prune(clock.now() - timedelta(hours=8))  # events 1-2, vouched by event 11
    assert store.verify().ok
    forge_prune(store.path, 6)
    chain = store.verify()
    assert not chain.ok and chain.event_id == 7 and "audit_pruned" in chain.problem


def test_a_real_prune_is_vouched_for_and_the_report_says_where_the_log_starts(
    store: SqliteStore, clock: FakeClock
) -> None:
    for i in range(6):
        store.record("command", actor="alice", data={"text": f"status {i}"})
        clock.advance(3600)
    before = store.verify()
    assert (before.first_id, before.pruned_through, before.vouched_by) == (1, 0, None)
    assert before.first_hash == store.events()[0].hash
    store.prune(clock.now() - timedelta(hours=3, minutes=30))  # events 1-3
    chain = store.verify()
    assert chain.ok, chain.describe()
    assert (chain.head_id, chain.first_id, chain.pruned_through, chain.vouched_by) == (7, 4, 3, 7)
    assert chain.first_hash == store.events()[0].hash and chain.events == 4
    assert "events 1-3 pruned" in chain.describe()


def test_the_posted_head_shows_a_vanished_prefix(store: SqliteStore, clock: FakeClock) -> None:
    """Even a forger who appends a vouching `audit_pruned` event (hashes and all) changes what
    the posted head says about where the log starts, so the previous post gives them away."""
    for i in range(6):
        store.record("command", actor="alice", data={"text": f"status {i}"})
        clock.advance(3600)
    posted = head_message(store.verify(), "on schedule")
    first = store.events()[0]
    assert f"first kept event 1 `{first.hash}`" in posted and "6 events" in posted
    forge_prune(store.path, 3)
    last, checkpoint = store.events()[-1], store.checkpoint()
    assert checkpoint is not None
    said = {"events": 3, "last_hash": checkpoint["last_hash"], "pruned_through": 3}
    row = {
        "id": last.id + 1,
        "ts": last.ts,
        "kind": "audit_pruned",
        "run_id": None,
        "actor": None,
        "source": "{}",
        "data": json.dumps(said, sort_keys=True, separators=(",", ":")),
    }
    forged = event_hash(last.hash, row)
    conn = sqlite3.connect(store.path)
    conn.execute(
        "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)", [*row.values(), last.hash, forged]
    )
    conn.execute("UPDATE chain_head SET last_event_id = ?, last_hash = ?", [last.id + 1, forged])
    conn.commit()
    conn.close()
    chain = store.verify()
    assert chain.ok  # the database alone cannot tell: that is what the posted heads are for
    now = head_message(chain, "on schedule")
    assert f"`{first.hash}`" not in now
    assert "first kept event 4" in now and "events 1-3 pruned, vouched for by event 7" in now


def test_head_message_of_a_broken_chain_names_the_problem() -> None:
    broken = ChainReport(False, 3, "ab" * 32, 2, "altered: its content does not match")
    text = head_message(broken, "after run 4")
    assert text.startswith("Audit chain head after run 4: `" + "ab" * 32 + "`")
    assert "BROKEN at event 2: altered" in text


def test_a_broken_chain_is_never_pruned(store: SqliteStore, clock: FakeClock) -> None:
    """A prune over a forged checkpoint would vouch for it with a real audit_pruned event and
    launder the deletion; pruning refuses a chain that does not verify, and deletes nothing."""
    for i in range(10):
        store.record("command", actor="alice", data={"text": f"status {i}"})
        clock.advance(3600)
    forge_prune(store.path, 3)
    with pytest.raises(AuditChainBroken) as exc:
        store.prune(clock.now() - timedelta(hours=4))
    assert "does not verify" in str(exc.value) and "audit verify" in str(exc.value)
    assert store.events()[0].id == 4 and not store.verify().ok
