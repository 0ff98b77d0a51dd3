"""The audit log and run state as the wings see them: records, event kinds, and the Store Protocol.

`bot.store` implements it over SQLite. Every change of a run's state is one `transition`: the
run's row and the audit event that says why commit together (and a run that ends releases its
change locks in the same transaction), so no caller can move a run without recording it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


class EventKind(enum.StrEnum):
    """Every kind of audit event. Stored as its text; templates and reports compare the text."""

    # what people asked
    COMMAND = "command"
    COMMAND_REJECTED = "command_rejected"
    COMMAND_FAILED = "command_failed"
    DIAGNOSED = "diagnosed"
    PLAN = "plan"
    # a run's life
    RUN_STARTED = "run_started"
    APPROVAL_REQUESTED = "approval_requested"
    APPROVED = "approved"
    APPROVAL_REVOKED = "approval_revoked"
    PLAN_CHANGED = "plan_changed"
    DENIED = "denied"
    STEP_STARTED = "step_started"
    ACTION_STARTED = "action_started"
    ACTION_FINISHED = "action_finished"
    CHECK = "check"
    STEP_FINISHED = "step_finished"
    VERIFY = "verify"
    CANCEL_REQUESTED = "cancel_requested"
    RUN_SUCCEEDED = "run_succeeded"
    RUN_FAILED = "run_failed"
    RUN_CRASHED = "run_crashed"
    RUN_CANCELLED = "run_cancelled"
    RUN_EXPIRED = "run_expired"
    RUN_INTERRUPTED = "run_interrupted"
    # the log itself
    AUDIT_PRUNED = "audit_pruned"
    AUDIT_VERIFIED = "audit_verified"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DENIED = "denied"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def ended(self) -> bool:
        return self not in (RunStatus.RUNNING, RunStatus.AWAITING_APPROVAL)


TERMINAL = frozenset(s for s in RunStatus if s.ended)
# the events that end a run: each carries the run's final status in its data
RUN_ENDINGS = frozenset(
    {
        EventKind.RUN_SUCCEEDED,
        EventKind.RUN_FAILED,
        EventKind.RUN_CRASHED,
        EventKind.RUN_CANCELLED,
        EventKind.RUN_EXPIRED,
        EventKind.RUN_INTERRUPTED,
        EventKind.DENIED,
    }
)


@dataclass(frozen=True)
class Requester:
    """Who asked, and from where (adapter, channel, thread): recorded with every event."""

    user: str
    source: Mapping[str, Any]


@dataclass(frozen=True)
class Event:
    id: int
    ts: str
    kind: str
    run_id: int | None
    actor: str | None
    source: dict[str, Any]
    data: dict[str, Any]
    hash: str


@dataclass(frozen=True)
class RunRecord:
    id: int
    runbook: str
    version: str
    code_hash: str
    params: dict[str, Any]
    requester: str
    source: dict[str, Any]
    plan: dict[str, Any]
    plan_hash: str
    approved_plan_hash: str | None
    status: str
    next_step: int
    current_step: int | None
    approvals_required: int
    created_at: str
    updated_at: str
    expires_at: str | None
    owner: str | None
    cancel_requested: bool
    error: str | None
    cluster: str = "default"

    @property
    def ref(self) -> str:
        return f"{self.runbook}@{self.version}"


@dataclass(frozen=True, slots=True)
class RunBrief:
    """A run without its plan and params: what an export needs of each run it touches. A whole-log
    export touches every run, and a `RunRecord` with its plan holds ~20 kB in memory."""

    id: int
    runbook: str
    version: str
    status: str
    requester: str
    cluster: str
    channel: str | None  # where the run was asked for
    thread: str | None

    @property
    def ref(self) -> str:
        return f"{self.runbook}@{self.version}"

    @property
    def source(self) -> dict[str, Any]:
        """The run's `source` as far as a report reads it (its channel and thread)."""
        asked = (("channel", self.channel), ("thread_ts", self.thread))
        return {key: value for key, value in asked if value is not None}


@dataclass(frozen=True)
class Approval:
    run_id: int
    approver: str
    plan_hash: str
    decided_at: str


@dataclass(frozen=True)
class EventFilter:
    """Which events a report reads, as SQL can narrow them. Times are ISO strings, which sort as
    the times they name; `actor_or_runs` is events by that actor or of those runs."""

    start: str | None = None
    end: str | None = None
    run_ids: Sequence[int] | None = None
    actor_or_runs: tuple[str, Sequence[int]] | None = None
    channel: str | None = None
    thread: str | None = None


@dataclass(frozen=True)
class ChainReport:
    """What verifying the chain found. `events` counts the events kept; after a prune the kept
    log starts at `first_id`, the events through `pruned_through` are gone, and `vouched_by` is
    the chained `audit_pruned` event that records that prune. Where the log starts is part of
    what gets posted to Slack, so a prefix deleted later shows against an earlier post."""

    ok: bool
    events: int
    head_hash: str
    event_id: int | None = None
    problem: str = ""
    head_id: int = 0
    first_id: int | None = None
    first_hash: str = ""
    pruned_through: int = 0
    vouched_by: int | None = None
    # a check from a marker (`Store.verify_recent`): events after `verified_from` were walked
    # now, those up to it by the full verification at `verified_at` that event `marker` records
    verified_from: int = 0
    verified_at: str = ""
    marker: int | None = None

    def describe(self) -> str:
        if not self.ok:
            where = f" at event {self.event_id}" if self.event_id is not None else ""
            return f"audit chain BROKEN{where}: {self.problem}"
        if self.marker is not None:
            return (
                f"audit chain OK from event {self.verified_from} (verified at {self.verified_at}, "
                f"as event {self.marker} records) to the head: {self.events} events walked, head "
                f"{self.head_hash}"
            )
        text = f"audit chain OK: {self.events} events, head {self.head_hash}"
        if self.pruned_through:
            text += (
                f" (events 1-{self.pruned_through} pruned, vouched for by event "
                f"{self.vouched_by}; first kept event {self.first_id} {self.first_hash})"
            )
        return text


class Tx(Protocol):
    """What one transaction may read and write; it commits whole or not at all."""

    def record(
        self,
        kind: EventKind,
        *,
        actor: str | None,
        run_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append an audit event that changes no run's state."""
        ...

    def transition(
        self,
        run_id: int,
        status: RunStatus | None,
        kind: EventKind,
        *,
        actor: str | None = None,
        source: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> RunRecord:
        """Move a run to `status` (None: keep it) with `fields` changed, and record why.

        The event carries the run's source unless another is given; an ended status also goes
        into the event's data, and releases the run's change locks."""
        ...

    def insert_run(self, **fields: Any) -> int: ...

    def get_run(self, run_id: int) -> RunRecord: ...

    def runs_with_status(self, *statuses: str) -> list[RunRecord]: ...

    def add_approval(self, run_id: int, approver: str, plan_hash: str) -> bool:
        """Record an approval; False if this person already approved this plan."""
        ...

    def approvals(self, run_id: int, plan_hash: str) -> list[Approval]: ...

    def lock_targets(self, targets: Sequence[str], run_id: int, requester: str) -> None:
        """Take the change locks a run's plan needs; TargetBusy names the run holding one."""
        ...

    def release_targets(self, run_id: int) -> None: ...

    def first_delivery(self, key: str, source: str) -> bool:
        """Whether request `key` arrives for the first time (False: a retry or double click)."""
        ...


class Store(Protocol):
    """The audit log and run state. `transaction` for several changes that stand or fall
    together; `record` and `transition` for one."""

    def transaction(self) -> AbstractContextManager[Tx]: ...

    def record(
        self,
        kind: EventKind,
        *,
        actor: str | None,
        run_id: int | None = None,
        data: Mapping[str, Any] | None = None,
        source: Mapping[str, Any] | None = None,
    ) -> Event: ...

    def transition(
        self,
        run_id: int,
        status: RunStatus | None,
        kind: EventKind,
        *,
        actor: str | None = None,
        source: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> RunRecord: ...

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Called with every event after its transaction commits (the notifiers)."""
        ...

    def run(self, run_id: int) -> RunRecord: ...

    def recent_runs(
        self, limit: int = 20, cluster: str | None = None, channel: str | None = None
    ) -> list[RunRecord]:
        """The newest runs, of one cluster and of those asked for in one chat channel (None:
        any)."""
        ...

    def runs_by_id(
        self,
        ids: Sequence[int] | None = None,
        runbook: str | None = None,
        plan_mentions: str | None = None,
        cluster: str | None = None,
    ) -> dict[int, RunRecord]: ...

    def run_briefs(self, ids: Sequence[int] | None = None) -> dict[int, RunBrief]:
        """Runs by id (None: all) without their plans, for exports of many runs."""
        ...

    def run_ids_matching(self, where: EventFilter) -> list[int]:
        """The runs the events `where` selects belong to, in order, without reading the events."""
        ...

    def runs_involving(self, user: str) -> list[int]: ...

    def events(self, run_id: int | None = None, after: int = 0) -> list[Event]: ...

    def events_matching(self, where: EventFilter, last: int = 0) -> list[Event]:
        """Events in id order; `last` > 0 keeps only that many of the newest."""
        ...

    def iter_events_matching(self, where: EventFilter, batch: int = 4096) -> Iterator[Event]:
        """`events_matching` without `last`, read a batch at a time (constant memory)."""
        ...

    def count_matching(self, where: EventFilter) -> int: ...

    def approvals_of(self, run: RunRecord) -> list[Approval]: ...

    def verify(self) -> ChainReport: ...

    def verify_recent(self) -> ChainReport:
        """The chain from the newest verification marker that checks out, else all of it."""
        ...

    def record_verified(self, report: ChainReport) -> Event | None:
        """Chain a marker of a full verification that passed (None: nothing to record)."""
        ...

    def head_hash(self) -> str: ...

    def last_event_id(self) -> int: ...

    def prune(self, before: datetime) -> dict[str, Any]: ...
