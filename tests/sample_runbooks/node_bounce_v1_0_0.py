"""Bounce cni0 on a node (test runbook).

Reads subnet.env, sets cni0 down and up (change), then deletes it (destructive).
"""

from __future__ import annotations

from dataclasses import dataclass

from flannel_bot.runbook import Action, CheckResult, Facts, NodeName, Risk, RunOnNode, step

ID = "test.node-bounce"
VERSION = "1.0.0"


@dataclass(frozen=True)
class Params:
    node: NodeName


def always(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    return CheckResult(True, "fine")


@step("Read subnet.env", risk=Risk.READ, timeout=10)
def read_env(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, ("cat", "/run/flannel/subnet.env"))]


@step("Set cni0 down", risk=Risk.CHANGE, timeout=10, check=always)
def down(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, ("ip", "link", "set", "cni0", "down"))]


@step("Delete cni0", risk=Risk.DESTRUCTIVE, timeout=10, check=always)
def delete(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, ("ip", "link", "delete", "cni0"), sudo=True)]
