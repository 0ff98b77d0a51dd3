"""Two diagnosis paths that were nodes squared, each beside its earlier reading in one run.

  hostgw     hostgw-not-l2 on a host-gw cluster of `--nodes` nodes on two L2 segments (half the
             nodes on 172.20.0.0/17, half on 172.20.128.0/17), so every node has peers it cannot
             reach directly and every node is reported: the rule before (every node's address
             tested against every node's connected routes, parsing both each time) and now
             (bot/diagnosis/l2.py: addresses parsed and sorted once, the far ones found by range).
  rank       ranking 2 x `--nodes` findings when one fault hits every node (a cause and the
             crash it explains on each node): every cause against every later finding before,
             and now only the later findings of an id it explains on a node it names.

The earlier readings are kept here as they were (tests/unit/test_scale_paths.py holds the new
ones to them on small random cases); both sides must give the same findings, in the same order,
with the same explanations, or the run fails.

Usage: python bench/diagnose_quadratic.py [--nodes 5000] [--only hostgw|rank]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from flannel_bot.diagnosis.evidence import BACKEND_TYPE, Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Finding, Fix
from flannel_bot.diagnosis.node_facts import ROUTES, in_cidr
from flannel_bot.diagnosis.rule import Found, explains, inferred, rank, ranks
from flannel_bot.diagnosis.rules import RULES
from flannel_bot.ports.cluster import NodeInfo
from flannel_bot.ports.probes import ProbeOutput

# -- host-gw -------------------------------------------------------------------------------------


def hostgw_cluster(count: int) -> Evidence:
    ev = Evidence()
    half = count // 2
    for i in range(count):
        segment = 0 if i < half else 128
        j = i if i < half else i - half
        ip = f"172.20.{segment + (j >> 8)}.{j & 255}"
        ev.nodes.append(
            NodeInfo(
                name=f"node-{i:05d}",
                internal_ip=ip,
                pod_cidr=f"10.{128 + (i >> 8)}.{i & 255}.0/24",
                annotations={BACKEND_TYPE: "host-gw"},
            )
        )
        routes = [
            {"dst": "default", "gateway": "172.20.0.1", "dev": "eth0", "protocol": "static"},
            {
                "dst": f"172.20.{segment}.0/17",
                "dev": "eth0",
                "protocol": "kernel",
                "scope": "link",
                "prefsrc": ip,
            },
        ]
        ev.probes[f"node-{i:05d}"] = {"ip-route": ProbeOutput(0, json.dumps(routes), "")}
    return ev


def hostgw_before(ev: Evidence) -> Iterator[Found]:
    """hostgw-not-l2 as it was (bot/diagnosis/rules/vxlan.py before l2.py)."""
    if ev.backend().type != "host-gw":
        return
    reported: set[str] = set()
    for node in ev.probed():
        connected = [
            r.dst
            for r in ev.fact(node, ROUTES) or []
            if r.scope == "link" and r.protocol == "kernel"
        ]
        far = [
            n
            for n in ev.nodes
            if n.name != node
            and n.internal_ip
            and not any(in_cidr(n.internal_ip, c) for c in connected if c and "/" in c)
        ]
        if far:
            reported.add(node)
            yield Found(
                (node,),
                f"host-gw backend but {node} does not share an L2 network with "
                f"{', '.join(n.name for n in far[:5])}",
                "host-gw routes pod subnets via the peer's address as a next hop, which only "
                "works when all nodes are on one L2 segment.",
                [EvidenceLine.probe(node, "ip-route", f"connected: {', '.join(connected)}")],
                Fix("use the vxlan backend, or put all nodes on one L2 network"),
            )
    yield from inferred(
        ev,
        "hostgw-not-l2",
        lambda node: f"host-gw cannot route to a peer from {node or 'a node'}",
        "host-gw routes pod subnets via the peer's address as a next hop, which only works "
        "when all nodes are on one L2 segment: the kernel refuses a next hop it cannot reach "
        "directly (network is unreachable).",
        lambda node: Fix("use the vxlan backend, or put all nodes on one L2 network"),
        besides=reported,
    )


def hostgw_now(ev: Evidence) -> Iterator[Found]:
    rule = next(r for r in RULES if r.id == "hostgw-not-l2")
    return iter(rule.check(ev))


def bench_hostgw(count: int) -> tuple[float, float]:
    def run(check: Callable[[Evidence], Iterator[Found]]) -> tuple[float, list[Any]]:
        ev = hostgw_cluster(count)
        for node in ev.probed():  # routes parsed before timing: both read them the same way
            ev.fact(node, ROUTES)
        start = time.perf_counter()
        found = [(f.nodes, f.summary, f.evidence) for f in check(ev)]
        return time.perf_counter() - start, found

    before, old = run(hostgw_before)
    now, new = run(hostgw_now)
    if old != new:
        raise SystemExit("hostgw-not-l2: the findings differ from the earlier reading")
    if len(new) != count:
        raise SystemExit(f"hostgw-not-l2: {len(new)} findings, not one per node ({count})")
    return before, now


# -- ranking -------------------------------------------------------------------------------------


def rank_before(findings: list[Finding]) -> list[Finding]:
    """rank() as it was (bot/diagnosis/rule.py before the (id, node) index)."""
    order = ranks()
    ranked = sorted(
        findings, key=lambda f: (f.severity == "info", order.get(f.id, len(order)), f.nodes)
    )
    for i, cause in enumerate(ranked):
        accounts = explains(cause.id)
        for effect in ranked[i + 1 :]:
            if (
                effect.id in accounts
                and cause.id not in effect.explained_by
                and (set(effect.nodes) & set(cause.nodes) or not cause.nodes)
            ):
                effect.explained_by.append(cause.id)
    return ranked


def fault_everywhere(count: int) -> list[Finding]:
    """br-netfilter-missing on every node, and the flannel crash loop it explains there."""
    out = []
    for i in range(count):
        node = (f"node-{i:05d}",)
        for fid in ("flannel-crashloop", "br-netfilter-missing"):
            out.append(Finding(fid, "critical", node, "s", "m", [], Fix("f")))
    return out


def bench_rank(count: int) -> tuple[float, float]:
    if "flannel-crashloop" not in explains("br-netfilter-missing"):
        raise SystemExit("br-netfilter-missing no longer explains flannel-crashloop: pick a pair")

    def run(ranker: Callable[[list[Finding]], list[Finding]]) -> tuple[float, list[Any]]:
        findings = fault_everywhere(count)
        start = time.perf_counter()
        ranked = ranker(findings)
        return time.perf_counter() - start, [(f.id, f.nodes, f.explained_by) for f in ranked]

    before, old = run(rank_before)
    now, new = run(rank)
    if old != new:
        raise SystemExit("rank: the order or the explanations differ from the earlier reading")
    if sum(1 for _, _, by in new if by) != count:
        raise SystemExit("rank: not every crash loop was explained by its node's cause")
    return before, now


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--only", choices=("hostgw", "rank"))
    args = parser.parse_args()
    print(f"  {'path':56} {'before':>10} {'now':>10} {'ratio':>8}")
    cases = {
        "hostgw": (f"hostgw-not-l2, {args.nodes} host-gw nodes on 2 segments", bench_hostgw),
        "rank": (f"rank {2 * args.nodes} findings (one fault on every node)", bench_rank),
    }
    for key, (label, bench) in cases.items():
        if args.only and key != args.only:
            continue
        before, now = bench(args.nodes)
        print(f"  {label:56} {before:8.2f} s {now:8.2f} s {before / now:7.0f}x", flush=True)
    print("\nthe same findings, order and explanations on both sides")


if __name__ == "__main__":
    main()
