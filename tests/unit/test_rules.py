"""Each diagnosis rule on real-looking evidence: a healthy three-node cluster as the lab shows it
(API objects as the lab serves them, probe outputs recorded from real lab nodes), then one
incident at a time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flannel_bot.diagnosis.evidence import Evidence, ProbeOutput
from flannel_bot.diagnosis.rule import RuleDefinitionError, ranks, rule
from flannel_bot.diagnosis.rules import AREAS, RULES, diagnose
from flannel_bot.executors.kube import parse_configmap, parse_daemonset, parse_node, parse_pod
from flannel_bot.lab import objects
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.cluster import EventInfo, Rbac, RbacRule

SPEC = LabSpec(name="cap", nodes=3, underlay="172.31.248.0/24")
PROBES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "lab-probes-healthy.json").read_text()
)


def healthy() -> Evidence:
    ev = Evidence()
    ev.nodes = [parse_node(objects.node(n)) for n in SPEC.all_nodes()]
    ev.pods = [
        parse_pod(objects.flannel_pod(SPEC, n, f"kube-flannel-ds-{n.name}"))
        for n in SPEC.all_nodes()
    ]
    ev.pods += [parse_pod(objects.workload_pod(n, 1)) for n in SPEC.all_nodes()]
    ev.daemonsets = [parse_daemonset(objects.flannel_daemonset(3))]
    cms = [objects.flannel_configmap(), objects.kube_proxy_objects(SPEC)[0]]
    ev.configmaps = {
        (c["metadata"]["namespace"], c["metadata"]["name"]): parse_configmap(c) for c in cms
    }
    ev.rbac = Rbac(
        roles={"flannel": (RbacRule(("",), ("pods",), ("get",)),)},
        bindings=(("flannel", "flannel", (("kube-flannel", "flannel"),)),),
    )
    ev.probes = {
        node: {pid: ProbeOutput(**out) for pid, out in probes.items()}
        for node, probes in PROBES.items()
    }
    for pod in ev.flannel_pods():
        ev.logs[(pod.namespace, pod.name, "kube-flannel", False)] = objects.flanneld_log(
            SPEC, SPEC.by_name(pod.node), pod.name
        )
    return ev


def set_probe(
    ev: Evidence, node: str, probe: str, stdout: str = "", exit_code: int = 0, stderr: str = ""
) -> None:
    ev.probes[node][probe] = ProbeOutput(exit_code, stdout, stderr)


def edit_json_probe(
    ev: Evidence,
    node: str,
    probe: str,
    edit: Callable[[list[dict[str, object]]], list[dict[str, object]]],
) -> None:
    data = json.loads(ev.probes[node][probe].stdout)
    set_probe(ev, node, probe, json.dumps(edit(data)))


def crash(ev: Evidence, node: str, log_line: str) -> None:
    pods = []
    for pod in ev.pods:
        if pod.node == node and pod.labels.get("app") == "flannel":
            raw = objects.flannel_pod(SPEC, SPEC.by_name(node), pod.name, ready=False, restarts=5)
            pod = parse_pod(raw)
            ev.logs[(pod.namespace, pod.name, "kube-flannel", True)] = (
                "I1121 main.go:212] CLI flags config: {...}\n" + log_line + "\n"
            )
        pods.append(pod)
    ev.pods = pods


def event(ev: Evidence, node: str, message: str, reason: str = "FailedCreatePodSandBox") -> None:
    """A pod stuck in ContainerCreating on `node`, and the kubelet's event about it."""
    pod = objects.workload_pod(SPEC.by_name(node), 99)
    pod["metadata"]["name"] = f"web-{node}-new"
    pod["status"] = objects.pod_status(SPEC.by_name(node), False, 0, False, phase="Pending")
    ev.pods.append(parse_pod(pod))
    ev.events.append(
        EventInfo(
            namespace="default",
            name=f"web-{node}-new.1",
            involved_kind="Pod",
            involved_name=f"web-{node}-new",
            involved_namespace="default",
            reason=reason,
            message=message,
            type="Warning",
            source_component="kubelet",
            source_host=node,
        )
    )


def test_events_about_pods_no_longer_stuck_are_history() -> None:
    ev = healthy()
    ipam(ev)
    ev.pods = [p for p in ev.pods if p.phase != "Pending"]
    set_probe(ev, "w2", "ipam", PROBES["w2"]["ipam"]["stdout"])
    assert diagnose(ev) == []


# -- one mutation per incident: (expected first finding, node, mutation) -------------------------


def br_netfilter(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "bridge-nf-call-iptables",
        exit_code=1,
        stderr="cat: /proc/sys/net/bridge/bridge-nf-call-iptables: No such file or directory",
    )
    set_probe(ev, "w2", "ip-forward", "0\n")
    set_probe(
        ev,
        "w2",
        "subnet-env",
        exit_code=1,
        stderr="cat: /run/flannel/subnet.env: No such file or directory",
    )
    crash(
        ev,
        "w2",
        "E1121 main.go:278] Failed to check br_netfilter: stat /proc/sys/net/bridge/"
        "bridge-nf-call-iptables: no such file or directory",
    )


def ip_forward(ev: Evidence) -> None:
    set_probe(ev, "w2", "ip-forward", "0\n")


def stale_cni0(ev: Evidence) -> None:
    def edit(links: list[dict[str, object]]) -> list[dict[str, object]]:
        for link in links:
            if link["ifname"] == "cni0":
                link["addr_info"] = [{"family": "inet", "local": "10.245.2.1", "prefixlen": 24}]
        return links

    edit_json_probe(ev, "w2", "ip-addr", edit)
    crash(
        ev,
        "w2",
        "E1121 main.go:345] Error registering network: failed to configure interface "
        "flannel.1: failed to ensure address of interface flannel.1: link has incompatible "
        "addresses. Remove additional addresses and try again.",
    )


def ipam(ev: Evidence) -> None:
    # host-local writes "<id>\neth0" with no trailing newline, so `find -exec cat` runs the next
    # header on at the end of the previous file's last line
    lines = [f"==> /var/lib/cni/networks/cbr0/10.244.2.{h}\n{h:064x}\neth0" for h in range(2, 255)]
    set_probe(ev, "w2", "ipam", "".join(lines))
    event(
        ev,
        "w2",
        'plugin type="flannel" failed (add): failed to delegate add: failed to '
        "allocate for range 0: no IP addresses available in range set: "
        "10.244.2.1-10.244.2.254",
    )


def cni_missing(ev: Evidence) -> None:
    set_probe(ev, "w2", "cni-config", "")


def cni_empty(ev: Evidence) -> None:
    set_probe(ev, "w2", "cni-config", "==> /etc/cni/net.d/10-flannel.conflist 0\n")


def cni_conflict(ev: Evidence) -> None:
    calico = '{"name": "k8s-pod-network", "plugins": [{"type": "calico"}]}'
    flannel = ev.probes["w2"]["cni-config"].stdout
    set_probe(
        ev,
        "w2",
        "cni-config",
        f"==> /etc/cni/net.d/10-calico.conflist {len(calico)}\n{calico}\n{flannel}",
    )


def plugins(ev: Evidence) -> None:
    set_probe(ev, "w2", "cni-bin", "flannel\nloopback\nportmap\n")


def subnet_env(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "subnet-env",
        exit_code=1,
        stderr="cat: /run/flannel/subnet.env: No such file or directory",
    )
    event(
        ev,
        "w2",
        'plugin type="flannel" failed (add): loadFlannelSubnetEnv failed: open '
        "/run/flannel/subnet.env: no such file or directory",
    )


def kube_proxy(ev: Evidence) -> None:
    cm = ev.configmaps[("kube-system", "kube-proxy")]
    cm.data["config.conf"] = cm.data["config.conf"].replace("masqueradeAll:", "masqueradeAl:")
    for node in ("w1", "w2", "w3"):
        crash(
            ev,
            node,
            "E1121 main.go:251] Failed to create SubnetManager: error retrieving pod "
            'spec: Get "https://10.96.0.1:443/api/v1/...": dial tcp 10.96.0.1:443: i/o timeout',
        )


def ipvs(ev: Evidence) -> None:
    edit_json_probe(
        ev,
        "w2",
        "ip-route-local",
        lambda r: [
            *r,
            {"type": "local", "dst": "10.96.0.1", "dev": "kube-ipvs0", "table": "local"},
        ],
    )
    crash(ev, "w2", "E1121 main.go:251] ... dial tcp 10.96.0.1:443: i/o timeout")


def podcidr(ev: Evidence) -> None:
    raw = objects.node(SPEC.by_name("w2"))
    del raw["spec"]["podCIDR"], raw["spec"]["podCIDRs"]
    ev.nodes[1] = parse_node(raw)
    crash(
        ev,
        "w2",
        "E1121 main.go:332] Error registering network: failed to acquire lease: node "
        '"w2" pod cidr not assigned',
    )


def rbac(ev: Evidence) -> None:
    ev.rbac = Rbac()
    for node in ("w1", "w2", "w3"):
        crash(
            ev,
            node,
            'E1121 main.go:251] ... pods "x" is forbidden: User "system:'
            'serviceaccount:kube-flannel:flannel" cannot get resource "pods"',
        )


def not_deployed(ev: Evidence) -> None:
    ev.daemonsets = []
    ev.pods = [p for p in ev.pods if p.labels.get("app") != "flannel"]
    for node in ("w1", "w2", "w3"):
        set_probe(ev, node, "cni-config", "")


def wrong_iface(ev: Evidence) -> None:
    raw = objects.node(SPEC.by_name("w2"))
    raw["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] = "10.0.2.15"
    ev.nodes[1] = parse_node(raw)


def forward(ev: Evidence) -> None:
    text = ev.probes["w2"]["iptables-filter"].stdout.replace(":FORWARD ACCEPT", ":FORWARD DROP")
    text = "\n".join(line for line in text.splitlines() if not line.startswith("-A FLANNEL-FWD"))
    set_probe(ev, "w2", "iptables-filter", text)


def vxlan(ev: Evidence) -> None:
    text = ev.probes["w2"]["iptables-filter"].stdout.replace(
        "COMMIT", "-A INPUT -p udp -m udp --dport 8472 -j DROP\nCOMMIT", 1
    )
    set_probe(ev, "w2", "iptables-filter", text)


def fdb(ev: Evidence) -> None:
    set_probe(ev, "w2", "fdb", "[]")


def mtu(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "subnet-env",
        ev.probes["w2"]["subnet-env"].stdout.replace("FLANNEL_MTU=1450", "FLANNEL_MTU=1500"),
    )


def overlap(ev: Evidence) -> None:
    raw = objects.node(SPEC.by_name("w3"))
    raw["spec"]["podCIDR"] = "10.244.2.0/24"
    ev.nodes[2] = parse_node(raw)


def mismatch(ev: Evidence) -> None:
    cm = ev.configmaps[("kube-flannel", "kube-flannel-cfg")]
    cm.data["net-conf.json"] = '{"Network": "10.100.0.0/16", "Backend": {"Type": "vxlan"}}'


def unreachable(ev: Evidence) -> None:
    del ev.probes["w2"]
    ev.unreachable["w2"] = "w2 (172.31.248.12): connection timed out after 10s"


def oom(ev: Evidence) -> None:
    raw = objects.flannel_pod(
        SPEC, SPEC.by_name("w2"), "kube-flannel-ds-w2", ready=False, restarts=3
    )
    raw["status"]["containerStatuses"][0]["lastState"]["terminated"]["reason"] = "OOMKilled"
    ev.pods = [parse_pod(raw) if p.name == "kube-flannel-ds-w2" else p for p in ev.pods]


def backends(ev: Evidence) -> None:
    set_probe(
        ev,
        "w2",
        "iptables-legacy",
        "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n",
    )


def offload(ev: Evidence) -> None:
    set_probe(ev, "w2", "offload", "Features for flannel.1:\ntx-checksum-ip-generic: on\n")


CASES: dict[str, tuple[str, str, Callable[[Evidence], None]]] = {
    "br-netfilter": ("br-netfilter-missing", "w2", br_netfilter),
    "ip-forward": ("ip-forward-disabled", "w2", ip_forward),
    "stale-cni0": ("stale-interface-address", "w2", stale_cni0),
    "ipam": ("ipam-exhausted", "w2", ipam),
    "cni-missing": ("cni-config-invalid", "w2", cni_missing),
    "cni-empty": ("cni-config-invalid", "w2", cni_empty),
    "cni-conflict": ("cni-config-conflict", "w2", cni_conflict),
    "plugins": ("cni-plugin-missing", "w2", plugins),
    "subnet-env": ("subnet-env-missing", "w2", subnet_env),
    "kube-proxy": ("kube-proxy-config-invalid", "w2", kube_proxy),
    "ipvs": ("ipvs-local-route", "w2", ipvs),
    "podcidr": ("podcidr-not-assigned", "w2", podcidr),
    "rbac": ("flannel-rbac-missing", "w2", rbac),
    "not-deployed": ("flannel-not-deployed", "w2", not_deployed),
    "wrong-iface": ("wrong-interface", "w2", wrong_iface),
    "forward": ("forward-drop", "w2", forward),
    "vxlan": ("vxlan-blocked", "w2", vxlan),
    "fdb": ("vxlan-peer-missing", "w2", fdb),
    "mtu": ("mtu-mismatch", "w2", mtu),
    "overlap": ("subnet-overlap", "w3", overlap),
    "mismatch": ("network-cidr-mismatch", "w2", mismatch),
    "unreachable": ("node-unreachable", "w2", unreachable),
    "oom": ("flannel-oomkilled", "w2", oom),
    "backends": ("iptables-backend-mismatch", "w2", backends),
    "offload": ("vxlan-checksum-offload", "w2", offload),
}


def test_healthy_cluster_has_no_findings() -> None:
    assert [f.id for f in diagnose(healthy())] == []


@pytest.mark.parametrize("case", list(CASES))
def test_incident_is_named_first_on_the_right_node(case: str) -> None:
    expected, node, mutate = CASES[case]
    ev = healthy()
    mutate(ev)
    findings = diagnose(ev)
    assert findings, "no findings"
    first = findings[0]
    assert (first.id, node in first.nodes) == (expected, True), [(f.id, f.nodes) for f in findings]
    assert first.evidence and all(line.source and line.text for line in first.evidence)
    assert first.mechanism and first.fix.manual


def test_root_cause_explains_its_symptoms() -> None:
    ev = healthy()
    br_netfilter(ev)
    findings = {f.id: f for f in diagnose(ev)}
    assert findings["subnet-env-missing"].explained_by == [
        "br-netfilter-missing",
        "flannel-crashloop",
    ]
    assert "br-netfilter-missing" in findings["flannel-crashloop"].explained_by
    quoted = [e.text for e in findings["br-netfilter-missing"].evidence]
    assert any("Failed to check br_netfilter" in q for q in quoted)
    assert any("No such file or directory" in q for q in quoted)
    assert findings["br-netfilter-missing"].fix.params == {"node": "w2"}


def test_without_probes_only_api_findings_are_drawn() -> None:
    ev = healthy()
    br_netfilter(ev)
    ev.probes = {}
    ids = [f.id for f in diagnose(ev)]
    assert ids[0] == "br-netfilter-missing"  # from flannel's own log
    assert "ip-forward-disabled" not in ids


def test_a_full_ipam_range_is_found_without_any_event() -> None:
    ev = healthy()
    ipam(ev)
    ev.events = []
    ev.pods = [p for p in ev.pods if p.phase != "Pending"]
    first = diagnose(ev)[0]
    assert first.id == "ipam-exhausted"
    assert "253 of 253 addresses reserved, 252 by containers that no longer exist" in (
        first.evidence[0].text
    )


# -- the rule registry --------------------------------------------------------------------------


def test_rank_is_derived_from_the_rules_declarations() -> None:
    """Every cause ranks before what it explains; otherwise the areas' order (cluster down to the
    pod) decides, so a rule ranks where it is declared, never silently last."""
    order = ranks()
    assert set(order) == {r.id for r in RULES}
    explains = {r.id: set(r.explains) for r in RULES}
    changed = True
    while changed:  # what each cause explains, directly or through another cause
        changed = False
        for effects in explains.values():
            more = set().union(*(explains[e] for e in effects)) - effects
            if more:
                effects |= more
                changed = True
    area = {r.id: AREAS.index(r.check.__module__.rsplit(".", 1)[1]) for r in RULES}
    for a in RULES:
        for effect in a.explains:
            assert order[a.id] < order[effect], f"{a.id} explains {effect} but ranks after it"
        for b in RULES:
            if area[a.id] < area[b.id] and a.id not in explains[b.id]:
                assert order[a.id] < order[b.id], f"{a.id} ({AREAS[area[a.id]]}) after {b.id}"


def test_a_finding_declared_twice_is_refused() -> None:
    with pytest.raises(RuleDefinitionError, match="two rules declare the finding forward-drop"):
        rule("forward-drop", "critical")
    with pytest.raises(RuleDefinitionError, match="severity must be one of"):
        rule("new-finding", "fatal")
