"""Leader election through a Lease on an API server on 127.0.0.1: one leader, a standby that
takes over only after the Lease expires, and two standbys racing for it: exactly one wins."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.lab.apiserver import ApiServer
from flannel_bot.process.leader import LeaderElector
from tests.fakes import FakeClock

pytestmark = pytest.mark.integration
NS, NAME = "flannel-bot", "flannel-bot"


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[KubeClient]:
    with ApiServer(namespaces=("default", NS)) as server:
        config = server.write_kubeconfig(tmp_path / "kubeconfig")
        with KubeClient.from_settings(KubeSettings(kubeconfig=config)) as client:
            yield client


def elector(kube: Any, who: str, clock: FakeClock) -> LeaderElector:
    return LeaderElector(kube, NS, NAME, who, clock, duration=15, renew_deadline=10, retry=2)


def test_one_leads_and_the_standby_takes_over_only_after_expiry(
    kube: KubeClient, clock: FakeClock
) -> None:
    a, b = elector(kube, "pod-a", clock), elector(kube, "pod-b", clock)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()
    clock.advance(10)
    assert a.try_acquire_or_renew() and not b.try_acquire_or_renew()  # renewed in time
    clock.advance(16)  # pod-a stopped renewing
    assert b.try_acquire_or_renew()
    lease = kube.get_lease(NS, NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "pod-b" and lease["spec"]["leaseTransitions"] == 1
    assert not a.try_acquire_or_renew()  # the old leader does not get it back


class Stale:
    """Both standbys read the same expired Lease before either writes."""

    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube
        self.seen = kube.get_lease(NS, NAME)

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.seen

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.kube.create_lease(namespace, body)

    def replace_lease(self, namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.kube.replace_lease(namespace, name, body)


def test_two_standbys_racing_for_an_expired_lease_one_wins(
    kube: KubeClient, clock: FakeClock
) -> None:
    assert elector(kube, "pod-a", clock).try_acquire_or_renew()
    clock.advance(20)
    stale = Stale(kube)
    results = [
        elector(stale, "pod-b", clock).try_acquire_or_renew(),
        elector(stale, "pod-c", clock).try_acquire_or_renew(),
    ]
    assert sorted(results) == [False, True]
    lease = kube.get_lease(NS, NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == ("pod-b" if results[0] else "pod-c")


def test_a_leader_that_cannot_renew_stops_leading(kube: KubeClient, clock: FakeClock) -> None:
    a = elector(kube, "pod-a", clock)
    stop, led, stopped = threading.Event(), threading.Event(), threading.Event()

    def lead(lost: threading.Event) -> None:
        led.set()
        lost.wait()
        stopped.set()

    runner = threading.Thread(target=a.run, args=(lead, stop))
    runner.start()
    assert led.wait(5) and a.leading
    # someone else takes the Lease (as after a network partition): renewals now fail
    lease = kube.get_lease(NS, NAME)
    assert lease is not None
    lease["spec"]["holderIdentity"] = "pod-z"
    lease["spec"]["renewTime"] = "2999-01-01T00:00:00.000000Z"
    kube.replace_lease(NS, NAME, lease)
    for _ in range(50):
        clock.advance(1)
        if stopped.wait(0.1):
            break
    assert stopped.is_set() and not a.leading
    stop.set()
    runner.join(5)
