"""Reads and action shapes several runbooks share. Part of every importing runbook's code hash.

Everything here only reads (through `Facts`) or builds `Action`s; nothing applies anything.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

from flannel_bot.core.executors import NodeInfo, PodInfo
from flannel_bot.core.runbook import Action, CheckResult, DeletePod, Disruption, Facts, WaitForPod
from flannel_bot.errors import ExecutorError, ParameterError

FLANNEL_LABEL = "app=flannel"
FLANNEL_NAMESPACES = ("kube-flannel", "kube-system")
KUBE_PROXY_LABEL = "k8s-app=kube-proxy"
RESTART_NOTES = {
    "flanneld": "new pods on {node} cannot start and routes to new peers wait while flanneld "
    "restarts (~5-10 s); running pods keep their addresses and traffic",
    "kube-proxy": "Service rules on {node} are not updated while kube-proxy restarts (~5 s); "
    "existing rules keep working",
}


def node_info(facts: Facts, node: str) -> NodeInfo:
    for info in facts.kube.list_nodes():
        if info.name == node:
            return info
    raise ParameterError(f"node `{node}` is not in the cluster")


def flannel_pods(facts: Facts, node: str | None = None) -> list[PodInfo]:
    """flannel's pods in whichever namespace it runs (kube-flannel now, kube-system before)."""
    for ns in FLANNEL_NAMESPACES:
        pods = facts.kube.list_pods(ns, FLANNEL_LABEL, node)
        if pods:
            return pods
    return []


def restart_flannel(facts: Facts, node: str, needed: bool) -> list[Action]:
    """Delete the node's flannel pod and wait for its replacement to be Ready, when `needed`:
    an earlier step changes what flanneld reads at start. A flannel pod failing for another
    reason is not this runbook's to restart; the diagnose-verify names it instead."""
    if not needed:
        return []
    pods = flannel_pods(facts, node)
    if not pods:
        raise ParameterError(
            f"there is no flannel pod on {node} to restart; run `diagnose {node}` "
            "(flannel.repair recreates a missing DaemonSet)"
        )
    return restart_on_node(pods, FLANNEL_LABEL)


def rolling(pods: Sequence[PodInfo], label: str) -> list[Action]:
    """A rolling restart: node by node, each node's pods deleted and their replacement awaited
    before the next node, so the first failure stops the run with the rest untouched."""
    by_node: dict[str, list[PodInfo]] = {}
    for pod in pods:
        by_node.setdefault(pod.node, []).append(pod)
    return [a for node in sorted(by_node) for a in restart_on_node(by_node[node], label)]


def restart_on_node(pods: Sequence[PodInfo], label: str) -> list[Action]:
    """Delete one node's pods of a DaemonSet and wait for the replacement, saying what blips."""
    node = pods[0].node
    what = "flanneld" if label == FLANNEL_LABEL else "kube-proxy"
    return [
        Disruption(node, RESTART_NOTES[what].format(node=node)),
        *(DeletePod(p.namespace, p.name, node) for p in pods),
        WaitForPod(pods[0].namespace, label, node, tuple(p.name for p in pods)),
    ]


def replacements_ready(facts: Facts, params: Any, done: tuple[Action, ...]) -> CheckResult:
    """Each pod the step deleted has a Ready replacement on the same node."""
    waits = [a for a in done if isinstance(a, WaitForPod)]
    missing = []
    for w in waits:
        pods = facts.kube.list_pods(w.namespace, w.label_selector, w.node)
        if not any(p.ready and p.name not in w.replacing for p in pods):
            missing.append(w.node)
    if missing:
        return CheckResult(False, f"no Ready replacement pod yet on {', '.join(missing)}")
    nodes = sorted({w.node for w in waits})
    return CheckResult(True, f"replacement pods Ready on {', '.join(nodes)}")


def read_text(facts: Facts, node: str, path: str) -> str | None:
    """A file's content, or None when it does not exist (any other failure is an error)."""
    res = facts.run(node, ["cat", "--", path])
    if res.ok:
        return res.stdout
    if "No such file" in res.stderr:
        return None
    raise ParameterError(f"cannot read {path} on {node}: {res.stderr.strip() or res.exit_code}")


def read_dir(facts: Facts, node: str, directory: str, suffix: str) -> dict[str, str]:
    """Every `*suffix` file directly in `directory`, path -> content, in sort order."""
    res = facts.run(
        node,
        [
            "find",
            directory,
            "-maxdepth",
            "1",
            "-type",
            "f",
            "-name",
            f"*{suffix}",
            "-printf",
            "\\0==> %p\\n",
            "-exec",
            "cat",
            "{}",
            ";",
        ],
    )
    if not res.ok and "No such file" not in res.stderr:
        raise ParameterError(f"cannot list {directory} on {node}: {res.stderr.strip()}")
    files = {}
    for block in res.stdout.split("\0==> ")[1:]:
        path, _, body = block.partition("\n")
        files[path] = body
    return dict(sorted(files.items()))


def addresses(facts: Facts, node: str) -> dict[str, list[str]]:
    """Interface name -> its IPv4 addresses with prefix, from `ip -j addr show`."""
    res = facts.run(node, ["ip", "-j", "addr", "show"])
    if not res.ok:
        raise ParameterError(f"cannot read addresses on {node}: {res.stderr.strip()}")
    out: dict[str, list[str]] = {}
    for link in json.loads(res.stdout or "[]"):
        out[str(link.get("ifname"))] = [
            f"{a['local']}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]
    return out


def in_cidr(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_interface(address).ip in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def workload_pods(facts: Facts, node: str) -> list[PodInfo]:
    """Pods on the node that have pod networking (not hostNetwork) and are not finished."""
    return [
        p
        for p in facts.kube.list_pods(None, None, node)
        if not p.host_network and p.phase not in ("Succeeded", "Failed")
    ]


def stuck_creating(facts: Facts, node: str) -> list[PodInfo]:
    """Pods on the node waiting for a sandbox: Pending with a container in ContainerCreating."""
    return [
        p
        for p in workload_pods(facts, node)
        if p.phase == "Pending"
        and any(c.reason == "ContainerCreating" for c in p.containers if not c.init)
    ]


def names(pods: Sequence[PodInfo], limit: int = 5) -> str:
    shown = ", ".join(f"{p.namespace}/{p.name}" for p in pods[:limit])
    return shown + (f" and {len(pods) - limit} more" if len(pods) > limit else "")


def flannel_net_conf(facts: Facts) -> dict[str, Any]:
    for ns in FLANNEL_NAMESPACES:
        try:
            cm = facts.kube.get_configmap(ns, "kube-flannel-cfg")
        except ExecutorError:  # absent in one of the two namespaces is normal
            continue
        try:
            conf = json.loads(cm.data.get("net-conf.json", ""))
        except ValueError:
            continue
        if isinstance(conf, dict):
            return conf
    return {}


def pods_gone(facts: Facts, params: Any, done: tuple[Action, ...]) -> CheckResult:
    """The pods the step deleted are gone (their controllers make new ones, with new names)."""
    deleted = [a for a in done if isinstance(a, DeletePod)]
    left = [
        f"{a.namespace}/{a.name}"
        for a in deleted
        if any(p.name == a.name for p in facts.kube.list_pods(a.namespace, None, a.node))
    ]
    if left:
        return CheckResult(False, f"still there: {', '.join(left)}")
    return CheckResult(True, f"deleted {len(deleted)} pod(s)")
