"""The service every adapter calls: a command in, a structured reply out, everything audited.

Adapters (Slack, the shell, the CLI, tests) only parse identity and render replies; the behaviour of
`/flannel ...` is decided here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from bot.core import commands as c
from bot.core import report
from bot.core.clock import iso
from bot.core.collect import collect
from bot.core.engine import Engine, Requester
from bot.core.evidence import Evidence
from bot.core.executors import ClusterReader, NodeExecutor
from bot.core.params import describe_params
from bot.core.plan import Plan
from bot.core.registry import Registry
from bot.core.rules import diagnose, node_rows
from bot.errors import CommandSyntaxError, UnknownNode, UserError
from bot.store import Store
from bot.store.database import RunRecord


@dataclass(frozen=True)
class Reply:
    """`kind` names the template that renders it; `data` is plain JSON."""

    kind: str
    data: dict[str, Any]
    ok: bool = True


def diagnosis_view(ev: Evidence, registry: Registry, only: Sequence[str] = ()) -> dict[str, Any]:
    """The diagnose reply: findings as JSON, runbooks offered only where one is installed."""
    findings = [f.to_json() for f in diagnose(ev)]
    known = {rb.id for rb in registry.all()}
    for f in findings:
        if f["fix"]["runbook"] not in known:
            f["fix"].update(runbook=None, command=None)
    if only:
        findings = [f for f in findings if not f["nodes"] or set(f["nodes"]) & set(only)]
    counts = {
        s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "warning", "info")
    }
    return {
        "source": ev.source,
        "nodes": [r for r in node_rows(ev) if not only or r["name"] in only],
        "findings": findings,
        "gaps": ev.gaps,
        "summary": {**counts, "nodes": len(ev.nodes), "probed": len(ev.probes)},
    }


def plan_view(plan: Plan) -> dict[str, Any]:
    return {
        **plan.to_json(),
        "ref": plan.runbook.ref,
        "plan_hash": plan.hash,
        "short_hash": plan.short_hash,
        "summary": plan.runbook.summary,
    }


def run_view(run: RunRecord) -> dict[str, Any]:
    return {
        **dataclasses.asdict(run),
        "ref": run.ref,
        "short_hash": run.plan_hash.removeprefix("sha256:")[:12],
    }


def selection(asked: Mapping[str, str]) -> report.Selection:
    """A report selection from `audit report`'s checked key=value pairs."""

    def moment(text: str) -> datetime:
        value = datetime.fromisoformat(text.replace(" ", "T").removesuffix("Z"))
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    run = asked.get("run")
    return report.Selection(
        since=report.parse_span(asked["since"]) if "since" in asked else None,
        start=moment(asked["from"]) if "from" in asked else None,
        end=moment(asked["to"]) if "to" in asked else None,
        run_id=int(run.lstrip("#")) if run else None,
        node=asked.get("node"),
        runbook=asked.get("runbook"),
        user=asked.get("user"),
        channel=asked.get("channel"),
        thread=asked.get("thread"),
        fields=dict(asked),
    )


class Service:
    """`reader` is what diagnose reads (the live API or a bundle); `prober` runs the node
    probes, or is None where nodes cannot be reached (a recorded cluster)."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        reader: ClusterReader | None = None,
        prober: NodeExecutor | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.reader = reader if reader is not None else cast(ClusterReader, engine.kube)
        self.prober = prober

    def handle(self, text: str | Sequence[str], who: Requester) -> Reply:
        """Parse and execute one `/flannel` command. User errors become an `error` reply."""
        line = text if isinstance(text, str) else " ".join(text)
        with self.store.transaction() as tx:
            tx.append_event("command", actor=who.user, source=dict(who.source), data={"text": line})
        try:
            words = c.split_words(text) if isinstance(text, str) else list(text)
            command = c.parse(words)
            self.engine.recover()
            self.engine.expire_due()
            return self.dispatch(command, who)
        except UserError as exc:
            usage = exc.usage if isinstance(exc, CommandSyntaxError) else None
            with self.store.transaction() as tx:
                tx.append_event(
                    "command_rejected",
                    actor=who.user,
                    source=dict(who.source),
                    data={"text": line, "error": str(exc), "error_type": type(exc).__name__},
                )
            return Reply(
                "error",
                {"message": str(exc), "usage": usage, "error_type": type(exc).__name__},
                ok=False,
            )

    def dispatch(self, command: c.Command, who: Requester) -> Reply:
        engine = self.engine
        match command:
            case c.Help(topic):
                verbs = [topic] if topic else list(c.USAGE)
                return Reply(
                    "help",
                    {
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
            case c.PlanRunbook(ref, params):
                return Reply("plan", plan_view(engine.plan(ref, params, who)))
            case c.RunRunbook(ref, params):
                return self._run_reply(engine.start(ref, params, who))
            case c.Approve(run_id, plan_hash):
                return self._run_reply(engine.approve(run_id, who, plan_hash))
            case c.Deny(run_id, reason):
                return self._run_reply(engine.deny(run_id, who, reason))
            case c.Cancel(run_id):
                return self._run_reply(engine.cancel(run_id, who))
            case c.Status(None):
                return Reply("runs", {"runs": [run_view(r) for r in self.store.recent_runs()]})
            case c.Status(run_id):
                assert run_id is not None
                return self._run_reply(self.store.run(run_id), status_only=True)
            case c.Audit("verify"):
                report = self.store.verify()
                return Reply(
                    "audit_verify",
                    dataclasses.asdict(report) | {"summary": report.describe()},
                    ok=report.ok,
                )
            case c.Audit("run", run_id):
                assert run_id is not None
                self.store.run(run_id)
                return Reply(
                    "audit_events",
                    {
                        "run_id": run_id,
                        "events": [dataclasses.asdict(e) for e in self.store.events(run_id=run_id)],
                    },
                )
            case c.Audit(_):
                events = self.store.events()[-50:]
                return Reply(
                    "audit_events",
                    {"run_id": None, "events": [dataclasses.asdict(e) for e in events]},
                )
            case c.Diagnose(nodes, deep):
                return Reply("diagnose", self._diagnose(nodes, deep, who))
            case c.AuditReport(selection, fmt):
                return Reply("audit_report", {"format": fmt, "report": self.report(selection)})
        raise AssertionError(f"unhandled command {command!r}")  # pragma: no cover

    def _run_reply(self, run: RunRecord, status_only: bool = False) -> Reply:
        """A run; `ok` is False when the command left it failed (not when merely looked at)."""
        view = run_view(run)
        view["events"] = [dataclasses.asdict(e) for e in self.store.events(run_id=run.id)]
        view["approvals"] = [dataclasses.asdict(a) for a in self._approvals(run)]
        return Reply("run", view, ok=status_only or run.status not in ("failed", "interrupted"))

    def _approvals(self, run: RunRecord) -> list[Any]:
        with self.store.transaction() as tx:
            return tx.approvals(run.id, run.plan_hash)

    def report(self, asked: Mapping[str, str]) -> dict[str, Any]:
        """The audit report for a validated selection (see `commands.AuditReport`)."""
        sel = selection(asked)
        now = self.engine.clock.now()
        start, end = sel.window(now)
        by_run = sel.run_id is not None or sel.runbook is not None or sel.node is not None
        matching: list[int] | None = None
        if by_run:  # runs first (few), narrowed in SQL, then checked exactly
            found = self.store.runs_by_id(
                ids=[sel.run_id] if sel.run_id is not None else None,
                runbook=sel.runbook,
                plan_mentions=f'"{sel.node}"' if sel.node else None,
            )
            matching = [i for i, r in found.items() if report.run_matches(r, sel)]
        candidates = self.store.events_matching(
            start=iso(start) if start else None,
            end=iso(end) if end else None,
            run_ids=matching,
            actor_or_runs=(sel.user, self.store.runs_involving(sel.user)) if sel.user else None,
            channel=sel.channel,
            thread=sel.thread,
        )
        ids = sorted({e.run_id for e in candidates if e.run_id is not None})
        # a big selection reads every run at once rather than naming thousands in SQL
        runs = self.store.runs_by_id(ids=ids if len(ids) <= 5000 else None)
        events = report.select(candidates, runs, sel, now)
        chain = self.store.verify()
        return report.build(
            events,
            runs,
            sel,
            {
                "ok": chain.ok,
                "head": chain.head_hash,
                "events": chain.events,
                "problem": chain.problem,
                "checked_at": iso(now),
            },
            now,
        )

    def _diagnose(self, only: Sequence[str], deep: bool, who: Requester) -> dict[str, Any]:
        """Evidence from the API and the nodes, findings ranked root cause first."""
        known = {n.name for n in self.engine.kube.list_nodes()}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise UnknownNode(
                f"node `{unknown[0]}` is not in the cluster; known nodes: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        evidence = collect(self.reader, self.prober, only, deep)
        view = diagnosis_view(evidence, self.engine.registry, only)
        counts = view["summary"]
        with self.store.transaction() as tx:  # what was seen, for the incident's record
            tx.append_event(
                "diagnosed",
                actor=who.user,
                source=dict(who.source),
                data={
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
