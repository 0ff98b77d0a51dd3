"""A plan: every step of a runbook rendered for given parameters, and the hash approvals bind to.

Planning only reads, and refuses a plan that breaks a safety rule: a step whose actions are
riskier than the step declares (a `read` step returning a pod delete), an action no applier
carries out, a node read outside the probe set. The hash covers runbook id, version, code hash,
parameters, targets, every rendered action and, when it acts on nodes, how it reaches them
(`[nodes] access`), so an approval cannot be carried over to anything
but the exact plan it was given for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from flannel_bot.diagnosis.evidence import distribution_of
from flannel_bot.errors import PlanRefused, ReadRefused
from flannel_bot.runs.actions import Action, Risk, RunOnNode, WriteFile
from flannel_bot.runs.appliers import applier_for
from flannel_bot.runs.distributions import refused_somewhere, wrong_on
from flannel_bot.runs.params import params_to_json
from flannel_bot.runs.runbook import Facts, Runbook, Step

NO_CHANGE = "already in the desired state"


@dataclass(frozen=True)
class PlannedStep:
    index: int
    step: Step
    actions: tuple[Action, ...]
    no_change: str = ""  # what the planner checked and found right, when it plans nothing

    @property
    def risk(self) -> Risk:
        return self.step.risk

    @property
    def outcome_if_idle(self) -> str:
        """How a step with nothing to do reports itself."""
        return f"no change: {self.no_change or NO_CHANGE}"

    def to_json(self, node_access: str = "ssh") -> dict[str, Any]:
        out = {
            "index": self.index,
            "name": self.step.name,
            "title": self.step.title,
            "risk": self.step.risk.value,
            "timeout": self.step.timeout,
            "check": self.step.check.__name__ if self.step.check else None,
            "actions": [
                {"render": rendered(a, node_access), "target": a.target, **a.to_json()}
                for a in self.actions
            ],
        }
        if self.no_change:
            out["no_change"] = self.no_change
        return out


def rendered(action: Action, node_access: str) -> str:
    """An action as the plan shows it; a node action names the transport it runs over."""
    if isinstance(action, RunOnNode | WriteFile):
        return action.render(via=node_access)
    return action.render()


@dataclass(frozen=True)
class Plan:
    runbook: Runbook
    params: Any
    steps: tuple[PlannedStep, ...]
    cluster: str = "default"
    node_access: str = "ssh"  # [nodes] access: how node actions reach the node (ssh or pod)

    @property
    def targets(self) -> tuple[str, ...]:
        """What non-read steps change; each gets a change lock for the run's lifetime."""
        return tuple(
            sorted({a.target for s in self.steps if s.risk is not Risk.READ for a in s.actions})
        )

    @property
    def touches_nodes(self) -> bool:
        """Whether an action runs on a node (over `[nodes] access`), not only through the API."""
        return any(isinstance(a, RunOnNode | WriteFile) for s in self.steps for a in s.actions)

    @property
    def changes_anything(self) -> bool:
        return any(s.risk is not Risk.READ and s.actions for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        out = {
            "cluster": self.cluster,
            "runbook": self.runbook.id,
            "version": str(self.runbook.version),
            "code_hash": self.runbook.code_hash,
            "params": params_to_json(self.params),
            "targets": list(self.targets),
            "steps": [s.to_json(self.node_access) for s in self.steps],
        }
        if self.touches_nodes:
            # in the hash: an approval of a plan over SSH does not approve it over pods
            out["node_access"] = self.node_access
        return out

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash.removeprefix("sha256:")[:12]


def build_plan(
    runbook: Runbook,
    params: Any,
    facts: Facts,
    cluster: str = "default",
    node_access: str = "ssh",
) -> Plan:
    """Render every step against the current cluster state, without changing anything."""
    refuse_on_distribution(runbook, facts)
    return Plan(
        cluster=cluster,
        node_access=node_access,
        runbook=runbook,
        params=params,
        steps=tuple(plan_step(runbook, i, s, facts, params) for i, s in enumerate(runbook.steps)),
    )


def plan_step(runbook: Runbook, index: int, step: Step, facts: Facts, params: Any) -> PlannedStep:
    where = f"runbook {runbook.ref}, step {index + 1} `{step.name}`"
    try:
        planned = step.planner(facts, params)
    except ReadRefused as exc:
        raise PlanRefused(f"{where} was refused: {exc}") from None
    actions = tuple(planned)
    for action in actions:
        kind = type(action).__name__
        if applier_for(action) is None:
            raise PlanRefused(f"{where} returns a {kind}, which the engine has no applier for")
        if action.least_risk.rank > step.risk.rank:
            raise PlanRefused(
                f"{where} is declared {step.risk.value} but returns a {kind} "
                f"(`{action.render().splitlines()[0]}`), which is at least "
                f"{action.least_risk.value}; nothing was planned or run. The runbook must "
                f"declare the step {action.least_risk.value} (a defect of {runbook.ref})"
            )
    reason = str(getattr(planned, "reason", "")) if not actions else ""
    return PlannedStep(index=index, step=step, actions=actions, no_change=reason)


def refuse_on_distribution(runbook: Runbook, facts: Facts) -> None:
    """Refuse a runbook the cluster's distribution makes wrong (bot.runs.distributions),
    naming what to do by hand instead."""
    if not refused_somewhere(runbook.id):
        return  # no distribution makes it wrong: no need to ask the API which this is
    distribution = distribution_of(facts.kube.list_nodes())
    manual = wrong_on(runbook.id, distribution)
    if manual:
        raise PlanRefused(
            f"{runbook.ref} is not for {distribution} clusters, where it would change the "
            f"wrong thing; nothing was planned or run. Instead: {manual}"
        )
