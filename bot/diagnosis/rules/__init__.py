"""Diagnosis rules by area, and `diagnose`: every rule over the evidence, root cause first.

Each area module declares its rules with `@rule` (`bot.diagnosis.rule`); they are imported here
from the cluster down to the pod, which is also the order rules rank in when no declared
`explains` decides. A rule looks for one failure known from real incidents and quotes the
lines that show it, with where they came from.
"""

from __future__ import annotations

import importlib

from flannel_bot.diagnosis.collector import few_collections
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import Finding
from flannel_bot.diagnosis.rule import RULES, rank

# the areas, from the cluster down to the pod: rules rank in this order unless `explains` decides
AREAS = (
    "cluster",
    "config",
    "kube_proxy",
    "subnets",
    "kernel",
    "interfaces",
    "iptables",
    "vxlan",
    "cni",
    "pods",
)
for _area in AREAS:
    importlib.import_module(f"{__name__}.{_area}")


def diagnose(ev: Evidence) -> list[Finding]:
    """Every rule over the evidence, ranked root cause first."""
    with few_collections():  # the rules make no cycles; a full pass walks all the evidence
        return rank(f for r in RULES for f in r.findings(ev))


__all__ = ["AREAS", "RULES", "diagnose"]
