"""Which nodes lie outside a node's directly connected networks (host-gw's L2 check).

Why a module: asked of every node about every other node, the question is nodes squared (25
million address tests at 5,000 nodes, each parsing both sides). Here every address is parsed
once and sorted; a node's connected networks are ranges in that order, and the nodes outside
them are the ranges between. The first few of those in the cluster's node order come from a
range-minimum table over the positions, so a node costs about log n, not n.
"""

from __future__ import annotations

import bisect
import heapq
import ipaddress
from collections.abc import Iterable, Sequence

from flannel_bot.ports.cluster import NodeInfo


class _Positions:
    """Node positions in address order, with the smallest position of any run found at once."""

    def __init__(self, keyed: list[tuple[int, int]]) -> None:
        keyed.sort()
        self.addresses = [a for a, _ in keyed]
        self.positions = [p for _, p in keyed]
        # table[k][i]: the index (into positions) of the smallest position in [i, i + 2**k)
        self.table = [list(range(len(keyed)))]
        span = 1
        while 2 * span <= len(keyed):
            prev, pos = self.table[-1], self.positions
            self.table.append(
                [
                    prev[i] if pos[prev[i]] < pos[prev[i + span]] else prev[i + span]
                    for i in range(len(keyed) - 2 * span + 1)
                ]
            )
            span *= 2

    def smallest(self, lo: int, hi: int) -> int:
        """The index of the smallest position in [lo, hi) (lo < hi)."""
        k = (hi - lo).bit_length() - 1
        a, b = self.table[k][lo], self.table[k][hi - (1 << k)]
        return a if self.positions[a] < self.positions[b] else b

    def outside(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Index runs [lo, hi) of the addresses in none of the inclusive `ranges`."""
        runs, at = [], 0
        for first, last in sorted(ranges):
            lo = bisect.bisect_left(self.addresses, first, at)
            hi = bisect.bisect_right(self.addresses, last, max(at, lo))
            if lo > at:
                runs.append((at, lo))
            at = max(at, hi)
        if at < len(self.addresses):
            runs.append((at, len(self.addresses)))
        return runs


class L2Reach:
    """The cluster's node addresses, parsed and sorted once, for `far` per node."""

    def __init__(self, nodes: Sequence[NodeInfo]) -> None:
        self.nodes = nodes
        by_version: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        self.junk: list[int] = []  # positions whose address is no address: far from every node
        self.named: dict[str, int] = {}
        for position, n in enumerate(nodes):
            self.named[n.name] = self.named.get(n.name, 0) + 1
            if not n.internal_ip:
                continue
            try:
                ip = ipaddress.ip_interface(n.internal_ip).ip
            except ValueError:
                self.junk.append(position)
                continue
            by_version[ip.version].append((int(ip), position))
        self.sorted = {version: _Positions(keyed) for version, keyed in by_version.items()}

    def far(self, node: str, connected: Iterable[str], limit: int) -> list[NodeInfo]:
        """The first `limit` nodes (in the nodes' order) other than `node`, with an address, in
        none of the `connected` CIDRs (as `in_cidr` reads them: a CIDR that is junk holds
        nothing)."""
        ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
        for cidr in connected:
            try:
                net = ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                continue
            ranges[net.version].append(
                (int(net.network_address), int(net.network_address) + net.num_addresses - 1)
            )
        wanted = limit + self.named.get(node, 0)  # enough to leave the node itself out
        heap: list[tuple[int, int, int, int, int]] = []  # (position, version, lo, hi, index)
        for version, positions in self.sorted.items():
            for lo, hi in positions.outside(ranges[version]):
                at = positions.smallest(lo, hi)
                heap.append((positions.positions[at], version, lo, hi, at))
        heap.extend((p, 0, 0, 0, 0) for p in self.junk[:wanted])
        heapq.heapify(heap)
        out: list[NodeInfo] = []
        while heap and len(out) < limit:
            position, version, lo, hi, at = heapq.heappop(heap)
            if self.nodes[position].name != node:
                out.append(self.nodes[position])
            if version == 0:
                continue
            positions = self.sorted[version]
            for a, b in ((lo, at), (at + 1, hi)):
                if a < b:
                    smallest = positions.smallest(a, b)
                    heapq.heappush(heap, (positions.positions[smallest], version, a, b, smallest))
        return out
