"""The RBAC rules deploy/base (as `kubectl kustomize` renders it) grants flannel-bot's
ServiceAccount, as the lab's API server enforces them, so lab tests run the bot with exactly the
permissions it ships with. `granted_rules(docs, namespace)` reads any rendered objects: the Helm
chart's render is held to grant the same rules (tests/unit/test_helm_chart.py), so the lab's
checks of the kustomize render hold for the chart too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from flannel_bot.lab.apiserver import PolicyRule
from tests.rendered import KubectlMissing, in_ci, rendered_base

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "deploy" / "base" / "rbac.yaml"
SA_NAMESPACE = "flannel-bot"  # the namespace deploy/base puts the bot in
SUBJECT = ("ServiceAccount", "flannel-bot", SA_NAMESPACE)
USER = f"system:serviceaccount:{SA_NAMESPACE}:flannel-bot"
TOKEN = "flannel-bot-serviceaccount-token"


def shipped_documents() -> list[dict[str, Any]]:
    """deploy/base as `kubectl kustomize` renders it (what `kubectl apply -k` creates); the raw
    rbac.yaml only on a machine without kubectl outside CI."""
    try:
        return list(rendered_base())
    except KubectlMissing:
        if in_ci():
            raise
        return [d for d in yaml.safe_load_all(RBAC.read_text()) if d]


def granted_rules(
    docs: Sequence[dict[str, Any]] | None = None, namespace: str = SA_NAMESPACE
) -> list[PolicyRule]:
    """Rules of every (Cluster)Role bound to the ServiceAccount flannel-bot of `namespace` (where
    the objects put the bot: a Helm release's namespace), Roles in their namespace."""
    docs = shipped_documents() if docs is None else docs
    subject = ("ServiceAccount", "flannel-bot", namespace)
    roles = {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", namespace)): d
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
    }
    rules = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = {
            (s["kind"], s["name"], s.get("namespace", namespace)) for s in binding["subjects"]
        }
        if subject not in subjects:
            continue
        ref = binding["roleRef"]
        cluster_wide = binding["kind"] == "ClusterRoleBinding"
        where = None if cluster_wide else binding["metadata"].get("namespace", namespace)
        role = roles[(ref["kind"], ref["name"], where or namespace)]
        rules += [PolicyRule.from_dict(r, where) for r in role["rules"]]
    return rules
