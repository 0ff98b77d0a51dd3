"""Restart the flannel pod on one node.

Deletes the flannel DaemonSet pod on `node`; the DaemonSet controller recreates it, and the step
passes once a new flannel pod on that node is Ready. Use it after fixing what made flannel fail
(br_netfilter, podCIDR, RBAC) or when flannel is stuck. Traffic to pods on that node may blip while
flannel restarts; running pods keep their addresses.
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

ID = "flannel.restart-pods"
VERSION = "1.0.0"
LABEL = "app=flannel"


class Namespace(enum.Enum):
    KUBE_FLANNEL = "kube-flannel"
    KUBE_SYSTEM = "kube-system"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node whose flannel pod to restart"})
    namespace: Namespace = field(
        default=Namespace.KUBE_FLANNEL,
        metadata={"help": "where flannel runs: kube-flannel (current) or kube-system (older)"},
    )


@step("Show the flannel pod on the node", risk=Risk.READ, timeout=30)
def show_pods(facts: Facts, p: Params) -> list[Action]:
    return [ListPods(p.namespace.value, LABEL, p.node)]


def new_pod_ready(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    deleted = {a.name for a in done if isinstance(a, DeletePod)}
    pods = facts.kube.list_pods(p.namespace.value, LABEL, p.node)
    fresh = [pod for pod in pods if pod.name not in deleted]
    ready = [pod for pod in fresh if pod.ready]
    if ready:
        return CheckResult(True, f"{ready[0].name} is Ready on {p.node}")
    if fresh:
        return CheckResult(False, f"{fresh[0].name} on {p.node} is {fresh[0].phase}, not Ready yet")
    return CheckResult(False, f"no new flannel pod on {p.node} yet")


@step(
    "Delete the flannel pod so its DaemonSet recreates it",
    risk=Risk.DESTRUCTIVE,
    timeout=180,
    check=new_pod_ready,
)
def delete_pods(facts: Facts, p: Params) -> list[Action]:
    pods = facts.kube.list_pods(p.namespace.value, LABEL, p.node)
    return [DeletePod(pod.namespace, pod.name, pod.node) for pod in pods]
