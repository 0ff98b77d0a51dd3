"""The read-only view of the cluster that runbook planners and checks get.

Nodes are read through the probe set and nothing else: a fact's probe and its one parser
(`read`), or, for runbook versions written before `read`, an argv the probe set recognises as a
read (`run`). Anything else is refused before it reaches the node, so a planner cannot change a
node by reading it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import TypeVar

from flannel_bot.diagnosis.collect import collect
from flannel_bot.diagnosis.findings import Finding
from flannel_bot.diagnosis.node_facts import Fact
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.errors import ReadRefused
from flannel_bot.ports.cluster import ClusterReader
from flannel_bot.ports.nodes import CommandResult, NodeExecutor
from flannel_bot.ports.probes import ProbeOutput, recognise

T = TypeVar("T")


class LiveFacts:
    """The cluster through the executors. `probes=False` where the node executor is a recording
    that cannot run diagnose's probes: diagnose then judges by the API alone."""

    def __init__(self, kube: ClusterReader, nodes: NodeExecutor, probes: bool = True) -> None:
        self._kube = kube
        self._nodes = nodes
        self.probes = probes

    @property
    def kube(self) -> ClusterReader:
        return self._kube

    def read(self, node: str, fact: Fact[T], timeout: float = 10.0) -> T:
        res = self._nodes.run(node, fact.probe.argv, timeout)
        return fact.parse(ProbeOutput(res.exit_code, res.stdout, res.stderr))

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        if recognise(tuple(argv)) is None:
            raise ReadRefused(
                f"`{shlex.join(argv)}` on {node} is not a read of the probe set "
                "(bot/ports/probes.py); a runbook reads nodes with `facts.read(node, fact)`"
            )
        return self._nodes.run(node, argv, timeout)

    def diagnose(self, nodes: Sequence[str] = ()) -> list[Finding]:
        return diagnose(collect(self._kube, self._nodes if self.probes else None, nodes))
