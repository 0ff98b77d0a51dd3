"""The short cuts that let an API-only diagnosis of 150,000 pods run in seconds, each held to the
plain reading it replaces: the catalogue's scan (lines found by a search per word over the whole
text, then only the messages whose words a line holds) against every line searched for every
message; the pod-address test against ipaddress; other_cni against a pass over the pods."""

from __future__ import annotations

import gc
import ipaddress
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flannel_bot.diagnosis.catalogue import CATALOGUE, WHERE, Sighting
from flannel_bot.diagnosis.catalogue.message import FULLWIDTH, Message
from flannel_bot.diagnosis.evidence import OTHER_CNIS, Evidence
from flannel_bot.diagnosis.node_facts import in_cidr
from flannel_bot.diagnosis.rules.cni import _in_network
from flannel_bot.errors import UserError
from flannel_bot.ports.cluster import PodInfo

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dump"


def scan_every_line(where: str, text: str, node: str, source: str) -> Iterator[Sighting]:
    """Catalogue.scan as it was: every line, every message of `where` searched in it."""
    _, chosen = CATALOGUE.for_where(where)
    found: dict[Message, tuple[str, int]] = {}
    for original in text.splitlines():
        line = original.translate(FULLWIDTH)
        for message in chosen:
            if message.regex.search(line):
                seen = found.get(message, ("", 0))[1]
                found[message] = (original.strip()[:500], seen + 1)
    for message, (line, count) in found.items():
        yield Sighting(message, node, source, line, count)


EXAMPLES = [m.example for m in CATALOGUE.messages]
BREAKS = ["\n", "\n", "\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
NOISE = [
    "I1203 17:35:27.152229       1 main.go:212] CLI flags config: {iface:[] ipMasq:true}",
    "E1203 17:35:27.177614       1 main.go:278] something else went wrong: could not",
    "",
    "   ",
    "caf\u00e9 \u017f \uff1a \u201cquoted\u201d",
]


def texts(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(0, 12)):
        line = rng.choice(EXAMPLES + NOISE)
        change = rng.random()
        if change < 0.15:
            line = line.upper()
        elif change < 0.3:
            line = line.lower()
        elif change < 0.4:
            line = line.replace(": ", "\uff1a", 1)
        elif change < 0.5:
            line = line[: rng.randint(0, len(line))]
        elif change < 0.6:  # a long s: matched as s by a pattern that ignores case
            line = line.replace("s", "\u017f")
        lines.append(line)
    ascii_only = rng.random() < 0.6
    breaks = BREAKS[:3] if ascii_only else BREAKS
    text = "".join(line + rng.choice(breaks) for line in lines)
    if ascii_only:
        text = text.encode("ascii", errors="ignore").decode()
    return text if rng.random() < 0.7 else text.rstrip("\n")


@pytest.mark.parametrize("seed", range(300))
def test_the_scan_finds_what_every_line_searched_for_every_message_finds(seed: int) -> None:
    rng = random.Random(seed)
    text = texts(rng)
    for where in WHERE:
        got = list(CATALOGUE.scan(where, text, "w1", "src"))
        assert got == list(scan_every_line(where, text, "w1", "src")), (where, text)


def test_the_scan_reads_a_log_of_examples_and_repeats_alike() -> None:
    """A long ASCII log (the fast path) with every example several times between noise."""
    rng = random.Random(7)
    lines = [rng.choice(EXAMPLES + NOISE[:2]) for _ in range(3_000)]
    text = "\n".join(line.encode("ascii", errors="ignore").decode() for line in lines)
    for where in WHERE:
        got = list(CATALOGUE.scan(where, text, "w1", "src"))
        assert got == list(scan_every_line(where, text, "w1", "src"))
        assert got or where not in {w for m in CATALOGUE.messages for w in m.where}


def reshaped(line: str, rng: random.Random) -> str:
    """An example line with its whitespace and edges changed: tokens glued to their
    neighbours, spaces doubled or turned to tabs and form feeds, a word cut in two."""
    change = rng.randrange(6)
    if change == 0:
        return "x" + line.replace(" ", "", 1) + "y"
    if change == 1:
        return line.replace(" ", "  ")
    if change == 2:
        return line.replace(" ", "\t", rng.randint(1, 3))
    if change == 3:
        return line.replace(" ", "\x1f", 1)  # whitespace to str.split, not a line break
    if change == 4:
        cut = rng.randint(0, len(line))
        return line[:cut] + " " + line[cut:]
    return line


@pytest.mark.parametrize("seed", range(100))
def test_the_token_test_skips_no_word_a_line_holds(seed: int) -> None:
    """Words whose tokens a text lacks are not looked for: examples with their whitespace
    changed, glued to other words and cut, are still found as every line searched finds them."""
    rng = random.Random(seed)
    lines = [reshaped(rng.choice(EXAMPLES + NOISE[:2]), rng) for _ in range(rng.randint(1, 20))]
    text = "\n".join(lines).encode("ascii", errors="ignore").decode()
    for where in WHERE:
        got = list(CATALOGUE.scan(where, text, "w1", "src"))
        assert got == list(scan_every_line(where, text, "w1", "src")), (where, text)


def test_each_word_of_a_line_is_held_by_the_token_test() -> None:
    from flannel_bot.diagnosis.catalogue.message import _WordTokens

    for where in WHERE:
        words = CATALOGUE.words(where)
        assert words is not None
        tokens = _WordTokens(words)
        for m in CATALOGUE.messages:
            for line in (m.example, m.example.upper(), "x" + m.example + "y"):
                lowered = line.lower()
                sensitive, ignoring = tokens.held(lowered)
                assert {w for w in words[0] if w in line} <= set(sensitive), (where, line)
                assert {w for w in words[1] if w in lowered} <= set(ignoring), (where, line)
        quiet = (tuple(tokens.always[0]), tuple(tokens.always[1]))  # searched in every text
        assert tokens.held("i1203 main.go:212] all is well") == quiet


OCTETS = ["0", "1", "9", "10", "99", "100", "255", "256", "01", "00", "010", "+1", " 1", "1_0"]
ADDRESS = st.one_of(
    st.lists(st.sampled_from(OCTETS), min_size=3, max_size=5).map(".".join),
    st.sampled_from(
        ["10.244.1.5/24", "10.244.1.5/33", "::1", "fd00::5", "", "x", "\u0661.1.1.1", "1.2.3.4\n"]
    ),
    st.ip_addresses(v=4).map(str),
)
NETWORK = st.sampled_from(
    [
        "0.0.0.0/0",
        "10.0.0.0/8",
        "10.244.1.0/24",
        "1.0.0.0/8",
        "100.64.0.0/10",
        "1.1.1.1/32",
        "10.1.0.0/16",
        "10.244.1.0/25",
        "10.244.10.0/23",
        "fd00::/64",
    ]
)
ADDRESS_NEAR = st.sampled_from(
    ["10.244.1.", "10.244.10.", "10.244.11.", "10.1.", "10.10.", "1.1.1.", "10.244.1"]
).flatmap(lambda head: st.sampled_from([*OCTETS, "1.1", "0.0"]).map(lambda tail: head + tail))


@given(st.one_of(ADDRESS, ADDRESS_NEAR), NETWORK)
def test_an_address_is_in_a_network_as_ipaddress_reads_it(address: str, network: str) -> None:
    net = ipaddress.ip_network(network)
    assert _in_network(address, net) == in_cidr(address, network)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["k8s-app", "app", "name", "other"]),
            st.sampled_from(
                ["", "flannel", "calico-node", "cilium", "antrea", "kube-ovn-cni", "weave-net"]
            ),
        ),
        max_size=8,
    )
)
def test_other_cni_is_the_first_pod_that_names_one(labels: list[dict[str, str]]) -> None:
    ev = Evidence()
    ev.pods = [PodInfo("ns", f"p{i}", "w1", labels=lab) for i, lab in enumerate(labels)]
    expected = ""
    for pod in ev.pods:
        app = pod.labels.get("k8s-app") or pod.labels.get("app") or pod.labels.get("name", "")
        expected = next((cni for cni, marks in OTHER_CNIS.items() if app in marks), "")
        if expected:
            break
    assert ev.other_cni() == expected
    ev.pods = [*ev.pods, PodInfo("kube-system", "c", "w1", labels={"k8s-app": "cilium"})]
    assert ev.other_cni() == (expected or "cilium")  # a new list of pods is read anew


@given(
    st.lists(st.tuples(st.sampled_from(["w1", "w2", "w3"]), st.one_of(ADDRESS, ADDRESS_NEAR))),
    st.sampled_from(["10.244.1.0/24", "10.244.10.0/24", "10.1.0.0/16", "10.244.1.0/25", "x"]),
)
def test_pods_outside_their_nodes_subnet_are_those_in_cidr_puts_outside(
    pods: list[tuple[str, str]], subnet: str
) -> None:
    from flannel_bot.diagnosis.rules.cni import _pods_outside_subnet
    from flannel_bot.ports.cluster import NodeInfo

    ev = Evidence()
    ev.nodes = [NodeInfo(n, f"172.20.0.{i}", subnet) for i, n in enumerate(["w1", "w2", "w3"])]
    flannel = PodInfo("kube-flannel", "f", "w1", labels={"app": "flannel"}, host_network=True)
    ev.pods = [flannel] + [PodInfo("ns", f"p{i}", n, pod_ip=ip) for i, (n, ip) in enumerate(pods)]
    expected = {}
    for p in ev.pods[1:]:
        node_ip = p.pod_ip in {n.internal_ip for n in ev.nodes}
        if p.pod_ip and ":" not in p.pod_ip and not node_ip and not in_cidr(p.pod_ip, subnet):
            expected.setdefault(p.node, []).append(p)
    got = {node: outside for node, outside, _, _ in _pods_outside_subnet(ev)}
    assert got == expected


CONDITION_MESSAGE = st.sampled_from(
    ["", "kubelet is posting ready status", "x"]
    + [m.example for m in CATALOGUE.messages if "node condition" in m.where]
)


@given(st.lists(st.lists(CONDITION_MESSAGE, max_size=3), max_size=5))
def test_node_conditions_said_on_many_nodes_are_sighted_on_each(messages: list[list[str]]) -> None:
    """A condition message is scanned once however many nodes say it; each node still has its
    sighting, with its own label, as a scan per node gives."""
    from flannel_bot.diagnosis.catalogue.message import NODE_CONDITION
    from flannel_bot.ports.cluster import NodeCondition, NodeInfo

    ev = Evidence()
    ev.nodes = [
        NodeInfo(
            f"w{i}",
            conditions=tuple(NodeCondition(f"T{j}", "False", "R", m) for j, m in enumerate(said)),
        )
        for i, said in enumerate(messages)
    ]
    expected = [
        sighting
        for n in ev.nodes
        for c in n.conditions
        if c.message
        for sighting in CATALOGUE.scan(
            NODE_CONDITION, c.message, n.name, f"API: node {n.name} condition {c.type}={c.status}"
        )
    ]
    assert ev.sightings() == expected


POD_KEYS = st.tuples(st.sampled_from(["ns", "other"]), st.sampled_from(["p1", "p2", "w1", "w9"]))
EVENT_MESSAGE = st.sampled_from([m.example for m in CATALOGUE.messages if "event" in m.where])


@given(
    st.lists(
        st.tuples(
            POD_KEYS,
            st.sampled_from(["w1", "w2"]),
            st.sampled_from(["Running", "Pending"]),
            st.sampled_from(["", "2026-01-01T00:00:00Z"]),
        ),
        max_size=6,
    ),
    st.lists(
        st.tuples(
            POD_KEYS,
            st.sampled_from(["Pod", "Node", "DaemonSet"]),
            st.sampled_from(["", "w5"]),
            EVENT_MESSAGE,
        ),
        max_size=6,
    ),
)
def test_events_are_tied_to_their_pods_node_as_a_map_of_every_pod_ties_them(
    pods: list[tuple[tuple[str, str], str, str, str]],
    events: list[tuple[tuple[str, str], str, str, str]],
) -> None:
    """Sightings in events: a pod's event counts while the pod waits or terminates, and is tied
    to the pod's node (the last pod of that name), as with a map of every pod's node."""
    from flannel_bot.diagnosis.catalogue.message import EVENT
    from flannel_bot.ports.cluster import EventInfo

    ev = Evidence()
    ev.pods = [
        PodInfo(ns, name, node, phase=phase, deletion=deletion)
        for (ns, name), node, phase, deletion in pods
    ]
    ev.events = [
        EventInfo(ns, f"e{i}", kind, name, "R", message, source_host=host, involved_namespace=ns)
        for i, ((ns, name), kind, host, message) in enumerate(events)
    ]
    pod_nodes = {(p.namespace, p.name): p.node for p in ev.pods}
    waiting = {(p.namespace, p.name) for p in ev.pods if p.phase == "Pending" or p.deletion}
    expected = []
    for e in ev.events:
        key = (e.involved_namespace, e.involved_name)
        if e.involved_kind == "Pod" and key not in waiting:
            continue
        node = (
            e.involved_name
            if e.involved_kind == "Node"
            else e.source_host or pod_nodes.get(key, "")
        )
        expected += CATALOGUE.scan(
            EVENT, e.message, node, f"API: event {e.reason} on {e.involved_name}"
        )
    assert ev.sightings() == expected


# -- the collector's thresholds, raised for one bulk read and put back --------------------------


def test_reading_a_bundle_and_answering_a_command_leave_the_collector_as_they_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flannel_bot import cli
    from flannel_bot.wiring import evidence_from_bundle

    before = gc.get_threshold()
    assert evidence_from_bundle(EXAMPLE).pods
    assert gc.get_threshold() == before
    with pytest.raises(UserError):
        evidence_from_bundle(tmp_path / "absent")
    argv = ["--db", str(tmp_path / "bot.db"), "--user", "alice"]
    code = cli.main([*argv, "diagnose", "--dump", str(EXAMPLE), "--json"], env={})
    assert code in (0, 1) and json.loads(capsys.readouterr().out)["findings"]
    assert gc.get_threshold() == before and gc.isenabled()


def test_the_cli_process_ends_with_its_reply_and_audit_event_whole(tmp_path: Path) -> None:
    """Run as a program, the CLI leaves its objects to the process's end (gc.freeze, no
    collection at exit): the reply is still printed whole, the exit code kept, and the
    diagnosis is in the audit log; and a command run in-process leaves the collector alone."""
    import sqlite3
    import subprocess
    import sys

    from flannel_bot import cli

    db = tmp_path / "bot.db"
    argv = ["--db", str(db), "--user", "alice", "diagnose", "--dump", str(EXAMPLE), "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "flannel_bot.cli", *argv],
        capture_output=True,
        text=True,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode in (0, 1), done.stderr
    reply = json.loads(done.stdout)
    assert reply["kind"] == "diagnose" and reply["findings"]
    with sqlite3.connect(db) as conn:
        kinds = [k for (k,) in conn.execute("SELECT kind FROM events")]
    assert "diagnosed" in [k.lower() for k in kinds], kinds
    frozen = gc.get_freeze_count()
    assert cli.main([*argv[:4], "diagnose", "--dump", str(EXAMPLE), "--json"], env={}) in (0, 1)
    assert gc.get_freeze_count() == frozen


def test_reading_a_bundle_does_not_import_the_kubernetes_client() -> None:
    """A support bundle is read with the parsing alone: the client library (a third of a
    second to import) is left to the commands that talk to a live cluster."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from flannel_bot.wiring import evidence_from_bundle\n"
        "from flannel_bot.diagnosis.rules import diagnose\n"
        f"assert diagnose(evidence_from_bundle({str(EXAMPLE)!r}))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
