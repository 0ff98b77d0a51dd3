"""The service every adapter calls: a command in, a structured reply out, everything audited.

Adapters (Slack, the shell, the CLI, tests) only parse identity and render replies; the behaviour of
`/flannel ...` is decided here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.core import commands as c
from bot.core.engine import Engine, Requester
from bot.core.params import describe_params
from bot.core.plan import Plan
from bot.errors import CommandSyntaxError, UnknownNode, UserError
from bot.store import Store
from bot.store.database import RunRecord


@dataclass(frozen=True)
class Reply:
    """`kind` names the template that renders it; `data` is plain JSON."""

    kind: str
    data: dict[str, Any]
    ok: bool = True


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


class Service:
    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store

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
                        ]
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
            case c.Diagnose(nodes):
                return Reply("diagnose", self._diagnose(nodes))
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

    def _diagnose(self, nodes: Sequence[str]) -> dict[str, Any]:
        """A first look from the API: node readiness, podCIDRs and flannel pods per node."""
        kube = self.engine.kube
        all_nodes = kube.list_nodes()
        known = {n.name for n in all_nodes}
        unknown = [n for n in nodes if n not in known]
        if unknown:
            raise UnknownNode(
                f"node `{unknown[0]}` is not in the cluster; known nodes: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        selected = [n for n in all_nodes if not nodes or n.name in nodes]
        pods = kube.list_pods(None, "app=flannel")
        findings = []
        rows = []
        for node in selected:
            flannel = [p for p in pods if p.node == node.name]
            rows.append(
                {
                    "node": node.name,
                    "ready": node.ready,
                    "reason": node.ready_reason,
                    "pod_cidr": node.pod_cidr,
                    "flannel": [
                        {"name": p.name, "phase": p.phase, "ready": p.ready, "restarts": p.restarts}
                        for p in flannel
                    ],
                }
            )
            if not node.pod_cidr:
                findings.append(
                    {
                        "id": "podcidr-not-assigned",
                        "node": node.name,
                        "detail": "spec.podCIDR is empty, so flannel cannot lease a "
                        "subnet for this node",
                    }
                )
            if not flannel:
                findings.append(
                    {
                        "id": "flannel-pod-missing",
                        "node": node.name,
                        "detail": "no flannel pod runs on this node",
                    }
                )
            for p in flannel:
                if not p.ready:
                    findings.append(
                        {
                            "id": "flannel-pod-not-ready",
                            "node": node.name,
                            "detail": f"{p.namespace}/{p.name} is {p.phase}, not Ready "
                            f"({p.restarts} restarts)",
                            "fix": f"run flannel.restart-pods nodes={node.name}",
                        }
                    )
        return {"nodes": rows, "findings": findings}
