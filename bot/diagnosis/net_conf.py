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
# the UDP port each overlay backend uses between nodes, by default
BACKEND_PORTS = {"vxlan": 8472, "udp": 8285, "wireguard": 51820, "ipsec": 4500}


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

    @property
    def vxlan_device(self) -> str:
        """flannel.<VNI>: flannel.1 by default, flannel.4096 as RKE2's chart sets it."""
        return f"flannel.{self.backend_conf.get('VNI', 1)}"

    @property
    def port(self) -> int | None:
        port = self.backend_conf.get("Port")
        return int(port) if isinstance(port, int) else BACKEND_PORTS.get(self.backend)


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
