"""Bringing up and checking the lab's nodes: namespaces, sshd, Flannel's data plane and pods.

Split from the API side (`bot.lab.lab`) so the network can be built and verified on its own.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from flannel_bot.lab import flannel, k3s
from flannel_bot.lab.network import (
    add_pod,
    build_node,
    build_service_namespace,
    build_underlay,
    check_host,
    host_keys_line,
    make_key,
    prepare_node_files,
    run,
    start_sshd,
    teardown,
    wait_for_sshd,
)
from flannel_bot.lab.topology import VXLAN_MTU, LabSpec, NodeSpec


@dataclass(frozen=True)
class ClientFiles:
    """What the bot needs to reach the nodes: key, known_hosts and an ssh_config."""

    key: Path
    known_hosts: Path
    ssh_config: Path


def make_client_key(spec: LabSpec) -> Path:
    ssh = spec.dir / "ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    key = ssh / "id_ed25519"
    if not key.exists():
        make_key(key, f"flannel-bot@{spec.name}")
    return key


def write_client_files(spec: LabSpec, key: Path) -> ClientFiles:
    ssh = spec.dir / "ssh"
    known = ssh / "known_hosts"
    known.write_text("".join(host_keys_line(n) for n in spec.all_nodes()))
    config = ssh / "config"
    config.write_text(
        "".join(
            f"Host {n.name}\n  HostName {n.underlay_ip}\n  User root\n  Port 22\n"
            f"  IdentityFile {key}\n  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
            f"  HostKeyAlias {n.name}\n  IdentitiesOnly yes\n\n"
            for n in spec.all_nodes()
        )
    )
    return ClientFiles(key, known, config)


def build_nodes(spec: LabSpec) -> ClientFiles:
    """Everything below the API: refuses (LabError) where it cannot work; cleans up on failure."""
    check_host()
    teardown(spec)
    spec.dir.mkdir(parents=True, exist_ok=True)
    try:
        key = make_client_key(spec)
        authorized = Path(f"{key}.pub").read_text()
        build_underlay(spec)
        build_service_namespace(spec)
        nodes = spec.all_nodes()
        configs = {}
        for node in nodes:
            configs[node.name] = prepare_node_files(spec, node, authorized)
            build_node(spec, node)
            if node.k3s:
                k3s.write_node_files(node)
            else:
                flannel.write_node_files(node)
            flannel.build_data_plane(node)
            flannel.program_iptables(spec, node)
        for node in nodes:
            flannel.program_peers(node, nodes)
            for pod in range(1, spec.pods_per_node + 1):
                add_pod(node, pod, VXLAN_MTU)
            write_ipam(node, spec.pods_per_node)
            if node.k3s:
                k3s.kernel_ports(node, spec.pods_per_node)
            start_sshd(node, configs[node.name])
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(wait_for_sshd, nodes))
        return write_client_files(spec, key)
    except BaseException:
        teardown(spec)
        raise


def write_ipam(node: NodeSpec, pods: int) -> None:
    """host-local's reservations: one file per IP holding the sandbox id and interface."""
    net = node.dir / "var-lib-cni" / "networks" / "cbr0"
    if net.exists():
        shutil.rmtree(net)
    net.mkdir(parents=True)
    for pod in range(1, pods + 1):
        (net / node.pod_ip(pod)).write_text(f"{sandbox_id(node, pod)}\neth0")
    if pods:
        (net / "last_reserved_ip.0").write_text(node.pod_ip(pods))
    (net / "lock").write_text("")


def sandbox_id(node: NodeSpec, pod: int) -> str:
    from hashlib import sha256

    return sha256(f"{node.netns}/{pod}".encode()).hexdigest()


def pod_ping(
    src: NodeSpec, dst: NodeSpec, pod: int = 1, size: int = 56, dont_fragment: bool = False
) -> bool:
    """Ping from a pod on `src` to a pod on `dst`: across VXLAN when the nodes differ."""
    argv = [
        "ip",
        "netns",
        "exec",
        src.pod_netns(pod),
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-s",
        str(size),
    ]
    if dont_fragment:
        argv += ["-M", "do"]
    out = run([*argv, dst.pod_ip(pod)], check=False)
    return " 0% packet loss" in out
