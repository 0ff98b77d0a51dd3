"""flannel's net-conf.json, checked as flanneld checks it at start-up with the kube subnet
manager (pkg/subnet/config.go ParseConfig; the SubnetLen/SubnetMin checks of CheckNetworkConfig
apply to the etcd manager only, so they are left out).

Read from the kube-flannel-cfg ConfigMap (or canal's), so a broken config is confirmed from the
API before any flannel log is read: flanneld exits on each of these with a message the catalogue
knows.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

# flanneld's backends (pkg/backend/*); `alloc` and `extension` are for special set-ups
BACKENDS = frozenset(
    {
        "vxlan",
        "host-gw",
        "udp",
        "wireguard",
        "ipsec",
        "ipip",
        "alloc",
        "extension",
        "tencent-vpc",
        "ali-vpc",
        "aws-vpc",
        "gce",
    }
)


@dataclass(frozen=True)
class NetConf:
    """The parts of net-conf.json diagnosis reads; `problems` are what flanneld refuses."""

    network: ipaddress.IPv4Network | None = None
    ipv6_network: ipaddress.IPv6Network | None = None
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    subnet_len: int = 24
    backend: str = "vxlan"
    backend_conf: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()


def parse_net_conf(text: str) -> NetConf:
    """What flanneld would make of `text`, with every reason it would refuse it."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return NetConf(problems=(f"net-conf.json is not valid JSON ({exc})",))
    if not isinstance(raw, dict):
        return NetConf(problems=("net-conf.json is not a JSON object",))
    problems: list[str] = []
    enable_ipv4 = raw.get("EnableIPv4", True) is not False
    enable_ipv6 = raw.get("EnableIPv6", False) is True
    network = _network(raw, "Network", ipaddress.IPv4Network, enable_ipv4, problems)
    ipv6 = _network(raw, "IPv6Network", ipaddress.IPv6Network, enable_ipv6, problems)
    if not enable_ipv4 and not enable_ipv6:
        problems.append("neither EnableIPv4 nor EnableIPv6: no stack defined")
    subnet_len = raw.get("SubnetLen", 24)
    if not isinstance(subnet_len, int):
        problems.append(f"SubnetLen {subnet_len!r} is not a number")
        subnet_len = 24
    backend_conf = raw.get("Backend")
    if backend_conf is None:
        backend_conf, backend = {}, "udp"  # flanneld's default when net-conf names none
    elif not isinstance(backend_conf, dict):
        problems.append("Backend is not a JSON object")
        backend_conf, backend = {}, ""
    else:
        backend = str(backend_conf.get("Type") or "").lower()
    if backend not in BACKENDS:
        problems.append(f"unknown backend type {backend!r}")
    return NetConf(
        network if isinstance(network, ipaddress.IPv4Network) else None,
        ipv6 if isinstance(ipv6, ipaddress.IPv6Network) else None,
        enable_ipv4,
        enable_ipv6,
        subnet_len,
        backend,
        backend_conf,
        tuple(problems),
    )


def _network(
    raw: dict[str, Any],
    key: str,
    kind: type[ipaddress.IPv4Network] | type[ipaddress.IPv6Network],
    needed: bool,
    problems: list[str],
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    value = raw.get(key)
    if value is None:
        if needed:
            problems.append(f"{key} is missing")
        return None
    try:
        if "/" not in str(value):
            raise ValueError("no prefix length")
        return kind(str(value), strict=False)  # as Go's net.ParseCIDR: host bits are dropped
    except ValueError:
        problems.append(f"{key} {value!r} is not a valid {kind.__name__[:4]} CIDR")
        return None


@dataclass(frozen=True)
class Backend:
    """What a backend puts on the node and between nodes, as flanneld's pkg/backend/* sets it
    up: its devices, the encapsulation overhead it takes off the interface MTU, and the traffic
    the nodes must let through to each other."""

    type: str
    device: str = ""  # the IPv4 device ("" for host-gw and ipsec: routes/xfrm only)
    device_v6: str = ""
    overhead: int = 0  # bytes; flanneld sets the device (and FLANNEL_MTU) to iface MTU - this
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port) nodes send each other
    protocols: tuple[str, ...] = ()  # IP protocols without ports (ESP, IP-in-IP)

    def traffic(self) -> str:
        """The traffic nodes exchange, as a person writes a firewall rule for it."""
        parts = [f"{proto.upper()} {port}" for proto, port in self.ports]
        parts += [p.upper() if p != "ipencap" else "IP-in-IP (protocol 4)" for p in self.protocols]
        return ", ".join(parts) or "the pod subnets' traffic, unencapsulated"


def backend_of(conf: NetConf) -> Backend:
    """The backend a net-conf.json configures, with flanneld's defaults filled in."""
    kind, c = conf.backend, conf.backend_conf

    def number(key: str, default: int) -> int:
        value = c.get(key)
        return value if isinstance(value, int) and value > 0 else default

    if kind == "vxlan":
        vni = number("VNI", 1)
        return Backend(
            kind, f"flannel.{vni}", f"flannel-v6.{vni}", 50, (("udp", number("Port", 8472)),)
        )
    if kind == "wireguard":
        ports: tuple[tuple[str, int], ...] = (("udp", number("ListenPort", 51820)),)
        if conf.enable_ipv6:
            ports += (("udp", number("ListenPortV6", 51821)),)
        return Backend(kind, "flannel-wg", "flannel-wg-v6", 80, ports)
    if kind == "udp":
        return Backend(kind, "flannel0", "", 28, (("udp", number("Port", 8285)),))
    if kind == "ipip":
        return Backend(kind, "flannel.ipip", "", 20, (), ("ipencap",))
    if kind == "ipsec":
        if c.get("UDPEncap") is True:
            return Backend(kind, "", "", 85, (("udp", 500), ("udp", 4500)))
        return Backend(kind, "", "", 77, (("udp", 500), ("udp", 4500)), ("esp",))
    return Backend(kind)
