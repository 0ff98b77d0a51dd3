"""The `runs` and `approvals` rows held to the chained events that recorded them.

The engine acts on those two tables and reports select runs through them, but they sit outside the
hash chain: `UPDATE runs SET requester = ...` breaks no hash. Every row is written in the same
transaction as an event that says the same thing (`run_started`, `plan_changed`, the event that
ends a run, `approved`), so verifying the chain also compares each row with its events, and a row
that disagrees is reported as tampering. Rows whose events a prune removed cannot be checked and
are let be.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flannel_bot.ports.store import RUN_ENDINGS, TERMINAL, EventKind
from flannel_bot.store.redact import scrub

WATCHED: frozenset[str] = RUN_ENDINGS | {
    EventKind.RUN_STARTED,
    EventKind.PLAN_CHANGED,
    EventKind.APPROVED,
}
# what `see` reads of a watched event, extracted by SQLite in the walk's own query (a run_started
# event's data holds the whole plan, and decoding it in Python cost more than the rest); NULL for
# other kinds, and for data that is not JSON (its hash check names that event anyway)
FACTS = (
    "CASE WHEN kind IN ({kinds}) AND json_valid(data) AND json_valid(source) THEN json_array("
    "json_extract(data, '$.runbook'), json_extract(data, '$.code_hash'), "
    "json_extract(data, '$.cluster'), json_extract(data, '$.plan_hash'), "
    "json_extract(data, '$.status'), json_extract(source, '$.channel'), "
    "json_extract(source, '$.thread_ts')) END"
).format(kinds=", ".join(f"'{k}'" for k in sorted(WATCHED)))
# what `disagreement` reads of a runs row (not its plan and parameters, which are large)
RUN_COLUMNS = (
    "id, runbook, version, code_hash, requester, plan_hash, status, created_at, "
    "json_extract(source, '$.channel') AS channel, json_extract(source, '$.thread_ts') AS thread"
)
Problem = tuple[int | None, str]  # the event to name (None: no event to point at), and what


@dataclass(slots=True)
class _Run:
    started: int  # the run_started event
    requester: str | None
    runbook: str
    code_hash: str
    cluster: str
    channel: str | None
    thread: str | None
    plan_hash: str
    plan_event: int
    status: str | None = None  # the final status, once an event ended the run
    ended_by: int | None = None


class ChainedRuns:
    """Folds the chained events of every run (`see`, given the WATCHED kinds as the chain is
    walked, with their FACTS), then compares the rows of RUN_COLUMNS with them
    (`disagreement`)."""

    def __init__(self) -> None:
        self.runs: dict[int, _Run] = {}
        self.approvals: dict[tuple[int, str, str], int] = {}

    def see(self, row: Mapping[str, Any]) -> None:
        """One event of the walk, with its FACTS column."""
        kind, run_id, facts = row["kind"], row["run_id"], row.get("facts")
        if kind not in WATCHED or run_id is None or facts is None:
            return
        runbook, code_hash, cluster, plan_hash, status, channel, thread = json.loads(facts)
        if kind == "run_started":
            self.runs[run_id] = _Run(
                started=row["id"],
                requester=row["actor"],
                runbook=str(runbook or ""),
                code_hash=str(code_hash or ""),
                cluster=str(cluster or "default"),
                channel=channel,
                thread=thread,
                plan_hash=str(plan_hash or ""),
                plan_event=row["id"],
            )
            return
        run = self.runs.get(run_id)
        if run is None:  # its start was pruned: nothing to hold its row to
            return
        if kind == "plan_changed":
            run.plan_hash, run.plan_event = str(plan_hash or ""), row["id"]
        elif kind == "approved":
            self.approvals[(run_id, str(row["actor"]), str(plan_hash or ""))] = row["id"]
        if kind in RUN_ENDINGS and status is not None:
            run.status, run.ended_by = str(status), row["id"]

    def disagreement(
        self,
        runs: Iterable[Mapping[str, Any]],
        approvals: Iterable[Mapping[str, Any]],
        kept_from: str | None,
    ) -> Problem | None:
        """The first row that says something its events do not, as (event id, problem).
        `kept_from` is the time of the first kept event after a prune (None: never pruned)."""
        seen: set[int] = set()
        for row in runs:
            seen.add(row["id"])
            problem = self._run_row(row, kept_from)
            if problem:
                return problem
        for run_id, run in sorted(self.runs.items()):
            if run_id not in seen:
                return run.started, (
                    f"deleted: run {run_id} has no row in `runs`, though event {run.started} "
                    "started it"
                )
        rows = set()
        for a in approvals:
            key = (a["run_id"], str(a["approver"]), str(scrub(a["plan_hash"])))
            rows.add(key)
            owner = self.runs.get(a["run_id"])
            if owner is not None and key not in self.approvals:
                return owner.started, (
                    f"inserted: an approval of run {a['run_id']} by {a['approver']} in "
                    "`approvals` that no chained `approved` event records"
                )
        for key, event in sorted(self.approvals.items(), key=lambda kv: kv[1]):
            if key not in rows:
                run_id, approver, _ = key
                return event, (
                    f"deleted: {approver}'s approval of run {run_id} (event {event}) has no row "
                    "in `approvals`"
                )
        return None

    def _run_row(self, row: Mapping[str, Any], kept_from: str | None) -> Problem | None:
        run_id = row["id"]
        run = self.runs.get(run_id)
        if run is None:
            if kept_from is not None and str(row["created_at"]) <= kept_from:
                return None  # started before the kept log: its events were pruned
            return None, (
                f"inserted: run {run_id} has a row in `runs` but no run_started event in the chain"
            )
        said = {
            "requester": (row["requester"], run.requester, run.started),
            "runbook": (f"{row['runbook']}@{row['version']}", run.runbook, run.started),
            "code_hash": (row["code_hash"], run.code_hash, run.started),
            "cluster": (row.get("cluster", "default"), run.cluster, run.started),
            "plan_hash": (row["plan_hash"], run.plan_hash, run.plan_event),
            "channel": (row["channel"], run.channel, run.started),
            "thread": (row["thread"], run.thread, run.started),
        }
        for name, (in_row, chained, event) in said.items():
            if in_row == chained or (name != "requester" and scrub(in_row) == chained):
                continue  # the event holds the row's value as redaction stored it
            return event, (
                f"altered: run {run_id}'s row in `runs` says {name} {in_row}, its event "
                f"{event} says {chained}"
            )
        if run.status is not None and row["status"] != run.status:
            return run.ended_by or run.started, (
                f"altered: run {run_id}'s row in `runs` says status {row['status']}, event "
                f"{run.ended_by} ended it {run.status}"
            )
        if run.status is None and row["status"] in TERMINAL:
            return run.started, (
                f"altered: run {run_id}'s row in `runs` says status {row['status']}, but no "
                "chained event ended it"
            )
        return None
