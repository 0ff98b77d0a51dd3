"""Run diagnose's probe set on one node and report what it finds there (read-only).

Every probe of `flannel-bot diagnose --probes` runs on the node (its output is in the run's
audit events), then diagnose's rules judge the node together with what the API says about it;
the report lists each finding with its suggested fix. Nothing is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flannel_bot.core.probes import PROBES
from flannel_bot.core.runbook import Action, CheckResult, Facts, NodeName, Risk, RunOnNode, step

ID = "node.check"
VERSION = "1.0.0"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node to check"})


def report(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    """The node report. A check of a read-only step never fails the run: findings are the
    answer, not an error."""
    findings = [f for f in facts.diagnose([p.node]) if not f.nodes or p.node in f.nodes]
    if not findings:
        return CheckResult(True, f"{p.node}: no findings; flannel looks healthy there")
    lines = [
        f"{f.severity.upper()} {f.id}: {f.summary}"
        + (f" -> run {f.fix.command()}" if f.fix.runbook else f" -> {f.fix.manual}")
        for f in findings
    ]
    return CheckResult(True, f"{p.node}: {len(findings)} finding(s)\n" + "\n".join(lines))


@step("Run the probe set on the node and judge it", risk=Risk.READ, timeout=60, check=report)
def probe(facts: Facts, p: Params) -> list[Action]:
    return [RunOnNode(p.node, probe.argv, may_fail=True) for probe in PROBES]
