"""The lab is a real Flannel data plane, and the SSH executor works against its nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flannel_bot.errors import HostKeyChanged, NodeUnreachable
from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.network import run, sshd_pid
from tests.lab.conftest import all_reachable, internal_ip, ssh_settings

pytestmark = pytest.mark.integration


def test_cross_node_pod_ping_crosses_vxlan(flannel_lab: Lab) -> None:
    w1, w2 = flannel_lab.spec.by_name("w1"), flannel_lab.spec.by_name("w2")
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            w2.netns,
            "timeout",
            "5",
            "tcpdump",
            "-c",
            "1",
            "-n",
            "-l",
            "-T",
            "vxlan",
            "-i",
            "eth0",
            "udp port 8472",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    out = run(
        ["ip", "netns", "exec", w1.pod_netns(1), "ping", "-c", "2", "-W", "1", w2.pod_ip(1)],
        check=False,
    )
    dump, _ = proc.communicate(timeout=10)
    assert " 0% packet loss" in out
    assert f"{w1.underlay_ip}." in dump and f"> {w2.underlay_ip}.8472: VXLAN" in dump
    assert "vni 1" in dump
    assert f"{w1.pod_ip(1)} > {w2.pod_ip(1)}: ICMP echo request" in dump


def test_every_node_answers_in_parallel(flannel_lab: Lab, ssh: SshExecutor) -> None:
    nodes = [n.name for n in flannel_lab.spec.all_nodes()]
    results = ssh.run_many((nodes, ["ip", "-j", "addr"]), timeout=15)
    assert set(results) == set(nodes)
    for node in flannel_lab.spec.all_nodes():
        res = results[node.name]
        assert isinstance(res, list), res
        links = {link["ifname"]: link for link in json.loads(res[0].stdout)}
        addrs = {a["local"] for link in links.values() for a in link.get("addr_info", [])}
        assert {"flannel.1", "cni0", "eth0"} <= set(links)
        assert {node.underlay_ip, node.vtep_ip, node.gateway} <= addrs
        assert links["flannel.1"]["mtu"] == 1450


def test_nodes_see_private_files_and_cannot_touch_the_machine(
    flannel_lab: Lab, ssh: SshExecutor
) -> None:
    env = ssh.run("w2", ["cat", "/run/flannel/subnet.env"], timeout=10)
    assert "FLANNEL_SUBNET=10.244.2.1/24" in env.stdout
    assert (
        "FLANNEL_SUBNET=10.244.3.1/24"
        in ssh.run("w3", ["cat", "/run/flannel/subnet.env"], timeout=10).stdout
    )
    kernel = ssh.run("w2", ["sh", "-c", "echo 1 > /proc/sys/kernel/sysrq"], timeout=10)
    assert kernel.exit_code != 0
    forward = ssh.run("w2", ["cat", "/proc/sys/net/ipv4/ip_forward"], timeout=10)
    assert forward.stdout.strip() == "1"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    routes = ssh.run("w2", ["ip", "route", "show", "default"], timeout=10)
    assert routes.stdout.strip() == ""  # no node has a default route


def test_a_changed_host_key_is_refused(flannel_lab: Lab, tmp_path: object) -> None:
    assert flannel_lab.files is not None
    lines = flannel_lab.files.known_hosts.read_text().splitlines()
    w1 = flannel_lab.spec.by_name("w1")
    w3_key = next(line for line in lines if line.startswith("w3 "))  # keys under node names
    forged = [
        line if not line.startswith("w1 ") else f"w1 {w3_key.split(' ', 1)[1]}" for line in lines
    ]
    path = flannel_lab.spec.dir / "ssh" / "known_hosts.forged"
    path.write_text("\n".join(forged) + "\n")
    addresses = internal_ip(flannel_lab)
    with SshExecutor(
        ssh_settings(flannel_lab, known_hosts=path), resolve=addresses.__getitem__
    ) as executor:
        with pytest.raises(HostKeyChanged) as exc:
            executor.run("w1", ["touch", "/tmp/should-not-exist"], timeout=10)
        assert "w1" in str(exc.value) and w1.underlay_ip in str(exc.value)
        assert executor.run("w2", ["true"], timeout=10).ok


def test_a_frozen_sshd_times_out_while_the_others_answer(flannel_lab: Lab) -> None:
    w3 = flannel_lab.spec.by_name("w3")
    pid = sshd_pid(w3)
    assert pid is not None
    addresses = internal_ip(flannel_lab)
    with SshExecutor(
        ssh_settings(flannel_lab, connect_timeout=2.0), resolve=addresses.__getitem__
    ) as executor:
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            results = executor.run_many((["w1", "w2", "w3"], ["hostname"]), timeout=4)
            elapsed = time.monotonic() - started
        finally:
            os.kill(pid, signal.SIGCONT)
    assert isinstance(results["w1"], list) and isinstance(results["w2"], list)
    assert isinstance(results["w3"], NodeUnreachable | Exception) and not isinstance(
        results["w3"], list
    )
    assert elapsed < 4 + 2


def test_lab_status_reports_reachability(flannel_lab: Lab) -> None:
    status = flannel_lab.status()
    assert [n["name"] for n in status["nodes"]] == ["w1", "w2", "w3"]
    assert all_reachable(status["pod_reachability"])


def test_a_flannel_start_survives_a_peer_whose_flannel_1_is_gone(flannel_lab: Lab) -> None:
    """A runbook removing w2's flannel.1 races another node's flanneld start (the lab plays
    every node's lease watcher): w1 still comes up, w2's own restart recreates flannel.1 and
    its peers, and the lab's controller threads keep running."""
    w1, w2 = flannel_lab.spec.by_name("w1"), flannel_lab.spec.by_name("w2")
    run(["ip", "-n", w2.netns, "link", "delete", "flannel.1"])
    try:
        started = flannel_lab.restart_flannel(w1)
        assert started.ok, started.log
        assert flannel_lab.worker_errors == []
    finally:
        assert flannel_lab.restart_flannel(w2).ok
    assert all_reachable(flannel_lab.status()["pod_reachability"])


def test_a_flannel_start_that_netlink_refuses_crash_loops_with_the_error(flannel_lab: Lab) -> None:
    """flanneld exits when programming its peers fails and the kubelet restarts it: the pod
    ends crash-looping with the error in its log, not with a lab thread dead and the pod
    pending forever. (w3's flannel.1 is set down with its routes gone: the kernel refuses an
    onlink route through a link that is down, and the lab, unlike flanneld, does not set it up.)"""
    w3 = flannel_lab.spec.by_name("w3")
    run(["ip", "-n", w3.netns, "link", "set", "flannel.1", "down"])
    run(["ip", "-n", w3.netns, "route", "flush", "dev", "flannel.1"])
    try:
        started = flannel_lab.restart_flannel(w3)
        assert not started.ok
        assert "Error registering network" in started.log.splitlines()[-1], started.log
        assert flannel_lab.worker_errors == []
    finally:
        run(["ip", "-n", w3.netns, "link", "set", "flannel.1", "up"])
        assert flannel_lab.restart_flannel(w3).ok
    assert all_reachable(flannel_lab.status()["pod_reachability"])
