"""A runbook whose post-check has a bug (test runbook)."""

from __future__ import annotations

from dataclasses import dataclass

from flannel_bot.runbook import Action, CheckResult, Facts, NodeName, Risk, RunOnNode, step

ID = "test.crash"
VERSION = "1.0.0"
APPROVALS = 2


@dataclass(frozen=True)
class Params:
    node: NodeName


def buggy(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    raise RuntimeError("bug in the check")


@step("Touch a file", risk=Risk.DESTRUCTIVE, timeout=10, check=buggy)
def touch(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, ("touch", "/tmp/x"))]
