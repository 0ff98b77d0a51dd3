"""What diagnose concludes: findings with quoted evidence, the mechanism, and the fix.

How findings rank (root cause first) is declared on each rule (`bot.diagnosis.rule`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flannel_bot.ports.probes import BY_ID


@dataclass(frozen=True)
class EvidenceLine:
    source: str
    text: str

    @classmethod
    def probe(cls, node: str, probe_id: str, text: str) -> EvidenceLine:
        """A line of a probe's output, quoted with the command that printed it on the node."""
        argv = " ".join(BY_ID[probe_id].argv) if probe_id in BY_ID else probe_id
        return cls(f"{node}: {argv}", text.strip()[:500])


@dataclass(frozen=True)
class Fix:
    """A runbook with parameters when one can fix it; otherwise the manual step."""

    manual: str
    runbook: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def restart(cls, namespace: str, nodes: Iterable[str], manual: str) -> Fix:
        """Restart flannel on the nodes (the runbook that does it rolling, one node at a time)."""
        return cls(
            manual,
            "flannel.restart-pods",
            {"nodes": ",".join(sorted(set(nodes))), "namespace": namespace},
        )

    @classmethod
    def on_node(cls, manual: str, runbook: str, node: str) -> Fix:
        """A node runbook for the node; only the manual step when the evidence names no node
        (a line read where no node is known cannot say which one to change)."""
        return cls(manual, runbook, {"node": node}) if node else cls(manual)

    def command(self) -> str | None:
        if self.runbook is None:
            return None
        args = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"run {self.runbook} {args}".strip()


SEVERITIES = ("critical", "warning", "info")
CONFIRMED, INFERRED = "confirmed", "inferred"


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
    certainty: str = "confirmed"  # or "inferred": from a log line or event alone (quoted)

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
            "certainty": self.certainty,
        }
