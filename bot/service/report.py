"""The audit report: which events a question selects, and the record a team reads afterwards.

Pure: events and runs go in, a plain-JSON report comes out (what was seen, proposed, approved, run
where with what output, and whether it worked), for the templates in `templates/reports/` to lay
out as Markdown, HTML, CSV or JSON Lines. A run in a report is always whole: every event of
it, wherever it was given (an approval from the CLI or another channel), so a report never shows
half an approval. A report scoped to a channel or thread takes whole only the runs asked for
there; another channel's run shows only the events that happened in this one. A run's facts
(who asked, what, which plan, how it ended) come from its chained events, not from the `runs`
table, which the chain does not cover.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from flannel_bot.ports.clock import iso, parse_iso
from flannel_bot.ports.store import RUN_ENDINGS, Event, EventKind, RunRecord

_SPAN = re.compile(r"\A([0-9]{1,6})([smhdw])\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
OUTPUT_LINES = 12


# longer spans reach back before any audit log (and past what a datetime can hold: 999999w)
MAX_SPAN = timedelta(days=3650)


def parse_span(text: str) -> timedelta:
    """`--since`'s value; ValueError says what is wrong with it, in a sentence."""
    match = _SPAN.fullmatch(text)
    if match is None:
        raise ValueError(f"`{text}` is not a time span like 30m, 24h or 7d")
    span = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if span > MAX_SPAN:
        raise ValueError(
            f"`since={text}` is longer than {MAX_SPAN.days}d (ten years); leave --since out "
            "for the whole log"
        )
    return span


def parse_moment(text: str) -> datetime:
    """`--from`/`--to`'s value as a UTC time (UTC unless it says otherwise). ValueError says
    what is wrong with it (`month must be in 1..12`)."""
    value = datetime.fromisoformat(text.replace(" ", "T").removesuffix("Z"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Selection:
    """What a report covers; every field narrows it, none means everything."""

    since: timedelta | None = None
    start: datetime | None = None
    end: datetime | None = None
    run_id: int | None = None
    cluster: str | None = None
    node: str | None = None
    runbook: str | None = None
    user: str | None = None
    channel: str | None = None
    thread: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)  # as asked, for the title

    def describe(self) -> str:
        if not self.fields:
            return "the whole audit log"
        return ", ".join(f"{k} {v}" for k, v in self.fields.items())

    def window(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        start = now - self.since if self.since is not None else self.start
        return start, self.end


class RunFacts(Protocol):
    """What selecting events and streaming an export read of a run: a `RunRecord`, or a
    `RunBrief` (no plan), which an export of thousands of runs holds instead."""

    @property
    def id(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def requester(self) -> str: ...
    @property
    def cluster(self) -> str: ...
    @property
    def source(self) -> dict[str, Any]: ...
    @property
    def ref(self) -> str: ...


def run_matches(run: RunRecord, sel: Selection) -> bool:
    if sel.run_id is not None and run.id != sel.run_id:
        return False
    if sel.runbook is not None and run.runbook != sel.runbook:
        return False
    if sel.cluster is not None and run.cluster != sel.cluster:
        return False
    if sel.node is not None and f"node/{sel.node}" not in run.plan.get("targets", []):
        nodes = [a.get("node") for s in run.plan.get("steps", []) for a in s.get("actions", [])]
        if sel.node not in nodes:
            return False
    return True


def approvers_of(events: Iterable[Event]) -> dict[int, set[str]]:
    """Who acted on each run, for `user=`: a run someone decided on is theirs too."""
    approvers: dict[int, set[str]] = {}
    for e in events:
        if e.run_id is not None and e.actor:
            approvers.setdefault(e.run_id, set()).add(e.actor)
    return approvers


def picker(
    runs: Mapping[int, RunFacts],
    sel: Selection,
    now: datetime,
    approvers: dict[int, set[str]],
    matching: Container[int],
) -> Callable[[Event], bool]:
    """Whether `sel` asks for an event, one event at a time (so an export can stream).
    `matching`: the runs `run_matches` (decided once per run, so `runs` need not hold plans)."""
    start, end = sel.window(now)
    by_run = sel.run_id is not None or sel.runbook is not None or sel.node is not None
    windowed = start is not None or end is not None

    def picks(e: Event) -> bool:
        if windowed and not _within(parse_iso(e.ts), start, end):
            return False
        if by_run and (e.run_id is None or e.run_id not in matching):
            return False
        run = runs.get(e.run_id) if e.run_id is not None else None
        if sel.cluster is not None and cluster_of(e, run) != sel.cluster:
            return False
        if sel.user is not None and not _involves(e, run, sel.user, approvers):
            return False
        if sel.channel is not None and e.source.get("channel") != sel.channel:
            return False
        return sel.thread is None or e.source.get("thread_ts") == sel.thread

    return picks


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= start) and (end is None or at <= end)


def select(
    events: Iterable[Event], runs: Mapping[int, RunRecord], sel: Selection, now: datetime
) -> list[Event]:
    """The events `sel` asks for. Run-level questions take every event of the matching runs."""
    all_events = list(events)
    matching = {i for i, run in runs.items() if run_matches(run, sel)}
    picks = picker(runs, sel, now, approvers_of(all_events), matching)
    return [e for e in all_events if picks(e)]


def in_scope(run: RunFacts, sel: Selection) -> bool:
    """Whether the run was asked for in the channel and thread the report is scoped to."""
    if sel.channel is not None and run.source.get("channel") != sel.channel:
        return False
    return sel.thread is None or run.source.get("thread_ts") == sel.thread


def whole_runs(picked: Iterable[Event], runs: Mapping[int, RunFacts], sel: Selection) -> set[int]:
    """The runs a report takes whole: those its events touch that belong to its scope."""
    ids = {e.run_id for e in picked if e.run_id is not None}
    return {i for i in ids if i in runs and in_scope(runs[i], sel)}


def cuts_runs(sel: Selection) -> bool:
    """Whether `sel` may leave part of a run out (a time window, a channel, a thread), so the
    rest of its runs has to be read; run, node, runbook, user and cluster take whole runs."""
    windowed = sel.since is not None or sel.start is not None or sel.end is not None
    return windowed or sel.channel is not None or sel.thread is not None


def merge(picked: Iterable[Event], more: Iterable[Event]) -> list[Event]:
    """Two sets of events as one, each once, in chain order."""
    return sorted({e.id: e for e in (*picked, *more)}.values(), key=lambda e: e.id)


def cluster_of(e: Event, run: RunFacts | None) -> str:
    """The cluster an event is about: its run's, or the one it names (diagnose, plan, command);
    "" for events about no cluster (audit commands, approvals of a run given by number)."""
    return run.cluster if run is not None else str(e.data.get("cluster") or "")


def _involves(e: Event, run: RunFacts | None, user: str, approvers: dict[int, set[str]]) -> bool:
    """`user` did it, or it belongs to a run the user asked for or decided on."""
    if e.actor == user:
        return True
    return run is not None and (run.requester == user or user in approvers.get(run.id, set()))


# -- the record ----------------------------------------------------------------------------------


def _first_line(text: Any, width: int = 160) -> str:
    lines = str(text or "").strip().splitlines()
    return (lines[0][:width] if lines else "") + (" …" if len(lines) > 1 else "")


def describe(e: Event) -> str:
    """One line a person reads in the timeline."""
    d, who = e.data, e.actor or "flannel-bot"
    texts: dict[str, Callable[[], str]] = {
        EventKind.COMMAND: lambda: f"{who}: /flannel {d.get('text', '')}",
        EventKind.COMMAND_REJECTED: lambda: f"{who}: refused: {d.get('error', '')}",
        EventKind.DIAGNOSED: lambda: (
            f"diagnose{' on cluster ' + d['cluster'] if d.get('cluster') else ''}: "
            f"{d.get('summary', '')}"
        ),
        EventKind.PLAN: lambda: (
            f"{who} planned {d.get('plan', {}).get('runbook', '')} "
            f"(plan {str(d.get('plan_hash', ''))[7:19]})"
        ),
        EventKind.RUN_STARTED: lambda: (
            f"{who} started {d.get('runbook', '')} (plan {str(d.get('plan_hash', ''))[7:19]})"
        ),
        EventKind.APPROVAL_REQUESTED: lambda: (
            f"waiting for approval before step {d.get('step', 0) + 1} "
            f"({d.get('step_title', '')}) until {d.get('expires_at', '')}"
        ),
        EventKind.APPROVED: lambda: f"approved by {who} ({d.get('approvals')}/{d.get('required')})",
        EventKind.DENIED: lambda: f"denied by {who}: {d.get('reason', '')}".rstrip(": "),
        EventKind.PLAN_CHANGED: lambda: "the plan changed; earlier approvals no longer count",
        EventKind.STEP_STARTED: lambda: (
            f"step {d.get('step', 0) + 1}/{d.get('of', '?')} "
            f"[{d.get('risk', '')}] {d.get('title', '')}"
        ),
        EventKind.ACTION_STARTED: lambda: f"$ {_first_line(d.get('render'))}",
        EventKind.ACTION_FINISHED: lambda: (
            f"exit {d.get('exit_code')}: {_first_line(d.get('stderr') or d.get('stdout'))}"
        ),
        EventKind.CHECK: lambda: (
            f"check {d.get('check', '')}: {'passed' if d.get('ok') else 'FAILED'}: "
            f"{d.get('detail', '')}"
        ),
        EventKind.VERIFY: lambda: (
            f"diagnose after the run: {'passed' if d.get('ok') else 'FAILED'}: "
            f"{d.get('detail', '')}"
        ),
        EventKind.STEP_FINISHED: lambda: f"step {d.get('step', 0) + 1} {d.get('outcome', '')}",
        EventKind.AUDIT_PRUNED: lambda: (
            f"{d.get('events')} events before {d.get('before')} pruned "
            f"(checkpoint hash {str(d.get('last_hash', ''))[:12]})"
        ),
    }
    text = texts.get(e.kind)
    if text is not None:
        return text()
    if e.kind.startswith("run_") or e.kind == EventKind.DENIED:
        return f"run {str(d.get('status', e.kind[4:])).upper()}" + (
            f": {d.get('error')}" if d.get("error") else ""
        )
    return e.kind.replace("_", " ")


def level(e: Event) -> str:
    if e.kind in (
        EventKind.RUN_FAILED,
        EventKind.RUN_CRASHED,
        EventKind.RUN_INTERRUPTED,
        EventKind.COMMAND_REJECTED,
        EventKind.DENIED,
    ):
        return "bad"
    if e.kind in (EventKind.CHECK, EventKind.VERIFY) and not e.data.get("ok"):
        return "bad"
    if e.kind == EventKind.ACTION_FINISHED and e.data.get("exit_code"):
        return "bad"
    if e.kind in (EventKind.RUN_SUCCEEDED, EventKind.APPROVED):
        return "good"
    if e.kind in (EventKind.APPROVAL_REQUESTED, EventKind.RUN_EXPIRED, EventKind.PLAN_CHANGED):
        return "wait"
    return ""


def _seconds(a: str, b: str) -> float:
    return round((parse_iso(b) - parse_iso(a)).total_seconds(), 3)


def chained_facts(run: RunRecord, events: Sequence[Event]) -> dict[str, Any]:
    """What the run's chained events say about it: who asked, for what, on which plan, how it
    ended. The `runs` row fills in only what no kept event says (a run whose start was pruned,
    or the status of a run still going); `from_chain` says which."""
    facts: dict[str, Any] = {
        "requester": run.requester,
        "ref": run.ref,
        "params": run.params,
        "plan_hash": run.plan_hash,
        "code_hash": run.code_hash,
        "targets": run.plan.get("targets", []),
        "cluster": run.cluster,
        "channel": run.source.get("channel", ""),
        "thread": run.source.get("thread_ts", ""),
        "status": run.status,
        "error": run.error or "",
        "from_chain": False,
    }
    for e in events:
        d = e.data
        if e.kind == EventKind.RUN_STARTED:
            facts.update(
                requester=e.actor or "",
                ref=str(d.get("runbook") or run.ref),
                params=d.get("params", {}),
                plan_hash=d.get("plan_hash", ""),
                code_hash=d.get("code_hash", ""),
                targets=d.get("plan", {}).get("targets", []),
                cluster=d.get("cluster") or "default",
                channel=e.source.get("channel", ""),
                thread=e.source.get("thread_ts", ""),
                from_chain=True,
            )
        elif e.kind == EventKind.PLAN_CHANGED:
            facts.update(
                plan_hash=d.get("plan_hash", ""), targets=d.get("plan", {}).get("targets", [])
            )
        elif e.kind in RUN_ENDINGS and "status" in d:
            traceback = str(d.get("traceback") or "").strip().splitlines()
            denied = f"denied by {e.actor}" if e.kind == EventKind.DENIED else ""
            error = d.get("error") or (traceback[-1] if traceback else denied)
            facts.update(status=d["status"], error=str(error or facts["error"]))
    facts["runbook"] = str(facts["ref"]).partition("@")[0]
    return facts


def _run_record(run: RunRecord, events: Sequence[Event]) -> dict[str, Any]:
    steps: dict[int, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    approvals, outputs = [], []
    for e in events:
        d = e.data
        if e.kind == EventKind.STEP_STARTED:
            current = steps.setdefault(
                int(d["step"]),
                {"index": d["step"], "title": d.get("title", ""), "risk": d.get("risk", "")},
            )
            current.update(started=e.ts, actions=[], outcome="did not finish")
        elif e.kind == EventKind.ACTION_STARTED and current is not None:
            action = d.get("action", {})
            current["actions"].append(
                {"render": d.get("render", ""), "node": action.get("node", ""), "started": e.ts}
            )
        elif e.kind == EventKind.ACTION_FINISHED and current is not None and current["actions"]:
            out = str(d.get("stdout") or "") + ("\n" + str(d["stderr"]) if d.get("stderr") else "")
            lines = out.strip().splitlines()
            a = current["actions"][-1]
            a.update(
                exit_code=d.get("exit_code"),
                output="\n".join(lines[:OUTPUT_LINES])
                + (
                    f"\n… {len(lines) - OUTPUT_LINES} more lines"
                    if len(lines) > OUTPUT_LINES
                    else ""
                ),
                duration_s=_seconds(a["started"], e.ts),
            )
            outputs.append(a)
        elif e.kind == EventKind.CHECK and int(d.get("step", -1)) in steps:
            steps[int(d["step"])]["check"] = {"ok": d.get("ok"), "detail": d.get("detail", "")}
        elif e.kind == EventKind.STEP_FINISHED and int(d.get("step", -1)) in steps:
            s = steps[int(d["step"])]
            s.update(outcome=d.get("outcome", ""), finished=e.ts)
            s["duration_s"] = _seconds(s["started"], e.ts)
        elif e.kind in (EventKind.APPROVED, EventKind.DENIED):
            approvals.append(
                {"who": e.actor, "at": e.ts, "decision": e.kind, "reason": d.get("reason", "")}
            )
    verify = next((e.data for e in reversed(events) if e.kind == EventKind.VERIFY), None)
    ended = next((e.ts for e in reversed(events) if e.kind in RUN_ENDINGS), None)
    started = events[0].ts if events else run.created_at
    return {
        "id": run.id,
        **chained_facts(run, events),
        "started": started,
        "ended": ended or "",
        "duration_s": _seconds(started, ended) if ended else None,
        "approvals": approvals,
        "steps": [steps[i] for i in sorted(steps)],
        "verify": verify,
        "nodes": sorted({a["node"] for a in outputs if a.get("node")}),
    }


def build(
    events: Sequence[Event],
    runs: Mapping[int, RunRecord],
    sel: Selection,
    chain: Mapping[str, Any],
    now: datetime,
) -> dict[str, Any]:
    """The report's data: summary, timeline, runs with their steps and outputs, per-node lines,
    the chart's bars, and the audit chain's head and whether it verified. `runs` are those the
    report gives a record of (whole runs); another run's events are timeline lines only."""
    by_run: dict[int, list[Event]] = {}
    for e in events:
        if e.run_id is not None:
            by_run.setdefault(e.run_id, []).append(e)
    run_records = [_run_record(runs[i], evs) for i, evs in sorted(by_run.items()) if i in runs]
    nodes: dict[str, dict[str, Any]] = {}
    for r in run_records:
        for s in r["steps"]:
            for a in s.get("actions", []):
                if not a.get("node"):
                    continue
                n = nodes.setdefault(
                    a["node"], {"node": a["node"], "runs": set(), "actions": 0, "failed": 0}
                )
                n["runs"].add(r["id"])
                n["actions"] += 1
                n["failed"] += 1 if a.get("exit_code") not in (0, None) else 0
    first = events[0].ts if events else iso(now)
    last = events[-1].ts if events else iso(now)
    span = max((parse_iso(last) - parse_iso(first)).total_seconds(), 1.0)

    def frac(ts: str) -> float:
        return round((parse_iso(ts) - parse_iso(first)).total_seconds() / span, 4)

    statuses = [r["status"] for r in run_records]
    return {
        "title": "flannel-bot audit report",
        "selection": sel.describe(),
        "generated_at": iso(now),
        "chain": dict(chain),
        "summary": {
            "events": len(events),
            "first": first,
            "last": last,
            "span_s": round(span, 3) if events else 0,
            "runs": len(run_records),
            "by_status": {s: statuses.count(s) for s in sorted(set(statuses))},
            "commands": sum(1 for e in events if e.kind == EventKind.COMMAND),
            "rejected": sum(1 for e in events if e.kind == EventKind.COMMAND_REJECTED),
            "approvals": sum(1 for e in events if e.kind == EventKind.APPROVED),
            "people": sorted({e.actor for e in events if e.actor}),
        },
        "timeline": [
            {
                "id": e.id,
                "ts": e.ts,
                "kind": e.kind,
                "actor": e.actor or "",
                "run_id": e.run_id,
                "cluster": cluster_of(e, runs.get(e.run_id) if e.run_id is not None else None),
                "text": describe(e),
                "level": level(e),
                "x": frac(e.ts),
                "channel": e.source.get("channel", ""),
                "thread": e.source.get("thread_ts", ""),
            }
            for e in events
        ],
        "runs": run_records,
        "nodes": [
            {**n, "runs": sorted(n["runs"])} for _, n in sorted(nodes.items(), key=lambda kv: kv[0])
        ],
        "bars": [
            {
                "run_id": r["id"],
                "label": f"run {r['id']} {r['runbook']}",
                "x0": frac(r["started"]),
                "x1": frac(r["ended"]) if r["ended"] else 1.0,
                "status": r["status"],
            }
            for r in run_records
        ],
        "events": [export_event(e) for e in events],
        "summarised": None,  # the whole record (see `summarised`)
    }


# -- exports that stream -------------------------------------------------------------------------


@dataclass(slots=True)
class _RunLine:
    """What an export's CSV row says of its run, kept as the run's events go by: `ref` and
    `status` as `chained_facts` decides them, `nodes` as `_run_record`'s finished actions."""

    ref: str
    status: str
    nodes: tuple[str, ...] = ()  # a set costs 216 bytes, and a whole-log export has a line per run
    in_step: bool = False
    action_node: str | None = None

    def see(self, e: Event) -> None:
        d = e.data
        if e.kind == EventKind.RUN_STARTED:
            self.ref = str(d.get("runbook") or self.ref)
        elif e.kind in RUN_ENDINGS and "status" in d:
            self.status = d["status"]
        if e.kind == EventKind.STEP_STARTED:
            self.in_step, self.action_node = True, None
        elif e.kind == EventKind.ACTION_STARTED and self.in_step:
            self.action_node = str(d.get("action", {}).get("node") or "")
        elif e.kind == EventKind.ACTION_FINISHED and self.action_node:
            node = self.action_node
            self.nodes += () if node in self.nodes else (node,)


class ExportTally:
    """A report's summary (`build`'s) and each whole run's CSV facts, from one pass over the
    selected events, holding a line per run rather than the events."""

    def __init__(self, runs: Mapping[int, RunFacts]) -> None:
        self.runs = runs
        self.lines: dict[int, _RunLine] = {}
        self.events = self.commands = self.rejected = self.approvals = 0
        self.first = self.last = ""
        self.last_id = 0
        self.people: set[str] = set()

    def see(self, e: Event) -> None:
        self.events += 1
        self.first = self.first or e.ts
        self.last = e.ts
        self.last_id = e.id
        self.commands += e.kind == EventKind.COMMAND
        self.rejected += e.kind == EventKind.COMMAND_REJECTED
        self.approvals += e.kind == EventKind.APPROVED
        if e.actor:
            self.people.add(e.actor)
        if e.run_id is not None and e.run_id in self.runs:
            line = self.lines.get(e.run_id)
            if line is None:
                line = self.lines[e.run_id] = self._line(self.runs[e.run_id])
            line.see(e)

    def _line(self, run: RunFacts) -> _RunLine:
        return _RunLine(run.ref, run.status)

    def summary(self, now: datetime) -> dict[str, Any]:
        first = self.first or iso(now)
        last = self.last or iso(now)
        span = max((parse_iso(last) - parse_iso(first)).total_seconds(), 1.0)
        statuses = [line.status for _, line in sorted(self.lines.items())]
        return {
            "events": self.events,
            "first": first,
            "last": last,
            "span_s": round(span, 3) if self.events else 0,
            "runs": len(self.lines),
            "by_status": {s: statuses.count(s) for s in sorted(set(statuses))},
            "commands": self.commands,
            "rejected": self.rejected,
            "approvals": self.approvals,
            "people": sorted(self.people),
        }


@dataclass(slots=True)
class _RunSummary(_RunLine):
    """A summarised report's line of a run: `_RunLine` and who asked (as `chained_facts` says),
    on which cluster, who approved it, and when its events began and it ended (`_run_record`)."""

    id: int = 0
    requester: str = ""
    cluster: str = ""
    started: str = ""
    ended: str = ""
    approvers: tuple[str, ...] = ()

    def see(self, e: Event) -> None:
        _RunLine.see(self, e)  # zero-argument super() does not work in a slots dataclass
        self.started = self.started or e.ts
        if e.kind == EventKind.RUN_STARTED:
            self.requester = e.actor or ""
            self.cluster = str(e.data.get("cluster") or "default")
        elif e.kind == EventKind.APPROVED and e.actor and e.actor not in self.approvers:
            self.approvers += (e.actor,)
        elif e.kind in RUN_ENDINGS:
            self.ended = e.ts


class SummaryTally(ExportTally):
    """`ExportTally` and what a summarised report lists instead of its events: a line per whole
    run (`_RunSummary`, a few hundred bytes) and the events counted by kind."""

    def __init__(self, runs: Mapping[int, RunFacts]) -> None:
        super().__init__(runs)
        self.by_kind: Counter[str] = Counter()

    def see(self, e: Event) -> None:
        super().see(e)
        self.by_kind[e.kind] += 1

    def _line(self, run: RunFacts) -> _RunLine:
        return _RunSummary(
            run.ref, run.status, id=run.id, requester=run.requester, cluster=run.cluster
        )

    def run_rows(self) -> list[dict[str, Any]]:
        """Each run's line as the templates read it, in run order (emptying the tally's lines)."""
        rows = []
        for run_id in sorted(self.lines):
            line = self.lines.pop(run_id)
            assert isinstance(line, _RunSummary)
            rows.append(
                {
                    "id": line.id,
                    "ref": line.ref,
                    "status": line.status,
                    "cluster": line.cluster,
                    "requester": line.requester,
                    "approvers": list(line.approvers),
                    "nodes": sorted(line.nodes),
                    "started": line.started,
                    "ended": line.ended,
                }
            )
        return rows


def export_command(sel: Selection) -> str:
    """The CLI command that streams `sel`'s every event as JSON Lines."""
    asked = [f"{key}={value}" for key, value in sel.fields.items()]
    return shlex.join(["flannel-bot", "audit", "report", "format=jsonl", *asked])


def summarised(export: Export, sel: Selection, count: int, cap: int) -> dict[str, Any]:
    """A report of a selection too large to lay out event by event (more than `cap`, `[audit]
    max_report_events`): `build`'s header and summary, a line per run and the events counted by
    kind, from one streamed pass (`export`'s tally must be a `SummaryTally`), and how to export
    every event. It holds the run lines, never the events."""
    tally = export.tally
    assert isinstance(tally, SummaryTally)
    return {
        **export.header,
        "summarised": {"events": count, "cap": cap, "export": export_command(sel)},
        "runs": tally.run_rows(),
        "by_kind": dict(sorted(tally.by_kind.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def export_event(e: Event) -> dict[str, Any]:
    """An event as a JSON Lines export (and `build`'s `events`) writes it."""
    return {
        "type": "event",
        "id": e.id,
        "ts": e.ts,
        "kind": e.kind,
        "run_id": e.run_id,
        "actor": e.actor,
        "source": e.source,
        "data": e.data,
        "hash": e.hash,
    }


def export_row(e: Event, tally: ExportTally, chain: Mapping[str, Any]) -> list[Any]:
    """An event as a CSV export's row (templates/reports/report.csv.j2's columns)."""
    line = tally.lines.get(e.run_id) if e.run_id is not None else None
    run = tally.runs.get(e.run_id) if e.run_id is not None else None
    return [
        e.id,
        e.ts,
        e.kind,
        e.actor or "",
        e.run_id or "",
        cluster_of(e, run),
        line.ref if line else "",
        line.status if line else "",
        " ".join(sorted(line.nodes)) if line else "",
        describe(e),
        level(e),
        e.source.get("channel", ""),
        e.source.get("thread_ts", ""),
        chain["head"],
        chain["ok"],
    ]


CSV_HEADER = [
    "id",
    "time",
    "kind",
    "actor",
    "run",
    "cluster",
    "runbook",
    "status",
    "nodes",
    "what",
    "level",
    "channel",
    "thread",
    "chain_head",
    "chain_verified",
]


STREAMED = ("jsonl", "csv")  # the formats written an event at a time, without `build`


@dataclass(frozen=True)
class Export:
    """A report written as it is read: `header` is the JSON Lines first line (`build`'s title,
    selection, generated_at, chain and summary), `events` reads the events again each call."""

    header: dict[str, Any]
    tally: ExportTally
    events: Callable[[], Iterator[Event]]
