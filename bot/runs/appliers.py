"""One applier per Action type: how the engine carries out what a step planned.

An applier returns what the audit event records (`exit_code`, `stdout`, and `stderr` or
`duration_s` where there are any); a non-zero exit fails the step unless the action allows it.
A new Action type needs an applier here, or planning refuses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flannel_bot.ports.cluster import KubeExecutor
from flannel_bot.ports.nodes import NodeExecutor
from flannel_bot.runs.actions import (
    Action,
    CreateObject,
    DeletePod,
    Disruption,
    ListPods,
    PatchConfigMap,
    PatchDaemonSet,
    RunOnNode,
    WaitForPod,
    WriteFile,
)

A = TypeVar("A")
Outcome = dict[str, Any]
Poll = Callable[[Callable[[], Any], Callable[[Any], bool], float], tuple[Any, int]]


@dataclass(frozen=True)
class Reach:
    """What appliers may touch: the cluster's executors, and the engine's poll for waits."""

    kube: KubeExecutor
    nodes: NodeExecutor
    poll: Poll


Applier = Callable[[Reach, Any, float], Outcome]
APPLIERS: dict[type, Applier] = {}


def applies(kind: type[A]) -> Callable[[Callable[[Reach, A, float], Outcome]], Applier]:
    def register(fn: Callable[[Reach, A, float], Outcome]) -> Applier:
        APPLIERS[kind] = fn
        return fn

    return register


def applier_for(action: Action) -> Applier | None:
    return APPLIERS.get(type(action))


@applies(RunOnNode)
def run_on_node(reach: Reach, action: RunOnNode, timeout: float) -> Outcome:
    res = reach.nodes.run(action.node, action.argv, timeout, sudo=action.sudo)
    return {
        "exit_code": res.exit_code,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "duration_s": res.duration_s,
    }


@applies(ListPods)
def list_pods(reach: Reach, action: ListPods, timeout: float) -> Outcome:
    pods = reach.kube.list_pods(action.namespace, action.label_selector, action.node or None)
    lines = [
        f"{p.namespace}/{p.name} node={p.node} phase={p.phase} ready={p.ready} "
        f"restarts={p.restarts}"
        for p in pods
    ]
    return {"exit_code": 0, "stdout": "\n".join(lines) or "(no pods)"}


@applies(DeletePod)
def delete_pod(reach: Reach, action: DeletePod, timeout: float) -> Outcome:
    reach.kube.delete_pod(action.namespace, action.name)
    return {"exit_code": 0, "stdout": f"pod {action.namespace}/{action.name} deleted"}


@applies(PatchConfigMap)
def patch_configmap(reach: Reach, action: PatchConfigMap, timeout: float) -> Outcome:
    reach.kube.patch_configmap(action.namespace, action.name, dict(action.data))
    return {"exit_code": 0, "stdout": f"configmap {action.namespace}/{action.name} patched"}


@applies(WriteFile)
def write_file(reach: Reach, action: WriteFile, timeout: float) -> Outcome:
    res = reach.nodes.run(action.node, action.argv, timeout)
    return {
        "exit_code": res.exit_code,
        "stdout": res.stdout or f"wrote {action.path} on {action.node}",
        "stderr": res.stderr,
        "duration_s": res.duration_s,
    }


@applies(WaitForPod)
def wait_for_pod(reach: Reach, action: WaitForPod, timeout: float) -> Outcome:
    pods, _ = reach.poll(
        lambda: reach.kube.list_pods(action.namespace, action.label_selector, action.node),
        lambda found: any(p.ready and p.name not in action.replacing for p in found),
        timeout,
    )
    ready = [p for p in pods if p.ready and p.name not in action.replacing]
    if ready:
        return {"exit_code": 0, "stdout": f"pod {ready[0].name} on {action.node} is Ready"}
    seen = "; ".join(f"{p.name} {p.phase} ready={p.ready}" for p in pods) or "no pods"
    return {
        "exit_code": 1,
        "stdout": "",
        "stderr": f"no new Ready pod on {action.node} within {timeout:g}s; last saw: {seen}",
    }


@applies(Disruption)
def disruption(reach: Reach, action: Disruption, timeout: float) -> Outcome:
    return {"exit_code": 0, "stdout": f"accepted: {action.what}"}


@applies(CreateObject)
def create_object(reach: Reach, action: CreateObject, timeout: float) -> Outcome:
    reach.kube.create_object(action.obj)
    return {"exit_code": 0, "stdout": f"created {action.kind} {action.name}"}


@applies(PatchDaemonSet)
def patch_daemonset(reach: Reach, action: PatchDaemonSet, timeout: float) -> Outcome:
    reach.kube.patch_daemonset(action.namespace, action.name, json.loads(action.patch))
    return {"exit_code": 0, "stdout": f"daemonset {action.namespace}/{action.name} patched"}
