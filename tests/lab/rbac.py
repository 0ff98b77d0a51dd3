"""The RBAC rules deploy/base (as `kubectl kustomize` renders it) grants flannel-bot's
ServiceAccount, as the lab's API server enforces them, so lab tests run the bot with exactly the
permissions it ships with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bot.lab.apiserver import PolicyRule
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


def granted_rules(docs: list[dict[str, Any]] | None = None) -> list[PolicyRule]:
    """Rules of every (Cluster)Role bound to the bot's ServiceAccount, Roles in their namespace."""
    docs = shipped_documents() if docs is None else docs
    roles = {
        (d["kind"], d["metadata"]["name"], d["metadata"].get("namespace", SA_NAMESPACE)): d
        for d in docs
        if d["kind"] in ("ClusterRole", "Role")
    }
    rules = []
    for binding in docs:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = {
            (s["kind"], s["name"], s.get("namespace", SA_NAMESPACE)) for s in binding["subjects"]
        }
        if SUBJECT not in subjects:
            continue
        ref = binding["roleRef"]
        cluster_wide = binding["kind"] == "ClusterRoleBinding"
        namespace = None if cluster_wide else binding["metadata"].get("namespace", SA_NAMESPACE)
        role = roles[(ref["kind"], ref["name"], namespace or SA_NAMESPACE)]
        rules += [PolicyRule.from_dict(r, namespace) for r in role["rules"]]
    return rules
