"""A node's VXLAN peer tables reduced to what differs from the peers it should know.

On a VXLAN cluster every node's route, neighbour and FDB tables hold an entry per peer, so their
text grows with nodes squared (5,000 nodes: 7 GB). The rules need from them only which expected
entries are absent (vxlan-peer-missing), which entries are not the expected ones (a stale MAC, a
route to a subnet no node has), and for a few rules the expected entries themselves, which the
Node annotations say. So each node's three tables are reduced as soon as they are read: the
entries that are exactly what flanneld programs for a known peer are counted and dropped, the
rest stays as probe output (parsed by the same `Fact` parsers as before), and `PeerTable` says
which expected entries were absent. The reduction is lossless with respect to the wanted set:
the dropped entries are `wanted - missing`.

Speed: the tables of all nodes repeat the same entries (peer P's route reads the same on every
node), so an entry's text is parsed once for the whole cluster and recognised afterwards by a
set lookup; a table is split into entries as text, never parsed whole, unless its text is not
the compact one-object-per-entry form `ip -j` prints (then it is parsed as JSON, exactly as the
`Fact` parsers do). The nodes' tables also list the peers in the same order (the kernel's), so
after the first table recognised by its texts the next are walked in its order: a run of usual
texts is compared as one string, and only the entries between runs (a node's own routes, a peer
it lacks, an entry out of that order) are taken one by one; a table that does not fit is set
against the usual texts as before, with the same result. No I/O here: callers pass the text.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flannel_bot.ports import peer_digest
from flannel_bot.ports.cluster import NodeInfo
from flannel_bot.ports.nodes import DigestResult, ReducedResult
from flannel_bot.ports.probes import BY_ID, ProbeOutput

BACKEND_DATA = "flannel.alpha.coreos.com/backend-data"
PUBLIC_IP = "flannel.alpha.coreos.com/public-ip"
DEVICE = "flannel.1"
TABLES = ("ip-route", "ip-neigh", "fdb")
# each table's probe argv -> its id (what a node side that digests tables is asked for)
TABLE_ARGVS: Mapping[tuple[str, ...], str] = {BY_ID[i].argv: i for i in TABLES}
# distinct entry texts remembered across nodes; past this the memo starts afresh (a cluster
# whose entries all differ gains nothing from it, and memory stays bounded)
MEMO_LIMIT = 200_000
# entries of a table other than the usual ones that the quick reduction still takes (a node's
# own routes); more, and the table is reduced entry by entry
ODD_ENTRIES = 64


@dataclass(frozen=True)
class PeersWanted:
    """What flanneld programs on every node for each peer, from the Node annotations: the key of
    each table's entry -> the peer it is for."""

    routes: Mapping[str, str] = field(default_factory=dict)  # podCIDR
    neighbours: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (VTEP, MAC)
    fdb: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (MAC, public IP)

    def of(self, probe_id: str) -> Mapping[Any, str]:
        if probe_id == "ip-route":
            return self.routes
        return self.neighbours if probe_id == "ip-neigh" else self.fdb


def peers_wanted(nodes: Iterable[NodeInfo]) -> PeersWanted:
    """Each node with a podCIDR and a VTEP MAC in its backend-data is a VXLAN peer."""
    routes: dict[str, str] = {}
    neighbours: dict[tuple[str, str], str] = {}
    fdb: dict[tuple[str, str], str] = {}
    for peer in nodes:
        data = peer.annotations.get(BACKEND_DATA, "")
        try:
            mac = str(json.loads(data).get("VtepMAC", "")).lower() if data else ""
        except (ValueError, AttributeError):
            mac = ""
        public = peer.annotations.get(PUBLIC_IP, peer.internal_ip)
        if peer.pod_cidr and mac:
            routes[peer.pod_cidr] = peer.name
            neighbours[(peer.pod_cidr.split("/")[0], mac)] = peer.name
            fdb[(mac, public)] = peer.name
    return PeersWanted(routes, neighbours, fdb)


@dataclass(frozen=True, eq=False)
class PeerTable:
    """One node's table after reduction: `out` is what the evidence keeps (the entries that are
    not wanted ones, in their order), `entries` how many the node's table held, `missing` the
    wanted keys it lacked. Compared by identity: it describes exactly one kept output."""

    out: ProbeOutput
    entries: int
    missing: frozenset[Any]


# the keys, what each table's parser in node_facts reads from an entry (shared with the node side)
KEYS = peer_digest.KEYS
_NOT_AN_ENTRY = object()


class PeerTableReducer:
    """Reduces each node's peer tables against one `PeersWanted`; keeps, across nodes, the key of
    every entry text it has parsed (bounded by MEMO_LIMIT)."""

    def __init__(self, wanted: PeersWanted) -> None:
        self.wanted = wanted
        self._memo: dict[str, dict[str, Any]] = {pid: {} for pid in TABLES}
        self._wanted_sets = {pid: frozenset(wanted.of(pid)) for pid in TABLES}
        # per table, the first entry text seen for each wanted key (one text per key, so a set
        # of these texts stands for as many distinct wanted keys), and that text's key
        self._usual: dict[str, set[str]] = {pid: set() for pid in TABLES}
        self._usual_key: dict[str, dict[str, Any]] = {pid: {} for pid in TABLES}
        self._text_of: dict[str, dict[Any, str]] = {pid: {} for pid in TABLES}  # key -> text
        self.quick = 0  # tables reduced by set operations on their texts alone
        self.walked = 0  # of which walked in the order of the first (`_in_order`)
        self._sums: dict[str, int] = {}  # table -> the sum of its wanted keys' hashes
        self._own: dict[str, dict[str, list[Any]]] = {}  # table -> peer -> its wanted keys
        self._order: dict[str, _Order] = {}  # table -> its usual texts in a table's order

    def reduce(self, probe_id: str, out: ProbeOutput, node: str | None = None) -> PeerTable | None:
        """The reduced table, or None when the output is not one this can reduce losslessly (a
        failed probe, plain text from a hand-made bundle): the evidence then keeps it whole.
        `node`: whose table it is (its own entries are the ones a node usually lacks)."""
        if probe_id not in TABLES or not out.ok:
            return None
        a, _ = _bounds(out.stdout)
        if not out.stdout.startswith("[", a):
            return None
        quick = self._usual_only(probe_id, out, node)
        if quick is not None:
            return quick
        want = self.wanted.of(probe_id)
        fragments = _fragments(out.stdout)
        keys = None if fragments is None else self._keys(probe_id, fragments)
        if fragments is None or keys is None:
            return self._reduce_parsed(probe_id, out, want)
        wanted = self._wanted_sets[probe_id]  # a set: differences use the stored hashes
        missing = frozenset(wanted - keys)
        unwanted = keys - wanted
        if not unwanted:  # the usual case: nothing but wanted entries
            stdout = "[]\n"
        else:
            memo = self._memo[probe_id]
            kept = [f for f in fragments if memo[f] in unwanted]
            stdout = "[" + ",".join("{" + f + "}" for f in kept) + "]\n"
        return PeerTable(ProbeOutput(out.exit_code, stdout, out.stderr), len(fragments), missing)

    def from_digest(self, probe_id: str, node: str, result: DigestResult) -> PeerTable | None:
        """The reduced table of a node that sent its table's digest: when the node holds
        exactly the wanted entries of every peer but itself (count and digest agree), its own
        are what it lacks and the entries it sent are the rest; else None (fetch the table)."""
        wanted = self.wanted.of(probe_id)
        total = self._sums.get(probe_id)
        if total is None:
            total = self._sums[probe_id] = sum(map(peer_digest.key_hash, wanted))
        own = self._own_keys(probe_id).get(node, [])
        expected = (total - sum(map(peer_digest.key_hash, own))) % peer_digest.MODULUS
        if (result.count, result.digest) != (len(wanted) - len(own), expected):
            return None
        out = ProbeOutput(result.exit_code, result.stdout, result.stderr)
        return PeerTable(out, result.entries, frozenset(own))

    def _usual_only(
        self, probe_id: str, out: ProbeOutput, node: str | None = None
    ) -> PeerTable | None:
        """The reduction of a table every entry of which is a usual text (the one seen first
        for a wanted key), found with set operations on the entry texts alone: no entry is looked
        up one by one. None when any entry is not (a table never seen, a stale entry, a route
        of another device): `reduce` then works entry by entry."""
        usual = self._usual[probe_id]
        if not usual:
            return None
        order = self._order.get(probe_id)
        if order is not None:
            walked = self._in_order(probe_id, order, out.stdout)
            if walked is not None:
                return self._usual_table(probe_id, out, *walked)
        texts = out.stdout.split("},{")  # split in place: the table is not copied first
        first, last = texts[0].lstrip(), texts[-1].rstrip()
        if not (first.startswith("[{") and last.endswith("}]")):
            return None
        if len(texts) == 1:
            texts[0] = first.rstrip()[2:-2]
        else:
            texts[0], texts[-1] = first[2:], last[:-2]
        distinct = set(texts)
        if len(distinct) != len(texts):
            return None
        others = distinct - usual
        if len(others) > ODD_ENTRIES or not self._all_unwanted(probe_id, others):
            return None
        # the usual texts stand for distinct wanted keys: those absent are the wanted keys of
        # the usual texts the table lacks, and the wanted keys no usual text stands for yet
        wanted, key_of = self._wanted_sets[probe_id], self._usual_key[probe_id]
        lacking = self._own_texts(probe_id, node, len(distinct) - len(others), distinct)
        missing = {key_of[t] for t in (usual - distinct if lacking is None else lacking)}
        if len(usual) != len(wanted):
            missing |= wanted - set(key_of.values())
        stdout = "[]\n"
        if others:  # the default route, cni0's: kept as they are, in their order
            stdout = "[" + ",".join("{" + t + "}" for t in texts if t in others) + "]\n"
        table = ProbeOutput(out.exit_code, stdout, out.stderr)
        self.quick += 1
        if order is None:  # the next tables are walked in this one's order
            self._order[probe_id] = _Order([t for t in texts if t in usual])
        return PeerTable(table, len(texts), frozenset(missing))

    def _in_order(
        self, probe_id: str, order: _Order, text: str
    ) -> tuple[int, list[str], set[str]] | None:
        """A table's entries walked in the order of the first table reduced by its texts: runs
        of usual texts in that order are compared as one string each (no entry split, hashed
        or looked up), and only the entries between them are taken one by one. (entries, the
        texts that are not usual texts in their order, the usual texts the table lacks); None
        when its text is not the compact form, an entry is there twice, or too many are out of
        that order: `_usual_only` then sets the entries against the usual texts."""
        usual = self._usual[probe_id]
        a, b = _bounds(text)
        if b - a < 4 or not text.startswith("[{", a) or not text.endswith("}]", a, b):
            return None
        pos, end = a + 2, b - 2
        joined, starts, ends, index = order.joined, order.starts, order.ends, order.index
        count = len(starts)
        j = 0  # the next usual text in order
        skipped: set[int] = set()  # usual texts in order not (yet) found
        others: list[str] = []  # in their order; usual texts out of order among them
        entries = 0
        while True:
            if j < count:  # the longest run of usual texts in order from here
                k = _run(text, pos, end, joined, starts, ends, j)
                if k > j:
                    entries += k - j
                    pos += ends[k - 1] - starts[j]
                    j = k
                    if pos == end:
                        break
                    pos += 3  # "},{"
            cut = text.find("},{", pos, end)
            entry = text[pos:end] if cut < 0 else text[pos:cut]
            entries += 1
            at = index.get(entry)
            if at is None:
                others.append(entry)
                if len(others) > 2 * ODD_ENTRIES:
                    return None
            elif at >= j:
                skipped.update(range(j, at))
                j = at + 1
            elif at in skipped:
                skipped.discard(at)
            else:
                return None  # the same entry twice
            if len(skipped) > 2 * ODD_ENTRIES:
                return None
            if cut < 0:
                break
            pos = cut + 3
        if len(set(others)) != len(others):
            return None
        skipped.update(range(j, count))
        lacking = set(order.rest(usual)) if len(usual) != count else set()
        lacking.difference_update(others)
        lacking.update(order.texts[i] for i in skipped)
        return entries, [t for t in others if t not in usual], lacking

    def _usual_table(
        self, probe_id: str, out: ProbeOutput, entries: int, others: list[str], lacking: set[str]
    ) -> PeerTable | None:
        """`_usual_only`'s reduction of a walked table (`_in_order`)."""
        odd = set(others)
        if len(odd) > ODD_ENTRIES or not self._all_unwanted(probe_id, odd):
            return None
        wanted, key_of = self._wanted_sets[probe_id], self._usual_key[probe_id]
        missing = {key_of[t] for t in lacking}
        if len(self._usual[probe_id]) != len(wanted):
            missing |= wanted - set(key_of.values())
        stdout = "[]\n"
        if odd:
            stdout = "[" + ",".join("{" + t + "}" for t in others if t in odd) + "]\n"
        self.quick += 1
        self.walked += 1
        return PeerTable(
            ProbeOutput(out.exit_code, stdout, out.stderr), entries, frozenset(missing)
        )

    def _own_texts(
        self, probe_id: str, node: str | None, held: int, distinct: set[str]
    ) -> list[str] | None:
        """The usual texts a table of `node` lacks when they are exactly the node's own (what a
        node usually lacks), told from counts without a pass over every usual text; None when
        that is not so."""
        usual = self._usual[probe_id]
        if held == len(usual):
            return []
        if node is None:
            return None
        text_of = self._text_of[probe_id]
        own = [text_of[k] for k in self._own_keys(probe_id).get(node, []) if k in text_of]
        if held == len(usual) - len(own) and not any(t in distinct for t in own):
            return own
        return None

    def _own_keys(self, probe_id: str) -> dict[str, list[Any]]:
        """Each peer's own wanted keys in a table: the entries a node holds none of."""
        own = self._own.get(probe_id)
        if own is None:
            own = self._own[probe_id] = {}
            for key, peer in self.wanted.of(probe_id).items():
                own.setdefault(peer, []).append(key)
        return own

    def _all_unwanted(self, probe_id: str, texts: set[str]) -> bool:
        """Whether each text is a whole entry (an object of its own) whose key is either no
        wanted one, or a wanted one no usual text stands for yet (it then becomes that key's
        usual text, and leaves `texts`)."""
        usual = self._usual[probe_id]
        for text in list(texts):
            if not _plain(text):
                return False
            found = self._key_of(probe_id, text)
            if found is _NOT_AN_ENTRY:
                return False
            if text in usual:
                texts.discard(text)
            elif found in self._wanted_sets[probe_id]:
                return False  # a second text for a wanted key: entry by entry
        return True

    def _key_of(self, probe_id: str, text: str) -> Any:
        """The key of an entry's text (parsed once), or _NOT_AN_ENTRY; the first plain text
        of each wanted key becomes its usual text."""
        memo = self._memo[probe_id]
        if text in memo:
            return memo[text]
        try:
            value = json.loads("{" + text + "}")
        except ValueError:
            value = None
        memo[text] = found = KEYS[probe_id](value) if isinstance(value, dict) else _NOT_AN_ENTRY
        text_of = self._text_of[probe_id]
        if found in self._wanted_sets[probe_id] and found not in text_of and _plain(text):
            self._usual[probe_id].add(text)
            self._usual_key[probe_id][text] = found
            text_of[found] = text
        return found

    def _keys(self, probe_id: str, fragments: list[str]) -> set[Any] | None:
        """The keys of a table's entries; None when one is not a JSON object."""
        memo = self._memo[probe_id]
        if len(memo) > MEMO_LIMIT:
            memo.clear()
        try:  # after the first node or two every entry is one seen before
            keys = set(map(memo.__getitem__, fragments))
        except KeyError:
            pass
        else:
            return None if _NOT_AN_ENTRY in keys else keys
        for fragment in set(fragments).difference(memo):
            if self._key_of(probe_id, fragment) is _NOT_AN_ENTRY:
                return None
        keys = set(map(memo.__getitem__, fragments))
        return None if _NOT_AN_ENTRY in keys else keys

    def _reduce_parsed(self, probe_id: str, out: ProbeOutput, want: Mapping[Any, str]) -> PeerTable:
        try:
            value = json.loads(out.stdout or "[]")
        except ValueError:
            value = []
        entries = [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        key = KEYS[probe_id]
        keys = [key(e) for e in entries]
        kept = [e for e, k in zip(entries, keys, strict=True) if k not in want]
        missing = frozenset(want.keys() - set(keys))
        stdout = json.dumps(kept, separators=(",", ":")) + "\n"
        return PeerTable(ProbeOutput(out.exit_code, stdout, out.stderr), len(entries), missing)


def _bounds(text: str) -> tuple[int, int]:
    """Where `text.strip()` starts and ends in `text`, found without copying it (a table is
    half a megabyte, and ends in a newline: rstrip() would copy all of it)."""
    a, b = 0, len(text)
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    return a, b


class _Order:
    """A table's usual texts in its order, joined as a table holds them, with where each is."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.joined = "},{".join(texts)
        self.starts: list[int] = []
        self.ends: list[int] = []
        at = 0
        for t in texts:
            self.starts.append(at)
            at += len(t)
            self.ends.append(at)
            at += 3
        self.index = {t: i for i, t in enumerate(texts)}
        self._rest: tuple[int, frozenset[str]] = (len(texts), frozenset())

    def rest(self, usual: set[str]) -> frozenset[str]:
        """The usual texts not in this order (the first table's own, those learnt since); the
        usual texts are only ever added to, so their number says whether this is still it."""
        if self._rest[0] != len(usual):
            self._rest = (len(usual), frozenset(usual.difference(self.index)))
        return self._rest[1]


def _run(
    text: str, pos: int, end: int, joined: str, starts: list[int], ends: list[int], j: int
) -> int:
    """The end k of the longest run of usual texts j..k-1 (in order) that `text` holds from
    `pos`, each a whole entry there (followed by "},{" or the table's end at `end`)."""

    def holds(k: int) -> bool:
        stop = pos + ends[k - 1] - starts[j]
        return (
            stop <= end
            and (stop == end or text.startswith("},{", stop))
            and text.startswith(joined[starts[j] : ends[k - 1]], pos)
        )

    count = len(starts)
    if holds(count):
        return count
    lo, hi = j, count - 1  # the run ends in [lo, hi]: a prefix holds as a string up to hi
    while lo < hi:  # by string comparison alone (a text may match as a prefix of another)
        mid = (lo + hi + 1) // 2
        stop = pos + ends[mid - 1] - starts[j]
        if stop <= end and text.startswith(joined[starts[j] : ends[mid - 1]], pos):
            lo = mid
        else:
            hi = mid - 1
    while lo > j and not holds(lo):  # the last text matched only as a prefix of an entry
        lo -= 1
    return lo


def _plain(fragment: str) -> bool:
    """Whether an entry's text can only have come from splitting at "},{" (no braces of its
    own, no surrounding space): such a text, found again, is the same entry."""
    return "{" not in fragment and "}" not in fragment and fragment == fragment.strip()


def _fragments(text: str) -> list[str] | None:
    """The entries of a compact JSON array of flat objects, each without its braces; None when
    the text is not in that form (whitespace inside, nested objects), or holds no entry. Split
    in place: the table is not copied first (at 5,000 nodes each is half a megabyte)."""
    opening = text.count("{")
    if opening == 0:
        return [] if text.strip() == "[]" else None
    fragments = text.split("},{")
    if opening != len(fragments):
        return None  # nested objects: parse it whole
    # a value holding "},{" splits wrongly: its pieces are not JSON objects, and _keys, which
    # parses every piece it has not seen, then has it parsed whole
    if len(fragments) == 1:
        fragments[0] = fragments[0].strip()
    first, last = fragments[0].lstrip(), fragments[-1].rstrip()
    if not (first.startswith("[{") and last.endswith("}]")):
        return None
    if len(fragments) == 1:
        return [first[2:-2]]
    fragments[0], fragments[-1] = first[2:], last[:-2]
    return fragments


# -- a node's reduced tables as a support bundle carries them (probes/<node>/peer-tables.json) ----

FACTS_VERSION = 1


def wanted_digest(wanted: PeersWanted) -> str:
    """A digest of the wanted entries of every table: reduced tables are read back only against
    the same wanted set they were reduced with."""
    canon = json.dumps(
        [
            sorted(wanted.routes),
            sorted(list(k) for k in wanted.neighbours),
            sorted(list(k) for k in wanted.fdb),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(canon.encode()).hexdigest()


def facts_document(digest: str, tables: Mapping[str, tuple[PeerTable, int]]) -> dict[str, Any]:
    """What `peer-tables.json` holds for one node: per table (reduced, bytes of its .txt file)
    the count of entries, the wanted keys it lacked and the entries it kept, for the wanted set
    of `digest`."""
    return {
        "version": FACTS_VERSION,
        "wanted": digest,
        "tables": {
            probe_id: {
                "bytes": size,
                "exit": table.out.exit_code,
                "stderr": table.out.stderr,
                "entries": table.entries,
                "missing": sorted(
                    (list(k) if isinstance(k, tuple) else k for k in table.missing), key=str
                ),
                "kept": table.out.stdout,
            }
            for probe_id, (table, size) in tables.items()
        },
    }


def table_from_facts(probe_id: str, result: ReducedResult, wanted: PeersWanted) -> PeerTable | None:
    """The reduced table a bundle recorded, or None when its missing keys are not wanted ones
    of this cluster (the caller then reads the table itself)."""
    want = wanted.of(probe_id)
    missing: set[Any] = set()
    for key in result.missing:
        found = tuple(key) if isinstance(key, list) else key
        try:
            if found not in want:
                return None
        except TypeError:  # a list inside: no key of ours
            return None
        missing.add(found)
    kept = result.stdout if result.stdout.lstrip().startswith("[") else None
    if kept is None or result.entries < 0:
        return None
    out = ProbeOutput(result.exit_code, kept, result.stderr)
    return PeerTable(out, result.entries, frozenset(missing))


# -- what rules ask of a reduced table ----------------------------------------------------------


class SortedNetworks:
    """The wanted podCIDRs of a cluster by network address, to find those inside a network in
    O(log n) instead of one address parse per peer per node."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        pairs = sorted((a, c) for c in cidrs if (a := address_key(c.split("/")[0])) is not None)
        self._keys = [a for a, _ in pairs]
        self._cidrs = [c for _, c in pairs]

    def within(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> list[str]:
        """The podCIDRs whose network address lies in `network`, in address order."""
        v = network.version
        lo = bisect.bisect_left(self._keys, (v, int(network.network_address)))
        hi = bisect.bisect_right(self._keys, (v, int(network.broadcast_address)))
        return self._cidrs[lo:hi]


@functools.lru_cache(maxsize=1 << 16)
def address_key(text: str) -> tuple[int, int] | None:
    """(IP version, address as an integer), or None for junk: addresses compared as numbers."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, int(address)


def inside(address: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    """`node_facts.in_cidr` for a network parsed once: whether an address lies in it."""
    key = address_key(address)
    return (
        key is not None
        and key[0] == network.version
        and int(network.network_address) <= key[1] <= int(network.broadcast_address)
    )


def network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None
