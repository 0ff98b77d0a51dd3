"""deploy/base as `kubectl apply -k` renders it keeps every object where its file puts it.

kustomize's `namespace:` transformer moves every namespaced object of a base into one namespace,
so a Role that must live in kube-system (to patch kube-proxy's ConfigMap) silently ends up in
flannel-bot's own namespace, where it grants nothing. The base is held to the condition under which
rendering changes no namespace (no namespace transformer, every namespaced object names its own),
and what `kubectl kustomize` renders is checked too (kubectl from Debian's kubernetes-client, which
.ci/run installs; a skip outside CI without kubectl, a failure in CI).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.rendered import rendered_base_or_skip

BASE = Path(__file__).resolve().parents[2] / "deploy" / "base"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}


def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    return loaded


def objects() -> list[dict[str, Any]]:
    return [
        doc
        for resource in kustomization()["resources"]
        for doc in yaml.safe_load_all((BASE / resource).read_text())
        if doc
    ]


def test_no_namespace_transformer_moves_the_objects() -> None:
    k = kustomization()
    assert "namespace" not in k
    assert all(g.get("namespace") == "flannel-bot" for g in k.get("configMapGenerator", []))


def test_every_namespaced_object_names_its_namespace() -> None:
    unnamed = [
        f"{o['kind']}/{o['metadata']['name']}"
        for o in objects()
        if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace")
    ]
    assert unnamed == []


def test_the_kube_proxy_role_and_its_binding_stay_in_kube_system() -> None:
    where = {(o["kind"], o["metadata"]["name"]): o["metadata"].get("namespace") for o in objects()}
    assert where[("Role", "flannel-bot-kube-proxy")] == "kube-system"
    assert where[("RoleBinding", "flannel-bot-kube-proxy")] == "kube-system"
    assert where[("Deployment", "flannel-bot")] == "flannel-bot"


# -- what `kubectl kustomize` renders ------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    docs = rendered_base_or_skip()
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_rendered_objects_stay_where_their_files_put_them(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    where = {key: d["metadata"].get("namespace") for key, d in rendered.items()}
    assert where[("Role", "flannel-bot-kube-proxy")] == "kube-system"
    assert where[("RoleBinding", "flannel-bot-kube-proxy")] == "kube-system"
    others = {
        k: ns for k, ns in where.items() if k[0] not in CLUSTER_SCOPED and ns != "flannel-bot"
    }
    assert set(others) == {
        ("Role", "flannel-bot-kube-proxy"),
        ("RoleBinding", "flannel-bot-kube-proxy"),
    }


def test_one_replica_recreated_with_its_volume_and_a_lease_it_may_hold(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    deployment = rendered[("Deployment", "flannel-bot")]["spec"]
    assert deployment["replicas"] == 1
    assert deployment["strategy"]["type"] == "Recreate"
    pvc = rendered[("PersistentVolumeClaim", "flannel-bot-state")]
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    pod = deployment["template"]["spec"]
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["flannel-bot-state"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert any(e["name"] == "POD_NAME" for e in container["env"])  # the Lease identity
    config = next(
        d
        for (kind, name), d in rendered.items()
        if kind == "ConfigMap" and name.startswith("flannel-bot-config")
    )
    settings = tomllib.loads(config["data"]["flannel-bot.toml"])
    namespace, _, _ = settings["leader"]["lease"].partition("/")
    role = rendered[("Role", "flannel-bot-leader")]
    assert role["metadata"]["namespace"] == namespace
    rule = next(r for r in role["rules"] if "leases" in r["resources"])
    assert {"get", "create", "update"} <= set(rule["verbs"])
    binding = rendered[("RoleBinding", "flannel-bot-leader")]
    assert binding["metadata"]["namespace"] == namespace
    assert {"kind": "ServiceAccount", "name": "flannel-bot", "namespace": "flannel-bot"} in binding[
        "subjects"
    ]


def test_the_bot_runs_on_the_host_network_so_a_broken_pod_network_cannot_cut_it_off(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    """The bot is needed most when the pod network is broken (FORWARD DROP, a stale cni0, flannel
    down, CoreDNS unreachable): on the host's network and resolver it still reaches Slack, the
    API server and the nodes' SSH; its namespace must then admit a hostNetwork pod."""
    pod = rendered[("Deployment", "flannel-bot")]["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"  # the node's resolv.conf, not the cluster's DNS
    labels = rendered[("Namespace", "flannel-bot")]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
