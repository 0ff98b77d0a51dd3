"""Remove cni0/flannel.1 that carry addresses outside the node's podCIDR, restart flannel.

After `kubeadm reset` and a re-join the node gets a new podCIDR, but cni0 and flannel.1 keep
the old addresses: flanneld fails with "link has incompatible addresses" and the bridge plugin
with "cni0 already has an IP address different from ...". This deletes only the device(s) whose
addresses are outside the podCIDR, optionally empties /var/lib/cni (wipe_cni_state=true), restarts
the node's flannel pod so it recreates flannel.1, deletes pods stuck in ContainerCreating so they
are recreated, and checks the new addresses sit in the podCIDR. Pods still running on the node
are attached to cni0 and lose networking when it goes: the plan refuses unless disrupt_pods=true.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flannel_bot.core.runbook import (
    Action,
    CheckResult,
    DeletePod,
    Disruption,
    Facts,
    NodeName,
    Risk,
    RunOnNode,
    step,
)
from flannel_bot.errors import ParameterError

from ._common import (
    addresses,
    in_cidr,
    names,
    node_info,
    pods_gone,
    restart_flannel,
    stuck_creating,
    workload_pods,
)

ID = "node.clean-interfaces"
VERSION = "1.0.0"
VERIFIES = ("stale-interface-address", "flannel-crashloop")
DEVICES = ("cni0", "flannel.1")


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node whose stale cni0/flannel.1 to remove"})
    disrupt_pods: bool = field(
        default=False,
        metadata={"help": "accept that pods running on the node lose networking"},
    )
    wipe_cni_state: bool = field(
        default=False,
        metadata={"help": "also empty /var/lib/cni (IPAM reservations of the old subnet)"},
    )


def stale_devices(facts: Facts, node: str) -> dict[str, list[str]]:
    """Devices with an IPv4 address outside the node's podCIDR, with those addresses."""
    cidr = node_info(facts, node).pod_cidr
    if not cidr:
        raise ParameterError(
            f"node {node} has no podCIDR, so which addresses are stale cannot be told; fix "
            "that first (`diagnose` names it podcidr-not-assigned)"
        )
    found = addresses(facts, node)
    stale = {}
    for dev in DEVICES:
        bad = [a for a in found.get(dev, []) if not in_cidr(a, cidr)]
        if bad:
            stale[dev] = found[dev]
    return stale


def addresses_in_pod_cidr(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    cidr = node_info(facts, p.node).pod_cidr
    found = addresses(facts, p.node)
    if "flannel.1" not in found:
        return CheckResult(False, f"flannel.1 has not been recreated on {p.node} yet")
    bad = [
        f"{d}: {' '.join(found[d])}"
        for d in DEVICES
        if d in found and not all(in_cidr(a, cidr) for a in found[d])
    ]
    if bad:
        return CheckResult(False, f"still outside {cidr} on {p.node}: {'; '.join(bad)}")
    shown = "; ".join(f"{d} {' '.join(found[d])}" for d in DEVICES if d in found)
    return CheckResult(True, f"{shown} inside podCIDR {cidr}")


def devices_gone(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    found = addresses(facts, p.node)
    removed = [
        a.argv[-1]
        for a in done
        if isinstance(a, RunOnNode) and a.argv[:3] == ("ip", "link", "delete")
    ]
    still = [
        d
        for d in removed
        if d in found and not all(in_cidr(x, node_info(facts, p.node).pod_cidr) for x in found[d])
    ]
    if still:
        return CheckResult(False, f"{', '.join(still)} still carry stale addresses on {p.node}")
    return CheckResult(True, f"removed {', '.join(removed) or 'nothing'} on {p.node}")


@step("Delete the stale devices", risk=Risk.DESTRUCTIVE, timeout=30, check=devices_gone)
def delete_devices(facts: Facts, p: Params) -> list[Action]:
    stale = stale_devices(facts, p.node)
    if not stale:
        return []
    actions: list[Action] = []
    if "cni0" in stale:
        using = [pod for pod in workload_pods(facts, p.node) if pod.phase == "Running"]
        if using and not p.disrupt_pods:
            raise ParameterError(
                f"{len(using)} running pod(s) on {p.node} use cni0 ({names(using)}) and lose "
                "networking when it is deleted; drain the node first, or add disrupt_pods=true "
                "to accept that"
            )
        if using:
            actions.append(
                Disruption(
                    p.node,
                    f"{len(using)} pod(s) lose pod networking while cni0 is recreated "
                    f"(~10 s; recreate any that stay cut off): {names(using)}",
                )
            )
    for dev in stale:
        actions.append(RunOnNode(p.node, ("ip", "link", "delete", dev)))
    if p.wipe_cni_state:
        actions.append(RunOnNode(p.node, ("find", "/var/lib/cni", "-mindepth", "1", "-delete")))
    return actions


@step(
    "Restart the node's flannel pod so it recreates flannel.1",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=addresses_in_pod_cidr,
)
def restart(facts: Facts, p: Params) -> list[Action]:
    return restart_flannel(facts, p.node, needed=bool(stale_devices(facts, p.node)))


@step(
    "Delete pods stuck in ContainerCreating so they are recreated",
    risk=Risk.DESTRUCTIVE,
    timeout=60,
    check=pods_gone,
)
def recreate_stuck(facts: Facts, p: Params) -> list[Action]:
    if not stale_devices(facts, p.node):
        return []
    return [DeletePod(pod.namespace, pod.name, p.node) for pod in stuck_creating(facts, p.node)]
