"""The runbook API: what a runbook module declares and what its steps may return.

A runbook is a module with `ID`, `VERSION`, a docstring (its help), a frozen `Params` dataclass and
steps declared with `@step`. Steps never change anything: they look at the cluster through a
read-only `Facts` view and return `Action`s; the engine applies them, after approval where needed.
"""

from __future__ import annotations

import enum
import itertools
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol

from bot.core.executors import CommandResult, KubeReader

NodeName = NewType("NodeName", str)
"""A Kubernetes node name: DNS-1123 subdomain, checked against the cluster at plan time."""

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
RUNBOOK_ID = re.compile(r"^[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+$")


class Risk(enum.Enum):
    READ = "read"
    CHANGE = "change"
    DESTRUCTIVE = "destructive"

    @property
    def marker(self) -> str:
        return {"read": "[read]", "change": "[CHANGE]", "destructive": "[DESTRUCTIVE]"}[self.value]

    @property
    def rank(self) -> int:
        return ("read", "change", "destructive").index(self.value)


# ---------------------------------------------------------------------------------------- actions


class Action(Protocol):
    """Something the engine does on a step's behalf. `target` is what a change lock covers."""

    @property
    def target(self) -> str: ...

    def render(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ListPods:
    namespace: str
    label_selector: str
    node: str = ""

    @property
    def target(self) -> str:
        return f"node/{self.node}" if self.node else f"namespace/{self.namespace}"

    def render(self) -> str:
        query = f"labelSelector={self.label_selector}"
        if self.node:
            query += f"&fieldSelector=spec.nodeName={self.node}"
        return f"GET /api/v1/namespaces/{self.namespace}/pods?{query}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "list_pods",
            "namespace": self.namespace,
            "label_selector": self.label_selector,
            "node": self.node,
        }


@dataclass(frozen=True)
class RunOnNode:
    node: str
    argv: tuple[str, ...]
    sudo: bool = False

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def render(self) -> str:
        return f"ssh {self.node} -- {shlex.join(('sudo', *self.argv) if self.sudo else self.argv)}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "run_on_node",
            "node": self.node,
            "argv": list(self.argv),
            "sudo": self.sudo,
        }


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    node: str

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def render(self) -> str:
        return f"DELETE /api/v1/namespaces/{self.namespace}/pods/{self.name}  (on {self.node})"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "delete_pod",
            "namespace": self.namespace,
            "name": self.name,
            "node": self.node,
        }


@dataclass(frozen=True)
class PatchConfigMap:
    namespace: str
    name: str
    data: tuple[tuple[str, str], ...]

    @property
    def target(self) -> str:
        return f"configmap/{self.namespace}/{self.name}"

    def render(self) -> str:
        keys = ", ".join(k for k, _ in self.data)
        return f"PATCH /api/v1/namespaces/{self.namespace}/configmaps/{self.name}  data: {keys}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "patch_configmap",
            "namespace": self.namespace,
            "name": self.name,
            "data": dict(self.data),
        }


# ------------------------------------------------------------------------------------------ facts


class Facts(Protocol):
    """Read-only view of the cluster given to step planners and post-checks."""

    @property
    def kube(self) -> KubeReader: ...

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult: ...


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


Planner = Callable[[Facts, Any], Sequence[Action]]
Checker = Callable[[Facts, Any, tuple[Action, ...]], CheckResult]

_step_order = itertools.count()


@dataclass(frozen=True)
class Step:
    """One step of a runbook; ordered by where it is declared in the module."""

    name: str
    title: str
    risk: Risk
    timeout: float
    planner: Planner
    check: Checker | None
    order: int = field(compare=False)

    def plan(self, facts: Facts, params: Any) -> tuple[Action, ...]:
        return tuple(self.planner(facts, params))


def step(
    title: str, *, risk: Risk, timeout: float = 60.0, check: Checker | None = None
) -> Callable[[Planner], Step]:
    """Declare a step. Change and destructive steps must name a `check` that proves their effect."""

    def wrap(planner: Planner) -> Step:
        return Step(
            name=planner.__name__,
            title=title,
            risk=risk,
            timeout=timeout,
            planner=planner,
            check=check,
            order=next(_step_order),
        )

    return wrap


# ------------------------------------------------------------------------------------- versioning


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        match = re.fullmatch(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)", text)
        if match is None:
            raise ValueError(f"`{text}` is not a semantic version like 1.2.3")
        return cls(*(int(g) for g in match.groups()))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class Runbook:
    id: str
    version: Version
    help: str
    params: type
    steps: tuple[Step, ...]
    code_hash: str
    module: str
    approvals: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def summary(self) -> str:
        return self.help.strip().splitlines()[0] if self.help.strip() else ""

    @property
    def risk(self) -> Risk:
        return max((s.risk for s in self.steps), key=lambda r: r.rank, default=Risk.READ)
