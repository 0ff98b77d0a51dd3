"""What a node-exec pod sends for its VXLAN peer tables: the tables whole, or their digests.

For each cluster size in `--sizes`, bench/_gen.py makes one node's route, neighbour and FDB
tables as a VXLAN node of that cluster lists them (every peer), and measures side by side, in
one run:

  whole     the three tables as `flannel-bot node` would print them (bytes through the pod log)
  digest    `flannel-bot node --digest`: each table's digest and its entries of no peer
            (`bot.ports.peer_digest.digest_table`), bytes sent and the node's CPU to make them
  check     the bot's side: `PeerTableReducer.from_digest` against the peers' annotations,
            beside `PeerTableReducer.reduce` of the whole tables, per node

and the bytes through the API server for the whole cluster (every node sends them). Both ways
must reduce to the same facts (entry counts, what each table lacks, the entries kept), or the
run fails.

Usage: python bench/node_digest.py [--sizes 500,1000,2000,5000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from _gen import ProbeOutputs, scale_nodes

from flannel_bot.diagnosis.peer_tables import TABLES, PeerTableReducer, peers_wanted
from flannel_bot.executors.kube import parse_node
from flannel_bot.lab import objects
from flannel_bot.ports.nodes import DigestResult
from flannel_bot.ports.peer_digest import digest_table
from flannel_bot.ports.probes import ProbeOutput


def best(repeat: int, work: Callable[[], Any]) -> float:
    """The fastest of `repeat` runs, in seconds of CPU."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        work()
        times.append(time.process_time() - start)
    return min(times)


def mb(n: float) -> str:
    return f"{n / 1e6:9.2f} MB"


def kb(n: float) -> str:
    return f"{n / 1e3:8.1f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="500,1000,2000,5000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{'nodes':>6} {'whole/node':>12} {'digest/node':>12} {'ratio':>7} "
        f"{'node CPU':>9} {'whole, cluster':>15} {'digest, cluster':>16} "
        f"{'bot: reduce':>12} {'bot: check':>11}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        cluster = scale_nodes(size)
        node = cluster[size // 2]
        tables = {
            pid: out
            for pid, out in ProbeOutputs(cluster).node(node, 30, None).items()
            if pid in TABLES
        }
        wanted = peers_wanted(parse_node(objects.node(n)) for n in cluster)
        whole = sum(len(stdout.encode()) for stdout, _, _ in tables.values())
        digests = {pid: digest_table(pid, stdout) for pid, (stdout, _, _) in tables.items()}
        sent = 0
        for pid, d in digests.items():
            assert d is not None, pid
            sent += len(d.others.encode()) + len(str(d.as_json()))
        node_cpu = best(args.repeat, lambda t=tables: [digest_table(p, o[0]) for p, o in t.items()])
        results = {
            pid: DigestResult(
                node.name, (), 0, d.others, entries=d.entries, count=d.count, digest=d.digest
            )
            for pid, d in digests.items()
            if d is not None
        }
        outputs = {pid: ProbeOutput(0, stdout, err) for pid, (stdout, _, err) in tables.items()}
        # one reducer per run, as diagnose has: the cluster's sums and usual entries are made
        # once (on the first node), then each node costs what is timed here
        reducer = PeerTableReducer(wanted)
        name = node.name

        def reduce_whole(
            r: PeerTableReducer = reducer, n: str = name, o: dict[str, ProbeOutput] = outputs
        ) -> dict[str, Any]:
            return {pid: r.reduce(pid, out, n) for pid, out in o.items()}

        def check_digests(
            r: PeerTableReducer = reducer, n: str = name, d: dict[str, DigestResult] = results
        ) -> dict[str, Any]:
            return {pid: r.from_digest(pid, n, x) for pid, x in d.items()}

        reduce_whole(), check_digests()  # warm: the reducer learns the cluster once
        by_tables, by_digests = reduce_whole(), check_digests()
        for pid in TABLES:
            a, b = by_tables[pid], by_digests[pid]
            assert a is not None and b is not None, (size, pid)
            assert (a.entries, a.missing) == (b.entries, b.missing), (size, pid)
            assert json.loads(a.out.stdout) == json.loads(b.out.stdout), (size, pid)
        reduce_cpu = best(args.repeat, reduce_whole)
        check_cpu = best(args.repeat, check_digests)
        print(
            f"{size:>6} {mb(whole):>12} {kb(sent):>12} {whole / sent:6.0f}x "
            f"{node_cpu * 1e3:7.1f} ms {mb(whole * size):>15} {mb(sent * size):>16} "
            f"{reduce_cpu * 1e3:9.2f} ms {check_cpu * 1e3:8.2f} ms"
        )
    print(
        "\nwhole: the three tables a node prints; digest: what `flannel-bot node --digest` "
        "prints for them; node CPU: making the three digests; bot: reducing the whole tables "
        "of one node against checking its digests, each with the run's reducer (the cluster's "
        "entries learnt on the first node)"
    )


if __name__ == "__main__":
    main()
