"""The replies' data: plain JSON views of evidence, findings, plans and runs for the templates."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.ports.store import RunRecord
from flannel_bot.runs.actions import Risk
from flannel_bot.runs.distributions import wrong_on
from flannel_bot.runs.plan import Plan
from flannel_bot.runs.registry import Registry
from flannel_bot.service import report


def diagnosis_view(
    ev: Evidence,
    registry: Registry,
    only: Sequence[str] = (),
    cluster: str = "default",
    name_cluster: bool = False,
) -> dict[str, Any]:
    """The diagnose reply: findings as JSON, runbooks offered only where one is installed.
    With `name_cluster` (a bot serving several), each fix names the cluster it is for."""
    findings = [f.to_json() for f in diagnose(ev)]
    known = {rb.id for rb in registry.all()}
    distribution = ev.distribution()
    for f in findings:
        f["fix"]["then"] = None
        manual = wrong_on(f["fix"]["runbook"] or "", distribution)
        if manual:  # the runbook would refuse here: offer what to do by hand instead
            said = f["fix"]["manual"]
            manual = f"{said}. On {distribution}: {manual}" if said else manual
            f["fix"].update(runbook=None, params={}, command=None, manual=manual)
        elif f["fix"]["runbook"] not in known:
            f["fix"].update(runbook=None, command=None)
        elif (
            f["certainty"] == "inferred"
            and registry.get(f["fix"]["runbook"]).risk is Risk.DESTRUCTIVE
        ):
            confirm_first(f, "node.check" in known)
        if name_cluster:
            for key in ("command", "then"):
                if f["fix"][key]:
                    f["fix"][key] += f" --cluster {cluster}"
        f["fix"]["cluster"] = cluster if name_cluster else None
    if only:
        findings = [f for f in findings if not f["nodes"] or set(f["nodes"]) & set(only)]
    counts = {
        s: sum(1 for f in findings if f["severity"] == s) for s in ("critical", "warning", "info")
    }
    return {
        "cluster": cluster,
        "source": ev.source,
        "nodes": [r for r in node_rows(ev) if not only or r["name"] in only],
        "findings": findings,
        "gaps": ev.gaps,
        "summary": {**counts, "nodes": len(ev.nodes), "probed": len(ev.probes)},
    }


def confirm_first(finding: dict[str, Any], can_check: bool) -> None:
    """Never a destructive fix first for a cause only inferred from a log line or an event:
    offer the read-only check of the node (node.check), and the fix for after it confirms."""
    fix = finding["fix"]
    nodes = finding["nodes"]
    fix["then"] = fix["command"]
    if can_check and len(nodes) == 1:
        fix.update(
            runbook="node.check",
            params={"node": nodes[0]},
            command=f"run node.check node={nodes[0]}",
        )
    else:
        fix.update(runbook=None, params={}, command=None)
        fix["manual"] = f"{fix['manual']} (confirm on the node first, then: /flannel {fix['then']})"
        fix["then"] = None


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
    run = asked.get("run")
    return report.Selection(
        since=report.parse_span(asked["since"]) if "since" in asked else None,
        start=report.parse_moment(asked["from"]) if "from" in asked else None,
        end=report.parse_moment(asked["to"]) if "to" in asked else None,
        run_id=int(run.lstrip("#")) if run else None,
        cluster=asked.get("cluster"),
        node=asked.get("node"),
        runbook=asked.get("runbook"),
        user=asked.get("user"),
        channel=asked.get("channel"),
        thread=asked.get("thread"),
        fields=dict(asked),
    )


def node_rows(ev: Evidence) -> list[dict[str, Any]]:
    """One row per node for the diagnose reply: readiness, podCIDR, flannel's pod state."""
    pods = ev.flannel_pods_by_node()
    rows = []
    for node in ev.nodes:
        pod = pods.get(node.name)
        state = "none"
        if pod is not None:
            c = next((c for c in pod.containers if not c.init), None)
            state = (
                "Ready"
                if c and c.ready
                else (
                    f"{(c.reason or c.state) if c else pod.phase} ({c.restart_count if c else 0} "
                    "restarts)"
                )
            )
        rows.append(
            {
                "name": node.name,
                "ready": node.ready,
                "pod_cidr": node.pod_cidr,
                "flannel": state,
                "probed": node.name in ev.probes,
                "internal_ip": node.internal_ip,
            }
        )
    return rows
