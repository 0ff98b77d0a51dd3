"""Show a node's flannel subnet lease (test runbook, read-only)."""

from __future__ import annotations

from dataclasses import dataclass

from flannel_bot.runbook import Action, Facts, NodeName, Risk, RunOnNode, step

ID = "test.show-node"
VERSION = "1.0.0"


@dataclass(frozen=True)
class Params:
    node: NodeName


@step("Read subnet.env", risk=Risk.READ, timeout=10)
def read_env(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, ("cat", "/run/flannel/subnet.env"))]
