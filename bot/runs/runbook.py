"""The runbook API: what a runbook module declares and what its steps may return.

A runbook is a module with `ID`, `VERSION`, a docstring (its help), a frozen `Params` dataclass and
steps declared with `@step`. Steps never change anything: they look at the cluster through a
read-only `Facts` view and return `Action`s; the engine applies them, after approval where needed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NewType, Protocol, TypeVar

from flannel_bot.diagnosis.findings import Finding
from flannel_bot.diagnosis.node_facts import Fact
from flannel_bot.ports.cluster import ClusterReader
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.runs.actions import Action, Risk

NodeName = NewType("NodeName", str)
"""A Kubernetes node name: DNS-1123 subdomain, checked against the cluster at plan time."""

InterfaceName = NewType("InterfaceName", str)
"""A Linux network interface name (at most 15 characters, no '/' or whitespace)."""

INTERFACE_NAME = re.compile(r"\A(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,15}\Z")

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
# \A and \Z, never ^ and $: `$` also matches before a trailing newline, so a pattern used with
# .match() would pass `w2\n`; callers use fullmatch too
DNS1123_SUBDOMAIN = re.compile(rf"\A{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*\Z")
RUNBOOK_ID = re.compile(r"\A[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*)+\Z")
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ facts


class Facts(Protocol):
    """Read-only view of the cluster given to step planners and post-checks.

    Nodes are read through the probe set only: `read(node, fact)` runs the fact's probe and
    returns what its one parser makes of it. `run` remains for runbook versions written before
    `read`, and takes only an argv `bot.ports.probes.recognise` knows as a read."""

    @property
    def kube(self) -> ClusterReader: ...

    def read(self, node: str, fact: Fact[T], timeout: float = 10.0) -> T: ...

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult: ...

    def diagnose(self, nodes: Sequence[str] = ()) -> list[Finding]:
        """diagnose's findings for `nodes` (all nodes when empty), from fresh evidence."""
        ...


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str


class NoChange(tuple[Action, ...]):
    """What a step plans when nothing needs doing: no actions, and what was checked and found
    already right (`NoChange("br_netfilter is loaded on w1")`), shown in the plan and the run."""

    reason: str

    def __new__(cls, reason: str) -> NoChange:
        planned = super().__new__(cls, ())
        planned.reason = reason
        return planned


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
    verifies: tuple[str, ...] = ()
    verify_timeout: float = 120.0

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    @property
    def summary(self) -> str:
        return self.help.strip().splitlines()[0] if self.help.strip() else ""

    @property
    def risk(self) -> Risk:
        return max((s.risk for s in self.steps), key=lambda r: r.rank, default=Risk.READ)
