"""Accept forwarded pod-network traffic on a node whose FORWARD policy is DROP.

Docker (and some hardening baselines) set the iptables FORWARD policy to DROP. flanneld adds
accept rules for its Network in FLANNEL-FWD, but when those are gone every packet between
cni0 and flannel.1 is dropped. This appends `-s <Network> -j ACCEPT` and `-d <Network> -j
ACCEPT` to FORWARD (tagged with a comment), leaving the DROP policy for everything else. Nothing
is done when the policy is ACCEPT or an accept rule for the Network is already there. The rules
are not persisted: flanneld re-adds its own at its next start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flannel_bot.core.runbook import Action, CheckResult, Facts, NodeName, Risk, RunOnNode, step
from flannel_bot.errors import ParameterError

from ._common import flannel_net_conf

ID = "node.fix-forward-policy"
VERSION = "1.0.0"
VERIFIES = ("forward-drop",)
COMMENT = "flannel-bot: pod network forwarding"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node whose FORWARD chain drops pod traffic"})


def network(facts: Facts) -> str:
    net = str(flannel_net_conf(facts).get("Network") or "")
    if not re.fullmatch(r"\d{1,3}(\.\d{1,3}){3}/\d{1,2}", net):
        raise ParameterError(
            "flannel's Network is not readable from kube-flannel-cfg net-conf.json; without it "
            "the accept rules cannot be scoped to the pod network"
        )
    return net


def missing_rules(facts: Facts, node: str) -> list[str]:
    """`-s`/`-d` for each direction that needs an accept rule; [] when nothing is dropped."""
    res = facts.run(node, ["iptables-save", "-t", "filter"])
    if not res.ok:
        raise ParameterError(f"cannot read iptables on {node}: {res.stderr.strip()}")
    if not re.search(r"^:FORWARD DROP", res.stdout, re.M):
        return []
    net = re.escape(network(facts))
    return [
        flag
        for flag in ("-s", "-d")
        if not re.search(
            rf"^-A (FORWARD|FLANNEL-FWD) .*{flag} {net}( |.* )-j ACCEPT", res.stdout, re.M
        )
    ]


def accepted(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    left = missing_rules(facts, p.node)
    if left:
        return CheckResult(False, f"FORWARD on {p.node} still lacks {' and '.join(left)} rules")
    return CheckResult(True, f"FORWARD on {p.node} accepts {network(facts)} both ways")


@step("Accept the pod network in FORWARD", risk=Risk.CHANGE, timeout=30, check=accepted)
def add_rules(facts: Facts, p: Params) -> list[Action]:
    net = network(facts)
    return [
        RunOnNode(
            p.node,
            (
                "iptables",
                "-w",
                "5",
                "-A",
                "FORWARD",
                flag,
                net,
                "-m",
                "comment",
                "--comment",
                COMMENT,
                "-j",
                "ACCEPT",
            ),
        )
        for flag in missing_rules(facts, p.node)
    ]
