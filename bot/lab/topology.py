"""The lab's names and addresses, derived from a few choices; no I/O.

Everything the lab creates carries the lab's name in it (`fb-<name>-...` namespaces, `fb<name>...`
links, `<root>/<name>/` files), so `lab down` can find and remove all of it even without its state.
Addresses: the underlay is a private /24 owned by the root namespace's lab bridge; pods use
Flannel's default 10.244.0.0/16 (node N gets 10.244.N.0/24); the service network is 10.96.0.0/12
with the `kubernetes` Service at 10.96.0.1. None of them is routable through the host's default
route.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
API_SERVICE_IP = "10.96.0.1"
VXLAN_ID = 1
VXLAN_PORT = 8472
VXLAN_MTU = 1450
NAME = re.compile(r"^[a-z][a-z0-9]{0,3}$")


@dataclass(frozen=True)
class NodeSpec:
    lab: str
    index: int
    underlay_ip: str
    lab_dir: Path

    @property
    def name(self) -> str:
        return f"w{self.index}"

    @property
    def netns(self) -> str:
        return f"fb-{self.lab}-{self.name}"

    @property
    def host_veth(self) -> str:
        return f"fb{self.lab}{self.name}"

    @property
    def pod_cidr(self) -> str:
        return f"10.244.{self.index}.0/24"

    @property
    def vtep_ip(self) -> str:
        return f"10.244.{self.index}.0"

    @property
    def gateway(self) -> str:
        return f"10.244.{self.index}.1"

    @property
    def vtep_mac(self) -> str:
        return f"0a:fb:{self.index >> 8:02x}:{self.index & 0xFF:02x}:00:01"

    @property
    def dir(self) -> Path:
        return self.lab_dir / "nodes" / self.name

    def pod_netns(self, pod: int) -> str:
        return f"fb-{self.lab}-{self.name}-p{pod}"

    def pod_ip(self, pod: int) -> str:
        return f"10.244.{self.index}.{pod + 1}"

    def pod_veth(self, pod: int) -> str:
        return f"veth{self.index:03d}{pod:02d}"


# Paths each node sees privately (bind mounts in its own mount namespace), and where they live.
PRIVATE_PATHS = {
    "/run/flannel": "run-flannel",
    "/etc/cni/net.d": "etc-cni-net.d",
    "/var/lib/cni": "var-lib-cni",
    "/etc/sysctl.d": "etc-sysctl.d",
    "/etc/modules-load.d": "etc-modules-load.d",
    "/opt/cni/bin": "opt-cni-bin",
    "/etc/kubernetes": "etc-kubernetes",
    "/root": "root",
    "/usr/local/sbin": "usr-local-sbin",
}


@dataclass(frozen=True)
class LabSpec:
    name: str = "lab"
    nodes: int = 3
    underlay: str = "172.31.254.0/24"
    root: Path = Path("/run/flannel-bot-lab")
    pods_per_node: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise ValueError(f"lab name `{self.name}` must be 1-4 lowercase letters/digits")
        if not 1 <= self.nodes <= 200:
            raise ValueError("a lab has between 1 and 200 nodes")
        net = ipaddress.ip_network(self.underlay)
        if net.prefixlen != 24 or not net.is_private:
            raise ValueError(f"underlay {self.underlay} must be a private /24")

    @property
    def dir(self) -> Path:
        return self.root / self.name

    def _host(self, n: int) -> str:
        return str(ipaddress.ip_network(self.underlay).network_address + n)

    @property
    def bridge(self) -> str:
        return f"fb{self.name}br"

    @property
    def host_ip(self) -> str:
        return self._host(1)

    @property
    def svc_ip(self) -> str:
        return self._host(2)

    @property
    def svc_netns(self) -> str:
        return f"fb-{self.name}-svc"

    @property
    def svc_veth(self) -> str:
        return f"fb{self.name}svc"

    @property
    def netns_prefix(self) -> str:
        return f"fb-{self.name}-"

    @property
    def link_prefix(self) -> str:
        return f"fb{self.name}"

    def node(self, index: int) -> NodeSpec:
        return NodeSpec(self.name, index, self._host(10 + index), self.dir)

    def all_nodes(self) -> list[NodeSpec]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    def by_name(self, name: str) -> NodeSpec:
        for node in self.all_nodes():
            if node.name == name:
                return node
        raise KeyError(name)
