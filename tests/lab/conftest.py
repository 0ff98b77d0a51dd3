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


__all__ = ["SPEC", "all_reachable", "healthy", "internal_ip", "json", "ssh_settings"]
