"""The `runs` and `approvals` tables are outside the hash chain; an edit to them is reported as
tampering, and reports take a run's facts from its chained events."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from flannel_bot.render import Renderer
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from flannel_bot.store import SqliteStore
from tests.conftest import who
from tests.fakes import FakeClock

RENDER = Renderer(REPO_ROOT / "templates")


@pytest.fixture
def approved(service: Service, clock: FakeClock) -> Service:
    assert service.handle("run flannel.restart-pods@1.1.0 nodes=w2", who("alice")).ok
    clock.advance(60)
    assert service.handle("approve 1", who("bob")).data["status"] == "succeeded"
    return service


def edit(path: object, sql: str) -> None:
    conn = sqlite3.connect(str(path))
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        ("UPDATE runs SET requester = 'mallory'", "requester"),
        ("UPDATE runs SET runbook = 'node.check'", "runbook"),
        ("UPDATE runs SET status = 'failed'", "status"),
        ("UPDATE runs SET plan_hash = 'sha256:0000'", "plan_hash"),
        ("UPDATE runs SET cluster = 'prod'", "cluster"),
        ("UPDATE runs SET source = json_set(source, '$.channel', 'CELSE')", "channel"),
        ("DELETE FROM runs", "no row"),
        (
            "INSERT INTO approvals (run_id, approver, plan_hash, decided_at) "
            "SELECT run_id, 'mallory', plan_hash, decided_at FROM approvals",
            "mallory",
        ),
        ("DELETE FROM approvals", "bob"),
    ],
)
def test_an_edited_run_or_approval_row_is_tampering(
    approved: Service, store: SqliteStore, sql: str, said: str
) -> None:
    assert store.verify().ok
    edit(store.path, sql)
    chain = store.verify()
    assert not chain.ok, sql
    started = next(e.id for e in store.events(run_id=1) if e.kind == "run_started")
    assert chain.event_id is not None and chain.event_id >= started
    assert "run 1" in chain.problem and said in chain.problem, chain.problem


def test_the_report_shows_the_chained_requester_and_says_broken(
    approved: Service, store: SqliteStore
) -> None:
    edit(store.path, "UPDATE runs SET requester = 'mallory'")
    md = RENDER.reply(approved.handle("audit report run=1 format=md", who("carol")))
    assert "requested by **alice**" in md and "requested by **mallory**" not in md
    assert "Audit chain:** BROKEN" in md and "says requester mallory, its event" in md


def test_runs_whose_start_was_pruned_are_not_tampering(
    approved: Service, store: SqliteStore, clock: FakeClock
) -> None:
    """A prune may take a finished run's events and leave its row: nothing to check it with."""
    clock.advance(86400)
    approved.handle("status", who("carol"))
    store.prune(clock.now() - timedelta(seconds=1))
    assert store.verify().ok, store.verify().describe()


def test_a_run_whose_start_was_pruned_says_where_its_facts_come_from(
    service: Service, store: SqliteStore, clock: FakeClock
) -> None:
    assert service.handle("run flannel.restart-pods@1.1.0 nodes=w2", who("alice")).ok
    clock.advance(1200)  # inside the 30-minute approval window
    assert service.handle("approve 1", who("bob")).data["status"] == "succeeded"
    result = store.prune(clock.now() - timedelta(minutes=10))  # the request, not the approval
    assert store.verify().ok, store.verify().describe()
    md = RENDER.reply(service.handle("audit report run=1 format=md", who("carol")))
    assert "its first events were pruned: who asked and for what come from the `runs`" in md
    assert "- approved by **bob**" in md
    assert f"events 1-{result['pruned_through']} pruned, vouched for by event" in md
