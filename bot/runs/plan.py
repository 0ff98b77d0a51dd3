"""A plan: every step of a runbook rendered for given parameters, and the hash approvals bind to.

Planning only reads. The hash covers runbook id, version, code hash, parameters, targets and
every rendered action, so an approval cannot be carried over to anything but the exact plan
it was given for.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bot.runs.actions import Action, Risk
from bot.runs.params import params_to_json
from bot.runs.runbook import Facts, Runbook, Step


@dataclass(frozen=True)
class PlannedStep:
    index: int
    step: Step
    actions: tuple[Action, ...]

    @property
    def risk(self) -> Risk:
        return self.step.risk

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "name": self.step.name,
            "title": self.step.title,
            "risk": self.step.risk.value,
            "timeout": self.step.timeout,
            "check": self.step.check.__name__ if self.step.check else None,
            "actions": [
                {"render": a.render(), "target": a.target, **a.to_json()} for a in self.actions
            ],
        }


@dataclass(frozen=True)
class Plan:
    runbook: Runbook
    params: Any
    steps: tuple[PlannedStep, ...]
    cluster: str = "default"

    @property
    def targets(self) -> tuple[str, ...]:
        """What non-read steps change; each gets a change lock for the run's lifetime."""
        return tuple(
            sorted({a.target for s in self.steps if s.risk is not Risk.READ for a in s.actions})
        )

    @property
    def changes_anything(self) -> bool:
        return any(s.risk is not Risk.READ and s.actions for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "runbook": self.runbook.id,
            "version": str(self.runbook.version),
            "code_hash": self.runbook.code_hash,
            "params": params_to_json(self.params),
            "targets": list(self.targets),
            "steps": [s.to_json() for s in self.steps],
        }

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def short_hash(self) -> str:
        return self.hash.removeprefix("sha256:")[:12]


def build_plan(runbook: Runbook, params: Any, facts: Facts, cluster: str = "default") -> Plan:
    """Render every step against the current cluster state, without changing anything."""
    return Plan(
        cluster=cluster,
        runbook=runbook,
        params=params,
        steps=tuple(
            PlannedStep(index=i, step=s, actions=s.plan(facts, params))
            for i, s in enumerate(runbook.steps)
        ),
    )
