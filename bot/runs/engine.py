"""The runbook engine: a run's state machine. It plans, runs read steps, waits for approval,
applies actions (through `bot.runs.appliers`), and proves them.

Run state lives in the store, and every move between states is one `transition`: the run's row
and the audit event that describes the move commit together. Two approvers racing each other, in
threads or processes, are serialised there and only one of them starts the destructive part. A
process that dies mid-step leaves its run `running` with a dead owner; the next process to start
marks it `interrupted` and never re-applies it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from flannel_bot.errors import (
    ApprovalRefused,
    BotError,
    ExecutorError,
    InvalidState,
    NotAllowed,
    ReadRefused,
    TargetBusy,
    UnknownNode,
    UserError,
)
from flannel_bot.ports.clock import Clock, iso, parse_iso
from flannel_bot.ports.cluster import KubeExecutor
from flannel_bot.ports.nodes import NodeExecutor
from flannel_bot.ports.store import (
    TERMINAL,
    EventKind,
    Requester,
    RunRecord,
    RunStatus,
    Store,
    Tx,
)
from flannel_bot.runs.actions import Action, Risk, RunOnNode
from flannel_bot.runs.appliers import Reach, applier_for
from flannel_bot.runs.facts import LiveFacts
from flannel_bot.runs.params import node_names_in, parse_params
from flannel_bot.runs.plan import Plan, PlannedStep, build_plan, rendered
from flannel_bot.runs.policy import Policy
from flannel_bot.runs.registry import Registry
from flannel_bot.runs.runbook import Runbook

T = TypeVar("T")
AWAITING = RunStatus.AWAITING_APPROVAL
RUNNING = RunStatus.RUNNING

__all__ = ["TERMINAL", "Engine", "Requester", "StepFailed"]


class StepFailed(BotError):
    """An action failed or a post-check did not pass before the step's deadline."""


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
        node_access: str = "ssh",
    ) -> None:
        """`probe_nodes=False` where the node executor is a recording that cannot run diagnose's
        probes: diagnose-verify then judges by the API alone. `cluster` names the cluster the
        executors reach: plans, runs, their change locks and audit events carry it."""
        self.cluster = cluster
        self.node_access = node_access  # [nodes] access: plans show it and their hash binds it
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
        self.reach = Reach(kube, nodes, self._poll)

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
        return build_plan(runbook, params, self.facts, self.cluster, self.node_access)

    def plan(self, ref: str, raw_params: Mapping[str, str], who: Requester) -> Plan:
        plan = self.prepare(ref, raw_params)
        self.store.record(
            EventKind.PLAN,
            actor=who.user,
            source=who.source,
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
                status=str(RUNNING),
                approvals_required=self.policy.approvals_required(runbook),
                owner=self.owner,
            )
            if plan.changes_anything:
                tx.lock_targets(self._locks(plan), run_id, who.user)
            tx.record(
                EventKind.RUN_STARTED,
                actor=who.user,
                run_id=run_id,
                source=who.source,
                data={
                    "cluster": self.cluster,
                    "runbook": runbook.ref,
                    "code_hash": runbook.code_hash,
                    "params": dict(raw_params),
                    "plan_hash": plan.hash,
                    "plan": plan.to_json(),
                },
            )
        return self._advance(self.store.run(run_id), plan)

    def _locks(self, plan: Plan) -> list[str]:
        """Change locks are per cluster: node w2 of prod-eu is not node w2 of prod-us."""
        return [f"{t}@{self.cluster}" for t in plan.targets]

    def _advance(self, run: RunRecord, plan: Plan) -> RunRecord:
        """Run the plan's steps from where the run stands, until it ends or waits for approval."""
        # A plan with any gated step is approved as a whole, before its first change: an
        # approver never reviews a plan that is already half applied.
        gated = any(self.policy.gates(s.risk) and s.actions for s in plan.steps)
        for ps in plan.steps[run.next_step :]:
            changes = ps.risk is not Risk.READ and bool(ps.actions)
            if gated and changes and run.approved_plan_hash != plan.hash:
                return self._await_approval(run, plan, ps)
            if run.cancel_requested:
                return self._end(run.id, RunStatus.CANCELLED, EventKind.RUN_CANCELLED, {
                    "before_step": ps.index
                })  # fmt: skip
            try:
                run = self._run_step(run, plan, ps)
            except (StepFailed, ExecutorError) as exc:
                return self._end(
                    run.id,
                    RunStatus.FAILED,
                    EventKind.RUN_FAILED,
                    {"step": ps.index, "error": str(exc)},
                    error=str(exc),
                )
            except Exception as exc:
                self._end(
                    run.id,
                    RunStatus.FAILED,
                    EventKind.RUN_CRASHED,
                    {"step": ps.index, "traceback": traceback.format_exc()},
                    error=repr(exc),
                )
                raise
        changed = plan.changes_anything
        try:
            verified = self._verify(run, plan)
        except StepFailed as exc:
            return self._end(
                run.id,
                RunStatus.FAILED,
                EventKind.RUN_FAILED,
                {"step": "verify", "error": str(exc), "changed": changed},
                error=str(exc),
            )
        outcome = "changed" if changed else "no change: already in the desired state"
        return self._end(
            run.id,
            RunStatus.SUCCEEDED,
            EventKind.RUN_SUCCEEDED,
            {"changed": changed, "outcome": outcome, "verified": verified},
        )

    def _end(
        self,
        run_id: int,
        status: RunStatus,
        kind: EventKind,
        data: dict[str, Any],
        error: str | None = None,
    ) -> RunRecord:
        return self.store.transition(
            run_id, status, kind, data=data, owner=None, current_step=None, error=error
        )

    def _verify(self, run: RunRecord, plan: Plan) -> str:
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
        self.store.record(
            EventKind.VERIFY,
            actor=None,
            run_id=run.id,
            source=run.source,
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

    def _await_approval(self, run: RunRecord, plan: Plan, ps: PlannedStep) -> RunRecord:
        expires = self.clock.now() + self.policy.approval_ttl
        return self.store.transition(
            run.id,
            AWAITING,
            EventKind.APPROVAL_REQUESTED,
            data={
                "plan_hash": plan.hash,
                "step": ps.index,
                "step_title": ps.step.title,
                "risk": ps.risk.value,
                "approvals_required": run.approvals_required,
                "approvers": list(self.policy.approvers_for(plan.runbook)),
                "requester": run.requester,
                "expires_at": iso(expires),
            },
            owner=None,
            current_step=None,
            expires_at=iso(expires),
        )

    def _run_step(self, run: RunRecord, plan: Plan, ps: PlannedStep) -> RunRecord:
        run = self.store.transition(
            run.id,
            None,
            EventKind.STEP_STARTED,
            data={
                "step": ps.index,
                "of": len(plan.steps),
                "title": ps.step.title,
                "risk": ps.risk.value,
                "actions": [rendered(a, plan.node_access) for a in ps.actions],
            },
            current_step=ps.index,
        )
        outcome = ps.outcome_if_idle if not ps.actions else "done"
        for action in ps.actions:
            self._apply(run, action, ps.step.timeout, plan.node_access)
        if ps.step.check is not None and ps.actions:
            outcome = self._post_check(run, plan, ps)
        return self.store.transition(
            run.id,
            None,
            EventKind.STEP_FINISHED,
            data={"step": ps.index, "title": ps.step.title, "outcome": outcome},
            current_step=None,
            next_step=ps.index + 1,
        )

    def _apply(self, run: RunRecord, action: Action, timeout: float, via: str) -> None:
        """Record the action, carry it out, record what it did; the first record commits before
        anything is applied, so a crash mid-action leaves it in the log. `via`: the node
        transport, named in what is recorded as the plan names it."""
        applier = applier_for(action)
        shown = rendered(action, via)
        if applier is None:  # planning refuses these; reaching here is a bug
            raise TypeError(f"no applier for {type(action).__name__}")
        self.store.record(
            EventKind.ACTION_STARTED,
            actor=None,
            run_id=run.id,
            source=run.source,
            data={"action": action.to_json(), "render": shown},
        )
        result = applier(self.reach, action, timeout)
        self.store.record(
            EventKind.ACTION_FINISHED,
            actor=None,
            run_id=run.id,
            source=run.source,
            data={"render": shown, **result},
        )
        if result["exit_code"] != 0 and not (isinstance(action, RunOnNode) and action.may_fail):
            raise StepFailed(
                f"`{shown}` exited {result['exit_code']}: "
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

    def _post_check(self, run: RunRecord, plan: Plan, ps: PlannedStep) -> str:
        check = ps.step.check
        assert check is not None
        try:
            result, attempts = self._poll(
                lambda: check(self.facts, plan.params, ps.actions),
                lambda r: r.ok,
                ps.step.timeout,
            )
        except ReadRefused as exc:
            raise StepFailed(f"post-check `{check.__name__}` was refused: {exc}") from None
        self.store.record(
            EventKind.CHECK,
            actor=None,
            run_id=run.id,
            source=run.source,
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

    # -- approvals ------------------------------------------------------------------------------

    def approve(self, run_id: int, who: Requester, plan_hash: str | None = None) -> RunRecord:
        """Count an approval; the approval that completes the quorum resumes the run here."""
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            if run.cluster != self.cluster:  # the service routes by run; this is the guard
                raise InvalidState(
                    f"run {run_id} is on cluster {run.cluster}, not {self.cluster}; it can only "
                    f"be approved where it runs"
                )
            expired = self._expire_if_due(tx, run)
            if not expired:
                runbook = self.registry.get(run.ref)
                self._require_awaiting(run, "approve")
                self.policy.check_approve(who.user, run.requester, runbook)
                _refuse_same_login(run, who)
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
                quorum = len(valid) >= run.approvals_required
                started = {"owner": self.owner, "approved_plan_hash": run.plan_hash}
                run = tx.transition(
                    run_id,
                    RUNNING if quorum else None,
                    EventKind.APPROVED,
                    actor=who.user,
                    source=who.source,
                    data={
                        "plan_hash": run.plan_hash,
                        "approvals": len(valid),
                        "required": run.approvals_required,
                    },
                    **(started if quorum else {}),
                )
        if expired:
            self._require_awaiting(expired, "approve")
        if run.status == RUNNING:
            return self._resume(run)
        return run

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

    def _resume(self, run: RunRecord) -> RunRecord:
        """Re-plan against the live cluster and re-check rights before applying anything."""
        try:
            plan = self.prepare(run.ref, run.params)
        except UserError as exc:
            self._end(
                run.id,
                RunStatus.FAILED,
                EventKind.RUN_FAILED,
                {"error": f"could not re-plan before applying: {exc}"},
                error=str(exc),
            )
            raise
        if plan.hash != run.approved_plan_hash:
            self._replan(run, plan)
            raise ApprovalRefused(
                f"the plan of run {run.id} changed after it was requested (the cluster or the "
                f"runbook code changed), so the approval no longer applies; the new plan "
                f"{plan.short_hash} needs a fresh approval (`status {run.id}` shows it)"
            )
        with self.store.transaction() as tx:
            run = tx.get_run(run.id)
            approvers = self._valid_approvals(tx, run)
            if len(approvers) < run.approvals_required:
                tx.transition(
                    run.id,
                    AWAITING,
                    EventKind.APPROVAL_REVOKED,
                    data={"valid_approvers": approvers, "required": run.approvals_required},
                    owner=None,
                    approved_plan_hash=None,
                )
        if len(approvers) < run.approvals_required:
            raise ApprovalRefused(
                f"run {run.id} no longer has {run.approvals_required} valid approval(s) (some "
                f"expired or the approver lost the role); it is waiting for approval again"
            )
        return self._advance(run, plan)

    def _replan(self, run: RunRecord, plan: Plan) -> None:
        """Store the new plan, waiting for a fresh approval; a plan whose targets another run
        holds ends the run instead."""
        expires = self.clock.now() + self.policy.approval_ttl
        try:
            with self.store.transaction() as tx:
                tx.release_targets(run.id)
                tx.lock_targets(self._locks(plan), run.id, run.requester)
                tx.transition(
                    run.id,
                    AWAITING,
                    EventKind.PLAN_CHANGED,
                    data={
                        "old_plan_hash": run.plan_hash,
                        "plan_hash": plan.hash,
                        "plan": plan.to_json(),
                        "expires_at": iso(expires),
                    },
                    owner=None,
                    plan=plan.to_json(),
                    plan_hash=plan.hash,
                    approved_plan_hash=None,
                    expires_at=iso(expires),
                )
        except TargetBusy as exc:
            self._end(
                run.id,
                RunStatus.FAILED,
                EventKind.RUN_FAILED,
                {"error": f"the new plan cannot lock its targets: {exc}"},
                error=str(exc),
            )
            raise

    def deny(self, run_id: int, who: Requester, reason: str) -> RunRecord:
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            expired = self._expire_if_due(tx, run)
            if not expired:
                self._require_awaiting(run, "deny")
                if who.user == run.requester:
                    raise InvalidState(
                        f"you requested run {run_id}: use `cancel {run_id}` to withdraw it"
                    )
                self.policy.check_approve(who.user, run.requester, self.registry.get(run.ref))
                run = tx.transition(
                    run_id,
                    RunStatus.DENIED,
                    EventKind.DENIED,
                    actor=who.user,
                    source=who.source,
                    data={"reason": reason, "plan_hash": run.plan_hash},
                    owner=None,
                    error=f"denied by {who.user}",
                )
        if expired:
            self._require_awaiting(expired, "deny")
        return run

    def cancel(self, run_id: int, who: Requester) -> RunRecord:
        with self.store.transaction() as tx:
            run = tx.get_run(run_id)
            if run.status in TERMINAL:
                raise InvalidState(f"run {run_id} already ended ({run.status})")
            if who.user != run.requester:
                self.policy.check_approve(who.user, run.requester, self.registry.get(run.ref))
            if run.status == RUNNING:
                return tx.transition(
                    run_id,
                    None,
                    EventKind.CANCEL_REQUESTED,
                    actor=who.user,
                    source=who.source,
                    data={"step": run.current_step},
                    cancel_requested=True,
                )
            return tx.transition(
                run_id,
                RunStatus.CANCELLED,
                EventKind.RUN_CANCELLED,
                actor=who.user,
                source=who.source,
                owner=None,
            )

    def _require_awaiting(self, run: RunRecord, verb: str) -> None:
        if run.status == AWAITING:
            return
        if run.status == RunStatus.EXPIRED:
            raise ApprovalRefused(
                f"the approval window of run {run.id} closed at {run.expires_at}; nothing was "
                f"applied. Start a new run to try again"
            )
        if run.status == RUNNING:
            raise InvalidState(f"run {run.id} is already running; there is nothing to {verb}")
        if run.status == RunStatus.INTERRUPTED:
            raise InvalidState(
                f"run {run.id} was interrupted mid-step and is never resumed; check the node "
                f"and start a new run (`run {run.ref} ...`)"
            )
        raise InvalidState(f"run {run.id} has ended ({run.status}); there is nothing to {verb}")

    # -- housekeeping ---------------------------------------------------------------------------

    def _expire_if_due(self, tx: Tx, run: RunRecord) -> RunRecord | None:
        """End a run whose approval window has closed; the expired run, or None if it is not."""
        if run.status != AWAITING or not run.expires_at:
            return None
        if parse_iso(run.expires_at) > self.clock.now():
            return None
        return tx.transition(
            run.id,
            RunStatus.EXPIRED,
            EventKind.RUN_EXPIRED,
            data={"expires_at": run.expires_at},
            owner=None,
        )

    def expire_due(self) -> list[int]:
        with self.store.transaction() as tx:
            return [run.id for run in tx.runs_with_status(AWAITING) if self._expire_if_due(tx, run)]

    def recover(self) -> list[int]:
        """Mark runs whose owning process died as interrupted. They are never re-applied."""
        interrupted = []
        with self.store.transaction() as tx:
            for run in tx.runs_with_status(RUNNING):
                if run.owner and self.owner_alive(run.owner):
                    continue
                step = run.current_step if run.current_step is not None else run.next_step
                tx.transition(
                    run.id,
                    RunStatus.INTERRUPTED,
                    EventKind.RUN_INTERRUPTED,
                    data={
                        "step": step,
                        "mid_step": run.current_step is not None,
                        "note": "actions of this step may have been partly applied; nothing "
                        "is re-applied without a new run and a new approval",
                    },
                    owner=None,
                    current_step=None,
                    error=f"the bot process died during step {step + 1}",
                )
                interrupted.append(run.id)
        return interrupted

    def runbook_of(self, run: RunRecord) -> Runbook:
        return self.registry.get(run.ref)


def _refuse_same_login(run: RunRecord, who: Requester) -> None:
    """Nobody approves their own run under another name: a login whose approval the terminal
    vouches for (bot.terminal) may not approve a run that same login requested as someone else."""
    login = run.source.get("os_user")
    if login and who.source.get("identity") == "os-user" and who.source.get("os_user") == login:
        raise ApprovalRefused(
            f"run {run.id} was requested from the login {login} (as {run.requester}), the login "
            f"you approve from; nobody approves their own run under another name, so another "
            f"approver must approve"
        )
