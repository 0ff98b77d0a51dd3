"""The VXLAN peer tables reduced when read give the same findings as the tables read whole: every
incident of test_rules, and the ones that read the peers' entries themselves (a stale VTEP MAC in
a peer's neighbour table, a local network shadowing peers' routes), collected both ways through
`probe_nodes` from the same node outputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence

import pytest

from flannel_bot.diagnosis.collect import probe_nodes
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.peer_tables import (
    TABLES,
    PeersWanted,
    PeerTableReducer,
    peers_wanted,
)
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.ports.nodes import CommandResult, DigestResult
from flannel_bot.ports.peer_digest import digest_table
from flannel_bot.ports.probes import PROBES, ProbeOutput
from tests.unit.test_rules import CASES, edit_json_probe, healthy

BY_ARGV = {p.argv: p.id for p in PROBES}


class RecordedNodes:
    """A node executor answering each probe with the output an Evidence holds for it."""

    def __init__(self, probes: dict[str, dict[str, ProbeOutput]]) -> None:
        self.probes = probes

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        out = self.probes[node].get(BY_ARGV[tuple(argv)])
        if out is None:
            return CommandResult(node, tuple(argv), 127, "", "not recorded")
        return CommandResult(node, tuple(argv), out.exit_code, out.stdout, out.stderr)


def collected(ev: Evidence, reduce_tables: bool, nodes: RecordedNodes | None = None) -> Evidence:
    """`ev` with its node outputs taken again through probe_nodes (from `nodes`, by default
    a RecordedNodes of them)."""
    again = Evidence(
        nodes=ev.nodes,
        pods=ev.pods,
        daemonsets=ev.daemonsets,
        configmaps=ev.configmaps,
        events=ev.events,
        services=ev.services,
        logs=ev.logs,
        rbac=ev.rbac,
        unreachable=dict(ev.unreachable),
    )
    probe_nodes(nodes or RecordedNodes(ev.probes), sorted(ev.probes), again, 5.0, reduce_tables)
    for outputs in again.probes.values():  # what the recording did not hold is unknown
        for probe_id in [p for p, out in outputs.items() if out.stderr == "not recorded"]:
            del outputs[probe_id]
    return again


def stale_vtep_mac(ev: Evidence) -> None:
    """flannel.1 on w2 got a new MAC after flanneld published the old one: the peers' entries
    (the annotated MAC, which the reduction drops as wanted) are stale."""

    def renamed(links: list[dict[str, object]]) -> list[dict[str, object]]:
        for link in links:
            if link["ifname"] == "flannel.1":
                link["address"] = "0a:fb:00:02:99:99"
        return links

    edit_json_probe(ev, "w2", "ip-addr", renamed)


def stale_neighbour(ev: Evidence) -> None:
    """w3's neighbour entry for w2's VTEP names a MAC nobody published (kept by the reduction)."""

    def edited(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        for e in entries:
            if e["dst"] == "10.244.2.0":
                e["lladdr"] = "0a:fb:00:02:77:77"
        return entries

    edit_json_probe(ev, "w3", "ip-neigh", edited)


def docker_network(ev: Evidence) -> None:
    """A local network on w1 holding the pod network: it shadows the peers' routes."""
    edit_json_probe(
        ev,
        "w1",
        "ip-route",
        lambda routes: [
            *routes,
            {"dst": "10.244.0.0/16", "dev": "docker0", "scope": "link", "flags": []},
        ],
    )


def peer_route_lost(ev: Evidence) -> None:
    edit_json_probe(ev, "w1", "ip-route", lambda rs: [r for r in rs if r["dst"] != "10.244.3.0/24"])


MORE: dict[str, Callable[[Evidence], None]] = {
    "stale-vtep-mac": stale_vtep_mac,
    "stale-neighbour": stale_neighbour,
    "docker-network": docker_network,
    "peer-route-lost": peer_route_lost,
}
MUTATIONS = {**{name: mutate for name, (_, _, mutate) in CASES.items()}, **MORE}


@pytest.mark.parametrize("case", ["healthy", *MUTATIONS])
def test_reduced_tables_give_the_findings_of_whole_tables(case: str) -> None:
    ev = healthy()
    if case != "healthy":
        MUTATIONS[case](ev)
    whole = collected(ev, reduce_tables=False)
    reduced = collected(ev, reduce_tables=True)
    assert not whole.peer_tables
    if case not in ("not-deployed", "mismatch"):  # no vxlan, or no Network to read one from
        assert set(reduced.peer_tables) == set(reduced.probes)
    assert diagnose(reduced) == diagnose(whole)
    if case in MORE:
        assert diagnose(whole), "the case shows nothing"


def test_a_table_keeps_only_what_is_not_a_wanted_entry() -> None:
    ev = healthy()
    wanted = peers_wanted(ev.nodes)
    reducer = PeerTableReducer(wanted)
    routes = ev.probes["w1"]["ip-route"]
    table = reducer.reduce("ip-route", routes)
    assert table is not None
    kept = json.loads(table.out.stdout)
    assert [r["dst"] for r in kept] == ["10.96.0.0/12", "10.244.1.0/24", "172.31.248.0/24"]
    assert table.entries == 5
    # w1's own subnet is wanted of the others, never of w1: its cni0 route is not the wanted one
    assert table.missing == frozenset({"10.244.1.0/24"})
    fdb = reducer.reduce("fdb", ev.probes["w1"]["fdb"])
    assert fdb is not None and fdb.out.stdout == "[]\n" and fdb.entries == 2
    assert fdb.missing == {("0a:fb:00:01:00:01", "172.31.248.11")}


@pytest.mark.parametrize(
    "stdout",
    [
        # pretty-printed, nested objects, a brace inside a value: parsed whole, same result
        '[ {"dst": "10.244.2.0", "lladdr": "0a:fb:00:02:00:01"} ]',
        '[{"dst":"10.244.2.0","lladdr":"0a:fb:00:02:00:01","m":{"a":1}},{"dst":"x}"}]',
        '[{"dst":"10.244.2.0","lladdr":"0A:FB:00:02:00:01"},{"dst":"10.9.9.9","lladdr":"x"}]',
        '[{"dst":"a},{b","lladdr":"x"},{"dst":"10.244.2.0","lladdr":"0a:fb:00:02:00:01"}]',
    ],
)
def test_every_form_of_json_reduces_to_the_same_facts(stdout: str) -> None:
    wanted = PeersWanted(neighbours={("10.244.2.0", "0a:fb:00:02:00:01"): "w2", ("a", "b"): "x"})
    table = PeerTableReducer(wanted).reduce("ip-neigh", ProbeOutput(0, stdout))
    assert table is not None
    assert table.missing == {("a", "b")}
    kept = json.loads(table.out.stdout)
    assert all(
        (e.get("dst"), str(e.get("lladdr", "")).lower()) not in wanted.neighbours for e in kept
    )
    assert len(kept) == table.entries - 1


def test_text_and_failed_tables_are_kept_whole() -> None:
    reducer = PeerTableReducer(PeersWanted())
    text = ProbeOutput(0, "10.244.2.0 dev flannel.1 lladdr 0a:fb:00:02:00:01 PERMANENT\n")
    assert reducer.reduce("ip-neigh", text) is None
    assert reducer.reduce("fdb", ProbeOutput(1, "", "no such device")) is None


def test_a_peer_table_not_read_is_unknown_not_missing() -> None:
    """A bundle that did not hold (or refused, past its size limit) a node's FDB table says
    nothing about that node's peers: no vxlan-peer-missing from it."""
    ev = healthy()
    del ev.probes["w2"]["fdb"]
    assert "vxlan-peer-missing" not in {f.id for f in diagnose(ev)}


W2 = '"dst":"10.244.2.0","dev":"flannel.1","lladdr":"0a:fb:00:02:00:01","state":["PERMANENT"]'
W3 = '"dst":"10.244.3.0","dev":"flannel.1","lladdr":"0a:fb:00:03:00:01","state":["PERMANENT"]'
W4 = '"dst":"10.244.4.0","dev":"flannel.1","lladdr":"0a:fb:00:04:00:01","state":["PERMANENT"]'
GATEWAY = '"dst":"172.31.248.1","dev":"eth0","lladdr":"52:54:00:00:00:01","state":["REACHABLE"]'


def neighbours(*entries: str) -> ProbeOutput:
    return ProbeOutput(0, "[" + ",".join("{" + e + "}" for e in entries) + "]\n")


@pytest.mark.parametrize(
    ("table", "quick"),
    [
        (neighbours(W2, W3, W4), True),
        (neighbours(W3, W4), True),  # w2's entry is missing
        (neighbours(), False),
        (neighbours(GATEWAY, W2, W4), True),  # an entry of eth0, kept in its place
        (neighbours(W2, W3, W4, GATEWAY, GATEWAY), False),  # the same entry twice
        (neighbours(W2.replace("0a:fb:00:02", "0a:fb:00:02:99"), W3, W4), True),  # stale MAC
        (neighbours(W2.replace("0a:fb", "0A:FB"), W3, W4), False),  # a wanted key, other text
        (neighbours(W2, W3, W4 + ',"m":{"a":1}'), False),  # an entry of its own shape
        (neighbours(W2, W3, '"dst":"a},{b"', W4), False),  # "},{" inside a value
        (ProbeOutput(0, "[{" + W2 + "},{" + W3 + "},{" + W4 + " }]"), False),  # a space
    ],
)
def test_a_table_reduced_by_its_texts_alone_is_reduced_as_entry_by_entry(
    table: ProbeOutput, quick: bool
) -> None:
    """Once a node's tables are read, the next node's usual entries are recognised by set
    operations on their texts: the result is the one the entry-by-entry reduction gives."""
    wanted = PeersWanted(
        neighbours={
            ("10.244.2.0", "0a:fb:00:02:00:01"): "w2",
            ("10.244.3.0", "0a:fb:00:03:00:01"): "w3",
            ("10.244.4.0", "0a:fb:00:04:00:01"): "w4",
            ("10.244.5.0", "0a:fb:00:05:00:01"): "w5",  # in no table: missing from every one
        }
    )
    warm = PeerTableReducer(wanted)
    assert warm.reduce("ip-neigh", neighbours(W2, W3, W4)) is not None and warm.quick == 0
    by_texts = warm.reduce("ip-neigh", table)
    by_entries = PeerTableReducer(wanted).reduce("ip-neigh", table)
    assert by_texts is not None and by_entries is not None
    assert warm.quick == int(quick)
    assert by_texts.out == by_entries.out
    assert (by_texts.entries, by_texts.missing) == (by_entries.entries, by_entries.missing)
    assert ("10.244.5.0", "0a:fb:00:05:00:01") in by_texts.missing


def test_a_peer_first_seen_on_the_second_node_is_recognised_from_the_third() -> None:
    """The first node lacks its own entries, which every other node has: they are learnt from
    the second node's table, not parsed again on every node after it."""
    wanted = PeersWanted(
        neighbours={
            ("10.244.2.0", "0a:fb:00:02:00:01"): "w2",
            ("10.244.3.0", "0a:fb:00:03:00:01"): "w3",
            ("10.244.4.0", "0a:fb:00:04:00:01"): "w4",
        }
    )
    reducer = PeerTableReducer(wanted)
    tables = [neighbours(W3, W4), neighbours(W2, W4), neighbours(W2, W3, GATEWAY)]
    reduced = [reducer.reduce("ip-neigh", t) for t in tables]
    fresh = [PeerTableReducer(wanted).reduce("ip-neigh", t) for t in tables]
    assert reducer.quick == 2
    assert [(r.out, r.entries, r.missing) for r in reduced if r] == [
        (r.out, r.entries, r.missing) for r in fresh if r
    ]


class DigestingNodes(RecordedNodes):
    """RecordedNodes whose node side digests the peer tables it is asked to, with the function
    `flannel-bot node --digest` runs, as a node-exec pod does."""

    digests_tables = True

    def __init__(self, probes: dict[str, dict[str, ProbeOutput]]) -> None:
        super().__init__(probes)
        self.whole: list[tuple[str, str]] = []  # (node, table) sent whole in a second round

    def run_each(
        self,
        commands: dict[str, list[list[str]]],
        timeout: float,
        digest: dict[tuple[str, ...], str] | None = None,
    ) -> Iterator[tuple[str, list[CommandResult]]]:
        for node, argvs in commands.items():
            results = []
            for argv in argvs:
                r = self.run(node, argv, timeout)
                table = (digest or {}).get(tuple(argv))
                summary = digest_table(table, r.stdout) if table and r.ok else None
                if summary is None:
                    if not digest and BY_ARGV[tuple(argv)] in TABLES:
                        self.whole.append((node, BY_ARGV[tuple(argv)]))
                    results.append(r)
                    continue
                results.append(
                    DigestResult(
                        node,
                        r.argv,
                        r.exit_code,
                        summary.others,
                        r.stderr,
                        entries=summary.entries,
                        count=summary.count,
                        digest=summary.digest,
                    )
                )
            yield node, results


@pytest.mark.parametrize("case", ["healthy", *MUTATIONS])
def test_tables_digested_on_the_nodes_give_the_findings_of_whole_tables(case: str) -> None:
    """The node side sends each table's digest; only a node whose digest is not what its peers'
    annotations say sends that table whole, in a second round."""
    ev = healthy()
    if case != "healthy":
        MUTATIONS[case](ev)
    whole = collected(ev, reduce_tables=False)
    nodes = DigestingNodes(ev.probes)
    assert diagnose(collected(ev, True, nodes)) == diagnose(whole)
    if case == "healthy":
        assert nodes.whole == []  # every node held what the annotations say
    if case == "stale-neighbour":
        assert nodes.whole == [("w3", "ip-neigh")]


@pytest.mark.parametrize(
    ("node", "entries"),
    [
        ("w2", (W3, W4)),  # w2 lacks its own entry, as every node does
        ("w2", (W4,)),  # and w3's too
        ("w3", (W3, W4)),  # w3 lacks w2's but holds its own
        ("w4", (W2, W3, W4)),  # w4 holds its own
        ("w5", (W2, W3, W4)),  # w5's own entry was never seen on any node
        ("w9", (W2, W3)),  # no node of the cluster
    ],
)
def test_a_nodes_own_entries_are_what_it_lacks_only_when_counts_say_so(
    node: str, entries: tuple[str, ...]
) -> None:
    """Told whose table it is, the reduction takes the node's own entries as what it lacks
    when the counts prove it, and is otherwise the reduction of the table alone."""
    wanted = PeersWanted(
        neighbours={
            ("10.244.2.0", "0a:fb:00:02:00:01"): "w2",
            ("10.244.3.0", "0a:fb:00:03:00:01"): "w3",
            ("10.244.4.0", "0a:fb:00:04:00:01"): "w4",
            ("10.244.5.0", "0a:fb:00:05:00:01"): "w5",
        }
    )
    told = PeerTableReducer(wanted)
    assert told.reduce("ip-neigh", neighbours(W2, W3, W4)) is not None
    table = neighbours(*entries)
    by_node = told.reduce("ip-neigh", table, node)
    alone = PeerTableReducer(wanted).reduce("ip-neigh", table)
    assert by_node is not None and alone is not None and told.quick == 1
    assert (by_node.out, by_node.entries, by_node.missing) == (
        alone.out,
        alone.entries,
        alone.missing,
    )


PEERS = [
    f'"dst":"10.244.{i}.0","dev":"flannel.1","lladdr":"0a:fb:00:{i:02x}:00:01","state":["PERMANENT"]'
    for i in range(2, 12)
]


def _table(*entries: str) -> ProbeOutput:
    return ProbeOutput(0, "[" + ",".join("{" + e + "}" for e in entries) + "]\n")


@pytest.mark.parametrize(
    ("table", "walked"),
    [
        (_table(*PEERS), True),  # the first table's own entry (PEERS[0]) out of its order
        (_table(*PEERS[:3], *PEERS[4:]), True),  # a node's own entry missing
        (_table(*PEERS[1:]), True),  # as the first table
        (_table(*PEERS[1:5]), True),  # the last six missing
        (_table(GATEWAY, *PEERS[1:]), True),  # eth0's entry first, kept
        (_table(*PEERS[1:4], GATEWAY, *PEERS[5:]), True),  # ... in the place of a peer's
        (_table(*PEERS[1:], GATEWAY), True),  # ... last
        (_table(*reversed(PEERS)), True),  # another order: taken one by one
        (_table(PEERS[7], *PEERS[1:7], *PEERS[8:]), True),  # one entry moved ahead
        (_table(*PEERS[1:], PEERS[3]), False),  # an entry twice, far apart
        (_table(*PEERS[1:4], PEERS[3], *PEERS[4:]), False),  # ... and side by side
        (_table(GATEWAY, *PEERS[1:], GATEWAY), False),  # an entry not wanted, twice
        (_table(*PEERS[1:5], PEERS[5].replace(":05:00:01", ":05:00:99"), *PEERS[6:]), True),
        (_table(*PEERS[1:5], PEERS[5].replace("0a:fb", "0A:FB"), *PEERS[6:]), False),
        (_table(*PEERS[1:5], PEERS[5] + ',"x":"1"', *PEERS[6:]), False),  # a longer entry
        (_table(*PEERS[1:6], PEERS[6][:-1]), False),  # the last entry cut short: not JSON
        (ProbeOutput(0, "  \n[{" + "},{".join(PEERS[1:]) + "}]  \n"), True),  # space around
        (ProbeOutput(0, "[{" + "},{".join(PEERS[1:]) + "},{}]\n"), True),  # an empty entry
        (ProbeOutput(0, "[{" + "},{".join(PEERS[1:]) + "}, {" + PEERS[0] + "}]"), False),
        (ProbeOutput(0, "[{}]"), True),
        (ProbeOutput(0, "[]"), False),
    ],
)
def test_a_table_walked_in_the_first_ones_order_is_reduced_as_entry_by_entry(
    table: ProbeOutput, walked: bool
) -> None:
    """After the first table reduced by its texts, the next are walked in its order: runs of
    the usual texts compared as one string, the entries between them one by one; a table that
    does not fit (an entry twice, another text for a wanted entry) is reduced as before, and
    the result is always the entry-by-entry one."""
    wanted = PeersWanted(
        neighbours={
            **{(f"10.244.{i}.0", f"0a:fb:00:{i:02x}:00:01"): f"w{i}" for i in range(2, 12)},
            ("10.244.99.0", "0a:fb:00:63:00:01"): "w99",  # in no table: missing from every one
        }
    )
    warm = PeerTableReducer(wanted)
    assert warm.reduce("ip-neigh", _table(*PEERS[:1], *PEERS[2:]), "w3") is not None
    assert warm.reduce("ip-neigh", _table(*PEERS[1:]), "w2") is not None  # the order's table
    assert (warm.quick, warm.walked) == (1, 0)
    by_walk = warm.reduce("ip-neigh", table)
    by_entries = PeerTableReducer(wanted).reduce("ip-neigh", table)
    assert warm.walked == int(walked)
    assert (by_walk is None) == (by_entries is None)
    if by_walk is not None and by_entries is not None:
        assert by_walk.out == by_entries.out
        assert (by_walk.entries, by_walk.missing) == (by_entries.entries, by_entries.missing)
    # the same again, now that the table may have taught the reducer a text
    again = warm.reduce("ip-neigh", table)
    if again is not None and by_entries is not None:
        assert (again.out, again.entries, again.missing) == (
            by_entries.out,
            by_entries.entries,
            by_entries.missing,
        )
