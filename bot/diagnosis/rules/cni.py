"""Rules about the CNI plugins and their config on the node."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import INFERRED, EvidenceLine, Fix
from flannel_bot.diagnosis.node_facts import (
    CNI_CONFIG,
    CNI_PLUGINS,
    K3S_CNI_CONFIG,
    K3S_CNI_PLUGINS,
    ConfFile,
    Fact,
    is_flannel_conf,
)
from flannel_bot.diagnosis.rule import Found, inferred, leased_subnet, rule
from flannel_bot.ports.cluster import PodInfo

REQUIRED_PLUGINS = ("bridge", "flannel", "host-local", "portmap")
PLUGIN_MECHANISM = (
    "The flannel CNI plugin delegates to bridge and host-local (and portmap for hostPorts); "
    "without the binaries in /opt/cni/bin every pod sandbox fails."
)
PLUGIN_FIX = (
    "install the CNI plugins (containernetworking-plugins) into /opt/cni/bin; flannel's "
    "install-cni-plugin init container installs `flannel`"
)
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")
CONFIG_MECHANISM = (
    "The kubelet uses the first CNI config in /etc/cni/net.d; flannel's init container copies "
    "it there from kube-flannel-cfg. Missing, empty or broken, the node reports "
    "NetworkPluginNotReady and pods stay in ContainerCreating."
)


@dataclass(frozen=True)
class CniPlaces:
    """Where the runtime finds CNI configs and plugins on this distribution, and who puts
    them there (flannel's init containers, or k3s itself)."""

    config: Fact[list[ConfFile]]
    plugins: Fact[set[str]]
    config_dir: str
    plugin_dir: str
    config_fix: Fix
    plugin_fix: Fix

    @property
    def config_probe(self) -> str:
        return self.config.probe.id

    @property
    def plugin_probe(self) -> str:
        return self.plugins.probe.id


def places(ev: Evidence, node: str = "") -> CniPlaces:
    if ev.distribution() == "k3s":
        return CniPlaces(
            K3S_CNI_CONFIG,
            K3S_CNI_PLUGINS,
            "/var/lib/rancher/k3s/agent/etc/cni/net.d",
            "/var/lib/rancher/k3s/data/current/bin",
            Fix(
                "restart k3s (or k3s-agent) on the node: it writes its CNI config at start "
                "(from --flannel-backend / --flannel-conf); never copy flannel's manifest config"
            ),
            Fix(
                "k3s ships its CNI plugins in /var/lib/rancher/k3s/data/<release>/bin: reinstall "
                "the same k3s release (INSTALL_K3S_VERSION) on the node, or pass "
                "--flannel-backend=none if another CNI provides them"
            ),
        )
    return CniPlaces(
        CNI_CONFIG,
        CNI_PLUGINS,
        "/etc/cni/net.d",
        "/opt/cni/bin",
        Fix.on_node(
            "write /etc/cni/net.d/10-flannel.conflist from ConfigMap kube-flannel-cfg "
            "(cni-conf.json), or restart flannel so install-cni copies it",
            "node.restore-cni-config",
            node,
        ),
        Fix(PLUGIN_FIX),
    )


@rule("cni-plugin-missing", "critical")
def cni_plugin_missing(ev: Evidence) -> Iterator[Found]:
    where = places(ev)
    probed = [n for n in ev.probed() if ev.probe(n, where.plugin_probe) is not None]
    yield from inferred(
        ev,
        "cni-plugin-missing",
        lambda node: f"a CNI plugin binary is missing on {node or 'a node'}",
        PLUGIN_MECHANISM,
        lambda node: where.plugin_fix,
        besides=probed,
    )
    for node in ev.probed():
        out = ev.probe(node, where.plugin_probe)
        if out is None:
            continue
        have = ev.fact(node, where.plugins) or set()
        missing = [p for p in REQUIRED_PLUGINS if p not in have]
        if missing:
            yield Found(
                (node,),
                f"CNI plugins missing on {node}: {', '.join(missing)}",
                PLUGIN_MECHANISM,
                [EvidenceLine.probe(node, where.plugin_probe, out.stdout or out.stderr or "empty")],
                where.plugin_fix,
            )


def _cni_configs(ev: Evidence, node: str) -> tuple[list[ConfFile], list[ConfFile], str] | None:
    """(config files in the runtime's order, flannel's among them, what is wrong with flannel's
    or ""); None when the node's CNI config was not probed."""
    where = places(ev, node)
    out = ev.probe(node, where.config_probe)
    if out is None:
        return None
    files = [f for f in ev.fact(node, where.config) or [] if f.path.endswith(CONFIG_SUFFIXES)]
    flannel = [f for f in files if "flannel" in f.path or is_flannel_conf(f.content)]
    problem = ""
    if not out.ok and not files:
        problem = out.stderr.strip() or f"{where.config_dir} is missing"
    elif not flannel:
        problem = f"no flannel CNI config in {where.config_dir}"
    elif flannel[0].size == 0 or not flannel[0].content.strip():
        problem = f"{flannel[0].path} is empty"
    elif not is_flannel_conf(flannel[0].content):
        problem = f"{flannel[0].path} is not valid JSON with a flannel plugin"
    return files, flannel, problem


@rule("cni-config-conflict", "critical")
def cni_config_conflict(ev: Evidence) -> Iterator[Found]:
    reported: set[str] = set()
    for node in ev.probed():
        state = _cni_configs(ev, node)
        if state is None:
            continue
        files, flannel, problem = state
        if not problem and files and files[0] not in flannel:
            reported.add(node)
            yield Found(
                (node,),
                f"{files[0].path} sorts before flannel's config on {node}",
                CONFLICT_MECHANISM,
                [
                    EvidenceLine.probe(
                        node, places(ev).config_probe, " ".join(f.path for f in files)
                    )
                ],
                Fix(f"remove {files[0].path} (left by another CNI) and recreate affected pods"),
            )
    if ev.other_cni():
        return  # that CNI is the cluster's own: flannel-not-in-use says so
    yield from inferred(
        ev,
        "cni-config-conflict",
        lambda node: f"pod sandboxes on {node or 'a node'} run another CNI's plugin, not flannel",
        CONFLICT_MECHANISM,
        lambda node: CONFLICT_FIX,
        besides=reported,
    )
    for node, pods, subnet, read_from in _pods_outside_subnet(ev):
        if node in reported:
            continue
        yield Found(
            (node,),
            f"pods on {node} have addresses outside its flannel subnet {subnet}",
            CONFLICT_MECHANISM,
            [EvidenceLine(f"API: pod {p.namespace}/{p.name}", f"IP {p.pod_ip}") for p in pods[:3]]
            + [EvidenceLine(read_from, f"subnet {subnet}")],
            CONFLICT_FIX,
            certainty=INFERRED,
        )


CONFLICT_MECHANISM = (
    "The runtime uses the first config in /etc/cni/net.d (in name order); a leftover of "
    "another CNI (a previous Calico/Cilium/Antrea, containerd's 10-containerd-net.conflist) "
    "sorting before flannel's shadows it, so pods get addresses flannel does not route, or "
    "none at all. `kubeadm reset` does not clean /etc/cni/net.d."
)
CONFLICT_FIX = Fix(
    "list /etc/cni/net.d on the node (node.check reads it), remove every config but "
    "flannel's, and recreate the pods that got a wrong address"
)


def _pods_outside_subnet(ev: Evidence) -> Iterator[tuple[str, list[PodInfo], str, str]]:
    """(node, running pod-network pods whose address is outside the node's flannel subnet, the
    subnet, where it was read) -- addresses that came from a CNI config that is not flannel's."""
    node_ips = {n.internal_ip for n in ev.nodes if n.internal_ip}
    # one pass over the pods, grouped by node (not a pass per node: nodes x pods at scale)
    by_node: dict[str, list[PodInfo]] = {}
    for p in ev.pods:
        if (
            p.phase == "Running"
            and not p.host_network
            and p.pod_ip
            and ":" not in p.pod_ip
            and p.pod_ip != p.host_ip
            and p.pod_ip not in node_ips
        ):
            by_node.setdefault(p.node, []).append(p)
    for info in ev.nodes:
        candidates = by_node.get(info.name)
        if not candidates:
            continue
        subnet, read_from = leased_subnet(ev, info.name)
        if not subnet:
            continue
        try:
            network = ipaddress.ip_network(subnet, strict=False)
        except ValueError:  # no address is in a junk subnet (as in_cidr reads it)
            outside = candidates
        else:
            inside = _network_test(network)
            head = _head_of_24(network)
            if head:  # most pods: their address is the /24's three octets and one more
                cut = len(head)
                outside = [
                    p
                    for p in candidates
                    if not (p.pod_ip.startswith(head) and p.pod_ip[cut:] in _OCTET_TEXTS)
                    and not inside(p.pod_ip)
                ]
            else:
                outside = [p for p in candidates if not inside(p.pod_ip)]
        if outside:
            yield info.name, outside, subnet, read_from


# an IPv4 address as ipaddress reads it: four decimal octets, 0-255, no leading zeros
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")


_OCTET_TEXTS = frozenset(str(octet) for octet in range(256))  # as _OCTET writes them


def _head_of_24(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    """The first three octets and a dot of a /24 (10.244.1.0/24: `10.244.1.`): an address
    that is them and one of _OCTET_TEXTS is in the network; "" for any other network."""
    if network.version != 4 or network.prefixlen != 24:
        return ""
    return str(network.network_address).rpartition(".")[0] + "."


def _in_network(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """`in_cidr` with the network parsed once per node, not once per pod."""
    return _network_test(network)(address)


def _network_test(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> Callable[[str], bool]:
    """`in_cidr` of an address in `network`, made once per node: a plain IPv4 address is
    compared as text when the prefix is whole octets (a /24 is its first three octets and a
    dot: the dotted form without leading zeros is the only one), else as a number (ipaddress's
    parse was most of the rule's time at 150,000 pods); anything else is read by ipaddress."""
    if network.version != 4:
        return functools.partial(_parsed_in_network, network=network)
    mask, base = int(network.netmask), int(network.network_address)
    if network.prefixlen % 8 == 0:
        octets = network.prefixlen // 8
        parts = str(network.network_address).split(".")[:octets]
        whole = octets == 4
        head = ".".join(parts) if whole else "".join(f"{part}." for part in parts)
        dotted = _DOTTED.fullmatch

        def by_text(address: str) -> bool:
            if dotted(address):
                return address == head if whole else address.startswith(head)
            return _parsed_in_network(address, network)

        return by_text

    def by_number(address: str) -> bool:
        if _DOTTED.fullmatch(address):
            a, b, c, d = address.split(".")
            return (int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d)) & mask == base
        return _parsed_in_network(address, network)

    return by_number


def _parsed_in_network(
    address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network
) -> bool:
    """`in_cidr` with the network parsed once per node, not once per pod."""
    try:
        if "/" in address:
            return ipaddress.ip_interface(address).ip in network
        return ipaddress.ip_address(address) in network
    except ValueError:
        return False


@rule("cni-config-invalid", "critical")
def cni_config_invalid(ev: Evidence) -> Iterator[Found]:
    probed = [n for n in ev.probed() if ev.probe(n, places(ev).config_probe) is not None]
    yield from inferred(
        ev,
        "cni-config-invalid",
        lambda node: f"the container runtime finds no usable CNI config on {node or 'a node'}",
        CONFIG_MECHANISM,
        lambda node: places(ev, node).config_fix,
        besides=probed,
    )
    for node in ev.probed():
        state = _cni_configs(ev, node)
        if state is None or not state[2]:
            continue
        problem = state[2]
        where = places(ev, node)
        yield Found(
            (node,),
            f"{problem} on {node}",
            CONFIG_MECHANISM,
            [EvidenceLine.probe(node, where.config_probe, problem)],
            where.config_fix,
        )


@rule("cni-version-mismatch", "critical")
def cni_version_mismatch(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "cni-version-mismatch",
        lambda node: f"the CNI config's version is not one the plugins speak on {node or 'a node'}",
        "The cniVersion of the config must be one every plugin in the chain and the runtime "
        "support; an old plugin binary (or runtime) with a new config, or the reverse, fails "
        "every sandbox.",
        lambda node: Fix(
            "set cniVersion in cni-conf.json to one the installed plugins support (0.3.1 is "
            "understood by all), or upgrade the plugins in /opt/cni/bin"
        ),
    )


@rule("cni-cache-corrupt", "warning")
def cni_cache_corrupt(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "cni-cache-corrupt",
        lambda node: f"a corrupt CNI cache file blocks pod deletion on {node or 'a node'}",
        "The flannel CNI plugin keeps each sandbox's config under /var/lib/cni/flannel; an "
        "empty or truncated file (a crash, a full disk) makes every delete of that sandbox "
        "fail, so its pod stays Terminating and its address is never released.",
        lambda node: Fix(
            "remove the empty files under /var/lib/cni/flannel/ (and /var/lib/cni/results/) "
            "for the sandboxes named, then let kubelet retry; upgrade the flannel CNI plugin"
        ),
    )


@rule("cni-bridge-race", "warning")
def cni_bridge_race(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "cni-bridge-race",
        lambda node: f"the bridge plugin raced itself creating cni0 on {node or 'a node'}",
        "bridge plugin releases v0.6.0-v0.7.5 and v0.8.0-v0.8.1 set cni0's address without a "
        "lock; sandboxes created at the same time fail with `file exists` until one wins.",
        lambda node: Fix("upgrade the CNI plugins in /opt/cni/bin (v0.8.2 or later)"),
    )


@rule("portmap-teardown-failed", "info")
def portmap_teardown_failed(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "portmap-teardown-failed",
        lambda node: f"portmap could not remove a sandbox's rules on {node or 'a node'}",
        "Concurrent deletes race on portmap's iptables chains; the delete is retried and "
        "usually succeeds, so this explains noise in the events, not an outage.",
        lambda node: Fix("nothing, unless pods stay Terminating; then upgrade the CNI plugins"),
    )
