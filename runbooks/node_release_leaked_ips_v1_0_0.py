"""Release host-local IPAM reservations whose container is gone, then recreate stuck pods.

host-local keeps one file per address under /var/lib/cni/networks/<network>/, holding the
sandbox id. When the runtime never calls CNI DEL (crashes, forced deletes) the files stay, the
range fills up and new pods fail with "no IP addresses available". A reservation is released
only when no pod in the API holds its address and, where `crictl` is on the node, no live
sandbox has its id: one in use is never removed. Then the pods stuck in ContainerCreating on
the node are deleted so their controllers recreate them with a free address.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from flannel_bot.core.runbook import Action, CheckResult, DeletePod, Facts, NodeName, Risk, RunOnNode, step
from flannel_bot.errors import ParameterError

from ._common import pods_gone, stuck_creating, workload_pods

ID = "node.release-leaked-ips"
VERSION = "1.0.0"
VERIFIES = ("ipam-exhausted",)
NETWORKS = "/var/lib/cni/networks"
RESERVATION = re.compile(rf"^{NETWORKS}/[A-Za-z0-9_.-]+/(\d{{1,3}}(\.\d{{1,3}}){{3}})$")


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node whose leaked reservations to release"})


def reservations(facts: Facts, node: str) -> dict[str, str]:
    """Reservation file path -> the sandbox id it holds."""
    res = facts.run(
        node,
        ["find", NETWORKS, "-type", "f", "-printf", "\\0==> %p\\n", "-exec", "cat", "{}", ";"],
    )
    if not res.ok and "No such file" not in res.stderr:
        raise ParameterError(f"cannot list {NETWORKS} on {node}: {res.stderr.strip()}")
    out = {}
    for block in res.stdout.split("\0==> ")[1:]:
        path, _, body = block.partition("\n")
        match = RESERVATION.match(path)
        if match:
            ipaddress.IPv4Address(match.group(1))  # the name is an address, or this raises
            out[path] = body.splitlines()[0].strip() if body.strip() else ""
    return out


def live_sandboxes(facts: Facts, node: str) -> set[str] | None:
    """Sandbox ids the runtime knows, or None when the node has no crictl to ask."""
    res = facts.run(node, ["crictl", "pods", "--quiet", "--no-trunc"])
    if res.exit_code == 127 or "not found" in res.stderr:
        return None
    if not res.ok:
        raise ParameterError(f"`crictl pods` failed on {node}: {res.stderr.strip()}")
    return set(res.stdout.split())


def leaked(facts: Facts, node: str) -> list[str]:
    in_use = {p.pod_ip for p in workload_pods(facts, node) if p.pod_ip}
    live = live_sandboxes(facts, node)
    return [
        path
        for path, sandbox in reservations(facts, node).items()
        if path.rsplit("/", 1)[1] not in in_use and (live is None or sandbox not in live)
    ]


def released(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    removed = {path for a in done if isinstance(a, RunOnNode) for path in a.argv[3:]}
    now = reservations(facts, p.node)
    in_use = {pod.pod_ip for pod in workload_pods(facts, p.node) if pod.pod_ip}
    back = [x for x in removed if x in now and x.rsplit("/", 1)[1] not in in_use]
    if back:
        return CheckResult(False, f"{len(back)} released reservation(s) are back on {p.node}")
    return CheckResult(True, f"released {len(removed)} reservation(s) on {p.node}")


@step(
    "Remove reservations no pod or sandbox holds",
    risk=Risk.DESTRUCTIVE,
    timeout=30,
    check=released,
)
def release(facts: Facts, p: Params) -> list[Action]:
    paths = leaked(facts, p.node)
    return [RunOnNode(p.node, ("rm", "-f", "--", *paths))] if paths else []


@step(
    "Delete the pods stuck in ContainerCreating so they are recreated",
    risk=Risk.DESTRUCTIVE,
    timeout=60,
    check=pods_gone,
)
def recreate_stuck(facts: Facts, p: Params) -> list[Action]:
    if not leaked(facts, p.node):
        return []
    return [DeletePod(pod.namespace, pod.name, p.node) for pod in stuck_creating(facts, p.node)]
