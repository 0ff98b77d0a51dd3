"""The documented probe set: every way the bot may read a node, by id and argv.

`PROBES` run on every node during `diagnose`. Support bundles store one file per probe
(`probes/<node>/<id>.txt`), and each can be produced by hand on a node with the command shown by
`flannel-bot diagnose --probes`, so a bundle can be assembled without the bot.

Runbooks read nodes through the same set, plus a few reads that take a parameter (a file under
the directories flannel and the kubelet use, a TCP connect, an IPVS service, the runtime's
sandboxes). `recognise` is the one judge of whether an argv is a read: the engine refuses any
other argv in a read, and rates a `RunOnNode` that is not one as a change.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Probe:
    id: str
    argv: tuple[str, ...]
    why: str


@dataclass(frozen=True)
class ProbeOutput:
    exit_code: int
    stdout: str
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# journals are read for the last hour, at most 300 lines, without colour or paging
JOURNAL_WINDOW = ("--since", "-1h", "--lines", "300", "--no-pager", "--output", "short-iso")
EMBEDDED_UNITS = ("k3s", "k3s-agent", "rke2-server", "rke2-agent")


def config_files(directory: str) -> tuple[str, ...]:
    """Every file directly in `directory`, each as `==> path size` and its content."""
    return (
        "find", directory, "-maxdepth", "1", "-type", "f",
        "-printf", "==> %p %s\\n", "-exec", "cat", "{}", ";",
    )  # fmt: skip


PROBES: tuple[Probe, ...] = (
    Probe(
        "bridge-nf-call-iptables",
        ("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"),
        "br_netfilter loaded and bridged traffic passing iptables (flanneld checks this file)",
    ),
    Probe(
        "bridge-nf-call-ip6tables",
        ("cat", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"),
        "the IPv6 counterpart",
    ),
    Probe(
        "ip-forward",
        ("cat", "/proc/sys/net/ipv4/ip_forward"),
        "the node routes pod traffic between cni0 and flannel.1",
    ),
    Probe(
        "kernel-modules",
        ("ls", "-d", "/sys/module/br_netfilter", "/sys/module/vxlan"),
        "br_netfilter and vxlan available (loaded or built in)",
    ),
    Probe(
        "subnet-env",
        ("cat", "/run/flannel/subnet.env"),
        "the lease flanneld wrote; the flannel CNI plugin reads it for every pod",
    ),
    Probe(
        "cni-config",
        config_files("/etc/cni/net.d"),
        "every CNI config file with its size and content; the first in sort order wins",
    ),
    Probe("cni-bin", ("ls", "-1", "/opt/cni/bin"), "the CNI plugin binaries"),
    Probe(
        "ipam",
        (
            "find",
            "/var/lib/cni/networks",
            "-type",
            "f",
            "-printf",
            "==> %p\\n",
            "-exec",
            "cat",
            "{}",
            ";",
        ),
        "host-local IPAM reservations (one file per IP, holding the sandbox id)",
    ),
    Probe(
        "ip-addr",
        ("ip", "-d", "-j", "addr", "show"),
        "addresses, MTUs and VXLAN details of cni0, flannel.1 and the uplink",
    ),
    Probe("ip-route", ("ip", "-j", "route", "show"), "routes to peer pod subnets"),
    Probe(
        "ip-route-local",
        ("ip", "-j", "route", "show", "table", "local"),
        "local routes (a stale `local 10.96.0.1 dev kube-ipvs0` hijacks the API service)",
    ),
    Probe(
        "ip-neigh",
        ("ip", "-j", "neigh", "show", "dev", "flannel.1"),
        "permanent neighbour entries for peer VTEPs",
    ),
    Probe(
        "fdb",
        ("bridge", "-j", "fdb", "show", "dev", "flannel.1"),
        "VXLAN forwarding entries: where each peer VTEP MAC is sent",
    ),
    Probe(
        "iptables-filter",
        ("iptables-save", "-t", "filter"),
        "FORWARD policy, flannel's FLANNEL-FWD rules, anything dropping UDP 8472",
    ),
    Probe(
        "iptables-nat",
        ("iptables-save", "-t", "nat"),
        "flannel's masquerade rules and kube-proxy's service rules",
    ),
    Probe("iptables-version", ("iptables", "-V"), "the iptables backend (nf_tables or legacy)"),
    Probe(
        "iptables-legacy",
        ("iptables-legacy-save",),
        "rules left in the other backend (legacy) that the nft backend does not show",
    ),
    Probe(
        "offload",
        ("ethtool", "-k", "flannel.1"),
        "checksum offload on the VXLAN device (broken on some kernels/NICs)",
    ),
    Probe(
        "kubelet-journal",
        ("journalctl", "-u", "kubelet", "-u", "containerd", "-u", "crio", *JOURNAL_WINDOW),
        "kubelet's and the runtime's last hour (CNI and sandbox errors; kubeadm-style installs)",
    ),
    Probe(
        "k3s-journal",
        (
            "journalctl",
            *(arg for unit in EMBEDDED_UNITS for arg in ("-u", unit)),
            *JOURNAL_WINDOW,
        ),
        "k3s's or RKE2's last hour: their embedded flannel and kubelet log here",
    ),
    Probe(
        "kernel-log",
        ("journalctl", "-k", *JOURNAL_WINDOW),
        "the kernel's last hour (`UDP: bad checksum`, conntrack or neighbour tables full)",
    ),
    Probe(
        "k3s-cni-config",
        config_files("/var/lib/rancher/k3s/agent/etc/cni/net.d"),
        "k3s's CNI config (its containerd reads it there, not from /etc/cni/net.d)",
    ),
    Probe(
        "k3s-cni-bin",
        ("ls", "-1", "/var/lib/rancher/k3s/data/current/bin"),
        "the CNI plugins k3s ships (data/current links to the running release's binaries)",
    ),
    Probe(
        "k3s-flannel-conf",
        ("cat", "/var/lib/rancher/k3s/agent/etc/flannel/net-conf.json"),
        "the net-conf.json k3s generates for its embedded flannel (from --cluster-cidr and "
        "--flannel-backend, or --flannel-conf)",
    ),
)
BY_ID = {p.id: p for p in PROBES}


# -- reads with a parameter (runbooks) ---------------------------------------------------------

# What a file read may open: the kernel's network settings and what flannel, the CNI plugins and
# the module loader keep. Nothing else on a node is the bot's to read (keys, shadow, ...).
READABLE_ROOTS = (
    "/proc/sys/net/",
    "/etc/cni/",
    "/etc/modules-load.d/",
    "/etc/sysctl.d/",
    "/run/flannel/",
    "/var/lib/cni/",
    "/opt/cni/bin/",
)
_PLAIN_PATH = re.compile(r"(/[A-Za-z0-9._-]+)+")
_SUFFIX = re.compile(r"\.[a-z]{1,10}")
CNI_NETWORKS = "/var/lib/cni/networks"


def _readable(path: str) -> str:
    if not _PLAIN_PATH.fullmatch(path) or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise ValueError(f"{path!r} is not a plain absolute path")
    if not any(f"{path}/".startswith(root) for root in READABLE_ROOTS):
        raise ValueError(f"{path} is outside what the bot reads ({', '.join(READABLE_ROOTS)})")
    return path


def file_probe(path: str) -> Probe:
    """One file's content (`cat -- PATH`); exit 1 with "No such file" when it is absent."""
    return Probe("file", ("cat", "--", _readable(path)), f"the content of {path}")


def conf_dir_probe(directory: str, suffix: str) -> Probe:
    """Every `*SUFFIX` file directly in a directory, each after a NUL and `==> PATH` line."""
    if not _SUFFIX.fullmatch(suffix):
        raise ValueError(f"{suffix!r} is not a file suffix like .conf")
    argv = ("find", _readable(directory), "-maxdepth", "1", "-type", "f", "-name", f"*{suffix}")
    return Probe(
        "conf-dir",
        (*argv, "-printf", "\\0==> %p\\n", "-exec", "cat", "{}", ";"),
        f"the {suffix} files in {directory}",
    )


def _address(ip: str) -> str:
    return str(ipaddress.IPv4Address(ip))


def _port(port: int | str) -> int:
    value = int(port)
    if not 0 < value < 65536 or str(port) != str(value):
        raise ValueError(f"{port!r} is not a TCP port")
    return value


def tcp_connect_probe(ip: str, port: int) -> Probe:
    """Whether a TCP connect from the node to IP:PORT answers within 3 s (exit 0 if it does)."""
    target = f"{_address(ip)}/{_port(port)}"
    return Probe(
        "tcp-connect",
        ("timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{target}"),
        f"a TCP connect to {ip}:{port}",
    )


def ipvs_service_probe(ip: str, port: int) -> Probe:
    """IPVS's real servers for a TCP service (`ipvsadm -L -n -t IP:PORT`)."""
    return Probe(
        "ipvs-service",
        ("ipvsadm", "-L", "-n", "-t", f"{_address(ip)}:{_port(port)}"),
        f"IPVS's real servers for {ip}:{port}",
    )


SANDBOXES = Probe(
    "sandboxes",
    ("crictl", "pods", "--quiet", "--no-trunc"),
    "the pod sandboxes the container runtime knows (exit 127 without crictl)",
)
ADDRESSES = Probe(
    "addresses",
    ("ip", "-j", "addr", "show"),
    "every interface's addresses (ip-addr without VXLAN details)",
)
IPAM_RESERVATIONS = Probe(
    "ipam-reservations",
    ("find", CNI_NETWORKS, "-type", "f", "-printf", "\\0==> %p\\n", "-exec", "cat", "{}", ";"),
    "host-local IPAM reservations, each after a NUL and `==> PATH` line",
)
FIXED_READS: tuple[Probe, ...] = (*PROBES, SANDBOXES, ADDRESSES, IPAM_RESERVATIONS)
_BY_ARGV = {p.argv: p for p in FIXED_READS}


def recognise(argv: tuple[str, ...] | list[str]) -> Probe | None:
    """The probe this argv is, or None when it is not a read of the probe set."""
    argv = tuple(argv)
    if argv in _BY_ARGV:
        return _BY_ARGV[argv]
    try:
        candidate = _candidate(argv)
    except (ValueError, IndexError):
        return None
    return candidate if candidate is not None and candidate.argv == argv else None


def _candidate(argv: tuple[str, ...]) -> Probe | None:
    """Rebuild a parameterised probe from the argv's parameters (checked as when built)."""
    match argv:
        case ("cat", "--", path):
            return file_probe(path)
        case ("find", directory, "-maxdepth", "1", "-type", "f", "-name", pattern, *_):
            return conf_dir_probe(directory, pattern.removeprefix("*"))
        case ("timeout", "3", "bash", "-c", script):
            ip, _, port = script.removeprefix("exec 3<>/dev/tcp/").partition("/")
            return tcp_connect_probe(ip, int(port))
        case ("ipvsadm", "-L", "-n", "-t", service):
            ip, _, port = service.partition(":")
            return ipvs_service_probe(ip, int(port))
    return None
