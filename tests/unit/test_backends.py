"""Each flannel backend diagnosed by its own rules: the device, overhead and traffic flanneld's
pkg/backend/* sets up (vxlan, wireguard, udp, ipip, ipsec, host-gw; IPv6's own device), read
from net-conf.json, k3s's generated file or the nodes' backend-type annotation."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.net_conf import NetConf, backend_of, parse_net_conf
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.ports.cluster import ConfigMapInfo
from tests.unit.test_rules import edit_json_probe, healthy, set_probe

CM = ("kube-flannel", "kube-flannel-cfg")


def with_backend(ev: Evidence, backend: dict[str, object], **conf: object) -> Evidence:
    """The healthy lab evidence with net-conf.json naming another backend."""
    net_conf = {"Network": "10.244.0.0/16", "Backend": backend, **conf}
    old = ev.configmaps[CM]
    ev.configmaps[CM] = ConfigMapInfo(
        old.namespace, old.name, {**old.data, "net-conf.json": json.dumps(net_conf)}
    )
    return ev


def ids(ev: Evidence) -> list[str]:
    return [f.id for f in diagnose(ev)]


def findings(ev: Evidence, finding: str) -> list[str]:
    return [f.summary for f in diagnose(ev) if f.id == finding]


@pytest.mark.parametrize(
    ("conf", "device", "device_v6", "overhead", "traffic"),
    [
        ({"Type": "vxlan"}, "flannel.1", "flannel-v6.1", 50, "UDP 8472"),
        (
            {"Type": "vxlan", "VNI": 4096, "Port": 4789},
            "flannel.4096",
            "flannel-v6.4096",
            50,
            "UDP 4789",
        ),
        ({"Type": "wireguard"}, "flannel-wg", "flannel-wg-v6", 80, "UDP 51820"),
        (
            {"Type": "wireguard", "ListenPort": 51000},
            "flannel-wg",
            "flannel-wg-v6",
            80,
            "UDP 51000",
        ),
        ({"Type": "udp"}, "flannel0", "", 28, "UDP 8285"),
        ({"Type": "ipip"}, "flannel.ipip", "", 20, "IP-in-IP (protocol 4)"),
        ({"Type": "ipsec"}, "", "", 77, "UDP 500, UDP 4500, ESP"),
        ({"Type": "ipsec", "UDPEncap": True}, "", "", 85, "UDP 500, UDP 4500"),
        ({"Type": "host-gw"}, "", "", 0, "the pod subnets' traffic, unencapsulated"),
    ],
)
def test_each_backend_is_what_flanneld_sets_up(
    conf: dict[str, object], device: str, device_v6: str, overhead: int, traffic: str
) -> None:
    backend = backend_of(parse_net_conf(json.dumps({"Network": "10.244.0.0/16", "Backend": conf})))
    assert (backend.device, backend.device_v6, backend.overhead) == (device, device_v6, overhead)
    assert backend.traffic() == traffic


def test_the_backend_is_read_from_the_configmap_then_k3s_then_the_node_annotations() -> None:
    ev = with_backend(healthy(), {"Type": "wireguard"})
    assert ev.backend().type == "wireguard"

    ev = healthy()
    del ev.configmaps[CM]
    assert ev.backend().type == "vxlan"  # nothing says otherwise: every installer's default
    set_probe(
        ev,
        "w1",
        "k3s-flannel-conf",
        json.dumps({"Network": "10.42.0.0/16", "Backend": {"Type": "host-gw"}}),
    )
    assert ev.backend().type == "host-gw"

    ev = healthy()
    del ev.configmaps[CM]
    ev.nodes = [
        replace(n, annotations={**n.annotations, "flannel.alpha.coreos.com/backend-type": "udp"})
        for n in ev.nodes
    ]
    assert ev.backend().type == "udp"


def drop(ev: Evidence, node: str, rule: str) -> None:
    table = ev.probes[node]["iptables-filter"].stdout.replace("COMMIT", f"{rule}\nCOMMIT", 1)
    set_probe(ev, node, "iptables-filter", table)


def test_a_dropped_wireguard_port_is_named_for_wireguard_not_vxlan() -> None:
    ev = with_backend(healthy(), {"Type": "wireguard"})
    drop(ev, "w2", "-A INPUT -p udp -m udp --dport 51820 -j DROP")
    assert findings(ev, "backend-traffic-blocked") == ["UDP 51820 (wireguard) is dropped on w2"]
    assert "vxlan-blocked" not in ids(ev)


def test_vxlan_blocked_follows_the_configured_port() -> None:
    ev = with_backend(healthy(), {"Type": "vxlan", "Port": 4789})
    drop(ev, "w2", "-A INPUT -p udp -m udp --dport 8472 -j DROP")
    assert "vxlan-blocked" not in ids(ev)  # 8472 is not the port this cluster uses
    drop(ev, "w3", "-A INPUT -p udp -m udp --dport 4789 -j DROP")
    assert findings(ev, "vxlan-blocked") == ["UDP 4789 (vxlan) is dropped on w3"]


def test_ipsec_needs_esp_let_through() -> None:
    ev = with_backend(healthy(), {"Type": "ipsec", "PSK": "x" * 96})
    drop(ev, "w1", "-A INPUT -p esp -j DROP")
    assert findings(ev, "backend-traffic-blocked") == [
        "UDP 500, UDP 4500, ESP (ipsec) is dropped on w1"
    ]


def host_gw_routes(ev: Evidence, node: str, skip: str = "") -> None:
    """w<node>'s routes as host-gw programs them: each peer's subnet via the peer's address."""
    peers = [n for n in ev.nodes if n.name != node and n.name != skip]
    subnets = {n.pod_cidr for n in ev.nodes if n.name != node}

    def edit(routes: list[dict[str, object]]) -> list[dict[str, object]]:
        kept = [r for r in routes if r.get("dev") != "flannel.1" and r["dst"] not in subnets]
        return kept + [
            {"dst": p.pod_cidr, "gateway": p.internal_ip, "dev": "eth0", "flags": []} for p in peers
        ]

    edit_json_probe(ev, node, "ip-route", edit)


def test_host_gw_routes_to_every_peer_are_checked() -> None:
    ev = with_backend(healthy(), {"Type": "host-gw"})
    for node in ("w1", "w2", "w3"):
        host_gw_routes(ev, node)
    assert "peer-route-missing" not in ids(ev)
    assert "vxlan-peer-missing" not in ids(ev)  # no VXLAN here to have entries for

    host_gw_routes(ev, "w1", skip="w3")
    found = [f for f in diagnose(ev) if f.id == "peer-route-missing"]
    assert [f.summary for f in found] == ["w1 lacks host-gw routes to 1 peer(s)"]
    assert "w3: missing route 10.244.3.0/24 via" in found[0].evidence[0].text


def test_the_wireguard_mtu_leaves_room_for_its_80_bytes() -> None:
    ev = with_backend(healthy(), {"Type": "wireguard"})

    def wg(mtu: int) -> None:
        for node in ("w1", "w2", "w3"):
            edit_json_probe(
                ev,
                node,
                "ip-addr",
                lambda links: [
                    {
                        **link,
                        "ifname": "flannel-wg",
                        "mtu": mtu,
                        "linkinfo": {"info_kind": "wireguard"},
                    }
                    if link["ifname"] in ("flannel.1", "flannel-wg")
                    else {**link, "mtu": min(mtu, link["mtu"])}
                    if link["ifname"] == "cni0"
                    else link
                    for link in links
                ],
            )
            set_probe(
                ev,
                node,
                "subnet-env",
                re.sub(
                    r"FLANNEL_MTU=\d+", f"FLANNEL_MTU={mtu}", ev.probes[node]["subnet-env"].stdout
                ),
            )

    wg(1420)
    assert "mtu-mismatch" not in ids(ev)
    wg(1450)  # right for VXLAN, 30 bytes too many for WireGuard
    texts = [e.text for f in diagnose(ev) if f.id == "mtu-mismatch" for e in f.evidence]
    assert "flannel-wg mtu 1450 > eth0 mtu 1500 - 80" in texts


def test_the_ipv6_vxlan_device_is_checked_too() -> None:
    ev = with_backend(healthy(), {"Type": "vxlan"}, EnableIPv6=True, IPv6Network="fd00:10:244::/56")
    edit_json_probe(
        ev,
        "w2",
        "ip-addr",
        lambda links: [*links, {"ifname": "flannel-v6.1", "mtu": 1500, "addr_info": []}],
    )
    texts = [e.text for f in diagnose(ev) if f.id == "mtu-mismatch" for e in f.evidence]
    assert "flannel-v6.1 mtu 1500 > eth0 mtu 1500 - 50" in texts


def test_a_broken_net_conf_falls_back_to_the_annotation_not_to_a_guess() -> None:
    assert backend_of(NetConf(backend="udp")).device == "flannel0"
    ev = healthy()
    ev.configmaps[CM] = ConfigMapInfo(*CM, {"net-conf.json": "{not json"})
    ev.nodes = [
        replace(
            n, annotations={**n.annotations, "flannel.alpha.coreos.com/backend-type": "host-gw"}
        )
        for n in ev.nodes
    ]
    assert ev.backend().type == "host-gw"
