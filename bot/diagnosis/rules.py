"""Diagnosis rules: small pure functions from Evidence to Findings.

Each rule looks for one failure known from real incidents (the seed write-ups, Flannel's
troubleshooting guide) and quotes the lines that show it with where they came from. Ranking root
cause first is `findings.rank`'s job, not the rules'.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import yaml

from bot.diagnosis.evidence import Evidence, ProbeOutput
from bot.diagnosis.findings import EvidenceLine, Finding, Fix, rank
from bot.diagnosis.kube_proxy_config import suggestion, unknown_fields
from bot.ports.cluster import EventInfo, NodeInfo, PodInfo
from bot.ports.probes import BY_ID

Rule = Callable[[Evidence], Iterable[Finding]]
RULES: list[Rule] = []
REQUIRED_PLUGINS = ("bridge", "flannel", "host-local", "portmap")
VXLAN_PORT = "8472"


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def diagnose(ev: Evidence) -> list[Finding]:
    """Every rule over the evidence, ranked root cause first."""
    return rank(f for r in RULES for f in r(ev))


# -- small helpers ------------------------------------------------------------------------------


def probe_line(node: str, probe_id: str, text: str) -> EvidenceLine:
    argv = " ".join(BY_ID[probe_id].argv) if probe_id in BY_ID else probe_id
    return EvidenceLine(f"{node}: {argv}", text.strip()[:500])


def lines_matching(text: str, pattern: str, limit: int = 3) -> list[str]:
    rx = re.compile(pattern)
    return [line.strip() for line in text.splitlines() if rx.search(line)][-limit:]


def json_probe(ev: Evidence, node: str, probe_id: str) -> list[dict[str, Any]]:
    out = ev.probe(node, probe_id)
    if out is None or not out.ok:
        return []
    try:
        value = json.loads(out.stdout or "[]")
    except ValueError:
        return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def links(ev: Evidence, node: str) -> dict[str, dict[str, Any]]:
    return {str(link.get("ifname")): link for link in json_probe(ev, node, "ip-addr")}


def inet(link: dict[str, Any]) -> list[str]:
    return [
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("family") == "inet"
    ]


def probed(ev: Evidence) -> list[str]:
    return sorted(ev.probes)


def flannel_pods_by_node(ev: Evidence) -> dict[str, PodInfo]:
    return {p.node: p for p in ev.flannel_pods() if p.node}


def flannel_logs(ev: Evidence) -> Iterator[tuple[PodInfo, str, str]]:
    for pod in ev.flannel_pods():
        source, text = ev.log(pod)
        if text:
            yield pod, source, text


def stuck_pod_events(ev: Evidence, text: str) -> list[EventInfo]:
    """Events saying `text` about pods that are still waiting for a sandbox: an event outlives
    its cause by an hour, a stuck pod does not."""
    pending = {(p.namespace, p.name) for p in ev.pods if p.phase == "Pending"}
    return [
        e
        for e in ev.events
        if text in e.message and (e.involved_namespace, e.involved_name) in pending
    ]


def network(ev: Evidence) -> ipaddress.IPv4Network | None:
    conf = ev.net_conf()
    try:
        return ipaddress.IPv4Network(str(conf["Network"])) if conf else None
    except (KeyError, ValueError):
        return None


def api_service_ip(ev: Evidence) -> str:
    svc = ev.services.get(("default", "kubernetes"))
    return svc.cluster_ip if svc and svc.cluster_ip else "10.96.0.1"


def flannel_namespace(ev: Evidence) -> str:
    ds = ev.flannel_daemonsets()
    return ds[0].namespace if ds else "kube-flannel"


def restart_fix(ev: Evidence, nodes: Iterable[str], manual: str) -> Fix:
    return Fix(
        manual,
        "flannel.restart-pods",
        {"nodes": ",".join(sorted(set(nodes))), "namespace": flannel_namespace(ev)},
    )


def in_cidr(address: str, cidr: str) -> bool:
    try:
        return ipaddress.ip_interface(address).ip in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


# -- reachability and deployment ------------------------------------------------------------------


@rule
def node_unreachable(ev: Evidence) -> Iterator[Finding]:
    for node, error in sorted(ev.unreachable.items()):
        yield Finding(
            "node-unreachable",
            "critical",
            (node,),
            f"node {node} did not answer the probes",
            "Without the node's own view (sysctls, interfaces, routes, files) the node-side "
            "checks were skipped for it; the API-side findings still apply.",
            [EvidenceLine(f"{node}: ssh", error)],
            Fix(
                "check that the node is up and sshd answers (and that its host key in "
                "known_hosts is current), then run diagnose again"
            ),
        )


@rule
def flannel_not_deployed(ev: Evidence) -> Iterator[Finding]:
    if ev.flannel_daemonsets() or ev.flannel_pods():
        return
    yield Finding(
        "flannel-not-deployed",
        "critical",
        tuple(sorted(n.name for n in ev.nodes)),
        "no flannel DaemonSet or pods in kube-flannel or kube-system",
        "Without flanneld no node gets a subnet lease or a CNI config, so the kubelet reports "
        "NetworkPluginNotReady and every new pod stays in ContainerCreating.",
        [
            EvidenceLine("API: daemonsets in kube-flannel, kube-system", "no flannel DaemonSet"),
            *[
                EvidenceLine(f"API: node {n.name}", f"Ready={n.ready} {n.ready_reason}".strip())
                for n in ev.nodes
                if not n.ready
            ][:3],
        ],
        Fix(
            "kubectl apply -f https://github.com/flannel-io/flannel/releases/latest/download/"
            "kube-flannel.yml (with Network matching the cluster's pod CIDR)",
            "flannel.repair",
            {},
        ),
    )


@rule
def flannel_not_scheduled(ev: Evidence) -> Iterator[Finding]:
    if not ev.flannel_daemonsets():
        return
    have = flannel_pods_by_node(ev)
    missing = [n for n in ev.nodes if n.name not in have]
    if not missing:
        return
    lines = [
        EvidenceLine(
            f"API: node {n.name}",
            "taints: " + (", ".join(f"{t.key}={t.value}:{t.effect}" for t in n.taints) or "none"),
        )
        for n in missing[:5]
    ]
    ds = ev.flannel_daemonsets()[0]
    lines.append(
        EvidenceLine(
            f"API: daemonset {ds.namespace}/{ds.name}",
            f"desired {ds.desired}, current {ds.current}, ready {ds.ready}",
        )
    )
    yield Finding(
        "flannel-not-scheduled",
        "critical",
        tuple(n.name for n in missing),
        f"no flannel pod on {', '.join(n.name for n in missing)}",
        "The DaemonSet does not place a pod on these nodes (a taint it does not tolerate, a "
        "nodeSelector or affinity that excludes them), so they never get pod networking.",
        lines,
        Fix(
            "add a toleration for the node's taints (or fix the nodeSelector) in the "
            "flannel DaemonSet"
        ),
    )


@rule
def flannel_rbac_missing(ev: Evidence) -> Iterator[Finding]:
    pods = [
        (p, s, lines_matching(t, r"forbidden.*serviceaccount|is forbidden"))
        for p, s, t in flannel_logs(ev)
    ]
    hits = [(p, s, m) for p, s, m in pods if m]
    ns = flannel_namespace(ev)
    denied = (
        ev.rbac.readable
        and ev.flannel_daemonsets()
        and not ev.rbac.allows(ns, "flannel", "get", "pods")
    )
    if not hits and not denied:
        return
    lines = [EvidenceLine(s, m[-1]) for _, s, m in hits[:3]]
    if denied:
        lines.append(
            EvidenceLine(
                "API: clusterrolebindings",
                f"no binding gives {ns}/flannel `get pods` "
                "(ClusterRole/ClusterRoleBinding `flannel` missing)",
            )
        )
    nodes = sorted({p.node for p, _, _ in hits} or {p.node for p in ev.flannel_pods()})
    yield Finding(
        "flannel-rbac-missing",
        "critical",
        tuple(nodes),
        "flannel's ServiceAccount may not read its pod and nodes",
        "flanneld reads its own pod spec and the Node objects (kube subnet manager); without "
        "the flannel ClusterRole and its binding the API answers 403 and flanneld exits.",
        lines,
        Fix(
            "re-apply the ClusterRole and ClusterRoleBinding `flannel` from the "
            "kube-flannel manifest",
            "flannel.repair",
            {},
        ),
    )


# -- API service -----------------------------------------------------------------------------------


@rule
def kube_proxy_config_invalid(ev: Evidence) -> Iterator[Finding]:
    cm = ev.configmaps.get(("kube-system", "kube-proxy"))
    if cm is None or "config.conf" not in cm.data:
        return
    try:
        config = yaml.safe_load(cm.data["config.conf"])
    except yaml.YAMLError as exc:
        bad = [f"unparsable YAML: {exc}"]
    else:
        bad = unknown_fields(config) if isinstance(config, dict) else ["not a mapping"]
    if not bad:
        return
    lines = [
        EvidenceLine(
            "API: configmap kube-system/kube-proxy config.conf",
            f"unknown field `{f}`"
            + (f" (did you mean `{suggestion(f)}`?)" if suggestion(f) else ""),
        )
        for f in bad
    ]
    proxies = [p for p in ev.pods if p.labels.get("k8s-app") == "kube-proxy"]
    for pod in proxies:
        source, text = ev.log(pod, "kube-proxy")
        for line in lines_matching(text, r"unknown field|strict decoding", 1):
            lines.append(EvidenceLine(source, line))
            break
    nodes = sorted({p.node for p in proxies} or {n.name for n in ev.nodes})
    yield Finding(
        "kube-proxy-config-invalid",
        "critical",
        tuple(nodes),
        f"kube-proxy's config has {len(bad)} unknown field(s): {', '.join(bad)}",
        "kube-proxy decodes its config strictly and will not start with an unknown field, so "
        f"it programs no Service rules: {api_service_ip(ev)}:443 stops answering on the nodes "
        "and flanneld, which reaches the API through that Service, crash-loops.",
        lines[:6],
        Fix(
            "correct the field in ConfigMap kube-system/kube-proxy, restart the "
            "kube-proxy pods, then the flannel pods",
            "kube-proxy.fix-config",
            {},
        ),
    )


@rule
def ipvs_local_route(ev: Evidence) -> Iterator[Finding]:
    svc = api_service_ip(ev)
    mode = ""
    cm = ev.configmaps.get(("kube-system", "kube-proxy"))
    if cm is not None:
        try:
            mode = str((yaml.safe_load(cm.data.get("config.conf", "")) or {}).get("mode") or "")
        except (yaml.YAMLError, AttributeError):
            mode = ""
    for node in probed(ev):
        for route in json_probe(ev, node, "ip-route-local"):
            if (
                route.get("type") == "local"
                and route.get("dst") == svc
                and route.get("dev") == "kube-ipvs0"
                and mode != "ipvs"
            ):
                yield Finding(
                    "ipvs-local-route",
                    "critical",
                    (node,),
                    f"stale `local {svc} dev kube-ipvs0` route on {node}",
                    f"A leftover IPVS local route claims the API Service address {svc} for the "
                    "node itself while kube-proxy is not in IPVS mode: connections to "
                    f"{svc}:443 leave with that address as source and replies never come back, "
                    "so flanneld times out reaching the API.",
                    [
                        probe_line(node, "ip-route-local", f"local {svc} dev kube-ipvs0"),
                        EvidenceLine(
                            "API: configmap kube-system/kube-proxy",
                            f"mode: {mode or '(empty: iptables)'}",
                        ),
                    ],
                    Fix(
                        f"ip route del local {svc} dev kube-ipvs0 table local (and remove "
                        "kube-ipvs0 if IPVS is not used)",
                        "node.fix-ipvs-local-route",
                        {"node": node},
                    ),
                )


@rule
def apiserver_unreachable(ev: Evidence) -> Iterator[Finding]:
    for pod, source, text in flannel_logs(ev):
        hits = lines_matching(
            text,
            r"dial tcp [0-9.]+:443: (i/o timeout|connect: connection "
            r"refused)",
            1,
        )
        if hits:
            yield Finding(
                "apiserver-unreachable",
                "critical",
                (pod.node,),
                f"flannel on {pod.node} cannot reach the API server",
                "flanneld talks to the API through the `kubernetes` Service; when that ClusterIP "
                "does not answer from the node (kube-proxy down or misconfigured, a stale local "
                "route, a firewall) it cannot fetch its pod or lease and exits.",
                [EvidenceLine(source, hits[0])],
                Fix(
                    f"check kube-proxy on {pod.node} and that {api_service_ip(ev)}:443 answers "
                    "from the node, then restart flannel"
                ),
            )


# -- subnets ---------------------------------------------------------------------------------------


@rule
def podcidr_not_assigned(ev: Evidence) -> Iterator[Finding]:
    logs = {
        p.node: (s, lines_matching(t, r"pod cidr not assigned", 1)) for p, s, t in flannel_logs(ev)
    }
    for node in ev.nodes:
        source, hit = logs.get(node.name, ("", []))
        if node.pod_cidr and not hit:
            continue
        lines = [EvidenceLine(f"API: node {node.name}", "spec.podCIDR is empty")]
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
        net = network(ev)
        yield Finding(
            "podcidr-not-assigned",
            "critical",
            (node.name,),
            f"node {node.name} has no podCIDR",
            "With the kube subnet manager flanneld takes the node's subnet from spec.podCIDR, "
            "which kube-controller-manager assigns only with --allocate-node-cidrs and "
            "--cluster-cidr; without it flanneld cannot acquire a lease and exits.",
            lines,
            Fix(
                "run kube-controller-manager with --allocate-node-cidrs=true "
                f"--cluster-cidr={net or '10.244.0.0/16'} (kubeadm: "
                "--pod-network-cidr), or set the node's spec.podCIDR once"
            ),
        )


@rule
def subnet_lease_exhausted(ev: Evidence) -> Iterator[Finding]:
    for e in ev.events:
        if e.reason == "CIDRNotAvailable":
            yield Finding(
                "subnet-lease-exhausted",
                "critical",
                (e.involved_name,),
                f"no pod subnet left for node {e.involved_name}",
                "The cluster CIDR has no free node-sized subnet left, so the new node gets no "
                "podCIDR and flannel cannot start there.",
                [EvidenceLine(f"API: event on node {e.involved_name}", e.message)],
                Fix(
                    "enlarge the cluster CIDR (and flannel's Network) or reduce "
                    "--node-cidr-mask-size; remove stale Node objects"
                ),
            )


@rule
def network_cidr_mismatch(ev: Evidence) -> Iterator[Finding]:
    net = network(ev)
    if net is None:
        return
    wrong = [
        n
        for n in ev.nodes
        if n.pod_cidr and not ipaddress.IPv4Network(n.pod_cidr, strict=False).subnet_of(net)
    ]
    if wrong:
        yield Finding(
            "network-cidr-mismatch",
            "critical",
            tuple(n.name for n in wrong),
            f"node podCIDRs outside flannel's Network {net}",
            "flannel's net-conf.json Network must contain every node's podCIDR (the cluster "
            "CIDR); otherwise routes and masquerading are built for the wrong range.",
            [
                EvidenceLine("API: configmap kube-flannel-cfg net-conf.json", f"Network: {net}"),
                *[
                    EvidenceLine(f"API: node {n.name}", f"spec.podCIDR: {n.pod_cidr}")
                    for n in wrong[:4]
                ],
            ],
            Fix(
                "make net-conf.json Network equal the cluster CIDR (kubeadm "
                "--pod-network-cidr), then restart flannel"
            ),
        )


@rule
def subnet_overlap(ev: Evidence) -> Iterator[Finding]:
    net = network(ev)
    seen: dict[str, str] = {}
    for node in ev.nodes:
        if net is not None and node.internal_ip and in_cidr(node.internal_ip, str(net)):
            yield Finding(
                "subnet-overlap",
                "critical",
                (node.name,),
                f"pod network {net} overlaps node {node.name}'s address {node.internal_ip}",
                "When the pod network contains host addresses, routes to pods shadow routes to "
                "nodes and traffic goes to the wrong place.",
                [
                    EvidenceLine(f"API: node {node.name}", f"InternalIP {node.internal_ip}"),
                    EvidenceLine("API: configmap kube-flannel-cfg", f"Network: {net}"),
                ],
                Fix("choose a pod network that does not overlap the hosts' networks"),
            )
        if node.pod_cidr:
            if node.pod_cidr in seen:
                yield Finding(
                    "subnet-overlap",
                    "critical",
                    (seen[node.pod_cidr], node.name),
                    f"nodes {seen[node.pod_cidr]} and {node.name} share podCIDR {node.pod_cidr}",
                    "Two nodes with the same pod subnet give out the same pod addresses.",
                    [
                        EvidenceLine(f"API: node {n}", f"spec.podCIDR: {node.pod_cidr}")
                        for n in (seen[node.pod_cidr], node.name)
                    ],
                    Fix("delete and re-join one of the nodes so it gets a fresh podCIDR"),
                )
            seen[node.pod_cidr] = node.name


# -- node kernel settings --------------------------------------------------------------------------


@rule
def br_netfilter_missing(ev: Evidence) -> Iterator[Finding]:
    logs = {
        p.node: (s, lines_matching(t, r"Failed to check br_netfilter", 1))
        for p, s, t in flannel_logs(ev)
    }
    for node in sorted(set(probed(ev)) | {n for n, (_, h) in logs.items() if h}):
        out = ev.probe(node, "bridge-nf-call-iptables")
        lines = []
        if out is not None and not out.ok:
            lines.append(probe_line(node, "bridge-nf-call-iptables", out.stderr or "missing"))
        elif out is not None and out.stdout.strip() == "0":
            lines.append(probe_line(node, "bridge-nf-call-iptables", "0"))
        source, hit = logs.get(node, ("", []))
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
        if lines:
            yield Finding(
                "br-netfilter-missing",
                "critical",
                (node,),
                f"br_netfilter is not loaded (or bridge-nf-call-iptables is off) on {node}",
                "Without br_netfilter, /proc/sys/net/bridge does not exist and bridged pod "
                "traffic bypasses iptables; flanneld checks bridge-nf-call-iptables at start "
                "and exits when it is missing, so the node never gets subnet.env.",
                lines,
                Fix(
                    "modprobe br_netfilter; sysctl -w net.bridge.bridge-nf-call-iptables=1 "
                    "net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1; persist "
                    "in /etc/modules-load.d and /etc/sysctl.d; restart flannel",
                    "node.fix-br-netfilter",
                    {"node": node},
                ),
            )


@rule
def ip_forward_disabled(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        out = ev.probe(node, "ip-forward")
        if out is not None and out.ok and out.stdout.strip() == "0":
            yield Finding(
                "ip-forward-disabled",
                "critical",
                (node,),
                f"IP forwarding is off on {node}",
                "The node must route pod traffic between cni0 and flannel.1; with "
                "net.ipv4.ip_forward=0 pods on this node cannot reach other nodes' pods.",
                [probe_line(node, "ip-forward", "0")],
                Fix(
                    "sysctl -w net.ipv4.ip_forward=1 and persist it in /etc/sysctl.d",
                    "node.fix-br-netfilter",
                    {"node": node},
                ),
            )


@rule
def vxlan_unsupported(ev: Evidence) -> Iterator[Finding]:
    for pod, source, text in flannel_logs(ev):
        hits = lines_matching(text, r"(?i)vxlan.*(operation not supported|not supported)", 1)
        mods = ev.probe(pod.node, "kernel-modules")
        if hits and (mods is None or "/sys/module/vxlan" not in mods.stdout):
            yield Finding(
                "vxlan-unsupported",
                "critical",
                (pod.node,),
                f"the kernel on {pod.node} cannot create VXLAN devices",
                "The vxlan module is missing (minimal or custom kernels), so flanneld cannot "
                "create flannel.1 with the VXLAN backend.",
                [
                    EvidenceLine(source, hits[0]),
                    probe_line(pod.node, "kernel-modules", mods.stdout if mods else "not probed"),
                ],
                Fix(
                    "install the kernel's extra modules (e.g. linux-modules-extra) and "
                    "modprobe vxlan, or use the host-gw backend where nodes share an L2"
                ),
            )


# -- interfaces, routes, iptables ------------------------------------------------------------------


@rule
def stale_interface_address(ev: Evidence) -> Iterator[Finding]:
    logs = {
        p.node: (s, lines_matching(t, r"incompatible addresses", 1)) for p, s, t in flannel_logs(ev)
    }
    bridge_events = stuck_pod_events(ev, "already has an IP address different")
    for node in probed(ev):
        info = ev.node(node)
        if info is None or not info.pod_cidr:
            continue
        lines = []
        for dev in ("cni0", "flannel.1"):
            link = links(ev, node).get(dev)
            if link is None:
                continue
            stray = [a for a in inet(link) if not in_cidr(a, info.pod_cidr)]
            if stray:
                lines.append(probe_line(node, "ip-addr", f"{dev}: {' '.join(inet(link))}"))
        source, hit = logs.get(node, ("", []))
        if hit:
            lines.append(EvidenceLine(source, hit[0]))
        for e in bridge_events:
            if e.source_host == node:
                lines.append(EvidenceLine(f"API: event on {e.involved_name}", e.message[-200:]))
                break
        if lines:
            yield Finding(
                "stale-interface-address",
                "critical",
                (node,),
                f"cni0/flannel.1 on {node} carry addresses outside its podCIDR {info.pod_cidr}",
                "`kubeadm reset` leaves cni0 and flannel.1 behind; after re-joining, the node "
                "gets a new podCIDR but the devices keep the old addresses, so flanneld refuses "
                "flannel.1 (incompatible addresses) and the bridge plugin refuses cni0.",
                lines,
                Fix(
                    "ip link delete cni0; ip link delete flannel.1; restart flannel (it "
                    "recreates both)",
                    "node.clean-interfaces",
                    {"node": node},
                ),
            )


@rule
def wrong_interface(ev: Evidence) -> Iterator[Finding]:
    for node in ev.nodes:
        public = node.annotations.get("flannel.alpha.coreos.com/public-ip", "")
        if public and node.internal_ip and public != node.internal_ip:
            lines = [
                EvidenceLine(
                    f"API: node {node.name}",
                    f"flannel.alpha.coreos.com/public-ip: {public}, InternalIP: {node.internal_ip}",
                )
            ]
            pod = flannel_pods_by_node(ev).get(node.name)
            if pod is not None:
                source, text = ev.log(pod)
                for line in lines_matching(text, r"Using interface with name", 1):
                    lines.append(EvidenceLine(source, line))
            device = next(
                (
                    name
                    for name, link in links(ev, node.name).items()
                    if any(a.split("/")[0] == node.internal_ip for a in inet(link))
                ),
                "",
            )
            yield Finding(
                "wrong-interface",
                "critical",
                (node.name,),
                f"flannel on {node.name} uses {public}, not the node's InternalIP "
                f"{node.internal_ip}",
                "On multi-NIC nodes flanneld picks the default-route interface (often a NAT "
                "NIC with the same address on every node); peers then send VXLAN to an address "
                "that does not reach this node.",
                lines,
                Fix(
                    f"add --iface={device or '<the InternalIP interface>'} (or "
                    "--iface-can-reach) to flanneld's args in the DaemonSet, then restart flannel",
                    "flannel.repair" if device else None,
                    {"iface": device} if device else {},
                ),
            )


@rule
def forward_drop(ev: Evidence) -> Iterator[Finding]:
    net = str(network(ev) or "10.244.0.0/16")
    for node in probed(ev):
        out = ev.probe(node, "iptables-filter")
        if out is None or not out.ok:
            continue
        text = out.stdout
        dropping = re.search(r"^:FORWARD DROP", text, re.M)
        accepts = re.search(
            rf"^-A (FORWARD|FLANNEL-FWD) .*-[sd] {re.escape(net)}.*-j ACCEPT", text, re.M
        )
        if dropping and not accepts:
            yield Finding(
                "forward-drop",
                "critical",
                (node,),
                f"FORWARD policy DROP on {node} with no accept rule for {net}",
                "Pod traffic between nodes is forwarded between cni0 and flannel.1; a DROP "
                "policy (often set by Docker) without flannel's FLANNEL-FWD accepts drops it.",
                [
                    probe_line(node, "iptables-filter", ":FORWARD DROP"),
                    probe_line(
                        node,
                        "iptables-filter",
                        "\n".join(lines_matching(text, r"FLANNEL-FWD", 3))
                        or "no FLANNEL-FWD rules",
                    ),
                ],
                Fix(
                    f"iptables -A FORWARD -s {net} -j ACCEPT; iptables -A FORWARD -d {net} -j "
                    "ACCEPT (flanneld re-adds its rules when restarted)",
                    "node.fix-forward-policy",
                    {"node": node},
                ),
            )


@rule
def iptables_backend_mismatch(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        version = ev.probe(node, "iptables-version")
        legacy = ev.probe(node, "iptables-legacy")
        if version is None or legacy is None or not legacy.ok:
            continue
        rules = lines_matching(legacy.stdout, r"^-A .*(KUBE-|FLANNEL)", 3)
        if "nf_tables" in version.stdout and rules:
            yield Finding(
                "iptables-backend-mismatch",
                "warning",
                (node,),
                f"{node} has flannel/kube-proxy rules in both iptables backends",
                "The node's iptables is nf_tables but rules also live in the legacy backend; "
                "components using different backends do not see each other's rules.",
                [
                    probe_line(node, "iptables-version", version.stdout),
                    probe_line(node, "iptables-legacy", "\n".join(rules)),
                ],
                Fix(
                    "make every component use the same backend (update-alternatives --set "
                    "iptables ...), flush the other, restart kube-proxy and flannel"
                ),
            )


@rule
def vxlan_blocked(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        out = ev.probe(node, "iptables-filter")
        if out is None or not out.ok:
            continue
        drops = [
            line
            for line in out.stdout.splitlines()
            if "udp" in line
            and (f"--dport {VXLAN_PORT}" in line or f"--sport {VXLAN_PORT}" in line)
            and re.search(r"-j (DROP|REJECT)", line)
        ]
        failed = [p for p, ok in ev.deep.get(node, {}).items() if not ok]
        if drops:
            yield Finding(
                "vxlan-blocked",
                "critical",
                (node,),
                f"UDP {VXLAN_PORT} (VXLAN) is dropped on {node}",
                "Flannel's VXLAN backend carries all cross-node pod traffic in UDP 8472; a "
                "firewall rule or security group dropping it cuts this node's pods off from "
                "other nodes while local traffic keeps working.",
                [probe_line(node, "iptables-filter", line) for line in drops[:3]]
                + (
                    [EvidenceLine(f"{node}: deep check", "no reply from " + ", ".join(failed))]
                    if failed
                    else []
                ),
                Fix(
                    f"allow UDP {VXLAN_PORT} between all nodes (iptables, firewalld, cloud "
                    "security groups)"
                ),
            )


@rule
def vxlan_peer_missing(ev: Evidence) -> Iterator[Finding]:
    # Each node holds an entry per peer in three tables, so the data grows with nodes squared:
    # compare whole sets per node and format text only for what is missing.
    routes_want: dict[str, str] = {}
    neigh_want: dict[tuple[str, str], str] = {}
    fdb_want: dict[tuple[str, str], str] = {}
    for peer in ev.nodes:
        data = peer.annotations.get("flannel.alpha.coreos.com/backend-data", "")
        try:
            mac = str(json.loads(data).get("VtepMAC", "")).lower() if data else ""
        except (ValueError, AttributeError):
            mac = ""
        public = peer.annotations.get("flannel.alpha.coreos.com/public-ip", peer.internal_ip)
        if peer.pod_cidr and mac:
            routes_want[peer.pod_cidr] = peer.name
            neigh_want[(peer.pod_cidr.split("/")[0], mac)] = peer.name
            fdb_want[(mac, public)] = peer.name
    for node in probed(ev):
        if "flannel.1" not in links(ev, node):
            continue
        routes = {
            r.get("dst") for r in json_probe(ev, node, "ip-route") if r.get("dev") == "flannel.1"
        }
        neigh = {
            (str(n.get("dst")), str(n.get("lladdr", "")).lower())
            for n in json_probe(ev, node, "ip-neigh")
        }
        fdb = {
            (str(f.get("mac", "")).lower(), str(f.get("dst", "")))
            for f in json_probe(ev, node, "fdb")
        }
        gaps: dict[str, list[str]] = {}
        for cidr in routes_want.keys() - routes:
            gaps.setdefault(routes_want[cidr], []).append(f"route {cidr} via flannel.1")
        for vtep, mac in neigh_want.keys() - neigh:
            gaps.setdefault(neigh_want[(vtep, mac)], []).append(f"neighbour {vtep} {mac}")
        for mac, dst in fdb_want.keys() - fdb:
            gaps.setdefault(fdb_want[(mac, dst)], []).append(f"fdb {mac} dst {dst}")
        gaps.pop(node, None)  # a node has no entries for itself
        if gaps:
            missing = [f"{peer}: missing {'; '.join(what)}" for peer, what in sorted(gaps.items())]
            yield Finding(
                "vxlan-peer-missing",
                "critical",
                (node,),
                f"{node} lacks VXLAN entries for {len(missing)} peer(s)",
                "For each peer flanneld installs a route to its subnet via flannel.1, a "
                "permanent neighbour entry for its VTEP and an FDB entry that says where to send "
                "the encapsulated packet; without them traffic to that peer's pods is lost.",
                [probe_line(node, "fdb", m) for m in missing[:4]],
                restart_fix(ev, [node], "restart flannel on the node (it re-adds every peer)"),
            )


@rule
def hostgw_not_l2(ev: Evidence) -> Iterator[Finding]:
    conf = ev.net_conf() or {}
    if str((conf.get("Backend") or {}).get("Type", "")).lower() != "host-gw":
        return
    for node in probed(ev):
        connected = [
            r.get("dst")
            for r in json_probe(ev, node, "ip-route")
            if r.get("scope") == "link" and r.get("protocol") == "kernel"
        ]
        far = [
            n
            for n in ev.nodes
            if n.name != node
            and n.internal_ip
            and not any(in_cidr(n.internal_ip, str(c)) for c in connected if c and "/" in str(c))
        ]
        if far:
            yield Finding(
                "hostgw-not-l2",
                "critical",
                (node,),
                f"host-gw backend but {node} does not share an L2 network with "
                f"{', '.join(n.name for n in far[:5])}",
                "host-gw routes pod subnets via the peer's address as a next hop, which only "
                "works when all nodes are on one L2 segment.",
                [probe_line(node, "ip-route", f"connected: {', '.join(map(str, connected))}")],
                Fix("use the vxlan backend, or put all nodes on one L2 network"),
            )


@rule
def mtu_mismatch(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        devs = links(ev, node)
        vxlan = devs.get("flannel.1")
        if vxlan is None:
            continue
        vmtu = int(vxlan.get("mtu", 0))
        env = ev.probe(node, "subnet-env")
        env_mtu = None
        if env is not None and env.ok:
            m = re.search(r"FLANNEL_MTU=(\d+)", env.stdout)
            env_mtu = int(m.group(1)) if m else None
        problems = []
        if env_mtu is not None and env_mtu != vmtu:
            problems.append(
                probe_line(node, "subnet-env", f"FLANNEL_MTU={env_mtu} but flannel.1 mtu {vmtu}")
            )
        bridge = devs.get("cni0")
        if bridge is not None and int(bridge.get("mtu", 0)) > vmtu:
            problems.append(
                probe_line(node, "ip-addr", f"cni0 mtu {bridge.get('mtu')} > flannel.1 mtu {vmtu}")
            )
        info = (vxlan.get("linkinfo") or {}).get("info_data") or {}
        parent = devs.get(str(info.get("link") or "eth0"))
        if parent is not None and vmtu > int(parent.get("mtu", 0)) - 50:
            problems.append(
                probe_line(
                    node,
                    "ip-addr",
                    f"flannel.1 mtu {vmtu} > {parent.get('ifname')} mtu {parent.get('mtu')} - 50",
                )
            )
        if problems:
            yield Finding(
                "mtu-mismatch",
                "warning",
                (node,),
                f"MTU mismatch on {node}",
                "VXLAN adds 50 bytes; pods must use the flannel.1 MTU (underlay MTU - 50). A "
                "larger pod or bridge MTU makes big packets vanish while pings and small "
                "requests work (TLS handshakes and large responses hang).",
                problems,
                restart_fix(
                    ev,
                    [node],
                    "set FLANNEL_MTU / the pods' MTU to the flannel.1 MTU and recreate the pods",
                ),
            )


# -- CNI files -------------------------------------------------------------------------------------


def cni_files(out: ProbeOutput) -> list[tuple[str, int, str]]:
    """(path, size, content) from the cni-config probe's `==> path size` blocks, sorted."""
    files: list[tuple[str, int, str]] = []
    for block in re.split(r"^==> ", out.stdout, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        path, _, size = header.rpartition(" ")
        files.append((path, int(size) if size.isdigit() else len(body), body))
    return sorted(files)


def is_flannel_conf(content: str) -> bool:
    try:
        conf = json.loads(content)
    except ValueError:
        return False
    plugins = conf.get("plugins", [conf]) if isinstance(conf, dict) else []
    return any(isinstance(p, dict) and p.get("type") == "flannel" for p in plugins)


@rule
def cni_config(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        out = ev.probe(node, "cni-config")
        if out is None:
            continue
        files = [f for f in cni_files(out) if f[0].endswith((".conf", ".conflist", ".json"))]
        flannel = [f for f in files if "flannel" in f[0] or is_flannel_conf(f[2])]
        problem = ""
        if not out.ok and not files:
            problem = out.stderr.strip() or "/etc/cni/net.d is missing"
        elif not flannel:
            problem = "no flannel CNI config in /etc/cni/net.d"
        else:
            path, size, content = flannel[0]
            if size == 0 or not content.strip():
                problem = f"{path} is empty"
            elif not is_flannel_conf(content):
                problem = f"{path} is not valid JSON with a flannel plugin"
        if problem:
            yield Finding(
                "cni-config-invalid",
                "critical",
                (node,),
                f"{problem} on {node}",
                "The kubelet uses the first CNI config in /etc/cni/net.d; flannel's init "
                "container copies it there from kube-flannel-cfg. Missing, empty or broken, "
                "the node reports NetworkPluginNotReady and pods stay in ContainerCreating.",
                [probe_line(node, "cni-config", problem)],
                Fix(
                    "write /etc/cni/net.d/10-flannel.conflist from ConfigMap kube-flannel-cfg "
                    "(cni-conf.json), or restart flannel so install-cni copies it",
                    "node.restore-cni-config",
                    {"node": node},
                ),
            )
        elif files and files[0] not in flannel:
            yield Finding(
                "cni-config-conflict",
                "critical",
                (node,),
                f"{files[0][0]} sorts before flannel's config on {node}",
                "The kubelet uses the first config file in sort order; another CNI's leftover "
                "config shadows flannel's, so pods get networking flannel does not route.",
                [probe_line(node, "cni-config", " ".join(f[0] for f in files))],
                Fix(f"remove {files[0][0]} (left by another CNI) and recreate affected pods"),
            )


@rule
def cni_plugin_missing(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        out = ev.probe(node, "cni-bin")
        if out is None:
            continue
        have = set(out.stdout.split()) if out.ok else set()
        missing = [p for p in REQUIRED_PLUGINS if p not in have]
        if missing:
            yield Finding(
                "cni-plugin-missing",
                "critical",
                (node,),
                f"CNI plugins missing on {node}: {', '.join(missing)}",
                "The flannel CNI plugin delegates to bridge and host-local (and portmap for "
                "hostPorts); without the binaries in /opt/cni/bin every pod sandbox fails.",
                [probe_line(node, "cni-bin", out.stdout or out.stderr or "empty")],
                Fix(
                    "install the CNI plugins (containernetworking-plugins) into /opt/cni/bin; "
                    "flannel's install-cni-plugin init container installs `flannel`"
                ),
            )


@rule
def subnet_env_missing(ev: Evidence) -> Iterator[Finding]:
    pods = {p.name: p.node for p in ev.pods}
    lines: dict[str, list[EvidenceLine]] = {}
    for n in probed(ev):
        out = ev.probe(n, "subnet-env")
        if out is not None and not out.ok:
            lines[n] = [probe_line(n, "subnet-env", out.stderr or "missing")]
    nodes = set(lines)
    for e in stuck_pod_events(ev, "loadFlannelSubnetEnv failed"):
        node = e.source_host or pods.get(e.involved_name, "")
        if node:
            nodes.add(node)
            lines.setdefault(node, []).append(
                EvidenceLine(f"API: event {e.reason} on {e.involved_name}", e.message[-240:])
            )
    for node in sorted(nodes):
        yield Finding(
            "subnet-env-missing",
            "critical",
            (node,),
            f"/run/flannel/subnet.env missing on {node}",
            "flanneld writes subnet.env once it holds a lease; the flannel CNI plugin reads it "
            "for every new pod, so without it pods stay in ContainerCreating. It is missing "
            "when flanneld is not running (or crashed) on the node.",
            lines[node][:3],
            restart_fix(
                ev,
                [node],
                "restart flannel on the node; if it keeps failing, fix what its log says first",
            ),
        )


@rule
def ipam_exhausted(ev: Evidence) -> Iterator[Finding]:
    used: dict[str, set[str]] = {}
    for pod in ev.pods:
        if pod.node and pod.pod_ip and not pod.host_network:
            used.setdefault(pod.node, set()).add(pod.pod_ip)
    ipam_events = stuck_pod_events(ev, "no IP addresses available")
    for node in probed(ev):
        info = ev.node(node)
        out = ev.probe(node, "ipam")
        if info is None or not info.pod_cidr or out is None or not out.ok:
            continue
        # host-local files end without a newline, so a header may follow text on the same line
        reserved = re.findall(
            r"==> \S*/(\d+\.\d+\.\d+\.\d+)\s*$", out.stdout.replace("==> ", "\n==> "), re.M
        )
        net = ipaddress.ip_network(info.pod_cidr, strict=False)
        capacity = net.num_addresses - 3
        leaked = [ip for ip in reserved if ip not in used.get(node, set())]
        events = [e for e in ipam_events if e.source_host == node]
        if len(reserved) >= capacity or events:
            lines = [
                probe_line(
                    node,
                    "ipam",
                    f"{len(reserved)} of {capacity} addresses reserved, "
                    f"{len(leaked)} by containers that no longer exist",
                )
            ]
            lines += [
                EvidenceLine(f"API: event {e.reason} on {e.involved_name}", e.message[-200:])
                for e in events[:2]
            ]
            yield Finding(
                "ipam-exhausted",
                "critical",
                (node,),
                f"host-local IPAM on {node} is out of addresses ({len(leaked)} leaked)",
                "host-local keeps one file per address under /var/lib/cni/networks; when the "
                "runtime does not call CNI DEL (crashes, forced deletes) the files stay and the "
                "range fills up: new pods fail with `no IP addresses available`.",
                lines,
                Fix(
                    "remove the reservation files whose container no longer exists, then "
                    "delete the pods stuck in ContainerCreating",
                    "node.release-leaked-ips",
                    {"node": node},
                ),
            )


# -- flannel pod state -----------------------------------------------------------------------------


@rule
def flannel_pod_state(ev: Evidence) -> Iterator[Finding]:
    for pod in ev.flannel_pods():
        main = [c for c in pod.containers if not c.init]
        oom = [c for c in pod.containers if "OOMKilled" in (c.last_reason, c.reason)]
        source, text = ev.log(pod)
        excerpt = lines_matching(text, r"^[EF]\d{4}", 2) or text.strip().splitlines()[-2:]
        if oom:
            yield Finding(
                "flannel-oomkilled",
                "warning",
                (pod.node,),
                f"{pod.name} on {pod.node} was OOMKilled",
                "flanneld was killed for exceeding its memory limit (large clusters, many "
                "events); raise the limit in the DaemonSet.",
                [
                    EvidenceLine(
                        f"API: pod {pod.namespace}/{pod.name}",
                        f"{oom[0].name} last terminated: OOMKilled",
                    )
                ],
                Fix("raise the kube-flannel container's memory limit in the DaemonSet"),
            )
            continue
        crashing = [
            c
            for c in main
            if c.reason == "CrashLoopBackOff" or (not c.ready and c.restart_count > 0)
        ]
        if crashing:
            c = crashing[0]
            state = (
                f"{c.name}: {c.reason or c.state}, restarts {c.restart_count}, "
                f"last exit {c.last_exit_code}"
            )
            restarts = c.restart_count
        elif not main and not pod.ready and pod.restarts:
            # a recording without container details: the pod's own counters still tell
            state, restarts = f"{pod.phase}, not Ready, restarts {pod.restarts}", pod.restarts
        else:
            continue
        yield Finding(
            "flannel-crashloop",
            "critical",
            (pod.node,),
            f"{pod.name} on {pod.node} is crash-looping ({restarts} restarts)",
            "flanneld exits on start-up; its log says why. Until it runs, the node has no "
            "lease, no subnet.env and no routes to peers.",
            [
                EvidenceLine(f"API: pod {pod.namespace}/{pod.name}", state),
                *[EvidenceLine(source, line) for line in excerpt],
            ],
            restart_fix(ev, [pod.node], "fix what the log names, then restart the pod"),
        )


@rule
def vxlan_checksum_offload(ev: Evidence) -> Iterator[Finding]:
    for node in probed(ev):
        out = ev.probe(node, "offload")
        if (
            out is not None
            and out.ok
            and re.search(r"^\s*tx-checksum-ip-generic: on", out.stdout, re.M)
        ):
            yield Finding(
                "vxlan-checksum-offload",
                "info",
                (node,),
                f"checksum offload is on for flannel.1 on {node}",
                "Some kernels and NICs corrupt checksums of VXLAN packets with offload on "
                "(symptom: cross-node TCP hangs, 63-second delays to Services); flannel turns it "
                "off on newer versions.",
                [probe_line(node, "offload", "tx-checksum-ip-generic: on")],
                Fix("ethtool -K flannel.1 tx-checksum-ip-generic off (and upgrade flannel)"),
            )


def node_rows(ev: Evidence) -> list[dict[str, Any]]:
    pods = flannel_pods_by_node(ev)
    rows = []
    for node in ev.nodes:
        pod = pods.get(node.name)
        state = "none"
        if pod is not None:
            c = next((c for c in pod.containers if not c.init), None)
            state = (
                "Ready"
                if c and c.ready
                else (
                    f"{(c.reason or c.state) if c else pod.phase} ({c.restart_count if c else 0} "
                    "restarts)"
                )
            )
        rows.append(
            {
                "name": node.name,
                "ready": node.ready,
                "pod_cidr": node.pod_cidr,
                "flannel": state,
                "probed": node.name in ev.probes,
                "internal_ip": node.internal_ip,
            }
        )
    return rows


__all__ = ["RULES", "NodeInfo", "diagnose", "node_rows"]
