"""One lab per test session: three namespace nodes with sshd, VXLAN, and the API on 127.0.0.1.

These tests need Linux and root (CI runs as root). Without them the fixture fails with the lab's
own explanation: a missing lab is a failure, never a silent skip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.topology import LabSpec

SPEC = LabSpec(name="tst", nodes=3, underlay="172.31.253.0/24", root=Path("/run/flannel-bot-test"))


def running_lab(spec: LabSpec) -> Iterator[Lab]:
    """A lab of `spec` up for the fixture's scope, torn down whatever the tests did."""
    lab = Lab(spec)
    lab.up()
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="session")
def flannel_lab() -> Iterator[Lab]:
    yield from running_lab(SPEC)


@pytest.fixture(autouse=True)
def lab_threads_survive(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test during which one of the lab's controller threads (flanneld and kube-proxy
    starts) died fails at teardown with the error, instead of the tests after it."""
    yield
    for name in ("flannel_lab", "k3s_lab"):
        if name in request.fixturenames:
            lab: Lab = request.getfixturevalue(name)
            died, lab.worker_errors[:] = list(lab.worker_errors), []
            assert died == [], f"a lab controller thread died during this test: {died}"


ACCESS = ("ssh", "pod")  # how the bot reaches nodes: `[nodes] access`
NODE_EXEC = "app.kubernetes.io/component=node-exec,app.kubernetes.io/managed-by=flannel-bot"


def bot_config(lab: Lab, access: str, directory: Path) -> Path:
    """The lab's bot config reaching nodes over `access`: SSH as written by the lab, or
    node-exec pods the lab's kubelet runs."""
    if access == "ssh":
        return lab.bot_config
    path = directory / f"flannel-bot-{access}.toml"
    path.write_text(f'{lab.bot_config.read_text()}\n[nodes]\naccess = "{access}"\n')
    return path


def node_exec_pods(lab: Lab) -> list[str]:
    """`namespace/name` of the bot's node-exec pods still in the API, in any namespace."""
    return [
        f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        for p in lab.api.list("pods", label_selector=NODE_EXEC)
    ]


@pytest.fixture(params=ACCESS)
def access(request: pytest.FixtureRequest, flannel_lab: Lab) -> Iterator[str]:
    """Each test using it runs once over SSH and once over pods; a pod-transport test must
    leave no node-exec pod behind."""
    yield str(request.param)
    if request.param == "pod":
        assert node_exec_pods(flannel_lab) == [], "node-exec pods left behind"


def ssh_settings(lab: Lab, **overrides: object) -> SshSettings:
    assert lab.files is not None
    args: dict[str, object] = {
        "user": "root",
        "private_key": lab.files.key,
        "known_hosts": lab.files.known_hosts,
        "connect_timeout": 3.0,
        "command_timeout": 10.0,
    }
    args.update(overrides)
    return SshSettings(**args)  # type: ignore[arg-type]


def internal_ip(lab: Lab) -> dict[str, str]:
    """Node name -> InternalIP, as the API reports it (how production finds nodes)."""
    return {
        n["metadata"]["name"]: next(
            a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP"
        )
        for n in lab.api.list("nodes")
    }


@pytest.fixture
def ssh(flannel_lab: Lab) -> Iterator[SshExecutor]:
    addresses = internal_ip(flannel_lab)
    with SshExecutor(ssh_settings(flannel_lab), resolve=addresses.__getitem__) as executor:
        yield executor


def healthy(lab: Lab) -> tuple[bool, dict[str, dict[str, bool]]]:
    pods = lab.api.list("pods", "kube-flannel", "app=flannel")
    ready = len(pods) == lab.spec.nodes and all(
        p["status"]["containerStatuses"][0]["ready"] for p in pods
    )
    return ready, lab.status()["pod_reachability"]


def all_reachable(reach: dict[str, dict[str, bool]]) -> bool:
    return all(ok for row in reach.values() for ok in row.values())


__all__ = [
    "ACCESS",
    "SPEC",
    "all_reachable",
    "bot_config",
    "healthy",
    "internal_ip",
    "json",
    "node_exec_pods",
    "ssh_settings",
]
