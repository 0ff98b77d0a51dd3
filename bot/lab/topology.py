"""The lab's names and addresses, derived from a few choices; no I/O.

Everything the lab creates carries the lab's name in it (`fb-<name>-...` namespaces, `fb<name>...`
links, `<root>/<name>/` files), so `lab down` can find and remove all of it even without its state.
Addresses: the underlay is a private /24 owned by the root namespace's lab bridge; pods use
Flannel's default 10.244.0.0/16 (node N gets 10.244.N.0/24); the service network is 10.96.0.0/12
with the `kubernetes` Service at 10.96.0.1. None of them is routable through the host's default
route.

A lab is a kubeadm cluster (flannel as the kube-flannel DaemonSet) unless `distribution="k3s"`:
then flannel and kube-proxy are embedded in each node's k3s process, k3s keeps its CNI config,
plugins and net-conf.json under /var/lib/rancher/k3s, and the node's k3s journal says what its
flannel did.
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
NAME = re.compile(r"\A[a-z][a-z0-9]{0,3}\Z")
DISTRIBUTIONS = ("kubeadm", "k3s")
K3S_VERSION = "v1.30.4+k3s1"
# where k3s keeps what flannel's DaemonSet puts in /etc/cni/net.d, /opt/cni/bin, /etc/kube-flannel
K3S_CNI_CONF_DIR = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
K3S_CNI_BIN_DIR = "/var/lib/rancher/k3s/data/current/bin"
K3S_FLANNEL_CONF = "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"
K3S_CONFIG = "/etc/rancher/k3s/config.yaml"


@dataclass(frozen=True)
class NodeSpec:
    lab: str
    index: int
    underlay_ip: str
    lab_dir: Path
    distribution: str = "kubeadm"

    @property
    def name(self) -> str:
        return f"w{self.index}"

    @property
    def k3s(self) -> bool:
        return self.distribution == "k3s"

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

    def private(self, path: str) -> Path:
        """Where a path the node sees privately lives in the lab directory."""
        for mount, sub in private_paths(self.distribution).items():
            if path == mount or path.startswith(f"{mount}/"):
                return self.dir / sub / path[len(mount) :].lstrip("/")
        raise KeyError(f"{path} is not private to a {self.distribution} node")

    @property
    def cni_conf(self) -> Path:
        """The flannel CNI config the node's runtime reads (kubeadm: /etc/cni/net.d, k3s: its
        agent directory)."""
        conf_dir = K3S_CNI_CONF_DIR if self.k3s else "/etc/cni/net.d"
        return self.private(f"{conf_dir}/10-flannel.conflist")

    @property
    def cni_bin(self) -> Path:
        return self.private(K3S_CNI_BIN_DIR if self.k3s else "/opt/cni/bin")

    @property
    def journal(self) -> Path:
        """The node's journal as the lab's `journalctl` stand-in prints it (k3s nodes only)."""
        return self.dir / "journal"

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
# A k3s node: no /etc/cni/net.d or /opt/cni/bin at all (empty /etc/cni and /opt/cni hide the
# machine's), its own /var/lib/rancher and /etc/rancher (k3s's config.yaml); /usr/local/sbin
# (first in root's PATH) also holds the lab's `journalctl`.
K3S_PRIVATE_PATHS = {
    "/run/flannel": "run-flannel",
    "/etc/cni": "etc-cni",
    "/opt/cni": "opt-cni",
    "/var/lib/cni": "var-lib-cni",
    "/var/lib/rancher": "var-lib-rancher",
    "/etc/rancher": "etc-rancher",
    "/etc/sysctl.d": "etc-sysctl.d",
    "/etc/modules-load.d": "etc-modules-load.d",
    "/root": "root",
    "/usr/local/sbin": "usr-local-sbin",
}

# made on the machine as mount points only for k3s nodes (the others exist or kubeadm's need them)
K3S_ONLY_MOUNT_POINTS = ("/var/lib/rancher", "/etc/rancher")


def private_paths(distribution: str = "kubeadm") -> dict[str, str]:
    """Node path -> its directory under the node's lab directory, bind-mounted over it."""
    return K3S_PRIVATE_PATHS if distribution == "k3s" else PRIVATE_PATHS


@dataclass(frozen=True)
class LabSpec:
    name: str = "lab"
    nodes: int = 3
    underlay: str = "172.31.254.0/24"
    root: Path = Path("/run/flannel-bot-lab")
    pods_per_node: int = 1
    extra: dict[str, str] = field(default_factory=dict)
    distribution: str = "kubeadm"

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(
                f"distribution `{self.distribution}` is not one of {', '.join(DISTRIBUTIONS)}"
            )
        if not NAME.fullmatch(self.name):
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
        return NodeSpec(self.name, index, self._host(10 + index), self.dir, self.distribution)

    def all_nodes(self) -> list[NodeSpec]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    def by_name(self, name: str) -> NodeSpec:
        for node in self.all_nodes():
            if node.name == name:
                return node
        raise KeyError(name)
