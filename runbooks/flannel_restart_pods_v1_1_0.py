"""Restart the flannel pods on one or more nodes.

Deletes the flannel DaemonSet pod on each of `nodes`; the DaemonSet controller recreates them, and
the step passes once every one of those nodes has a new flannel pod that is Ready. Use it after
fixing what made flannel fail (br_netfilter, podCIDR, RBAC) or when flannel is stuck. Pod traffic
on those nodes may blip while flannel restarts; running pods keep their addresses. A node without
a flannel pod fails the plan, because there is nothing to restart there: diagnose it first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from flannel_bot.core.runbook import (
    Action,
    CheckResult,
    DeletePod,
    Facts,
    ListPods,
    NodeName,
    Risk,
    step,
)
from flannel_bot.errors import ParameterError

ID = "flannel.restart-pods"
VERSION = "1.1.0"
LABEL = "app=flannel"


class Namespace(enum.Enum):
    KUBE_FLANNEL = "kube-flannel"
    KUBE_SYSTEM = "kube-system"


@dataclass(frozen=True)
class Params:
    nodes: tuple[NodeName, ...] = field(
        metadata={"help": "comma-separated nodes whose flannel pods to restart"}
    )
    namespace: Namespace = field(
        default=Namespace.KUBE_FLANNEL,
        metadata={"help": "where flannel runs: kube-flannel (current) or kube-system (older)"},
    )


@step("Show the flannel pods on the nodes", risk=Risk.READ, timeout=30)
def show_pods(facts: Facts, p: Params) -> list[Action]:
    return [ListPods(p.namespace.value, LABEL, node) for node in p.nodes]


def new_pods_ready(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    deleted = {a.name for a in done if isinstance(a, DeletePod)}
    waiting = []
    for node in p.nodes:
        pods = facts.kube.list_pods(p.namespace.value, LABEL, node)
        if not any(pod.ready and pod.name not in deleted for pod in pods):
            waiting.append(node)
    if waiting:
        return CheckResult(False, f"no new Ready flannel pod yet on {', '.join(waiting)}")
    return CheckResult(True, f"a new flannel pod is Ready on {', '.join(p.nodes)}")


@step(
    "Delete the flannel pods so their DaemonSet recreates them",
    risk=Risk.DESTRUCTIVE,
    timeout=180,
    check=new_pods_ready,
)
def delete_pods(facts: Facts, p: Params) -> list[Action]:
    actions: list[Action] = []
    for node in p.nodes:
        pods = facts.kube.list_pods(p.namespace.value, LABEL, node)
        if not pods:
            raise ParameterError(
                f"there is no flannel pod ({LABEL}) in {p.namespace.value} on node {node}; "
                "if flannel runs in kube-system, add namespace=kube-system"
            )
        actions.extend(DeletePod(pod.namespace, pod.name, pod.node) for pod in pods)
    return actions
