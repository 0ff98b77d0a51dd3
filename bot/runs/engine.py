"""The runbook engine: plans, runs read steps, waits for approval, applies actions, proves them.

Run state lives in the store, so every decision is a transaction: a run moves between states only
inside `Store.transaction()`, together with the audit events that describe the move. Two approvers
racing each other, in threads or processes, are serialised there and only one of them starts the
destructive part. A process that dies mid-step leaves its run `running` with a dead owner; the next
process to start marks it `interrupted` and never re-applies it.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from bot.diagnosis.collect import collect
from bot.diagnosis.findings import Finding
from bot.diagnosis.rules import diagnose
from bot.errors import (
    ApprovalRefused,
    BotError,
    ExecutorError,
    InvalidState,
    NotAllowed,
    TargetBusy,
    UnknownNode,
    UserError,
)
from bot.ports.clock import Clock, iso, parse_iso
from bot.ports.cluster import ClusterReader, KubeExecutor
from bot.ports.nodes import CommandResult, NodeExecutor
from bot.runs.actions import (
    Action,
    CreateObject,
    DeletePod,
    Disruption,
    ListPods,
    PatchConfigMap,
    PatchDaemonSet,
    Risk,
    RunOnNode,
    WaitForPod,
    WriteFile,
)
from bot.runs.params import node_names_in, parse_params
from bot.runs.plan import Plan, PlannedStep, build_plan
from bot.runs.policy import Policy
from bot.runs.registry import Registry
from bot.runs.runbook import Runbook
from bot.store import Store, Tx
from bot.store.database import RunRecord

T = TypeVar("T")
AWAITING = "awaiting_approval"
RUNNING = "running"
TERMINAL = frozenset({"succeeded", "failed", "denied", "expired", "cancelled", "interrupted"})


@dataclass(frozen=True)
class Requester:
    """Who asked, and from where (adapter, channel, thread): recorded with every event."""

    user: str
    source: Mapping[str, Any]


class StepFailed(BotError):
    """An action failed or a post-check did not pass before the step's deadline."""


class LiveFacts:
    """The read-only view planners and checks get: the cluster through the executors."""

    def __init__(self, kube: ClusterReader, nodes: NodeExecutor, probe: bool = True) -> None:
        self._kube = kube
        self._nodes = nodes
        self.probes = probe

    @property
    def kube(self) -> ClusterReader:
        return self._kube

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        return self._nodes.run(node, argv, timeout)

    def diagnose(self, nodes: Sequence[str] = ()) -> list[Finding]:
        return diagnose(collect(self._kube, self._nodes if self.probes else None, nodes))


class Engine:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        policy: Policy,
        kube: KubeExecutor,
        nodes: NodeExecutor,
        clock: Clock,
        owner: str,
        owner_alive: Callable[[str], bool],
        check_interval: float = 1.0,
        probe_nodes: bool = True,
        cluster: str = "default",
    ) -> None:
        """`probe_nodes=False` where the node executor is a recording that cannot run diagnose's
        probes: diagnose-verify then judges by the API alone. `cluster` names the cluster the
        executors reach: plans, runs, their change locks and audit events carry it."""
        self.cluster = cluster
        self.store = store
        self.registry = registry
        self.policy = policy
        self.kube = kube
        self.nodes = nodes
        self.clock = clock
        self.owner = owner
        self.owner_alive = owner_alive
        self.check_interval = check_interval
        self.facts = LiveFacts(kube, nodes, probe_nodes)

    # -- planning -------------------------------------------------------------------------------

    def prepare(self, ref: str, raw_params: Mapping[str, str]) -> Plan:
        """Validate parameters against the runbook and the cluster, then render the plan."""
        runbook = self.registry.get(ref)
        params = parse_params(runbook.params, raw_params, runbook.ref)
        named = node_names_in(params)
        if named:
            known = sorted(n.name for n in self.kube.list_nodes())
            for name in named:
                if name not in known:
                    raise UnknownNode(
                        f"node `{name}` is not in the cluster; known nodes: "
                        f"{', '.join(known) or 'none'}"
                    )
        return build_plan(runbook, params, self.facts, self.cluster)

    def plan(self, ref: str, raw_params: Mapping[str, str], who: Requester) -> Plan:
        plan = self.prepare(ref, raw_params)
        with self.store.transaction() as tx:
            tx.append_event(
                "plan",
                actor=who.user,
                source=dict(who.source),
                data={"cluster": self.cluster, "plan": plan.to_json(), "plan_hash": plan.hash},
            )
        return plan

    # -- starting and advancing -----------------------------------------------------------------

    def start(self, ref: str, raw_params: Mapping[str, str], who: Requester) -> RunRecord:
        runbook = self.registry.get(ref)
        self.policy.check_run(who.user, runbook)
        plan = self.prepare(ref, raw_params)
        with self.store.transaction() as tx:
            run_id = tx.insert_run(
                cluster=self.cluster,
                runbook=runbook.id,
                version=str(runbook.version),
                code_hash=runbook.code_hash,
                params=dict(raw_params),
                requester=who.user,
                source=dict(who.source),
                plan=plan.to_json(),
                plan_hash=plan.hash,
                status=RUNNING,
                approvals_required=self.policy.approvals_required(runbook),
                owner=self.owner,
            )
            if plan.changes_anything:
                tx.lock_targets(self._locks(plan), run_id, who.user)
            tx.append_event(
                "run_started",
                actor=who.user,
                run_id=run_id,
                source=dict(who.source),
                data={
                    "cluster": self.cluster,
                    "runbook": runbook.ref,
                    "code_hash": runbook.code_hash,
                    "params": dict(raw_params),
                    "plan_hash": plan.hash,
                    "plan": plan.to_json(),
                },
            )
        self._advance(run_id, plan)
        return self.store.run(run_id)

    def _locks(self, plan: Plan) -> list[str]:
        """Change locks are per cluster: node w2 of prod-eu is not node w2 of prod-us."""
        return [f"{t}@{self.cluster}" for t in plan.targets]

    def _advance(self, run_id: int, plan: Plan) -> None:
        run = self.store.run(run_id)
        # A plan with any gated step is approved as a whole, before its first change: an
        # approver never reviews a plan that is already half applied.
        gated = any(self.policy.gates(s.risk) and s.actions for s in plan.steps)
        for ps in plan.steps[run.next_step :]:
            changes = ps.risk is not Risk.READ and bool(ps.actions)
            if gated and changes and run.approved_plan_hash != plan.hash:
                self._await_approval(run_id, plan, ps)
                return
            if run.cancel_requested:
                self._finish(
                    run_id, "cancelled", "run_cancelled", actor=None, data={"before_step": ps.index}
                )
                return
            try:
                self._run_step(run_id, plan, ps)
            except (StepFailed, ExecutorError) as exc:
                self._finish(
                    run_id,
                    "failed",
                    "run_failed",
                    actor=None,
                    error=str(exc),
                    data={"step": ps.index, "error": str(exc)},
                )
                return
            except Exception as exc:
                self._finish(
                    run_id,
                    "failed",
                    "run_crashed",
                    actor=None,
                    error=repr(exc),
                    data={"step": ps.index, "traceback": traceback.format_exc()},
                )
                raise
            run = self.store.run(run_id)
        changed = plan.changes_anything
        try:
            verified = self._verify(run_id, run.source, plan)
        except StepFailed as exc:
            self._finish(
                run_id,
                "failed",
                "run_failed",
                actor=None,
                error=str(exc),
                data={"step": "verify", "error": str(exc), "changed": changed},
            )
            return
        outcome = "changed" if changed else "no change: already in the desired state"
        self._finish(
            run_id,
            "succeeded",
            "run_succeeded",
            actor=None,
            data={"changed": changed, "outcome": outcome, "verified": verified},
        )

    def _verify(self, run_id: int, source: Mapping[str, Any], plan: Plan) -> str:
        """Re-run diagnose on the nodes the run is about; the findings the runbook fixes must be
        gone. Retried until the runbook's verify timeout: a restarted flannel takes a moment."""
        runbook = plan.runbook
        if not runbook.verifies:
            return ""
        nodes = list(node_names_in(plan.params))
        # after a change, give the cluster time to settle; with no change, look once
        wait = runbook.verify_timeout if plan.changes_anything else 0.0
        left, attempts = self._poll(
            lambda: [
                f
                for f in self.facts.diagnose(nodes)
                if f.id in runbook.verifies and (not nodes or set(f.nodes) & set(nodes))
            ],
            lambda found: not found,
            wait,
        )
        where = ", ".join(nodes) if nodes else "the cluster"
        detail = (
            f"diagnose on {where} shows none of {', '.join(runbook.verifies)}"
            if not left
            else "; ".join(f"{f.id}: {f.summary}" for f in left)
        )
        if not self.facts.probes:
            detail += " (judged from the API alone: this cluster's nodes cannot be probed)"
        with self.store.transaction() as tx:
            tx.append_event(
                "verify",
                actor=None,
                run_id=run_id,
                source=dict(source),
                data={
                    "ok": not left,
                    "detail": detail,
                    "attempts": attempts,
                    "nodes": nodes,
                    "findings": [f.to_json() for f in left],
                },
            )
        if left:
            first = left[0]
            lead = (
                "the fix did not take"
                if plan.changes_anything
                else "nothing here needed changing, yet diagnose still shows the problem"
            )
            raise StepFailed(
                f"{lead}: {detail}. Evidence: "
                + "; ".join(f"{e.source}: {e.text}" for e in first.evidence[:3])
                + f". Next: run `diagnose {' '.join(nodes)}`".rstrip()
                + " and follow its first finding"
                + (f" (manual step: {first.fix.manual})" if first.fix.manual else "")
            )
        return detail

    def _await_approval(self, run_id: int, plan: Plan, ps: PlannedStep) -> None:
        runbook = plan.runbook
        expires = self.clock.now() + self.policy.approval_ttl
        with self.store.transaction() as tx:
            run = tx.update_run(
                run_id, status=AWAITING, owner=None, current_step=None, expires_at=iso(expires)
            )
            tx.append_event(
                "approval_requested",
                actor=None,
                run_id=run_id,
                source=run.source,
                data={
                    "plan_hash": plan.hash,
                    "step": ps.index,
                    "step_title": ps.step.title,
                    "risk": ps.risk.value,
                    "approvals_required": run.approvals_required,
                    "approvers": list(self.policy.approvers_for(runbook)),
                    "requester": run.requester,
                    "expires_at": iso(expires),
                },
            )

    def _run_step(self, run_id: int, plan: Plan, ps: PlannedStep) -> None:
        with self.store.transaction() as tx:
            run = tx.update_run(run_id, current_step=ps.index)
            tx.append_event(
                "step_started",
                actor=None,
                run_id=run_id,
                source=run.source,
                data={
                    "step": ps.index,
                    "of": len(plan.steps),
                    "title": ps.step.title,
                    "risk": ps.risk.value,
                    "actions": [a.render() for a in ps.actions],
                },
            )
        outcome = "no change: already in the desired state" if not ps.actions else "done"
        for action in ps.actions:
            self._apply(run_id, run.source, action, ps.step.timeout)
        if ps.step.check is not None and ps.actions:
            outcome = self._post_check(run_id, run.source, plan, ps)
        with self.store.transaction() as tx:
            tx.update_run(run_id, current_step=None, next_step=ps.index + 1)
            tx.append_event(
                "step_finished",
                actor=None,
                run_id=run_id,
                source=run.source,
                data={"step": ps.index, "title": ps.step.title, "outcome": outcome},
            )

    def _apply(
        self, run_id: int, source: Mapping[str, Any], action: Action, timeout: float
    ) -> None:
        with self.store.transaction() as tx:
            tx.append_event(
                "action_started",
                actor=None,
                run_id=run_id,
                source=dict(source),
                data={"action": action.to_json(), "render": action.render()},
            )
        result: dict[str, Any]
        if isinstance(action, RunOnNode):
            res = self.nodes.run(action.node, action.argv, timeout, sudo=action.sudo)
            result = {
                "exit_code": res.exit_code,
                "stdout": res.stdout,
                "stderr": res.stderr,
                "duration_s": res.duration_s,
            }
        elif isinstance(action, ListPods):
            pods = self.kube.list_pods(action.namespace, action.label_selector, action.node or None)
            lines = [
                f"{p.namespace}/{p.name} node={p.node} phase={p.phase} ready={p.ready} "
                f"restarts={p.restarts}"
                for p in pods
            ]
            result = {"exit_code": 0, "stdout": "\n".join(lines) or "(no pods)"}
        elif isinstance(action, DeletePod):
            self.kube.delete_pod(action.namespace, action.name)
            result = {"exit_code": 0, "stdout": f"pod {action.namespace}/{action.name} deleted"}
        elif isinstance(action, PatchConfigMap):
            self.kube.patch_configmap(action.namespace, action.name, dict(action.data))
            result = {
                "exit_code": 0,
                "stdout": f"configmap {action.namespace}/{action.name} patched",
            }
        elif isinstance(action, WriteFile):
            res = self.nodes.run(action.node, action.argv, timeout)
            result = {
                "exit_code": res.exit_code,
                "stdout": res.stdout or f"wrote {action.path} on {action.node}",
                "stderr": res.stderr,
                "duration_s": res.duration_s,
            }
        elif isinstance(action, WaitForPod):
            result = self._wait_for_pod(action, timeout)
        elif isinstance(action, Disruption):
            result = {"exit_code": 0, "stdout": f"accepted: {action.what}"}
        elif isinstance(action, CreateObject):
            self.kube.create_object(action.obj)
            result = {"exit_code": 0, "stdout": f"created {action.kind} {action.name}"}
        elif isinstance(action, PatchDaemonSet):
            self.kube.patch_daemonset(action.namespace, action.name, json.loads(action.patch))
            result = {
                "exit_code": 0,
                "stdout": f"daemonset {action.namespace}/{action.name} patched",
            }
        else:  # pragma: no cover - a new Action type without an applier is a bug
            raise TypeError(f"no applier for {type(action).__name__}")
        with self.store.transaction() as tx:
            tx.append_event(
                "action_finished",
                actor=None,
                run_id=run_id,
                source=dict(source),
                data={"render": action.render(), **result},
            )
        if result["exit_code"] != 0 and not (isinstance(action, RunOnNode) and action.may_fail):
            raise StepFailed(
                f"`{action.render()}` exited {result['exit_code']}: "
                f"{(result.get('stderr') or result.get('stdout') or '').strip()[:300]}"
            )

    def _poll(
        self, probe: Callable[[], T], done: Callable[[T], bool], timeout: float
    ) -> tuple[T, int]:
        """`probe()` until `done` says so or `timeout` seconds have passed (always once):
        the last result and how many attempts it took."""
        deadline = self.clock.now() + timedelta(seconds=timeout)
        attempts = 0
        while True:
            attempts += 1
            result = probe()
            if done(result) or self.clock.now() >= deadline:
                return result, attempts
            self.clock.sleep(self.check_interval)

    def _wait_for_pod(self, action: WaitForPod, timeout: float) -> dict[str, Any]:
        pods, _ = self._poll(
            lambda: self.kube.list_pods(action.namespace, action.label_selector, action.node),
            lambda found: any(p.ready and p.name not in action.replacing for p in found),
            timeout,
        )
        ready = [p for p in pods if p.ready and p.name not in action.replacing]
        if ready:
            return {"exit_code": 0, "stdout": f"pod {ready[0].name} on {action.node} is Ready"}
        seen = "; ".join(f"{p.name} {p.phase} ready={p.ready}" for p in pods) or "no pods"
        return {
            "exit_code": 1,
            "stdout": "",
            "stderr": f"no new Ready pod on {action.node} within {timeout:g}s; last saw: {seen}",
        }

    def _post_check(
        self, run_id: int, source: Mapping[str, Any], plan: Plan, ps: PlannedStep
    ) -> str:
        check = ps.step.check
        assert check is not None
        result, attempts = self._poll(
            lambda: check(self.facts, plan.params, ps.actions),
            lambda r: r.ok,
            ps.step.timeout,
        )
        with self.store.transaction() as tx:
            tx.append_event(
                "check",
                actor=None,
                run_id=run_id,
                source=dict(source),
                data={
                    "step": ps.index,
                    "check": check.__name__,
                    "ok": result.ok,
                    "detail": result.detail,
                    "attempts": attempts,
                },
            )
        if not result.ok:
            raise StepFailed(
                f"post-check `{check.__name__}` of step {ps.index + 1} did not pass "
                f"within {ps.step.timeout:g}s: {result.detail}"
            )
        return f"verified: {result.detail}"

    def _finish(
        self,
        run_id: int,
        status: str,
        kind: str,
        actor: str | None,
        data: dict[str, Any],
        error: str | None = None,
    ) -> RunRecord:
        with self.store.transaction() as tx:
            run = tx.update_run(run_id, status=status, owner=None, current_step=None, error=error)
            tx.release_targets(run_id)
            tx.append_event(
                kind, actor=actor, run_id=run_id, source=run.source, data={"status": status, **data}
            )
        return run

    # -- approvals ------------------------------------------------------------------------------

    def approve(self, run_id: int, who: Requester, plan_hash: str | None = None) -> RunRecord:
        """Count an approval; the approval that completes the quorum resumes the run here."""
        self.expire_due()
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            if run.cluster != self.cluster:  # the service routes by run; this is the guard
                raise InvalidState(
                    f"run {run_id} is on cluster {run.cluster}, not {self.cluster}; it can only "
                    f"be approved where it runs"
                )
            runbook = self.registry.get(run.ref)
            self._require_awaiting(run, "approve")
            self.policy.check_approve(who.user, run.requester, runbook)
            if plan_hash and not run.plan_hash.removeprefix("sha256:").startswith(
                plan_hash.removeprefix("sha256:")
            ):
                raise ApprovalRefused(
                    f"the plan of run {run_id} changed since you saw it (you approved "
                    f"{plan_hash[:19]}, the run now has {run.plan_hash[:19]}); check "
                    f"`status {run_id}` and approve again"
                )
            if not tx.add_approval(run_id, who.user, run.plan_hash):
                raise InvalidState(
                    f"{who.user} already approved run {run_id}; it is waiting for "
                    f"{run.approvals_required} approval(s) in all"
                )
            valid = self._valid_approvals(tx, run)
            tx.append_event(
                "approved",
                actor=who.user,
                run_id=run_id,
                source=dict(who.source),
                data={
                    "plan_hash": run.plan_hash,
                    "approvals": len(valid),
                    "required": run.approvals_required,
                },
            )
            quorum = len(valid) >= run.approvals_required
            if quorum:
                tx.update_run(
                    run_id, status=RUNNING, owner=self.owner, approved_plan_hash=run.plan_hash
                )
        if quorum:
            self._resume(run_id)
        return self.store.run(run_id)

    def _valid_approvals(self, tx: Tx, run: RunRecord) -> list[str]:
        """Approvals of the current plan that have not expired and whose approver still may."""
        oldest = self.clock.now() - self.policy.approval_ttl
        runbook = self.registry.get(run.ref)
        valid = []
        for a in tx.approvals(run.id, run.plan_hash):
            if parse_iso(a.decided_at) < oldest:
                continue
            try:
                self.policy.check_approve(a.approver, run.requester, runbook)
            except (NotAllowed, ApprovalRefused):
                continue
            valid.append(a.approver)
        return valid

    def _resume(self, run_id: int) -> None:
        """Re-plan against the live cluster and re-check rights before applying anything."""
        run = self.store.run(run_id)
        try:
            plan = self.prepare(run.ref, run.params)
        except UserError as exc:
            self._finish(
                run_id,
                "failed",
                "run_failed",
                actor=None,
                error=str(exc),
                data={"error": f"could not re-plan before applying: {exc}"},
            )
            raise
        if plan.hash != run.approved_plan_hash:
            self._replan(run_id, run, plan)
            raise ApprovalRefused(
                f"the plan of run {run_id} changed after it was requested (the cluster or the "
                f"runbook code changed), so the approval no longer applies; the new plan "
                f"{plan.short_hash} needs a fresh approval (`status {run_id}` shows it)"
            )
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            approvers = self._valid_approvals(tx, run)
            if len(approvers) < run.approvals_required:
                tx.update_run(run_id, status=AWAITING, owner=None, approved_plan_hash=None)
                tx.append_event(
                    "approval_revoked",
                    actor=None,
                    run_id=run_id,
                    source=run.source,
                    data={"valid_approvers": approvers, "required": run.approvals_required},
                )
        if len(approvers) < run.approvals_required:
            raise ApprovalRefused(
                f"run {run_id} no longer has {run.approvals_required} valid approval(s) (some "
                f"expired or the approver lost the role); it is waiting for approval again"
            )
        self._advance(run_id, plan)

    def _replan(self, run_id: int, run: RunRecord, plan: Plan) -> None:
        expires = self.clock.now() + self.policy.approval_ttl
        try:
            self._store_new_plan(run_id, run, plan, expires)
        except TargetBusy as exc:
            self._finish(
                run_id,
                "failed",
                "run_failed",
                actor=None,
                error=str(exc),
                data={"error": f"the new plan cannot lock its targets: {exc}"},
            )
            raise

    def _store_new_plan(self, run_id: int, run: RunRecord, plan: Plan, expires: datetime) -> None:
        with self.store.transaction() as tx:
            tx.update_run(
                run_id,
                status=AWAITING,
                owner=None,
                plan=plan.to_json(),
                plan_hash=plan.hash,
                approved_plan_hash=None,
                expires_at=iso(expires),
            )
            tx.release_targets(run_id)
            tx.lock_targets(self._locks(plan), run_id, run.requester)
            tx.append_event(
                "plan_changed",
                actor=None,
                run_id=run_id,
                source=run.source,
                data={
                    "old_plan_hash": run.plan_hash,
                    "plan_hash": plan.hash,
                    "plan": plan.to_json(),
                    "expires_at": iso(expires),
                },
            )

    def deny(self, run_id: int, who: Requester, reason: str) -> RunRecord:
        self.expire_due()
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            self._require_awaiting(run, "deny")
            if who.user == run.requester:
                raise InvalidState(
                    f"you requested run {run_id}: use `cancel {run_id}` to withdraw it"
                )
            self.policy.check_approve(who.user, run.requester, self.registry.get(run.ref))
            tx.update_run(run_id, status="denied", owner=None, error=f"denied by {who.user}")
            tx.release_targets(run_id)
            tx.append_event(
                "denied",
                actor=who.user,
                run_id=run_id,
                source=dict(who.source),
                data={"status": "denied", "reason": reason, "plan_hash": run.plan_hash},
            )
        return self.store.run(run_id)

    def cancel(self, run_id: int, who: Requester) -> RunRecord:
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            if run.status in TERMINAL:
                raise InvalidState(f"run {run_id} already ended ({run.status})")
            if who.user != run.requester:
                self.policy.check_approve(who.user, run.requester, self.registry.get(run.ref))
            if run.status == RUNNING:
                tx.update_run(run_id, cancel_requested=True)
                tx.append_event(
                    "cancel_requested",
                    actor=who.user,
                    run_id=run_id,
                    source=dict(who.source),
                    data={"step": run.current_step},
                )
            else:
                tx.update_run(run_id, status="cancelled", owner=None)
                tx.release_targets(run_id)
                tx.append_event(
                    "run_cancelled",
                    actor=who.user,
                    run_id=run_id,
                    source=dict(who.source),
                    data={"status": "cancelled"},
                )
        return self.store.run(run_id)

    def _require_awaiting(self, run: RunRecord, verb: str) -> None:
        if run.status == AWAITING:
            return
        if run.status == "expired":
            raise ApprovalRefused(
                f"the approval window of run {run.id} closed at {run.expires_at}; nothing was "
                f"applied. Start a new run to try again"
            )
        if run.status == RUNNING:
            raise InvalidState(f"run {run.id} is already running; there is nothing to {verb}")
        if run.status == "interrupted":
            raise InvalidState(
                f"run {run.id} was interrupted mid-step and is never resumed; check the node "
                f"and start a new run (`run {run.ref} ...`)"
            )
        raise InvalidState(f"run {run.id} has ended ({run.status}); there is nothing to {verb}")

    # -- housekeeping ---------------------------------------------------------------------------

    def expire_due(self) -> list[int]:
        now = self.clock.now()
        expired = []
        with self.store.transaction() as tx:
            for run in tx.runs_with_status(AWAITING):
                if run.expires_at and parse_iso(run.expires_at) <= now:
                    tx.update_run(run.id, status="expired", owner=None)
                    tx.release_targets(run.id)
                    tx.append_event(
                        "run_expired",
                        actor=None,
                        run_id=run.id,
                        source=run.source,
                        data={"status": "expired", "expires_at": run.expires_at},
                    )
                    expired.append(run.id)
        return expired

    def recover(self) -> list[int]:
        """Mark runs whose owning process died as interrupted. They are never re-applied."""
        interrupted = []
        with self.store.transaction() as tx:
            for run in tx.runs_with_status(RUNNING):
                if run.owner and self.owner_alive(run.owner):
                    continue
                step = run.current_step if run.current_step is not None else run.next_step
                tx.update_run(
                    run.id,
                    status="interrupted",
                    owner=None,
                    current_step=None,
                    error=f"the bot process died during step {step + 1}",
                )
                tx.release_targets(run.id)
                tx.append_event(
                    "run_interrupted",
                    actor=None,
                    run_id=run.id,
                    source=run.source,
                    data={
                        "status": "interrupted",
                        "step": step,
                        "mid_step": run.current_step is not None,
                        "note": "actions of this step may have been partly applied; nothing "
                        "is re-applied without a new run and a new approval",
                    },
                )
                interrupted.append(run.id)
        return interrupted

    def runbook_of(self, run: RunRecord) -> Runbook:
        return self.registry.get(run.ref)
