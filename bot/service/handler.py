"""The service every adapter calls: a command in, a structured reply out, everything audited.

Adapters (Slack, the shell, the CLI, tests) only parse identity and render replies; the behaviour of
`/flannel ...` is decided here, once.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flannel_bot.diagnosis.collect import LOG_TAIL, collect
from flannel_bot.errors import (
    AuditChainBroken,
    AuditLogError,
    BotError,
    CommandSyntaxError,
    ExecutorError,
    InvalidState,
    UnknownNode,
    UserError,
)
from flannel_bot.ports.clock import iso
from flannel_bot.ports.store import (
    Event,
    EventFilter,
    EventKind,
    Requester,
    RunBrief,
    RunRecord,
    Store,
)
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.params import describe_params
from flannel_bot.service import audit_scope, report
from flannel_bot.service import commands as c
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.report import STREAMED
from flannel_bot.service.views import diagnosis_view, plan_view, run_view, selection


@dataclass(frozen=True)
class Reply:
    """`kind` names the template that renders it; `data` is plain JSON."""

    kind: str
    data: dict[str, Any]
    ok: bool = True


# commands whose answer depends on runs being current: runs whose process died are marked
# interrupted, and approval windows that closed are expired, before they are read or changed
RUN_STATE_COMMANDS = (c.RunRunbook, c.Approve, c.Deny, c.Cancel, c.Status, c.Audit, c.AuditReport)


class Service:
    """One service for every cluster the bot serves: commands that name no cluster go to the
    default one, and a run's approval, denial or cancellation go to the cluster it runs on."""

    def __init__(self, clusters: Clusters, store: Store, max_report_events: int = 0) -> None:
        """`max_report_events` (0: no limit) summarises a Markdown or HTML report that would read
        more events than that: a report is built in memory, and a month of a busy log would
        exhaust the pod's; its summary streams the events as an export does."""
        self.clusters = clusters
        self.store = store
        self.max_report_events = max_report_events

    @property
    def engine(self) -> Engine:
        """The default cluster's engine (the registry, policy and clock are the same in all)."""
        return self.clusters.get().engine

    def _of_run(self, run_id: int) -> Engine:
        run = self.store.run(run_id)
        if run.cluster not in self.clusters.names:
            raise InvalidState(
                f"run {run_id} is on cluster {run.cluster}, which this bot no longer serves "
                f"(it serves {', '.join(self.clusters.names)}); `status {run_id}` shows it"
            )
        return self.clusters.get(run.cluster).engine

    def handle(
        self, text: str | Sequence[str], who: Requester, command: c.Command | None = None
    ) -> Reply:
        """Parse and execute one `/flannel` command (`command`: already parsed from `text` by
        the adapter). User errors, and an API or node that does not answer, become an `error`
        reply.

        The command is recorded before it is acted on, with the cluster it is for when it is
        about one (parsing and naming the cluster touch nothing)."""
        line = text if isinstance(text, str) else " ".join(text)
        data: dict[str, Any] = {"text": line}
        try:
            if command is None:
                command = c.parse(c.split_words(text) if isinstance(text, str) else list(text))
            if isinstance(command, c.Diagnose | c.PlanRunbook | c.RunRunbook):
                data["cluster"] = self.clusters.name(command.cluster)
        except UserError as exc:
            self._record(EventKind.COMMAND, who, data)
            return self._error(exc, who, line)
        if command == c.Audit("verify"):
            return self._verify_then_record(who, data)
        self._record(EventKind.COMMAND, who, data)
        try:
            if isinstance(command, RUN_STATE_COMMANDS):
                self.engine.recover()
                self.engine.expire_due()
            return self.dispatch(command, who)
        except (UserError, ExecutorError) as exc:
            return self._error(exc, who, line, data.get("cluster"))

    def refuse(self, text: str | Sequence[str], who: Requester, exc: UserError) -> Reply:
        """A command its adapter refused before handling it (a name the terminal cannot vouch
        for, a click from another workspace), recorded and answered as any refusal."""
        line = text if isinstance(text, str) else " ".join(text)
        self._record(EventKind.COMMAND, who, {"text": line})
        return self._error(exc, who, line)

    def _verify_then_record(self, who: Requester, data: dict[str, Any]) -> Reply:
        """`audit verify` reads before it writes: the verdict is on the log as it was when
        asked, and a log that cannot take the command's event (its chain head gone, a file
        that cannot be written) is still checked. The command is recorded after, if it can be."""
        reply = self.dispatch(c.Audit("verify"), who)
        try:
            self._record(EventKind.COMMAND, who, data)
        except (AuditLogError, AuditChainBroken) as exc:
            reply.data["not_recorded"] = str(exc)
        return reply

    def _record(self, kind: EventKind, who: Requester, data: dict[str, Any]) -> None:
        self.store.record(kind, actor=who.user, source=who.source, data=data)

    def _error(self, exc: BotError, who: Requester, line: str, cluster: str | None = None) -> Reply:
        """A refused command (`command_rejected`), or one the cluster could not answer
        (`command_failed`), recorded with the cluster it was for, if any, and told to the
        requester."""
        kind = (
            EventKind.COMMAND_REJECTED if isinstance(exc, UserError) else EventKind.COMMAND_FAILED
        )
        name = type(exc).__name__
        data = {"text": line, "error": str(exc), "error_type": name}
        self._record(kind, who, data | ({"cluster": cluster} if cluster else {}))
        usage = exc.usage if isinstance(exc, CommandSyntaxError) else None
        return Reply("error", {"message": str(exc), "usage": usage, "error_type": name}, ok=False)

    def dispatch(self, command: c.Command, who: Requester) -> Reply:
        engine = self.engine
        match command:
            case c.Help(topic):
                verbs = [topic] if topic else list(c.USAGE)
                return Reply(
                    "help",
                    {
                        "clusters": list(self.clusters.names) if self.clusters.many else [],
                        "default_cluster": self.clusters.default,
                        "commands": [
                            {"verb": v, "usage": c.USAGE[v], "summary": c.SUMMARY[v]} for v in verbs
                        ],
                        "runbooks": [
                            {
                                "id": rb.id,
                                "version": str(rb.version),
                                "risk": rb.risk.value,
                                "summary": rb.summary,
                            }
                            for rb in engine.registry.newest()
                        ]
                        if topic is None
                        else [],
                    },
                )
            case c.ListRunbooks():
                return Reply(
                    "runbooks",
                    {
                        "runbooks": [
                            {
                                "id": rb.id,
                                "version": str(rb.version),
                                "ref": rb.ref,
                                "default": rb is engine.registry.get(rb.id),
                                "risk": rb.risk.value,
                                "summary": rb.summary,
                                "help": rb.help.strip(),
                                "params": describe_params(rb.params),
                                "code_hash": rb.code_hash,
                            }
                            for rb in engine.registry.all()
                        ]
                    },
                )
            case c.PlanRunbook(ref, params, cluster):
                plan = self.clusters.get(cluster).engine.plan(ref, params, who)
                return Reply("plan", plan_view(plan))
            case c.RunRunbook(ref, params, cluster):
                return self._run_reply(self.clusters.get(cluster).engine.start(ref, params, who))
            case c.Approve(run_id, plan_hash):
                return self._run_reply(self._of_run(run_id).approve(run_id, who, plan_hash))
            case c.Deny(run_id, reason):
                return self._run_reply(engine.deny(run_id, who, reason))
            case c.Cancel(run_id):
                return self._run_reply(engine.cancel(run_id, who))
            case c.Status(None, cluster):
                if cluster is not None:
                    self.clusters.get(cluster)  # an unknown name is an error, not an empty list
                here = audit_scope.confined_to(who, engine.policy)
                runs = self.store.recent_runs(cluster=cluster, channel=here)
                return Reply("runs", {"runs": [run_view(r) for r in runs], "cluster": cluster})
            case c.Status(run_id, cluster):
                assert run_id is not None
                run = self.store.run(run_id)
                if cluster is not None and run.cluster != cluster:
                    raise InvalidState(f"run {run_id} is on cluster {run.cluster}, not {cluster}")
                audit_scope.check_run_trail(run, who, engine.policy)  # its events are its trail
                return self._run_reply(run, status_only=True)
            case c.Audit("verify"):
                report = self.store.verify()
                return Reply(
                    "audit_verify",
                    dataclasses.asdict(report) | {"summary": report.describe()},
                    ok=report.ok,
                )
            case c.Audit("run", run_id):
                assert run_id is not None
                audit_scope.check_run_trail(self.store.run(run_id), who, engine.policy)
                return Reply(
                    "audit_events",
                    {
                        "run_id": run_id,
                        "events": [dataclasses.asdict(e) for e in self.store.events(run_id=run_id)],
                    },
                )
            case c.Audit(_):
                here = audit_scope.confined_to(who, engine.policy)
                events = self.store.events_matching(EventFilter(channel=here), last=50)
                return Reply(
                    "audit_events",
                    {"run_id": None, "events": [dataclasses.asdict(e) for e in events]},
                )
            case c.Diagnose(nodes, deep, cluster):
                target = self.clusters.get(cluster)
                return Reply("diagnose", self._diagnose(target, nodes, deep, who))
            case c.AuditReport(selection, fmt):
                if fmt in STREAMED:
                    export = self.export(selection, who)
                    return Reply(
                        "audit_report", {"format": fmt, "report": export.header, "export": export}
                    )
                report_data = self.report(selection, who)
                return Reply("audit_report", {"format": fmt, "report": report_data})
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    def _run_reply(self, run: RunRecord, status_only: bool = False) -> Reply:
        """A run; `ok` is False when the command left it failed (not when merely looked at)."""
        view = run_view(run)
        view["events"] = [dataclasses.asdict(e) for e in self.store.events(run_id=run.id)]
        view["approvals"] = [dataclasses.asdict(a) for a in self._approvals(run)]
        return Reply("run", view, ok=status_only or run.status not in ("failed", "interrupted"))

    def _approvals(self, run: RunRecord) -> list[Any]:
        return self.store.approvals_of(run)

    def _narrowed(
        self, asked: Mapping[str, str], who: Requester | None
    ) -> tuple[report.Selection, datetime, EventFilter]:
        """The selection `who` may see, when it was asked, and a superset of its events in SQL."""
        if who is not None:
            asked = audit_scope.report_selection(asked, who, self.engine.policy)
        sel = selection(asked)
        now = self.engine.clock.now()
        start, end = sel.window(now)
        by_run = sel.run_id is not None or sel.runbook is not None or sel.node is not None
        matching: list[int] | None = None
        if by_run:  # runs first (few), narrowed in SQL, then checked exactly
            found = self.store.runs_by_id(
                ids=[sel.run_id] if sel.run_id is not None else None,
                runbook=sel.runbook,
                cluster=sel.cluster,
                plan_mentions=f'"{sel.node}"' if sel.node else None,
            )
            matching = [i for i, r in found.items() if report.run_matches(r, sel)]
        narrowed = EventFilter(
            start=iso(start) if start else None,
            end=iso(end) if end else None,
            run_ids=matching,
            actor_or_runs=(sel.user, self.store.runs_involving(sel.user)) if sel.user else None,
            channel=sel.channel,
            thread=sel.thread,
        )
        return sel, now, narrowed

    def _chain(self, now: datetime) -> dict[str, Any]:
        chain = self.store.verify_recent()
        return {
            "ok": chain.ok,
            "head": chain.head_hash,
            "events": chain.events,
            "problem": chain.problem,
            "head_id": chain.head_id,
            "first_id": chain.first_id,
            "first_hash": chain.first_hash,
            "pruned_through": chain.pruned_through,
            "vouched_by": chain.vouched_by,
            "verified_from": chain.verified_from,
            "verified_at": chain.verified_at,
            "marker": chain.marker,
            "checked_at": iso(now),
        }

    def export(self, asked: Mapping[str, str], who: Requester | None = None) -> report.Export:
        """A JSON Lines or CSV export of the report's events, read from the store a batch at a
        time (no `max_report_events`: it never holds the events, only a few hundred bytes per
        run: no plans), so the same events as `report` selects, in the same order. Two passes
        over the events (a tally for the header, then the lines), and before them one for which
        runs to take whole when a window, channel or thread may cut runs, one for who acted on
        each run for `user=`."""
        sel, now, narrowed = self._narrowed(asked, who)
        return self._export(sel, now, narrowed, report.ExportTally)

    def _export(
        self,
        sel: report.Selection,
        now: datetime,
        narrowed: EventFilter,
        tallied: Callable[[Mapping[int, RunBrief]], report.ExportTally],
    ) -> report.Export:
        ids = self.store.run_ids_matching(narrowed)
        runs = self.store.run_briefs(ids=ids if len(ids) <= 5000 else None)
        approvers = (
            report.approvers_of(self.store.iter_events_matching(narrowed)) if sel.user else {}
        )
        picks = report.picker(runs, sel, now, approvers, frozenset(narrowed.run_ids or ()))
        whole: Mapping[int, RunBrief] = runs  # every run an event picked belongs to is whole
        rest = None
        if report.cuts_runs(sel):
            picked = (e for e in self.store.iter_events_matching(narrowed) if picks(e))
            taken = report.whole_runs(picked, runs, sel)
            whole, rest = {i: runs[i] for i in taken}, sorted(taken) or None

        def events() -> Iterator[Event]:
            selected = (e for e in self.store.iter_events_matching(narrowed) if picks(e))
            if rest is None:
                yield from selected
                return
            more = self.store.iter_events_matching(EventFilter(run_ids=rest))
            last = 0
            for e in heapq.merge(selected, more, key=lambda e: e.id):
                if e.id != last:
                    yield e
                last = e.id

        tally = tallied(whole)
        for e in events():
            tally.see(e)
        return report.Export(
            header={
                "title": "flannel-bot audit report",
                "selection": sel.describe(),
                "generated_at": iso(now),
                "chain": self._chain(now),
                "summary": tally.summary(now),
            },
            tally=tally,
            # events recorded after the tally (this command's own) are not in its summary
            events=lambda: itertools.takewhile(lambda e: e.id <= tally.last_id, events()),
        )

    def report(self, asked: Mapping[str, str], who: Requester | None = None) -> dict[str, Any]:
        """The audit report for a validated selection (see `commands.AuditReport`), confined to
        what `who` may read where they asked (bot.service.audit_scope; None: a local caller).
        Every run it touches in its scope is whole. A selection of more than
        `max_report_events` events is summarised (`report.summarised`: a line per run, the
        events counted by kind, how to export them all), read as an export reads it."""
        sel, now, narrowed = self._narrowed(asked, who)
        if self.max_report_events:
            count = self.store.count_matching(narrowed)
            if count > self.max_report_events:
                export = self._export(sel, now, narrowed, report.SummaryTally)
                return report.summarised(export, sel, count, self.max_report_events)
        candidates = self.store.events_matching(narrowed)
        ids = sorted({e.run_id for e in candidates if e.run_id is not None})
        # a big selection reads every run at once rather than naming thousands in SQL
        runs = self.store.runs_by_id(ids=ids if len(ids) <= 5000 else None)
        events = report.select(candidates, runs, sel, now)
        whole = report.whole_runs(events, runs, sel)
        if whole and report.cuts_runs(sel):  # the rest: approvals from elsewhere, later steps
            more = self.store.events_matching(EventFilter(run_ids=sorted(whole)))
            events = report.merge(events, more)
        return report.build(events, {i: runs[i] for i in whole}, sel, self._chain(now), now)

    def _diagnose(
        self, cluster: Cluster, only: Sequence[str], deep: bool, who: Requester
    ) -> dict[str, Any]:
        """Evidence from the API and the nodes, findings ranked root cause first."""
        listed = cluster.reader.list_nodes()
        known = {n.name for n in listed}
        unknown = [n for n in only if n not in known]
        if unknown:
            where = f"cluster {cluster.name}" if self.clusters.many else "the cluster"
            raise UnknownNode(
                f"node `{unknown[0]}` is not in {where}; known nodes: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        ahead = cluster.logs_ahead(LOG_TAIL) if cluster.logs_ahead is not None else None
        try:
            evidence = collect(
                cluster.reader, cluster.prober, only, deep, known=listed, logs_ahead=ahead
            )
        finally:
            if ahead is not None:
                ahead.close()
        view = diagnosis_view(
            evidence, cluster.engine.registry, only, cluster.name, self.clusters.many
        )
        counts = view["summary"]
        self.store.record(  # what was seen, for the incident's record
            EventKind.DIAGNOSED,
            actor=who.user,
            source=who.source,
            data={
                "cluster": cluster.name,
                "summary": f"{counts['critical']} critical, {counts['warning']} warning, "
                f"{counts['info']} info on {counts['nodes']} nodes"
                + (f" (asked about {', '.join(only)})" if only else ""),
                "findings": [
                    {k: f[k] for k in ("id", "severity", "nodes", "summary")}
                    | {"fix": f["fix"]["command"] or f["fix"]["manual"]}
                    for f in view["findings"]
                ],
                "gaps": view["gaps"],
            },
        )
        return view
