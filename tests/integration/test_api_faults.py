"""A sick API server: 500s on events and a 429 (with Retry-After) on the cluster-wide pod list.
Diagnose still answers, names what it could not read and why, and reads what it can instead."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flannel_bot.diagnosis.collect import collect_api
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.errors import ApiError
from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.lab import objects
from flannel_bot.lab.apiserver import ApiServer
from flannel_bot.lab.topology import LabSpec

pytestmark = pytest.mark.integration
SPEC = LabSpec(name="af", nodes=2)


@pytest.fixture
def sick(tmp_path: Path) -> Iterator[tuple[ApiServer, KubeClient]]:
    with ApiServer() as server:
        server.create(objects.namespace(objects.FLANNEL_NS))
        for n in SPEC.all_nodes():
            server.create(objects.node(n))
            server.create(objects.flannel_pod(SPEC, n, f"kube-flannel-ds-{n.name}"))
        server.create(objects.flannel_daemonset(SPEC.nodes))
        server.create(objects.flannel_configmap())
        for obj in objects.rbac_objects():
            server.create(obj)
        config = server.write_kubeconfig(tmp_path / "kubeconfig")
        with KubeClient.from_settings(KubeSettings(kubeconfig=config, request_timeout=5)) as kube:
            yield server, kube


def test_500s_and_429s_are_named_and_the_rest_still_reports(
    sick: tuple[ApiServer, KubeClient],
) -> None:
    server, kube = sick
    server.fail("/api/v1/events", 500, times=100)
    server.fail("/api/v1/pods", 429, times=100, retry_after=1)
    started = time.monotonic()
    evidence = collect_api(kube)
    elapsed = time.monotonic() - started
    gaps = "\n".join(evidence.gaps)
    assert "could not read events:" in gaps and "500" in gaps
    assert "could not read pods in all namespaces:" in gaps and "429" in gaps
    # the flannel pods were read namespace by namespace instead
    assert {p.name for p in evidence.pods} == {"kube-flannel-ds-w1", "kube-flannel-ds-w2"}
    assert [f.id for f in diagnose(evidence) if f.severity == "critical"] == []
    assert elapsed < 30  # partial results, well within diagnose's deadline


def test_a_single_500_is_an_error_that_says_which_call(sick: tuple[ApiServer, KubeClient]) -> None:
    server, kube = sick
    server.fail("/api/v1/nodes", 500)
    with pytest.raises(ApiError, match=r"GET /api/v1/nodes.*500"):
        kube.list_nodes()
    assert [n.name for n in kube.list_nodes()] == ["w1", "w2"]  # the next call works
