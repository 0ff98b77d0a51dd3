"""The rule API: a rule is a function from evidence to what it found, registered with its finding.

`@rule("br-netfilter-missing", "critical", explains=(...))` declares the finding id, its severity
and the symptoms it accounts for on the same nodes; the function yields `Found`s (nodes, summary,
mechanism, quoted evidence, fix). The root-cause rank is derived from those declarations: a
cause ranks before everything it explains, and otherwise rules rank in the order they are
declared (`bot.diagnosis.rules` imports its area modules from the cluster down to the pod), so a
new rule is ranked where it is written, never silently last.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from flannel_bot.diagnosis.catalogue import Sighting
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import (
    CONFIRMED,
    INFERRED,
    SEVERITIES,
    EvidenceLine,
    Finding,
    Fix,
)
from flannel_bot.diagnosis.node_facts import SUBNET_ENV, interface_network


@dataclass
class Found:
    """One finding of a rule, before the rule's id and severity are stamped on it."""

    nodes: tuple[str, ...]
    summary: str
    mechanism: str
    evidence: list[EvidenceLine]
    fix: Fix
    certainty: str = CONFIRMED
    severity: str = ""  # the rule's, unless the evidence makes this one graver or milder


Check = Callable[[Evidence], Iterable[Found]]


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    explains: frozenset[str]
    check: Check = field(compare=False)

    def findings(self, ev: Evidence) -> Iterator[Finding]:
        for found in self.check(ev):
            yield Finding(
                self.id,
                found.severity or self.severity,
                found.nodes,
                found.summary,
                found.mechanism,
                found.evidence,
                found.fix,
                certainty=found.certainty,
            )


RULES: list[Rule] = []


class RuleDefinitionError(TypeError):
    """A rule declaration is wrong (a duplicate id, an unknown severity); a bug in that rule."""


def rule(finding: str, severity: str, *, explains: Iterable[str] = ()) -> Callable[[Check], Check]:
    """Register a rule for `finding`. `explains`: findings this cause accounts for when both are
    seen on the same nodes (a crash-looping flanneld explains a missing subnet.env)."""
    if severity not in SEVERITIES:
        raise RuleDefinitionError(f"{finding}: severity must be one of {', '.join(SEVERITIES)}")
    if any(r.id == finding for r in RULES):
        raise RuleDefinitionError(f"two rules declare the finding {finding}")

    def register(check: Check) -> Check:
        RULES.append(Rule(finding, severity, frozenset(explains), check))
        _RANKS.clear()
        return check

    return register


_RANKS: dict[str, int] = {}


def ranks() -> dict[str, int]:
    """Finding id -> rank: causes before what they explain, else in declaration order."""
    if not _RANKS:
        position = {r.id: i for i, r in enumerate(RULES)}
        waiting = {r.id: 0 for r in RULES}
        for r in RULES:
            for effect in r.explains & waiting.keys():
                waiting[effect] += 1
        ready = [(position[fid], fid) for fid, n in waiting.items() if n == 0]
        heapq.heapify(ready)
        by_id = {r.id: r for r in RULES}
        while ready:
            _, fid = heapq.heappop(ready)
            _RANKS[fid] = len(_RANKS)
            for effect in by_id[fid].explains & waiting.keys():
                waiting[effect] -= 1
                if waiting[effect] == 0:
                    heapq.heappush(ready, (position[effect], effect))
        if len(_RANKS) != len(RULES):
            loop = sorted(set(by_id) - _RANKS.keys())
            _RANKS.clear()
            raise RuleDefinitionError(f"these findings explain each other in a circle: {loop}")
    return _RANKS


def explains(cause: str) -> frozenset[str]:
    return next((r.explains for r in RULES if r.id == cause), frozenset())


def rank(findings: Iterable[Finding]) -> list[Finding]:
    """Root causes first, informational last; note which findings explain which: a later
    finding of an id the cause explains, on a node the cause names (any, for a cluster-wide
    cause).

    Each cause looks up only the later findings it can explain, by (id, node), not every later
    finding: one fault on every node of 5,000 gives 10,000 findings, and pairs of them are 50
    million."""
    order = ranks()
    ranked = sorted(
        findings, key=lambda f: (f.severity == "info", order.get(f.id, len(order)), f.nodes)
    )
    by_id: dict[str, list[int]] = {}
    by_id_node: dict[tuple[str, str], list[int]] = {}
    for j, effect in enumerate(ranked):
        by_id.setdefault(effect.id, []).append(j)
        for node in dict.fromkeys(effect.nodes):
            by_id_node.setdefault((effect.id, node), []).append(j)
    explained: dict[str, frozenset[str]] = {}
    for r in RULES:
        explained.setdefault(r.id, r.explains)  # the first rule of an id, as explains() reads
    for i, cause in enumerate(ranked):
        accounts = explained.get(cause.id, frozenset())
        if not accounts:
            continue
        later: set[int] = set()
        for effect_id in accounts:
            if not cause.nodes:
                found = by_id.get(effect_id, [])
                later.update(found[bisect.bisect_right(found, i) :])
            else:
                for node in cause.nodes:
                    found = by_id_node.get((effect_id, node), [])
                    later.update(found[bisect.bisect_right(found, i) :])
        # in rank order, as one pass over the later findings would meet them
        for j in sorted(later):
            effect = ranked[j]
            if cause.id not in effect.explained_by:
                effect.explained_by.append(cause.id)
    return ranked


def quote(s: Sighting) -> EvidenceLine:
    """A sighting as a finding quotes it: where it was read, and the line."""
    more = f" (seen {s.count} times)" if s.count > 1 else ""
    return EvidenceLine(s.source + more, s.line)


def sighted_by_node(
    ev: Evidence, finding: str, besides: Iterable[str] = ()
) -> dict[str, list[Sighting]]:
    """Node -> the sightings establishing `finding` there, leaving out `besides` (nodes a
    stronger path already reported); "" collects lines that name no node."""
    skip = set(besides)
    out: dict[str, list[Sighting]] = {}
    quoted: set[tuple[str, str]] = set()
    for s in ev.sighted(finding):
        if s.node not in skip and (s.source, s.line) not in quoted:
            quoted.add((s.source, s.line))  # one line two messages know is quoted once
            out.setdefault(s.node, []).append(s)
    return out


def inferred(
    ev: Evidence,
    finding: str,
    summary: Callable[[str], str],
    mechanism: str,
    fix: Callable[[str], Fix],
    besides: Iterable[str] = (),
) -> Iterator[Found]:
    """The findings a rule can establish from log lines and events alone: one per node (or one
    for lines that name none), quoting what was read, marked inferred."""
    for node, seen in sorted(sighted_by_node(ev, finding, besides).items()):
        yield Found(
            (node,) if node else (),
            summary(node),
            mechanism,
            [quote(s) for s in seen[:3]],
            fix(node),
            certainty=INFERRED,
        )


def leased_subnet(ev: Evidence, node: str) -> tuple[str, str]:
    """The IPv4 subnet flannel leased a node and where it was read: subnet.env's FLANNEL_SUBNET
    (any subnet manager), else the node's podCIDR where flannel runs in the cluster with the
    Kubernetes subnet manager (its lease is the podCIDR; etcd's leases are not); ("", "")."""
    subnet = (ev.fact(node, SUBNET_ENV) or {}).get("FLANNEL_SUBNET", "")
    if subnet:
        try:
            return interface_network(subnet), f"{node}: /run/flannel/subnet.env"
        except ValueError:
            return "", ""
    info = ev.node(node)
    in_cluster = (
        ev.has_flannel_pods()
        or ev.flannel_daemonsets()
        or ev.flannel_configmap() is not None
        or ev.flannel_embedded()
    )
    if info is not None and info.pod_cidr and ":" not in info.pod_cidr and in_cluster:
        return info.pod_cidr, f"API: node {node} podCIDR"
    return "", ""
