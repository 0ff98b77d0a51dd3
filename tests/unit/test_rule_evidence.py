"""Every rule that can fire from what the Kubernetes API shows fires from it alone, and node probes
confirm it (issue 14).

API evidence is what `kubectl cluster-info dump` and the API give: pod logs (flannel, kube-proxy,
CoreDNS), events, node conditions, and the Node, Pod, ConfigMap and DaemonSet objects. Journals
and the kernel log are read on the node, so they are node probes, not API evidence.

Each case writes a support bundle into `tmp_path` and reads it with `evidence_from_bundle`, as
`flannel-bot diagnose --recording DIR` does: first without `probes/` (the rule must fire, with the
certainty it claims for API evidence, quote the upstream line and rank first), then with the
lab's recorded probe outputs where one shows the cause on the node (the rule must say
"confirmed"). The lines are the catalogue's own `example`s, never text made up here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.catalogue import (
    CATALOGUE,
    DNS_LOG,
    EVENT,
    FLANNEL_LOG,
    KUBE_PROXY_LOG,
    NODE_CONDITION,
)
from flannel_bot.diagnosis.evidence import Evidence, ProbeOutput
from flannel_bot.diagnosis.findings import CONFIRMED, INFERRED, Finding
from flannel_bot.diagnosis.rules import RULES, diagnose
from flannel_bot.lab import objects
from flannel_bot.wiring import evidence_from_bundle
from tests.unit.test_rules import (
    PROBES,
    SPEC,
    cni_conflict,
    cni_empty,
    edit_json_probe,
    fdb,
    ip_forward,
    set_probe,
)

Json = dict[str, Any]
API_PLACES = (FLANNEL_LOG, KUBE_PROXY_LOG, DNS_LOG, EVENT, NODE_CONDITION)
CRASHED = "crashed flannel"  # the flannel pod crash-loops; the line ends its previous log
INIT_FAILED = "failed install-cni"  # flannel's install-cni init container fails with the line
TEARDOWN = "teardown event"  # a pod stuck Terminating, and the kubelet's FailedKillPod event
USING = "flannel's interface"  # the line flanneld logs at start naming its interface, replaced


def example(finding: str, containing: str, producer: str = "") -> str:
    """The example of the one catalogued line of `finding` (printed by `producer`) the API can
    show that contains `containing`."""
    found = [
        m.example
        for m in CATALOGUE.messages
        if m.finding == finding
        and containing in m.example
        and producer in ("", m.producer)
        and set(m.where) & set(API_PLACES)
    ]
    assert len(found) == 1, f"{finding}: {len(found)} examples contain {containing!r}"
    return found[0]


# -- the cluster as the API returns it ----------------------------------------------------------


def item_list(kind: str, items: list[Json]) -> Json:
    return {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}


@dataclass
class Cluster:
    """The lab's healthy three-node kubeadm cluster as the API returns it (plus configmaps.json
    and rbac.json, the extras `flannel-bot collect` writes); cases edit it, `write` lays it out as
    a support bundle."""

    nodes: dict[str, Json] = field(default_factory=dict)
    pods: dict[tuple[str, str], Json] = field(default_factory=dict)
    daemonsets: list[Json] = field(default_factory=list)
    configmaps: list[Json] = field(default_factory=list)
    events: list[Json] = field(default_factory=list)
    rbac: list[Json] = field(default_factory=list)
    services: list[Json] = field(default_factory=list)
    logs: dict[tuple[str, str, str], str] = field(default_factory=dict)  # ns, pod, container
    previous: dict[tuple[str, str, str], str] = field(default_factory=dict)

    @classmethod
    def healthy(cls) -> Cluster:
        c = cls()
        kube_proxy_cm, kube_proxy_ds, *kube_proxy_pods = objects.kube_proxy_objects(SPEC)
        for n in SPEC.all_nodes():
            c.nodes[n.name] = objects.node(n)
            ns, name = c.add(objects.flannel_pod(SPEC, n, f"kube-flannel-ds-{n.name}"))
            c.logs[(ns, name, "kube-flannel")] = objects.flanneld_log(SPEC, n, name)
            c.add(objects.workload_pod(n, 1))
        for raw in kube_proxy_pods:
            c.add(raw)
        c.dns_pod("w1")
        c.daemonsets = [objects.flannel_daemonset(len(c.nodes)), kube_proxy_ds]
        c.configmaps = [objects.flannel_configmap(), kube_proxy_cm]
        c.rbac = [o for o in objects.rbac_objects() if o["kind"] != "ServiceAccount"]
        c.services = objects.kubernetes_service(SPEC)[:1]
        return c

    def add(self, pod: Json) -> tuple[str, str]:
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        self.pods[key] = pod
        return key

    def on(self, node: str, app: str) -> tuple[str, str]:
        """The pod of `app` (flannel, kube-proxy, kube-dns) on `node`."""
        for key, pod in self.pods.items():
            labels = pod["metadata"].get("labels", {})
            if pod["spec"].get("nodeName") == node and app in (
                labels.get("app"),
                labels.get("k8s-app"),
            ):
                return key
        raise KeyError(f"no {app} pod on {node}")

    # -- what the cluster says, by where it says it ---------------------------------------------

    def say(self, where: str, node: str, line: str) -> None:
        if where == FLANNEL_LOG:  # flanneld keeps running and logs the line
            ns, name = self.on(node, "flannel")
            self.logs[(ns, name, "kube-flannel")] += line + "\n"
        elif where == USING:
            ns, name = self.on(node, "flannel")
            key = (ns, name, "kube-flannel")
            lines = self.logs[key].splitlines()
            self.logs[key] = (
                "\n".join(line if "Using interface with name" in x else x for x in lines) + "\n"
            )
        elif where == CRASHED:
            self.crash_flannel(node, line)
        elif where == INIT_FAILED:
            self.fail_install_cni(node, line)
        elif where == KUBE_PROXY_LOG:
            ns, name = self.on(node, "kube-proxy")
            self.logs[(ns, name, "kube-proxy")] = line + "\n"
        elif where == DNS_LOG:
            ns, name = self.dns_pod(node)
            self.logs[(ns, name, "coredns")] = line + "\n"
        elif where == EVENT:
            self.sandbox_event(node, line)
        elif where == TEARDOWN:
            self.teardown_event(node, line)
        elif where == NODE_CONDITION:
            self.not_ready(node, line)
        else:
            raise ValueError(where)

    def crash_flannel(self, node: str, line: str) -> None:
        """flanneld on `node` exits with `line`: CrashLoopBackOff, the line ending its log."""
        ns, name = self.on(node, "flannel")
        self.pods[(ns, name)] = objects.flannel_pod(
            SPEC, SPEC.by_name(node), name, ready=False, restarts=5
        )
        start = objects.flanneld_log(SPEC, SPEC.by_name(node), name).splitlines()[:4]
        text = "\n".join([*start, line]) + "\n"
        self.logs[(ns, name, "kube-flannel")] = text
        self.previous[(ns, name, "kube-flannel")] = text

    def fail_install_cni(self, node: str, line: str) -> None:
        """flannel's install-cni init container fails with `line` (Init:CrashLoopBackOff)."""
        ns, name = self.on(node, "flannel")
        pod = self.pods[(ns, name)]
        pod["status"]["phase"] = "Pending"
        init = pod["status"]["initContainerStatuses"][1]
        init.update(restartCount=4, ready=False)
        init["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
        init["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
        main = pod["status"]["containerStatuses"][0]
        main.update(ready=False, started=False)
        main["state"] = {"waiting": {"reason": "PodInitializing"}}
        self.logs[(ns, name, "install-cni")] = line + "\n"
        self.previous[(ns, name, "install-cni")] = line + "\n"

    def dns_pod(self, node: str) -> tuple[str, str]:
        """The CoreDNS pod on `node` (one is added if there is none)."""
        try:
            return self.on(node, "kube-dns")
        except KeyError:
            raw = objects.workload_pod(SPEC.by_name(node), 3)
            raw["metadata"].update(
                name=f"coredns-7db6d8ff4d-{node}",
                namespace="kube-system",
                labels={"k8s-app": "kube-dns"},
            )
            raw["spec"]["containers"][0]["name"] = "coredns"
            raw["status"]["containerStatuses"][0]["name"] = "coredns"
            return self.add(raw)

    def sandbox_event(self, node: str, message: str) -> None:
        """A new pod on `node` waiting for its sandbox, and the kubelet's event saying why."""
        raw = objects.workload_pod(SPEC.by_name(node), 99)
        raw["metadata"]["name"] = f"web-{node}-new"
        raw["status"] = objects.pod_status(SPEC.by_name(node), False, 0, False, phase="Pending")
        self.add(raw)
        self.events.append(
            objects.event(
                "default", "Pod", f"web-{node}-new", "FailedCreatePodSandBox", message, host=node
            )
        )

    def teardown_event(self, node: str, message: str) -> None:
        """A pod on `node` stuck Terminating, and the kubelet's event saying why it cannot go."""
        ns, name = self.add(objects.workload_pod(SPEC.by_name(node), 98))
        self.pods[(ns, name)]["metadata"]["deletionTimestamp"] = objects.now()
        self.events.append(objects.event(ns, "Pod", name, "FailedKillPod", message, host=node))

    def not_ready(self, node: str, message: str) -> None:
        raw = self.nodes[node]
        raw["status"]["conditions"] = objects.node_conditions(ready=False, network_ok=False)
        ready = next(c for c in raw["status"]["conditions"] if c["type"] == "Ready")
        ready["message"] = message

    def configmap(self, name: str) -> Json:
        return next(c for c in self.configmaps if c["metadata"]["name"] == name)

    def drop_configmap(self, name: str) -> None:
        self.configmaps = [c for c in self.configmaps if c["metadata"]["name"] != name]

    # -- the bundle -----------------------------------------------------------------------------

    def write(self, root: Path, probes: dict[str, dict[str, ProbeOutput]] | None = None) -> Path:
        """The support bundle `kubectl cluster-info dump` (and `flannel-bot collect`) writes."""
        root.mkdir(parents=True)

        def put(rel: str, text: str) -> None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)

        def put_json(rel: str, obj: Json) -> None:
            put(rel, json.dumps(obj, indent=2))

        put_json("nodes.json", item_list("NodeList", list(self.nodes.values())))
        put_json("rbac.json", item_list("List", self.rbac))
        lists = {
            "pods": ("PodList", list(self.pods.values())),
            "events": ("EventList", self.events),
            "daemonsets": ("DaemonSetList", self.daemonsets),
            "services": ("ServiceList", self.services),
        }
        for ns in ("default", "kube-system", objects.FLANNEL_NS):
            for stem, (kind, items) in lists.items():
                mine = [i for i in items if i["metadata"].get("namespace") == ns]
                put_json(f"{ns}/{stem}.json", item_list(kind, mine))
            cms = [c for c in self.configmaps if c["metadata"]["namespace"] == ns]
            if cms:
                put_json(f"{ns}/configmaps.json", item_list("ConfigMapList", cms))
        for (ns, name), pod in self.pods.items():
            containers = [
                c["name"]
                for part in ("initContainers", "containers")
                for c in pod["spec"].get(part, [])
            ]
            blocks = [
                f"==== START logs for container {c} of pod {ns}/{name} ====\n"
                f"{self.logs.get((ns, name, c), '')}"
                f"==== END logs for container {c} of pod {ns}/{name} ====\n"
                for c in containers
            ]
            put(f"{ns}/{name}/logs.txt", "".join(blocks))
            for c in containers:
                if (ns, name, c) in self.previous:
                    put(f"{ns}/{name}/logs-{c}-previous.txt", self.previous[(ns, name, c)])
        for node, outputs in (probes or {}).items():
            for probe_id, out in outputs.items():
                put(f"probes/{node}/{probe_id}.txt", out.stdout)
                put(f"probes/{node}/{probe_id}.err", out.stderr)
                put(f"probes/{node}/{probe_id}.exit", f"{out.exit_code}\n")
        return root


def healthy_probes() -> Evidence:
    """The lab's recorded probe outputs of every node, to edit with test_rules' helpers."""
    return Evidence(
        probes={
            node: {pid: ProbeOutput(**out) for pid, out in outputs.items()}
            for node, outputs in PROBES.items()
        }
    )


# -- the cases: what the API shows (a), and what the node shows besides (b) ---------------------


Edit = Callable[[Cluster], None]


@dataclass(frozen=True)
class ApiCase:
    """A rule fed API evidence only: the finding it must draw first, with what certainty, and
    the text its evidence must quote (the upstream line, or what the API object says)."""

    finding: str
    shows: Edit
    quoted: tuple[str, ...]
    certainty: str = INFERRED
    node: str = "w2"


def said(
    finding: str,
    where: str,
    containing: str,
    *besides: Edit,
    certainty: str = INFERRED,
    node: str = "w2",
    producer: str = "",
    quoting: str = "",
) -> ApiCase:
    """`finding` from one catalogue example said where the API shows it, after the edits
    `besides` (an API object that agrees, so the finding also quotes `quoting` from it; or a
    ConfigMap a bare dump lacks)."""
    line = example(finding, containing, producer)
    return ApiCase(
        finding,
        both(*besides, lambda c: c.say(where, node, line)),
        (as_quoted(line), quoting) if quoting else (as_quoted(line),),
        certainty,
        node,
    )


def as_quoted(line: str) -> str:
    """A log line as a finding quotes it (stripped, at most 500 characters)."""
    return line.strip()[:500]


def shown(
    finding: str, shows: Edit, quoted: str, certainty: str = CONFIRMED, node: str = "w2"
) -> ApiCase:
    """`finding` from what an API object shows (and `quoted` from it)."""
    return ApiCase(finding, shows, (quoted,), certainty, node)


def both(*steps: Edit) -> Edit:
    def run(c: Cluster) -> None:
        for step in steps:
            step(c)

    return run


def net_conf(text: str) -> Edit:
    def edit(c: Cluster) -> None:
        c.configmap("kube-flannel-cfg")["data"]["net-conf.json"] = text

    return edit


def kube_proxy_config(old: str, new: str) -> Edit:
    def edit(c: Cluster) -> None:
        data = c.configmap("kube-proxy")["data"]
        assert old in data["config.conf"]
        data["config.conf"] = data["config.conf"].replace(old, new)

    return edit


def drop(configmap: str) -> Edit:
    return lambda c: c.drop_configmap(configmap)


def annotate(node: str, annotations: dict[str, str]) -> Edit:
    return lambda c: c.nodes[node]["metadata"]["annotations"].update(annotations)


def node_spec(node: str, **spec: Any) -> Edit:
    def edit(c: Cluster) -> None:
        for key, value in spec.items():
            if value is None:
                c.nodes[node]["spec"].pop(key, None)
            else:
                c.nodes[node]["spec"][key] = value

    return edit


def no_rbac(c: Cluster) -> None:
    c.rbac = []


def flannel_removed(c: Cluster) -> None:
    c.pods = {k: p for k, p in c.pods.items() if k[0] != objects.FLANNEL_NS}
    c.daemonsets = [d for d in c.daemonsets if d["metadata"]["namespace"] != objects.FLANNEL_NS]
    c.logs = {k: v for k, v in c.logs.items() if k[0] != objects.FLANNEL_NS}


def calico_instead(c: Cluster) -> None:
    flannel_removed(c)
    c.drop_configmap("kube-flannel-cfg")
    for n in SPEC.all_nodes():
        raw = objects.kube_proxy_pod(SPEC, n, f"calico-node-{n.name}")
        raw["metadata"]["labels"] = {"k8s-app": "calico-node"}
        c.add(raw)


def k3s_agent_with_external_ip(c: Cluster) -> None:
    """k3s's embedded flannel (no DaemonSet); the agent w2 was started with --node-external-ip,
    while flannel advertises its internal address."""
    flannel_removed(c)
    c.drop_configmap("kube-flannel-cfg")
    for raw in c.nodes.values():
        raw["status"]["nodeInfo"]["kubeletVersion"] = "v1.30.6+k3s1"
    c.nodes["w2"]["metadata"]["annotations"]["k3s.io/node-args"] = json.dumps(
        ["agent", "--node-external-ip", "203.0.113.2"], separators=(",", ":")
    )


def image_pull_back_off(node: str, line: str) -> Edit:
    def edit(c: Cluster) -> None:
        ns, name = c.on(node, "flannel")
        pod = c.pods[(ns, name)]
        pod["status"]["phase"] = "Pending"
        main = pod["status"]["containerStatuses"][0]
        main.update(ready=False, started=False)
        main["state"] = {"waiting": {"reason": "ImagePullBackOff", "message": line}}
        c.events.append(objects.event(ns, "Pod", name, "Failed", line, host=node))

    return edit


def oom_killed(node: str) -> Edit:
    def edit(c: Cluster) -> None:
        ns, name = c.on(node, "flannel")
        raw = objects.flannel_pod(SPEC, SPEC.by_name(node), name, ready=False, restarts=3)
        raw["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] = "OOMKilled"
        c.pods[(ns, name)] = raw

    return edit


def tainted_without_flannel(node: str) -> Edit:
    def edit(c: Cluster) -> None:
        del c.pods[c.on(node, "flannel")]
        c.nodes[node]["spec"]["taints"] = [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
        ]

    return edit


def crash_without_a_cause(node: str) -> Edit:
    """flanneld exits after a healthy start (killed, say): its log names no cause."""

    def edit(c: Cluster) -> None:
        c.crash_flannel(node, objects.flanneld_log(SPEC, SPEC.by_name(node), "x").splitlines()[4])

    return edit


def pod_with_runtime_address(node: str) -> Edit:
    """A running pod got its address from containerd's default bridge, not flannel's subnet."""

    def edit(c: Cluster) -> None:
        raw = objects.workload_pod(SPEC.by_name(node), 5)
        raw["status"]["podIP"] = "10.88.0.5"
        raw["status"]["podIPs"] = [{"ip": "10.88.0.5"}]
        c.add(raw)

    return edit


def cidr_not_available(node: str) -> Edit:
    def edit(c: Cluster) -> None:
        node_spec(node, podCIDR=None, podCIDRs=None)(c)
        message = f"Node {node} status is now: CIDRNotAvailable"
        c.events.append(
            objects.event(
                "default", "Node", node, "CIDRNotAvailable", message, "Normal", "cidrAllocator"
            )
        )

    return edit


IMAGE_PULL = example("flannel-image-unavailable", "Failed to pull")
API_CASES: dict[str, ApiCase] = {
    # cluster
    "flannel-not-in-use": shown(
        "flannel-not-in-use", calico_instead, "calico's node agent runs", node=""
    ),
    "flannel-not-deployed": shown("flannel-not-deployed", flannel_removed, "no flannel DaemonSet"),
    "flannel-rbac-missing": said("flannel-rbac-missing", CRASHED, "cannot get resource"),
    "flannel-rbac-missing/rbac.json": said(
        "flannel-rbac-missing",
        CRASHED,
        "cannot get resource",
        no_rbac,
        certainty=CONFIRMED,
        quoting="no binding gives kube-flannel/flannel `get pods`",
    ),
    "flannel-auth-failed": said("flannel-auth-failed", CRASHED, "pod spec for"),
    "flannel-manifest-invalid": said("flannel-manifest-invalid", CRASHED, "POD_NAME"),
    "flannel-image-unavailable": shown(
        "flannel-image-unavailable", image_pull_back_off("w2", IMAGE_PULL), as_quoted(IMAGE_PULL)
    ),
    "flannel-insufficient-privileges": said(
        "flannel-insufficient-privileges", CRASHED, "/dev/net/tun"
    ),
    "host-path-denied": said("host-path-denied", INIT_FAILED, "cp: can't create"),
    "flannel-bug": said("flannel-bug", CRASHED, "panic: runtime error"),
    # config
    "netconf-invalid": said("netconf-invalid", CRASHED, "unknown backend type"),
    "netconf-invalid/configmap": said(
        "netconf-invalid",
        CRASHED,
        "unknown backend type",
        net_conf('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlna"}}'),
        certainty=CONFIRMED,
        quoting="unknown backend type 'vxlna'",
    ),
    "dualstack-config-invalid": said(
        "dualstack-config-invalid", CRASHED, "flannel-v6.1: IPv6 is enabled"
    ),
    "dualstack-config-invalid/configmap": shown(  # quotes the nodes, not flanneld's line
        "dualstack-config-invalid",
        both(
            net_conf(
                '{"Network": "10.244.0.0/16", "EnableIPv6": true, '
                '"IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}'
            ),
            said("dualstack-config-invalid", CRASHED, "flannel-v6.1: IPv6 is enabled").shows,
        ),
        "EnableIPv6 is set but the node has no IPv6 podCIDR",
    ),
    "etcd-unreachable": said("etcd-unreachable", CRASHED, "Couldn't fetch network config"),
    # kube-proxy
    "kube-proxy-config-invalid": said(
        "kube-proxy-config-invalid",
        KUBE_PROXY_LOG,
        "yaml: line 12",
        drop("kube-proxy"),  # as `kubectl cluster-info dump` writes no ConfigMaps
    ),
    "kube-proxy-config-invalid/configmap": said(
        "kube-proxy-config-invalid",
        KUBE_PROXY_LOG,
        'unknown field \\"masqueradeAl',
        kube_proxy_config("masqueradeAll:", "masqueradeAl:"),
        certainty=CONFIRMED,
        quoting="unknown field `iptables.masqueradeAl`",
    ),
    "kube-proxy-config-invalid/invalid-mode": said(
        "kube-proxy-config-invalid",
        KUBE_PROXY_LOG,
        'Invalid value: \\"ipvss',
        kube_proxy_config('mode: ""', 'mode: "ipvss"'),
    ),
    "apiserver-unreachable": said("apiserver-unreachable", CRASHED, "Get https://10.3.0.1:443"),
    "apiserver-unreachable/coredns": said("apiserver-unreachable", DNS_LOG, "plugin/kubernetes"),
    "proxy-mode-unsupported": said("proxy-mode-unsupported", KUBE_PROXY_LOG, "IPVS proxier will"),
    # subnets
    "podcidr-not-assigned": said("podcidr-not-assigned", CRASHED, "pod cidr not assigned"),
    "podcidr-not-assigned/node": said(
        "podcidr-not-assigned",
        CRASHED,
        "pod cidr not assigned",
        node_spec("w2", podCIDR=None, podCIDRs=None),
        certainty=CONFIRMED,
        quoting="spec.podCIDR is empty",
    ),
    "podcidr-not-assigned/kube-proxy": said(
        "podcidr-not-assigned", KUBE_PROXY_LOG, "timeout waiting for PodCIDR"
    ),
    "subnet-lease-exhausted": said(
        "subnet-lease-exhausted", CRASHED, "registering network: failed to acquire lease: out of"
    ),
    "subnet-lease-exhausted/event": shown(
        "subnet-lease-exhausted", cidr_not_available("w3"), "CIDRNotAvailable", node="w3"
    ),
    "network-cidr-mismatch": said(
        "network-cidr-mismatch",
        CRASHED,
        "doesn't contain",
        drop("kube-flannel-cfg"),  # as `kubectl cluster-info dump` writes no ConfigMaps
    ),
    "network-cidr-mismatch/configmap": said(
        "network-cidr-mismatch",
        CRASHED,
        "doesn't contain",
        net_conf('{"Network": "10.100.0.0/16", "Backend": {"Type": "vxlan"}}'),
        certainty=CONFIRMED,
        quoting="spec.podCIDR: 10.244.2.0/24",
    ),
    "subnet-overlap": shown(
        "subnet-overlap",
        node_spec("w3", podCIDR="10.244.2.0/24", podCIDRs=["10.244.2.0/24"]),
        "spec.podCIDR: 10.244.2.0/24",
    ),
    "subnet-lease-lost": said("subnet-lease-lost", CRASHED, "Lease has been revoked"),
    # kernel
    "br-netfilter-missing": said("br-netfilter-missing", CRASHED, "Failed to check br_netfilter"),
    "vxlan-unsupported": said("vxlan-unsupported", CRASHED, "failed to create vxlan device"),
    "backend-prereq-missing": said("backend-prereq-missing", CRASHED, "wireguard interface"),
    # interfaces
    "stale-interface-address": said(
        "stale-interface-address", CRASHED, "link has incompatible addresses"
    ),
    "stale-interface-address/event": said("stale-interface-address", EVENT, 'sandbox "7d2c0b1f'),
    "interface-not-found": said("interface-not-found", CRASHED, "IPv4 address for interface bond0"),
    "vxlan-port-conflict": said("vxlan-port-conflict", CRASHED, "address already in use"),
    "wrong-interface": said("wrong-interface", USING, "Using interface with name enp0s3"),
    "wrong-interface/annotation": shown(
        "wrong-interface",
        annotate("w2", {"flannel.alpha.coreos.com/public-ip": "10.0.2.15"}),
        "flannel.alpha.coreos.com/public-ip: 10.0.2.15, InternalIP: 172.31.248.12",
    ),
    "wrong-interface/invalid-public-ip": said(
        "wrong-interface", CRASHED, "invalid public IP address"
    ),
    "flannel-public-ip-unreachable": shown(
        "flannel-public-ip-unreachable",
        k3s_agent_with_external_ip,
        "--node-external-ip 203.0.113.2",
    ),
    # iptables
    "iptables-backend-mismatch": said("iptables-backend-mismatch", FLANNEL_LOG, "100.96.0.0/11"),
    "host-firewall-reject": said("host-firewall-reject", DNS_LOG, "Failed to list *v1.Namespace"),
    "iptables-rules-failed": said(
        "iptables-rules-failed", FLANNEL_LOG, "iptables binary was not found"
    ),
    "ip-forward-disabled": said("ip-forward-disabled", EVENT, "failed to enable forwarding"),
    # vxlan
    "vxlan-peer-missing": said("vxlan-peer-missing", FLANNEL_LOG, "AddFDB failed"),
    "hostgw-not-l2": said(
        "hostgw-not-l2",
        FLANNEL_LOG,
        "dev index 2: network is unreachable",
        net_conf('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}'),
    ),
    "mtu-mismatch": said(
        "mtu-mismatch",
        CRASHED,
        "too small for ipip mode",
        net_conf('{"Network": "10.244.0.0/16", "Backend": {"Type": "ipip"}}'),
    ),
    "peer-setup-failed": said("peer-setup-failed", FLANNEL_LOG, "failed to setup ipv4 peer"),
    # cni
    "cni-plugin-missing": said("cni-plugin-missing", EVENT, 'sandbox "adf18a2d'),
    "cni-config-conflict": said("cni-config-conflict", EVENT, 'plugin type="cilium-cni"'),
    "cni-config-conflict/pod-addresses": shown(
        "cni-config-conflict", pod_with_runtime_address("w2"), "IP 10.88.0.5", INFERRED
    ),
    "cni-config-invalid": said(
        "cni-config-invalid",
        NODE_CONDITION,
        "container runtime network not ready",
        producer="containerd",
    ),
    "cni-version-mismatch": said(
        "cni-version-mismatch", EVENT, 'plugin type="portmap" failed (add): incompatible'
    ),
    "cni-cache-corrupt": said("cni-cache-corrupt", TEARDOWN, "failed to destroy network"),
    "cni-bridge-race": said("cni-bridge-race", EVENT, "could not add IP address"),
    "portmap-teardown-failed": said("portmap-teardown-failed", TEARDOWN, "StopPodSandbox for"),
    # pods
    "flannel-oomkilled": shown("flannel-oomkilled", oom_killed("w2"), "OOMKilled"),
    "flannel-not-scheduled": shown(
        "flannel-not-scheduled", tainted_without_flannel("w2"), "dedicated=gpu:NoSchedule"
    ),
    "flannel-crashloop": shown("flannel-crashloop", crash_without_a_cause("w2"), "restarts 5"),
    "subnet-env-missing": said("subnet-env-missing", EVENT, 'sandbox "3c05350c'),
    "ipam-exhausted": said("ipam-exhausted", EVENT, 'sandbox "1b2c3d4e', node="w3"),
    "healthz-port-conflict": said("healthz-port-conflict", CRASHED, "Start healthz server error"),
}

# The rules that need the node itself: nothing the API shows can make them fire.
NODE_ONLY_RULES = {
    "node-unreachable": "the node not answering SSH is the evidence",
    "ipvs-local-route": "the stale local route is in the node's routing table (ip-route-local)",
    "vtep-mac-mismatch": "flannel.1's MAC is read on the nodes (ip-addr, ip-neigh)",
    "forward-drop": "the FORWARD policy is in the node's iptables (iptables-filter)",
    "vxlan-blocked": "the UDP 8472 drop is in the node's iptables (iptables-filter)",
    "vxlan-checksum-offload": "ethtool's offload and the kernel's `UDP: bad checksum` are node's",
    "backend-traffic-blocked": "the backend's traffic is dropped in the node's iptables",
    "peer-route-missing": "the peer routes are in the node's routing table (ip-route)",
    "service-route-conflict": "the route holding the Service address is in ip-route",
    "conntrack-table-full": "only the kernel log says so",
    "neighbor-table-overflow": "only the kernel log says so",
}

# API-capable rules with no node probe that shows their cause, each with why.
RULES_WITHOUT_A_NODE_CONFIRMATION = {
    "flannel-not-in-use": "which CNI runs is the API's to say (its pods); confirmed from them",
    "flannel-not-deployed": "a missing DaemonSet is the API's to say; confirmed from it",
    "flannel-rbac-missing": "RBAC lives in the API: rbac.json confirms it, not a node",
    "flannel-auth-failed": "the ServiceAccount token is judged by the API server, not the node",
    "flannel-manifest-invalid": "the DaemonSet's args, env and mounts are not on the node",
    "flannel-image-unavailable": "the pod's ImagePullBackOff (API) confirms it; no probe pulls",
    "flannel-insufficient-privileges": "the container's securityContext is not probed",
    "host-path-denied": "no probe reads SELinux labels or denials",
    "flannel-bug": "a defect of flannel's release; nothing on the node shows it",
    "netconf-invalid": "net-conf.json is the ConfigMap's (API); confirmed from it",
    "dualstack-config-invalid": "net-conf.json and podCIDRs are API objects; confirmed from them",
    "etcd-unreachable": "etcd is not on the node; no probe reaches it",
    "kube-proxy-config-invalid": "kube-proxy's ConfigMap (API) confirms it",
    "apiserver-unreachable": "no probe connects to the API Service from the node",
    "proxy-mode-unsupported": "no probe reads the ip_vs modules or the kernel version",
    "podcidr-not-assigned": "spec.podCIDR is the Node object's (API); confirmed from it",
    "subnet-lease-exhausted": "the cluster CIDR and leases are not on the node",
    "subnet-overlap": "confirmed from the Node objects' podCIDRs and addresses",
    "subnet-lease-lost": "the lease lived in etcd; nothing on the node shows its loss",
    "backend-prereq-missing": "no probe looks for the wireguard module, charon or /dev/net/tun",
    "wrong-interface": "confirmed from the Node's public-ip annotation against its InternalIP",
    "flannel-public-ip-unreachable": "confirmed from the Node's k3s and flannel annotations",
    "iptables-rules-failed": "the iptables that failed is the one in flannel's container",
    "peer-setup-failed": "no probe reads wireguard peers or xfrm policies",
    "cni-version-mismatch": "the plugins' supported versions are not probed",
    "cni-cache-corrupt": "/var/lib/cni/flannel is not probed",
    "cni-bridge-race": "the bridge plugin's version is not probed",
    "portmap-teardown-failed": "a transient race; nothing on the node outlasts it",
    "flannel-oomkilled": "the pod's OOMKilled state (API) is the evidence",
    "flannel-not-scheduled": "the DaemonSet's placement (API) is the evidence",
    "flannel-crashloop": "the pod's restarts (API) are the evidence",
    "healthz-port-conflict": "no probe lists the node's listening sockets",
}


def stale_cni0(ev: Evidence) -> None:
    def edit(links: list[dict[str, object]]) -> list[dict[str, object]]:
        for link in links:
            if link["ifname"] == "cni0":
                link["addr_info"] = [{"family": "inet", "local": "10.245.2.1", "prefixlen": 24}]
        return links

    edit_json_probe(ev, "w2", "ip-addr", edit)


def without_vxlan_module(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "kernel-modules",
        exit_code=2,
        stderr="ls: cannot access '/sys/module/br_netfilter': No such file or directory\n"
        "ls: cannot access '/sys/module/vxlan': No such file or directory\n",
    )


def without_bridge_netfilter(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "bridge-nf-call-iptables",
        exit_code=1,
        stderr="cat: /proc/sys/net/bridge/bridge-nf-call-iptables: No such file or directory",
    )


def without_subnet_env(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "subnet-env",
        exit_code=1,
        stderr="cat: /run/flannel/subnet.env: No such file or directory",
    )


def full_ipam(ev: Evidence) -> None:
    files = [f"==> /var/lib/cni/networks/cbr0/10.244.3.{h}\n{h:064x}\neth0" for h in range(2, 255)]
    set_probe(ev, "w3", "ipam", "".join(files))


def without_flannel_plugin(ev: Evidence) -> None:
    set_probe(ev, "w2", "cni-bin", "bridge\nhost-local\nloopback\nportmap\n")


def legacy_rules_too(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "iptables-legacy",
        "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j FLANNEL-POSTRTG\nCOMMIT\n",
    )


def input_rejected(ev: Evidence) -> None:
    text = ev.probes["w2"]["iptables-filter"].stdout.replace(
        "COMMIT", "-A INPUT -j REJECT --reject-with icmp-host-prohibited\nCOMMIT", 1
    )
    set_probe(ev, "w2", "iptables-filter", text)


def subnet_outside_network(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "subnet-env",
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.224.1.1/24\nFLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n",
    )


def no_shared_l2(ev: Evidence) -> None:
    def edit(routes: list[dict[str, object]]) -> list[dict[str, object]]:
        for route in routes:
            if route["dst"] == "172.31.248.0/24":
                route["dst"] = "192.168.2.0/24"
        return routes

    edit_json_probe(ev, "w2", "ip-route", edit)


def lab_interfaces_without_bond0(ev: Evidence) -> None:
    """ip-addr as the lab records it: lo, eth0, flannel.1, cni0; no bond0."""
    links = json.loads(ev.probes["w2"]["ip-addr"].stdout)
    assert "bond0" not in {link["ifname"] for link in links}


def uplink_too_small_for_ipip(ev: Evidence) -> None:
    """flannel.ipip at the uplink's own MTU: no room left for the 20-byte IP-in-IP header."""

    def edit(links: list[dict[str, object]]) -> list[dict[str, object]]:
        vxlan = next(link for link in links if link["ifname"] == "flannel.1")
        ipip = json.loads(json.dumps(vxlan))
        ipip.update(ifindex=98, ifname="flannel.ipip", mtu=1480)
        ipip["linkinfo"] = {"info_kind": "ipip", "info_data": {"local": "172.31.248.12"}}
        for link in links:
            if link["ifname"] == "eth0":
                link["mtu"] = 1480
        return [link for link in links if link["ifname"] != "flannel.1"] + [ipip]

    edit_json_probe(ev, "w2", "ip-addr", edit)


def cilium_vxlan_on_8472(ev: Evidence) -> None:
    def edit(links: list[dict[str, object]]) -> list[dict[str, object]]:
        vxlan = next(link for link in links if link["ifname"] == "flannel.1")
        other = json.loads(json.dumps(vxlan))
        other.update(ifindex=99, ifname="cilium_vxlan", addr_info=[])
        return [link for link in links if link["ifname"] != "flannel.1"] + [other]

    edit_json_probe(ev, "w2", "ip-addr", edit)


# (b): the API case, and what the node's probes show of the same cause
CONFIRMATIONS: dict[str, Callable[[Evidence], None]] = {
    "br-netfilter-missing": without_bridge_netfilter,
    "vxlan-unsupported": without_vxlan_module,
    "stale-interface-address": stale_cni0,
    "stale-interface-address/event": stale_cni0,
    "interface-not-found": lab_interfaces_without_bond0,
    "vxlan-port-conflict": cilium_vxlan_on_8472,
    "iptables-backend-mismatch": legacy_rules_too,
    "host-firewall-reject": input_rejected,
    "ip-forward-disabled": ip_forward,
    "network-cidr-mismatch": subnet_outside_network,
    "vxlan-peer-missing": fdb,
    "hostgw-not-l2": no_shared_l2,
    "mtu-mismatch": uplink_too_small_for_ipip,
    "cni-plugin-missing": without_flannel_plugin,
    "cni-config-conflict": cni_conflict,
    "cni-config-invalid": cni_empty,
    "subnet-env-missing": without_subnet_env,
    "ipam-exhausted": full_ipam,
}

# Where the bot falls short today: the case says what it should do, the reason what it does.
API_SHORTFALLS: dict[str, str] = {}
CONFIRMATION_SHORTFALLS: dict[str, str] = {}


def cases(names: list[str], shortfalls: dict[str, str]) -> list[Any]:
    return [
        pytest.param(
            name,
            id=name,
            marks=[pytest.mark.xfail(strict=True, reason=shortfalls[name])]
            if name in shortfalls
            else [],
        )
        for name in names
    ]


def bundle_evidence(
    tmp_path: Path, case: ApiCase, probes: Evidence | None = None
) -> tuple[Evidence, list[Finding]]:
    cluster = Cluster.healthy()
    case.shows(cluster)
    root = cluster.write(tmp_path / "bundle", probes.probes if probes else None)
    ev = evidence_from_bundle(root)
    return ev, diagnose(ev)


def summary(findings: list[Finding]) -> list[tuple[str, tuple[str, ...], str]]:
    return [(f.id, f.nodes, f.certainty) for f in findings]


# -- the tests ----------------------------------------------------------------------------------


def test_the_healthy_bundle_has_no_findings_with_or_without_probes(tmp_path: Path) -> None:
    """The base every case edits: healthy as the API shows it, and as the nodes show it."""
    ev = evidence_from_bundle(Cluster.healthy().write(tmp_path / "api"))
    assert (ev.probes, [f.id for f in diagnose(ev)]) == ({}, [])
    assert {p.node for p in ev.flannel_pods()} == {"w1", "w2", "w3"}
    assert len(ev.logs) == 3 and len(ev.kube_proxy_pods()) == 3 and ev.dns_pods()
    ev = evidence_from_bundle(Cluster.healthy().write(tmp_path / "probed", healthy_probes().probes))
    assert (sorted(ev.probes), [f.id for f in diagnose(ev)]) == (["w1", "w2", "w3"], [])


@pytest.mark.parametrize("name", cases(list(API_CASES), API_SHORTFALLS))
def test_rule_fires_from_api_evidence_alone(name: str, tmp_path: Path) -> None:
    case = API_CASES[name]
    ev, findings = bundle_evidence(tmp_path, case)
    assert ev.probes == {} and ev.unreachable == {}
    assert findings, "no findings"
    first = findings[0]
    assert (first.id, first.certainty) == (case.finding, case.certainty), summary(findings)
    assert case.node in first.nodes or (not case.node and not first.nodes), summary(findings)
    quoted = [e.text for e in first.evidence]
    for text in case.quoted:
        assert any(text in q for q in quoted), (text, quoted)
    assert all(e.source.startswith("API: ") for e in first.evidence), first.evidence
    assert not {f.id for f in findings} & NODE_ONLY_RULES.keys(), summary(findings)


@pytest.mark.parametrize("name", cases(list(CONFIRMATIONS), CONFIRMATION_SHORTFALLS))
def test_node_probes_confirm_what_the_api_showed(name: str, tmp_path: Path) -> None:
    case = API_CASES[name]
    probes = healthy_probes()
    CONFIRMATIONS[name](probes)
    ev, findings = bundle_evidence(tmp_path, case, probes)
    assert sorted(ev.probes) == ["w1", "w2", "w3"]
    mine = [f for f in findings if f.id == case.finding and case.node in f.nodes]
    assert mine, summary(findings)
    assert [f.certainty for f in mine] == [CONFIRMED] * len(mine), summary(findings)
    assert any(not e.source.startswith("API: ") for f in mine for e in f.evidence)


def test_every_rule_is_tested_from_the_api_or_needs_the_node() -> None:
    """A new rule fails here until it is given an API case (and a confirmation, or a reason why
    none exists) or is said to need the node."""
    api_capable = {c.finding for c in API_CASES.values()}
    assert api_capable | NODE_ONLY_RULES.keys() == {r.id for r in RULES}
    assert not api_capable & NODE_ONLY_RULES.keys()
    catalogued = {
        m.finding for m in CATALOGUE.messages if m.establishes and set(m.where) & set(API_PLACES)
    }
    assert catalogued <= api_capable, "a line the API shows establishes it: test it from the API"
    confirmed = {API_CASES[name].finding for name in CONFIRMATIONS}
    assert not confirmed & RULES_WITHOUT_A_NODE_CONFIRMATION.keys()
    assert confirmed | RULES_WITHOUT_A_NODE_CONFIRMATION.keys() == api_capable
