from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.core.engine import Engine, Requester
from bot.core.policy import Policy
from bot.core.registry import Registry
from bot.core.service import Service
from bot.store import Store
from tests.fakes import FakeClock, FakeCluster

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
def store(tmp_path: Path, clock: FakeClock) -> Store:
    return Store(tmp_path / "audit.db", clock)


@pytest.fixture
def registry() -> Registry:
    real = Registry.from_package("runbooks").all()
    samples = Registry.from_package("tests.sample_runbooks").all()
    return Registry([*real, *samples])


@pytest.fixture
def make_engine(
    store: Store, registry: Registry, cluster: FakeCluster, clock: FakeClock
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
def service(engine: Engine, store: Store) -> Service:
    return Service(engine, store)
