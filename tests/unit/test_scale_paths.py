"""The paths rewritten for scale (issue 17) give what the direct readings give.

Each rewrite replaced a pass over every pair (node x node, finding x finding, node x pod) by an
index; these tests hold it to the direct reading, kept here as the reference, on many small
random cases: the same nodes, findings, order and explanations. (They passed on the code before
the rewrite too: behaviour was to stay as it was; bench/diagnose_quadratic.py shows the times.)
"""

from __future__ import annotations

import random

import pytest

from bench.diagnose_quadratic import rank_before
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import Finding, Fix
from flannel_bot.diagnosis.l2 import L2Reach
from flannel_bot.diagnosis.node_facts import in_cidr
from flannel_bot.diagnosis.rule import RULES, explains, rank
from flannel_bot.diagnosis.rules.cni import _pods_outside_subnet
from flannel_bot.ports.cluster import NodeInfo, PodInfo

# -- host-gw's L2 check ---------------------------------------------------------------------------


def far_directly(nodes: list[NodeInfo], node: str, connected: list[str]) -> list[NodeInfo]:
    """hostgw-not-l2's reading before L2Reach: every node against every connected CIDR."""
    return [
        n
        for n in nodes
        if n.name != node
        and n.internal_ip
        and not any(in_cidr(n.internal_ip, c) for c in connected if c and "/" in c)
    ]


ADDRESSES = [
    "10.0.0.{}",
    "10.0.1.{}",
    "10.1.0.{}",
    "192.168.5.{}",
    "fd00::{}",
    "fd00:1::{}",
]
CIDRS = [
    "10.0.0.0/24",
    "10.0.0.0/23",
    "10.0.1.128/25",
    "10.0.0.7/32",
    "10.0.0.0/8",
    "192.168.5.0/24",
    "fd00::/64",
    "fd00::/16",
    "0.0.0.0/0",
    "junk/24",
    "10.0.0.1/99",
]


def random_nodes(rng: random.Random, count: int) -> list[NodeInfo]:
    nodes = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.05:
            ip = ""
        elif roll < 0.1:
            ip = "not-an-address"
        else:
            ip = rng.choice(ADDRESSES).format(rng.randint(1, 40))
            if roll > 0.95:
                ip += "/24"
        name = f"n{rng.randint(0, count)}" if rng.random() < 0.1 else f"n{i}"  # some twice
        nodes.append(NodeInfo(name=name, internal_ip=ip))
    return nodes


@pytest.mark.parametrize("seed", range(200))
def test_l2_reach_finds_the_nodes_the_pairwise_check_finds(seed: int) -> None:
    rng = random.Random(seed)
    nodes = random_nodes(rng, rng.randint(0, 60))
    reach = L2Reach(nodes)
    for node in {n.name for n in nodes} | {"absent"}:
        connected = [*rng.sample(CIDRS, rng.randint(0, 3)), *["", "10.0.0.5"][: rng.randint(0, 2)]]
        direct = far_directly(nodes, node, connected)
        for limit in (1, 5, len(nodes) + 1):
            got = reach.far(node, [c for c in connected if c and "/" in c], limit)
            assert got == direct[:limit], (node, connected, limit)


# -- ranking --------------------------------------------------------------------------------------


def random_findings(rng: random.Random, count: int) -> list[Finding]:
    # ids that explain others and the ids they explain, so explanations happen often
    causes = [r for r in RULES if r.explains]
    ids = [r.id for r in rng.sample(causes, 4)]
    ids += [*[e for cid in ids for e in sorted(explains(cid))][:8], "not-a-rule"]
    nodes = [f"w{i}" for i in range(6)]
    out = []
    for _ in range(count):
        on = tuple(sorted(rng.sample(nodes, rng.choice((0, 1, 1, 2, 3)))))
        severity = rng.choice(("critical", "warning", "info"))
        out.append(Finding(rng.choice(ids), severity, on, "s", "m", [], Fix("f")))
    return out


@pytest.mark.parametrize("seed", range(200))
def test_rank_orders_and_explains_as_the_pairwise_pass(seed: int) -> None:
    rng = random.Random(seed)
    findings = random_findings(rng, rng.randint(0, 40))
    copies = [
        Finding(f.id, f.severity, f.nodes, f.summary, f.mechanism, [], f.fix) for f in findings
    ]
    got = rank(findings)
    want = rank_before(copies)  # the earlier reading, as bench/diagnose_quadratic.py keeps it
    assert [(f.id, f.nodes, f.severity, f.explained_by) for f in got] == [
        (f.id, f.nodes, f.severity, f.explained_by) for f in want
    ]
    # the same objects, in that order
    assert [findings.index(f) for f in got] == [copies.index(f) for f in want]


# -- pods outside their node's subnet -------------------------------------------------------------


def outside_directly(ev: Evidence) -> list[tuple[str, list[PodInfo], str, str]]:
    """_pods_outside_subnet before grouping the pods by node: every node against every pod."""
    from flannel_bot.diagnosis.rule import leased_subnet

    out = []
    node_ips = {n.internal_ip for n in ev.nodes if n.internal_ip}
    for info in ev.nodes:
        subnet, read_from = leased_subnet(ev, info.name)
        if not subnet:
            continue
        outside = [
            p
            for p in ev.pods
            if p.node == info.name
            and p.phase == "Running"
            and not p.host_network
            and p.pod_ip
            and ":" not in p.pod_ip
            and p.pod_ip != p.host_ip
            and p.pod_ip not in node_ips
            and not in_cidr(p.pod_ip, subnet)
        ]
        if outside:
            out.append((info.name, outside, subnet, read_from))
    return out


@pytest.mark.parametrize("seed", range(100))
def test_pods_outside_subnet_as_the_pass_per_node(seed: int) -> None:
    rng = random.Random(seed)
    ev = Evidence()
    cidrs = ["10.244.1.0/24", "10.244.2.0/24", "10.244.2.0/23", "junk", "", "fd00::/64"]
    ev.nodes = [
        NodeInfo(name=f"w{i}", internal_ip=f"172.31.0.{i}", pod_cidr=rng.choice(cidrs))
        for i in range(rng.randint(0, 6))
    ]
    ips = ["10.244.1.{}", "10.244.2.{}", "10.244.3.{}", "172.31.0.{}", "x.{}", "10.244.1.{}/24"]
    ev.pods = [
        PodInfo(
            namespace=rng.choice(("default", "kube-flannel")),
            name=f"p{j}",
            node=f"w{rng.randint(0, 7)}",
            phase=rng.choice(("Running", "Running", "Pending")),
            labels={"app": "flannel"} if rng.random() < 0.3 else {},
            pod_ip=rng.choice([*ips, ""]).format(rng.randint(1, 9)),
            host_ip=rng.choice(("", "172.31.0.1")),
            host_network=rng.random() < 0.1,
        )
        for j in range(rng.randint(0, 40))
    ]
    assert list(_pods_outside_subnet(ev)) == outside_directly(ev)


# -- the bundle reader's pods, held as PodInfo --------------------------------------------------


def test_the_bundle_reader_answers_pod_queries_alike_after_its_pods_json_is_dropped() -> None:
    """pods.json is converted once and its JSON dropped: every later question about pods (by
    namespace, label, node; a log's default container) reads the same as the first."""
    from pathlib import Path

    from flannel_bot.executors.bundle import BundleReader
    from flannel_bot.executors.bundle.listjson import decode_items
    from flannel_bot.executors.kube import parse_pod

    example = Path(__file__).resolve().parents[2] / "examples" / "dump"
    text = (example / "kube-flannel" / "pods.json").read_text()
    listed = decode_items(text, 1000)
    assert listed is not None
    expected = [parse_pod(p) for p in listed.items]

    reader = BundleReader(example)
    everything = reader.list_pods(None)
    assert [p for p in everything if p.namespace == "kube-flannel"] == expected
    assert reader.list_pods("kube-flannel") == expected
    assert reader.list_pods("kube-flannel", "app=flannel") == expected
    assert reader.list_pods("kube-flannel", "app!=flannel") == []
    assert reader.list_pods("kube-flannel", node="w2") == [p for p in expected if p.node == "w2"]
    assert reader.list_pods(None, "k8s-app=flannel", node="w1") == [
        p for p in expected if p.node == "w1"
    ]
    assert reader.list_pods(None) == everything
    pod = expected[0]
    log = reader.read_pod_log("kube-flannel", pod.name, "kube-flannel")
    assert log and reader.read_pod_log("kube-flannel", pod.name, None) == log  # its only one


# -- the catalogue's word test before its combined pattern ---------------------------------------


def test_no_line_a_message_matches_is_skipped_by_the_word_test() -> None:
    """Every message's example, in upper and lower case and with its words spaced out, in every
    place it is read: where the combined pattern matches, the word test lets the line through."""
    from flannel_bot.diagnosis.catalogue import CATALOGUE
    from flannel_bot.diagnosis.catalogue.message import FULLWIDTH, _may_match

    checked = 0
    for where in sorted({w for m in CATALOGUE.messages for w in m.where}):
        combined, _ = CATALOGUE.for_where(where)
        words = CATALOGUE.words(where)
        assert words is not None, f"{where}: a message without a required word"
        for m in CATALOGUE.messages:
            for line in (m.example, m.example.upper(), m.example.lower(), m.example + " \u017f"):
                line = line.translate(FULLWIDTH)
                if combined.search(line):
                    checked += 1
                    assert _may_match(line, words), (where, m.pattern, line)
    assert checked > len(CATALOGUE.messages)


def test_a_pattern_ignoring_case_still_searches_a_line_folded_beyond_ascii() -> None:
    import re

    from flannel_bot.diagnosis.catalogue.message import _may_match, required_words

    pattern = "(?i)failed to set up"
    words = required_words(pattern)
    assert words == (("failed to set up", True),)
    line = "FAILED TO \u017fET UP the thing"  # U+017F matches s when case is ignored
    assert re.search(pattern, line)
    assert _may_match(line, ((), ("failed to set up",)))
    assert not _may_match("all is well", ((), ("failed to set up",)))
    assert required_words("^panic: |\\bpanic: runtime error") == (
        ("panic: ", False),
        ("panic: runtime error", False),
    )
    assert required_words("\\d+|x") is None
