"""Recreate what is missing of flannel's deployment from the pinned v0.26.1 manifest.

Creates whichever of the Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, ConfigMap
kube-flannel-cfg and DaemonSet kube-flannel-ds do not exist (in kube-system when flannel already
runs there), never touching the ones that do. With iface=<name> flanneld is pinned to that
interface (`--iface`, for multi-NIC nodes where the default-route NIC is the wrong one); the
DaemonSet is patched and its pods restarted one node at a time. Refuses to create the ConfigMap
when its Network (10.244.0.0/16) does not contain the nodes' podCIDRs or kube-proxy's
clusterCIDR: flannel would route the wrong range. Flannel pods that are not Ready are restarted
after RBAC is recreated, and the run waits for a Ready flannel pod on every node.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from flannel_bot.core.runbook import (
    Action,
    CheckResult,
    CreateObject,
    Facts,
    InterfaceName,
    PatchDaemonSet,
    Risk,
    WaitForPod,
    step,
)
from flannel_bot.errors import ExecutorError, ParameterError

from ._common import FLANNEL_LABEL, flannel_pods, replacements_ready, rolling
from ._kube_flannel_v0_26_1 import MANIFEST

ID = "flannel.repair"
VERSION = "1.0.0"
VERIFIES = ("flannel-not-deployed", "flannel-rbac-missing", "flannel-crashloop", "wrong-interface")
DAEMONSET = "kube-flannel-ds"
CONTAINER = "kube-flannel"


@dataclass(frozen=True)
class Params:
    iface: InterfaceName = field(
        default=InterfaceName(""),
        metadata={"help": "interface flanneld must use between nodes (--iface), e.g. eth0"},
    )


def namespace(facts: Facts) -> str:
    """kube-system when an older install lives there; kube-flannel otherwise."""
    for kind, name in (("DaemonSet", DAEMONSET), ("ConfigMap", "kube-flannel-cfg")):
        if facts.kube.object_exists(kind, name, "kube-system"):
            return "kube-system"
    return "kube-flannel"


def manifest(facts: Facts, p: Params) -> list[dict[str, Any]]:
    """The pinned objects, moved to the namespace flannel uses, with `--iface` when asked."""
    ns = namespace(facts)
    docs = [d for d in yaml.safe_load_all(MANIFEST) if d]
    out = []
    for doc in docs:
        if doc["kind"] == "Namespace" and ns == "kube-system":
            continue
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = ns
        for subject in doc.get("subjects", []):
            subject["namespace"] = ns
        if doc["kind"] == "DaemonSet" and p.iface:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["args"] = [*container["args"], f"--iface={p.iface}"]
        out.append(doc)
    return out


def missing(facts: Facts, p: Params) -> list[dict[str, Any]]:
    docs = [
        d
        for d in manifest(facts, p)
        if not facts.kube.object_exists(
            d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")
        )
    ]
    kinds = {d["kind"] for d in docs}
    ns = namespace(facts)
    if not kinds & {"ClusterRole", "ClusterRoleBinding"}:
        rbac = facts.kube.read_rbac()
        if rbac.readable and not rbac.allows(ns, "flannel", "get", "pods"):
            raise ParameterError(
                "ClusterRole and ClusterRoleBinding `flannel` exist but do not let "
                f"{ns}/flannel get pods; compare them with the kube-flannel manifest and fix "
                "them by hand (this runbook only creates what is missing)"
            )
    if "ConfigMap" in kinds:
        check_network(facts, docs)
    return docs


def check_network(facts: Facts, docs: list[dict[str, Any]]) -> None:
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    net = ipaddress.ip_network(json.loads(cm["data"]["net-conf.json"])["Network"])
    cluster = ""
    try:
        proxy = facts.kube.get_configmap("kube-system", "kube-proxy")
        config = yaml.safe_load(proxy.data.get("config.conf", "")) or {}
        cluster = str(config.get("clusterCIDR") or "") if isinstance(config, dict) else ""
    except (ExecutorError, yaml.YAMLError):
        cluster = ""
    if cluster and ipaddress.ip_network(cluster, strict=False) != net:
        raise ParameterError(
            f"the pinned manifest's Network {net} does not match the cluster CIDR {cluster} "
            "(kube-proxy clusterCIDR); create ConfigMap kube-flannel-cfg with the right "
            "Network by hand, then run this again"
        )
    outside = [
        f"{n.name} {n.pod_cidr}"
        for n in facts.kube.list_nodes()
        if n.pod_cidr and not ipaddress.ip_network(n.pod_cidr, strict=False).subnet_of(net)  # type: ignore[arg-type]
    ]
    if outside:
        raise ParameterError(
            f"the pinned manifest's Network {net} does not contain the podCIDR of "
            f"{', '.join(outside)}; create kube-flannel-cfg with the cluster CIDR by hand"
        )


def daemonset_args(facts: Facts) -> tuple[str, ...] | None:
    ns = namespace(facts)
    for ds in facts.kube.list_daemonsets(ns):
        if ds.name == DAEMONSET:
            return tuple(ds.container_args.get(CONTAINER, ()))
    return None


def iface_patch(facts: Facts, p: Params) -> dict[str, Any] | None:
    if not p.iface:
        return None
    args = daemonset_args(facts)
    if args is None or f"--iface={p.iface}" in args:
        return None
    kept = [a for a in args if not a.startswith(("--iface=", "--iface-regex="))]
    return {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": CONTAINER, "args": [*kept, f"--iface={p.iface}"]}]}
            }
        }
    }


def all_exist(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    absent = [
        f"{a.kind} {a.name}"
        for a in done
        if isinstance(a, CreateObject)
        and not facts.kube.object_exists(a.kind, a.name, a.namespace or None)
    ]
    if absent:
        return CheckResult(False, f"still missing: {', '.join(absent)}")
    return CheckResult(True, "every object of the flannel manifest exists")


def iface_set(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    args = daemonset_args(facts) or ()
    if f"--iface={p.iface}" in args:
        return CheckResult(True, f"{DAEMONSET} runs flanneld with --iface={p.iface}")
    return CheckResult(False, f"{DAEMONSET} args are {' '.join(args)}")


@step("Create the missing objects of the pinned manifest", risk=Risk.CHANGE, check=all_exist)
def create_missing(facts: Facts, p: Params) -> list[Action]:
    return [CreateObject.of(doc) for doc in missing(facts, p)]


@step("Pin flanneld to the interface (--iface)", risk=Risk.CHANGE, check=iface_set)
def set_iface(facts: Facts, p: Params) -> list[Action]:
    patch = iface_patch(facts, p)
    if patch is None:
        return []
    return [PatchDaemonSet(namespace(facts), DAEMONSET, json.dumps(patch, separators=(",", ":")))]


@step(
    "Restart flannel one node at a time and wait for a Ready pod on every node",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=replacements_ready,
)
def restart(facts: Facts, p: Params) -> list[Action]:
    created = {d["kind"] for d in missing(facts, p)}
    patched = iface_patch(facts, p) is not None
    ns = namespace(facts)
    if "DaemonSet" in created:
        return [WaitForPod(ns, FLANNEL_LABEL, n.name) for n in facts.kube.list_nodes()]
    if not created and not patched:
        return []
    pods = flannel_pods(facts)
    if not patched:
        pods = [pod for pod in pods if not pod.ready]
    return rolling(pods, FLANNEL_LABEL)
