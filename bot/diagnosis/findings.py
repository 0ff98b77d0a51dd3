"""What diagnose concludes: findings with evidence, mechanism, fix, and a root-cause ranking."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvidenceLine:
    source: str
    text: str


@dataclass(frozen=True)
class Fix:
    """A runbook with parameters when one can fix it; otherwise the manual step."""

    manual: str
    runbook: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    def command(self) -> str | None:
        if self.runbook is None:
            return None
        args = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"run {self.runbook} {args}".strip()


SEVERITIES = ("critical", "warning", "info")


@dataclass
class Finding:
    id: str
    severity: str
    nodes: tuple[str, ...]
    summary: str
    mechanism: str
    evidence: list[EvidenceLine]
    fix: Fix
    explained_by: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "nodes": list(self.nodes),
            "summary": self.summary,
            "mechanism": self.mechanism,
            "evidence": [{"source": e.source, "text": e.text} for e in self.evidence],
            "fix": {
                "runbook": self.fix.runbook,
                "params": dict(self.fix.params),
                "command": self.fix.command(),
                "manual": self.fix.manual,
            },
            "explained_by": self.explained_by,
        }


# Root causes first: a finding earlier in this list explains later ones on the same nodes
# (flannel crash-looping on br_netfilter explains subnet.env missing, which explains pods stuck
# in ContainerCreating).
ORDER: tuple[str, ...] = (
    "node-unreachable",
    "flannel-not-deployed",
    "flannel-rbac-missing",
    "kube-proxy-config-invalid",
    "ipvs-local-route",
    "apiserver-unreachable",
    "podcidr-not-assigned",
    "subnet-lease-exhausted",
    "network-cidr-mismatch",
    "subnet-overlap",
    "br-netfilter-missing",
    "vxlan-unsupported",
    "stale-interface-address",
    "wrong-interface",
    "iptables-backend-mismatch",
    "forward-drop",
    "ip-forward-disabled",
    "vxlan-blocked",
    "vxlan-peer-missing",
    "hostgw-not-l2",
    "mtu-mismatch",
    "cni-plugin-missing",
    "cni-config-conflict",
    "cni-config-invalid",
    "flannel-oomkilled",
    "flannel-not-scheduled",
    "flannel-crashloop",
    "subnet-env-missing",
    "ipam-exhausted",
    "vxlan-checksum-offload",
)
# which symptoms a cause accounts for when both are seen on a node
EXPLAINS: Mapping[str, frozenset[str]] = {
    "br-netfilter-missing": frozenset(
        {"flannel-crashloop", "subnet-env-missing", "ip-forward-disabled"}
    ),
    "flannel-rbac-missing": frozenset({"flannel-crashloop", "subnet-env-missing"}),
    "kube-proxy-config-invalid": frozenset(
        {"apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"}
    ),
    "ipvs-local-route": frozenset(
        {"apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"}
    ),
    "apiserver-unreachable": frozenset({"flannel-crashloop", "subnet-env-missing"}),
    "podcidr-not-assigned": frozenset({"flannel-crashloop", "subnet-env-missing"}),
    "stale-interface-address": frozenset({"flannel-crashloop", "subnet-env-missing"}),
    "flannel-not-deployed": frozenset({"cni-config-invalid", "subnet-env-missing"}),
    "flannel-crashloop": frozenset({"subnet-env-missing"}),
    "flannel-oomkilled": frozenset({"flannel-crashloop"}),
    "node-unreachable": frozenset(),
}


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Root causes first (ORDER), informational last; note which findings explain which."""
    order = {fid: i for i, fid in enumerate(ORDER)}
    ranked = sorted(
        findings, key=lambda f: (f.severity == "info", order.get(f.id, len(order)), f.nodes)
    )
    for i, cause in enumerate(ranked):
        for effect in ranked[i + 1 :]:
            if (
                effect.id in EXPLAINS.get(cause.id, ())
                and cause.id not in effect.explained_by
                and (set(effect.nodes) & set(cause.nodes) or not cause.nodes)
            ):
                effect.explained_by.append(cause.id)
    return ranked
