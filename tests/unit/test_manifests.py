"""deploy/base as `kubectl apply -k` renders it keeps every object where its file puts it.

kustomize's `namespace:` transformer moves every namespaced object of a base into one namespace,
so a Role that must live in kube-system (to patch kube-proxy's ConfigMap) silently ends up in
flannel-bot's own namespace, where it grants nothing. kubectl is not in CI, so this holds the base
to the condition under which rendering changes no namespace (checked against `kubectl kustomize`
when the base changed): no namespace transformer, and every namespaced object names its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

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
