from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.ports.store import Requester
from flannel_bot.runs.engine import Engine
from flannel_bot.runs.policy import Policy
from flannel_bot.runs.registry import Registry
from flannel_bot.service.clusters import Cluster, Clusters
from flannel_bot.service.handler import Service
from flannel_bot.store import SqliteStore
from tests.fakes import FakeClock, FakeCluster

# Lab address ranges (the underlays in 172.31.240.0/20, pod and service CIDRs): blackholed in the
# root namespace for the whole session, so a test that reaches for a node's address from an API
# object without a lab up cannot send it out of the default route. A lab's own, more specific
# routes win while it is up; metric 5000 is outside the labs' own 4000-4999.
CONTAINED = ("172.31.240.0/20", "10.244.0.0/16", "10.96.0.0/12")
_METRIC = "5000"


@pytest.fixture(scope="session", autouse=True)
def contain_lab_ranges() -> Iterator[None]:
    ip = shutil.which("ip")
    if os.geteuid() != 0 or ip is None or sys.platform != "linux":
        yield
        return
    added = []
    for cidr in CONTAINED:
        route = ["route", "add", "blackhole", cidr, "proto", "static", "metric", _METRIC]
        if subprocess.run([ip, *route], capture_output=True).returncode == 0:
            added.append(cidr)
    try:
        yield
    finally:
        for cidr in added:
            subprocess.run(
                [ip, "route", "del", "blackhole", cidr, "proto", "static", "metric", _METRIC],
                capture_output=True,
            )


POLICY = Policy(
    groups={"operators": frozenset({"alice"}), "approvers": frozenset({"bob", "carol", "dave"})}
)


def who(user: str) -> Requester:
    return Requester(user, {"adapter": "test"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cluster(clock: FakeClock) -> FakeCluster:
    return FakeCluster(clock)


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> SqliteStore:
    return SqliteStore(tmp_path / "audit.db", clock)


@pytest.fixture
def registry() -> Registry:
    real = Registry.from_package("runbooks").all()
    samples = Registry.from_package("tests.sample_runbooks").all()
    return Registry([*real, *samples])


@pytest.fixture
def make_engine(
    store: SqliteStore, registry: Registry, cluster: FakeCluster, clock: FakeClock
) -> Callable[..., Engine]:
    def make(**overrides: Any) -> Engine:
        args: dict[str, Any] = {
            "store": store,
            "registry": registry,
            "policy": POLICY,
            "kube": cluster,
            "nodes": cluster,
            "clock": clock,
            "owner": "test-owner",
            "owner_alive": lambda owner: owner == "test-owner",
        }
        args.update(overrides)
        return Engine(**args)

    return make


@pytest.fixture
def engine(make_engine: Callable[..., Engine]) -> Engine:
    return make_engine()


@pytest.fixture
def service(engine: Engine, store: SqliteStore) -> Service:
    return Service(Clusters.single(Cluster("default", engine, None)), store)
