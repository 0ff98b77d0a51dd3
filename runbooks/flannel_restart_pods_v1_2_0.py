"""Restart flannel pods one node at a time, where flannel is failing (or on every node asked).

For each node in turn: delete its flannel DaemonSet pod, wait until the DaemonSet's replacement
is Ready, then go on; the first node whose new pod does not become Ready stops the run, so a
bad restart never spreads. By default only nodes that need it are restarted (flannel pod not
Ready, or diagnose finds a crash loop, missing subnet.env, missing VXLAN peers or FORWARD
dropping pod traffic there); force=true restarts every named node. Name nodes=w1,w2 or all=true.
Use it after fixing what made flannel fail (br_netfilter, podCIDR, RBAC) or when flannel is
stuck. Pod traffic on a node may blip while its flannel restarts; pods keep their addresses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from flannel_bot.core.runbook import Action, Facts, ListPods, NodeName, Risk, step
from flannel_bot.errors import ParameterError

from ._common import FLANNEL_LABEL, replacements_ready, rolling

ID = "flannel.restart-pods"
VERSION = "1.2.0"
VERIFIES = ("flannel-crashloop", "subnet-env-missing", "vxlan-peer-missing", "forward-drop")


class Namespace(enum.Enum):
    KUBE_FLANNEL = "kube-flannel"
    KUBE_SYSTEM = "kube-system"


@dataclass(frozen=True)
class Params:
    nodes: tuple[NodeName, ...] = field(
        default=(), metadata={"help": "comma-separated nodes whose flannel pods to restart"}
    )
    all: bool = field(default=False, metadata={"help": "every node that has a flannel pod"})
    force: bool = field(
        default=False, metadata={"help": "restart even where flannel looks healthy"}
    )
    namespace: Namespace = field(
        default=Namespace.KUBE_FLANNEL,
        metadata={"help": "where flannel runs: kube-flannel (current) or kube-system (older)"},
    )


def chosen(facts: Facts, p: Params) -> list[str]:
    if bool(p.nodes) == p.all:
        raise ParameterError("name the nodes (nodes=w1,w2) or all=true, not both or neither")
    if p.all:
        return sorted({pod.node for pod in facts.kube.list_pods(p.namespace.value, FLANNEL_LABEL)})
    return list(p.nodes)


@step("Show the flannel pods on the nodes", risk=Risk.READ, timeout=30)
def show_pods(facts: Facts, p: Params) -> list[Action]:
    return [ListPods(p.namespace.value, FLANNEL_LABEL, node) for node in chosen(facts, p)]


@step(
    "Restart flannel one node at a time, each waiting for its new pod to be Ready",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=replacements_ready,
)
def restart(facts: Facts, p: Params) -> list[Action]:
    nodes = chosen(facts, p)
    pods = {node: facts.kube.list_pods(p.namespace.value, FLANNEL_LABEL, node) for node in nodes}
    empty = [node for node, found in pods.items() if not found]
    if empty:
        raise ParameterError(
            f"there is no flannel pod ({FLANNEL_LABEL}) in {p.namespace.value} on "
            f"{', '.join(empty)}; if flannel runs in kube-system, add namespace=kube-system"
        )
    if not p.force:
        failing = {n for f in facts.diagnose(nodes) if f.id in VERIFIES for n in f.nodes}
        nodes = [n for n in nodes if n in failing or not all(x.ready for x in pods[n])]
    return rolling([x for node in nodes for x in pods[node]], FLANNEL_LABEL)
