"""Node facts: each one probe of the documented set and the one parser that reads its output.

Diagnose's rules and runbooks read a node fact the same way, through a `Fact` here, so a fact is
read and understood in one place: a runbook planner asks `facts.read(node, ADDRESSES)`, a rule
asks `ev.fact(node, LINKS)`. Parsers are total: output that does not parse reads as "nothing
there" (an empty table), never an exception, because a node's output is evidence, not code.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import msgspec

from flannel_bot.ports.probes import (
    ADDRESSES as ADDRESSES_PROBE,
)
from flannel_bot.ports.probes import (
    BY_ID,
    CNI_NETWORKS,
    IPAM_RESERVATIONS,
    SANDBOXES,
    Probe,
    ProbeOutput,
    conf_dir_probe,
    file_probe,
    ipvs_service_probe,
    tcp_connect_probe,
)

T = TypeVar("T")
_JSON = msgspec.json.Decoder()


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A node fact: the probe that reads it and the one parser of that probe's output."""

    probe: Probe
    parse: Callable[[ProbeOutput], T]


def in_cidr(address: str, cidr: str) -> bool:
    """Whether an address (with or without /prefix) lies in a CIDR; False if either is junk."""
    network = _network_of(cidr)
    if network is None:
        return False
    plain = _plain_ipv4(address) if network.version == 4 else None
    if plain is not None:  # each node's own addresses: compared as numbers, not parsed
        return plain[0] & int(network.netmask) == int(network.network_address)
    ip = _ip_of(address)
    return ip is not None and ip in network


def interface_network(address: str) -> str:
    """`str(ipaddress.ip_interface(address).network)` (ValueError for junk): a plain IPv4
    address/prefix (every node's subnet.env) is computed as numbers."""
    plain = _plain_ipv4(address)
    if plain is None:
        return str(ipaddress.ip_interface(address).network)
    ip, prefix = plain
    n = ip & (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}/{prefix}"


# an IPv4 address as ipaddress reads it (four decimal octets 0-255, no leading zeros), with a
# prefix length 0-32 without leading zeros or none; anything else is left to ipaddress
_OCTET_OF = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PLAIN_IPV4 = re.compile(
    rf"({_OCTET_OF}\.{_OCTET_OF}\.{_OCTET_OF}\.{_OCTET_OF})(?:/(3[0-2]|[12]?[0-9]))?"
)


def _plain_ipv4(address: str) -> tuple[int, int] | None:
    """(the address as a number, its prefix length or 32) of a plain IPv4 address[/prefix]."""
    match = _PLAIN_IPV4.fullmatch(address)
    if match is None:
        return None
    a, b, c, d = match.group(1).split(".")
    prefix = match.group(2)
    return int(a) << 24 | int(b) << 16 | int(c) << 8 | int(d), int(prefix) if prefix else 32


# every node's rules ask of the same few leases and of addresses seen again and again: each
# text is parsed once (ipaddress objects are immutable)
@functools.lru_cache(maxsize=1 << 16)
def _ip_of(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_interface(address).ip
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def _network_of(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return None


def _json_list(out: ProbeOutput) -> list[dict[str, Any]]:
    """The objects of an `ip -j`/`bridge -j` array; [] when the command failed or printed junk."""
    if not out.ok:
        return []
    try:  # msgspec first, several times faster; the standard decoder for what it refuses
        value = _JSON.decode(out.stdout or "[]")
    except msgspec.DecodeError:
        try:
            value = json.loads(out.stdout or "[]")
        except ValueError:
            return []
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


# -- interfaces ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """One interface of `ip -j addr show`: its IPv4 addresses as `a.b.c.d/len`."""

    name: str
    mtu: int = 0
    inet: tuple[str, ...] = ()
    parent: str = ""  # a VXLAN device's underlay interface (linkinfo.info_data.link), if shown
    mac: str = ""  # the link-layer address, in lower case
    kind: str = ""  # linkinfo's info_kind with -d: vxlan, bridge, veth, wireguard, ipip...

    def has_ip(self, ip: str) -> bool:
        return any(a.split("/")[0] == ip for a in self.inet)


class _Addr(msgspec.Struct, gc=False):
    family: Any = None
    local: Any = None
    prefixlen: Any = None


class _LinkInfo(msgspec.Struct, gc=False):
    info_kind: Any = None
    info_data: Any = None


class _RawLink(msgspec.Struct, gc=False):
    """The fields of an `ip -d -j addr` link that `parse_links` reads; the rest (thirty or so
    a link) is skipped by the decoder without being built."""

    ifname: Any = None
    mtu: Any = 0
    address: Any = None
    addr_info: list[_Addr] = []
    linkinfo: _LinkInfo | None = None


_LINKS = msgspec.json.Decoder(list[_RawLink])


def parse_links(out: ProbeOutput) -> dict[str, Link]:
    if out.ok and not out.stdout.lstrip().startswith("["):
        return _links_from_text(out.stdout)
    typed = _typed_links(out)
    return typed if typed is not None else _general_links(out)


def _general_links(out: ProbeOutput) -> dict[str, Link]:
    links = {}
    for raw in _json_list(out):
        info = (raw.get("linkinfo") or {}).get("info_data") or {}
        name = str(raw.get("ifname"))
        links[name] = Link(
            name=name,
            mtu=int(raw.get("mtu", 0) or 0),
            inet=tuple(
                f"{a['local']}/{a['prefixlen']}"
                for a in raw.get("addr_info", [])
                if a.get("family") == "inet"
            ),
            parent=str(info.get("link") or "") if isinstance(info, dict) else "",
            mac=str(raw.get("address") or "").lower(),
            kind=str((raw.get("linkinfo") or {}).get("info_kind") or ""),
        )
    return links


def _typed_links(out: ProbeOutput) -> dict[str, Link] | None:
    """`parse_links` of the usual output, decoded into the fields it reads; None for output of
    any other shape (a null, a string where an object was, an address without its prefix),
    which the general path reads as before."""
    if not out.ok:
        return None
    try:
        raws = _LINKS.decode(out.stdout or "[]")
    except msgspec.DecodeError:  # ValidationError too
        return None
    links = {}
    for raw in raws:
        info = raw.linkinfo
        inet: tuple[str, ...] = ()
        if raw.addr_info:  # a pod's veth has none: most of a node's links
            found = []
            for a in raw.addr_info:
                if a.family == "inet":
                    if a.local is None or a.prefixlen is None:
                        return None
                    found.append(f"{a.local}/{a.prefixlen}")
            inet = tuple(found)
        parent = kind = ""
        if info is not None:
            data = info.info_data
            parent = str(data.get("link") or "") if isinstance(data, dict) else ""
            kind = str(info.info_kind or "")
        name = str(raw.ifname)
        mac = raw.address
        # positional, in Link's order (a third faster than by keyword, 32 links a node)
        links[name] = Link(
            name,
            int(raw.mtu or 0),
            inet,
            parent,
            mac.lower() if type(mac) is str else str(mac or "").lower(),
            kind,
        )
    return links


LINKS = Fact(BY_ID["ip-addr"], parse_links)
"""Interfaces with MTUs and VXLAN details (the diagnose probe `ip -d -j addr show`)."""
ADDRESSES = Fact(ADDRESSES_PROBE, parse_links)
"""Interfaces and their addresses (`ip -j addr show`, what runbooks read)."""


# -- routes, neighbours, forwarding entries -----------------------------------------------------


@dataclass(frozen=True)
class Route:
    dst: str
    dev: str = ""
    type: str = ""
    scope: str = ""
    protocol: str = ""
    gateway: str = ""  # the next hop (`via`): a peer's address for host-gw and ipip


def parse_routes(out: ProbeOutput) -> list[Route]:
    if out.ok and not out.stdout.lstrip().startswith("["):
        return _routes_from_text(out.stdout)
    return [
        Route(
            dst=str(r.get("dst") or ""),
            dev=str(r.get("dev") or ""),
            type=str(r.get("type") or ""),
            scope=str(r.get("scope") or ""),
            protocol=str(r.get("protocol") or ""),
            gateway=str(r.get("gateway") or ""),
        )
        for r in _json_list(out)
    ]


ROUTES = Fact(BY_ID["ip-route"], parse_routes)
LOCAL_ROUTES = Fact(BY_ID["ip-route-local"], parse_routes)


def parse_neighbours(out: ProbeOutput) -> set[tuple[str, str]]:
    """(address, MAC in lower case) of flannel.1's neighbour entries."""
    if out.ok and not out.stdout.lstrip().startswith("["):
        return _neighbours_from_text(out.stdout)
    return {(str(n.get("dst")), str(n.get("lladdr", "")).lower()) for n in _json_list(out)}


def parse_fdb(out: ProbeOutput) -> set[tuple[str, str]]:
    """(MAC in lower case, underlay destination) of flannel.1's forwarding entries."""
    return {(str(f.get("mac", "")).lower(), str(f.get("dst", ""))) for f in _json_list(out)}


NEIGHBOURS = Fact(BY_ID["ip-neigh"], parse_neighbours)
FDB = Fact(BY_ID["fdb"], parse_fdb)


# -- iptables -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleTable:
    """One table of `iptables-save`: chain policies and the `-A` rules, in order."""

    policies: Mapping[str, str] = field(default_factory=dict)
    rules: tuple[str, ...] = ()

    def accepts(self, network: str, flag: str) -> bool:
        """Whether FORWARD (or flannel's FLANNEL-FWD) accepts `flag` (-s or -d) `network`."""
        net = re.escape(network)
        pattern = re.compile(rf"^-A (FORWARD|FLANNEL-FWD) .*{flag} {net}( |.* )-j ACCEPT")
        return any(pattern.search(rule) for rule in self.rules)

    def matching(self, pattern: str, limit: int = 3) -> list[str]:
        """The last `limit` rules matching a regular expression."""
        rx = re.compile(pattern)
        return [rule for rule in self.rules if rx.search(rule)][-limit:]


def parse_rule_table(out: ProbeOutput) -> RuleTable:
    if not out.ok:
        return RuleTable()
    if re.search(r"^Chain \S+ \(", out.stdout, re.M):
        return _table_from_listing(out.stdout)
    policies, rules = {}, []
    for line in out.stdout.splitlines():
        line = line.strip()
        if line.startswith(":"):
            chain, _, rest = line[1:].partition(" ")
            policies[chain] = rest.split(" ")[0]
        elif line.startswith("-A "):
            rules.append(line)
    return RuleTable(policies, tuple(rules))


FILTER_TABLE = Fact(BY_ID["iptables-filter"], parse_rule_table)
LEGACY_RULES = Fact(BY_ID["iptables-legacy"], parse_rule_table)


# -- files flannel and the CNI plugins keep -----------------------------------------------------


def parse_env(out: ProbeOutput) -> dict[str, str] | None:
    """KEY=value lines (subnet.env); None when the file could not be read."""
    if not out.ok:
        return None
    pairs = (line.strip().partition("=") for line in out.stdout.splitlines())
    return {k: v for k, sep, v in pairs if sep and k}


SUBNET_ENV = Fact(BY_ID["subnet-env"], parse_env)


@dataclass(frozen=True)
class ConfFile:
    path: str
    size: int
    content: str


def parse_cni_files(out: ProbeOutput) -> list[ConfFile]:
    """The cni-config probe's `==> PATH SIZE` blocks, in sort order (the kubelet's order)."""
    files = []
    for block in re.split(r"^==> ", out.stdout, flags=re.M)[1:]:
        header, _, body = block.partition("\n")
        path, _, size = header.rpartition(" ")
        files.append(ConfFile(path, int(size) if size.isdigit() else len(body), body))
    return sorted(files, key=lambda f: (f.path, f.size, f.content))


CNI_CONFIG = Fact(BY_ID["cni-config"], parse_cni_files)


def is_flannel_conf(content: str) -> bool:
    """Whether a CNI config (a .conf or a .conflist) is valid JSON with a flannel plugin."""
    try:
        conf = json.loads(content)
    except ValueError:
        return False
    plugins = conf.get("plugins", [conf]) if isinstance(conf, dict) else []
    return any(isinstance(p, dict) and p.get("type") == "flannel" for p in plugins)


def parse_names(out: ProbeOutput) -> set[str]:
    """Whitespace-separated names (`ls -1`); empty when the listing failed."""
    return set(out.stdout.split()) if out.ok else set()


CNI_PLUGINS = Fact(BY_ID["cni-bin"], parse_names)
# k3s's own places for the same (RKE2 uses /etc/cni/net.d and /opt/cni/bin like kubeadm)
K3S_CNI_CONFIG = Fact(BY_ID["k3s-cni-config"], parse_cni_files)
K3S_CNI_PLUGINS = Fact(BY_ID["k3s-cni-bin"], parse_names)

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_RESERVATION = re.compile(rf"^{CNI_NETWORKS}/[A-Za-z0-9_.-]+/(\d{{1,3}}(\.\d{{1,3}}){{3}})$")


def parse_reservations(out: ProbeOutput) -> dict[str, str]:
    """host-local reservation file -> the sandbox id it holds. Both shapes of the listing are
    read: host-local's files end without a newline, so a `==> ` header may follow text."""
    text = out.stdout.replace("\0", "").replace("==> ", "\n==> ")
    found = {}
    for block in re.split(r"^==> ", text, flags=re.M)[1:]:
        path, _, body = block.partition("\n")
        match = _RESERVATION.fullmatch(path.strip())
        if match and _is_ipv4(match.group(1)):
            found[path.strip()] = body.splitlines()[0].strip() if body.strip() else ""
    return found


def _is_ipv4(text: str) -> bool:
    """Dotted quad with each part 0-255 in ASCII digits and no leading zero (what IPv4Address
    accepts), told by one match, not an exception per file: a node holds one file per pod."""
    return _IPV4.fullmatch(text) is not None


def reserved_address(path: str) -> str:
    """The address a reservation file is named for."""
    return path.rsplit("/", 1)[1]


IPAM = Fact(BY_ID["ipam"], parse_reservations)
IPAM_FILES = Fact(IPAM_RESERVATIONS, parse_reservations)


def parse_text(out: ProbeOutput) -> str | None:
    """A file's text; None when it does not exist (other failures read as None too)."""
    return out.stdout if out.ok else None


def parse_value(out: ProbeOutput) -> str | None:
    """A one-line value (a sysctl); None when the file does not exist."""
    return out.stdout.strip() if out.ok else None


BRIDGE_NF_CALL_IPTABLES = Fact(BY_ID["bridge-nf-call-iptables"], parse_value)
BRIDGE_NF_CALL_IP6TABLES = Fact(BY_ID["bridge-nf-call-ip6tables"], parse_value)
IP_FORWARD = Fact(BY_ID["ip-forward"], parse_value)


def file_text(path: str) -> Fact[str | None]:
    """A file under the directories the bot reads (see `bot.ports.probes.READABLE_ROOTS`)."""
    return Fact(file_probe(path), parse_text)


def parse_conf_dir(out: ProbeOutput) -> dict[str, str]:
    """PATH -> content of the files a `conf_dir_probe` listed, in sort order."""
    files = {}
    for block in out.stdout.split("\0==> ")[1:]:
        path, _, body = block.partition("\n")
        files[path] = body
    return dict(sorted(files.items()))


def conf_files(directory: str, suffix: str) -> Fact[dict[str, str]]:
    """Every `*suffix` file directly in `directory` (systemd's drop-in directories)."""
    return Fact(conf_dir_probe(directory, suffix), parse_conf_dir)


def tcp_answers(ip: str, port: int) -> Fact[bool]:
    """Whether a TCP connect from the node to ip:port succeeds within 3 seconds."""
    return Fact(tcp_connect_probe(ip, port), lambda out: out.ok)


def parse_sandboxes(out: ProbeOutput) -> set[str] | None:
    """Sandbox ids the runtime knows; None when the node has no crictl to ask."""
    if out.exit_code == 127 or "not found" in out.stderr:
        return None
    return set(out.stdout.split()) if out.ok else None


SANDBOX_IDS = Fact(SANDBOXES, parse_sandboxes)


def parse_ipvs_servers(out: ProbeOutput) -> list[str] | None:
    """The real servers of an IPVS service; None when ipvsadm could not say."""
    if not out.ok:
        return None
    servers = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("->")]
    return servers[1:]  # the first `->` line is the column header


def ipvs_servers(ip: str, port: int) -> Fact[list[str] | None]:
    return Fact(ipvs_service_probe(ip, port), parse_ipvs_servers)


def parse_offload(out: ProbeOutput) -> dict[str, str]:
    """ethtool -k's `feature: on|off` lines."""
    if not out.ok:
        return {}
    pairs = (line.strip().partition(": ") for line in out.stdout.splitlines())
    return {k: v.split(" ")[0] for k, sep, v in pairs if sep}


OFFLOAD = Fact(BY_ID["offload"], parse_offload)


def parse_modules(out: ProbeOutput) -> set[str]:
    """Which of the modules asked about exist under /sys/module (loaded or built in)."""
    return {line.strip().rsplit("/", 1)[-1] for line in out.stdout.splitlines() if line.strip()}


KERNEL_MODULES = Fact(BY_ID["kernel-modules"], parse_modules)


# -- the plain-text forms people paste into hand-made bundles --------------------------------------
# `ip addr`, `ifconfig`, `ip route`, `ip neigh`, `arp -n` and `iptables -L -n -v` print the same
# facts as the probes' JSON and iptables-save; a bundle assembled by hand from a ticket often has
# only those, so each parser reads them too.

_IP_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:\s+<[^>]*>(.*)$")
_IFCONFIG = re.compile(r"^([^\s:]+):?\s+(?:flags=\S+|Link encap)(.*)$")


def _links_from_text(text: str) -> dict[str, Link]:
    links: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        head = _IP_LINK.match(line) or _IFCONFIG.match(line)
        if head:
            current = links.setdefault(
                head.group(1), {"inet": [], "mtu": 0, "mac": "", "parent": "", "kind": ""}
            )
            mtu = re.search(r"\bmtu (\d+)", head.group(2), re.I)
            current["mtu"] = int(mtu.group(1)) if mtu else 0
            hwaddr = re.search(r"\bHWaddr (\S+)", head.group(2))  # net-tools 1.60
            current["mac"] = hwaddr.group(1).lower() if hwaddr else ""
            continue
        if current is None:
            continue
        words = line.split()
        if not words:
            continue
        if words[0] in ("link/ether", "ether") and len(words) > 1:
            current["mac"] = words[1].lower()
        elif words[0] == "inet" and len(words) > 1 and words[1].startswith("addr:"):
            # net-tools 1.60 ifconfig: inet addr:A  Bcast:B  Mask:M
            mask = next((w[5:] for w in words if w.startswith("Mask:")), "255.255.255.255")
            try:
                prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
            except ValueError:
                prefix = 32
            current["inet"].append(f"{words[1][5:]}/{prefix}")
        elif words[0] == "inet" and len(words) > 1:
            if "/" in words[1]:
                current["inet"].append(words[1])
            elif "netmask" in words:  # ifconfig: inet A  netmask M
                mask = words[words.index("netmask") + 1]
                try:
                    prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
                except ValueError:
                    prefix = 32
                current["inet"].append(f"{words[1]}/{prefix}")
        elif words[0] in ("vxlan", "bridge", "veth", "wireguard", "ipip") and len(words) > 1:
            current["kind"] = words[0]  # `ip -d link`'s details line names the kind first
            if words[0] == "vxlan" and "dev" in words:
                current["parent"] = words[words.index("dev") + 1]
        mtu = re.search(r"\bMTU:(\d+)", line)
        if mtu:
            current["mtu"] = int(mtu.group(1))
    return {
        name: Link(name, v["mtu"], tuple(v["inet"]), v["parent"], v["mac"], v["kind"])
        for name, v in links.items()
    }


def _routes_from_text(text: str) -> list[Route]:
    routes = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].endswith(":") or words[0].startswith(("[", "#", "$")):
            continue
        kind = ""
        if words[0] in ("local", "broadcast", "unreachable", "blackhole", "prohibit"):
            kind = words.pop(0)
        if not words:
            continue
        value = {
            k: words[i + 1]
            for i, k in enumerate(words[:-1])
            if k in ("dev", "scope", "proto", "via")
        }
        routes.append(
            Route(
                dst=words[0],
                dev=value.get("dev", ""),
                type=kind or "unicast",
                scope=value.get("scope", ""),
                protocol=value.get("proto", ""),
                gateway=value.get("via", ""),
            )
        )
    return routes


_ARP = re.compile(r"\((?P<dst>[\d.a-f:]+)\) at (?P<mac>[0-9a-f:]{17}) .* on (?P<dev>\S+)", re.I)


def _neighbours_from_text(text: str, dev: str = "flannel.1") -> set[tuple[str, str]]:
    found = set()
    for line in text.splitlines():
        arp = _ARP.search(line)
        if arp:
            if arp["dev"] == dev:
                found.add((arp["dst"], arp["mac"].lower()))
            continue
        words = line.split()
        if "lladdr" in words and (f"{dev}" in words or "dev" not in words):
            found.add((words[0], words[words.index("lladdr") + 1].lower()))
    return found


_CHAIN = re.compile(r"^Chain (\S+) \(policy (\w+)")


def _table_from_listing(text: str) -> RuleTable:
    """`iptables -L -n -v` (with or without counters and line numbers) as iptables-save rules."""
    policies: dict[str, str] = {}
    rules: list[str] = []
    chain = ""
    header: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        head = _CHAIN.match(line) or re.match(r"^Chain (\S+) \(\d+ references\)", line)
        if head:
            chain = head.group(1)
            if head.re is _CHAIN:
                policies[chain] = head.group(2)
            continue
        words = line.split()
        if not words or not chain:
            continue
        if "target" in words and "source" in words:
            header = words
            continue
        if not header:
            continue
        skip = 0
        if header[0] == "num":
            skip += 1
        if "pkts" in header:
            skip += 2
        cols = words[skip:]
        if len(cols) < 3:
            continue
        target, prot = cols[0], cols[1]
        rest = cols[2:]
        # opt, [in, out], source, destination, then the match text
        if "in" in header and len(rest) >= 5:
            _opt, dev_in, dev_out, src, dst, *extra = rest
        elif len(rest) >= 3:
            _opt, src, dst, *extra = rest
            dev_in = dev_out = "*"
        else:
            continue
        parts = [f"-A {chain}"]
        if src not in ("0.0.0.0/0", "::/0"):
            parts.append(f"-s {src}")
        if dst not in ("0.0.0.0/0", "::/0"):
            parts.append(f"-d {dst}")
        if dev_in not in ("*", "any"):
            parts.append(f"-i {dev_in}")
        if dev_out not in ("*", "any"):
            parts.append(f"-o {dev_out}")
        if prot not in ("all", "0"):
            parts.append(f"-p {prot}")
        text_extra = " ".join(extra)
        if text_extra:
            parts.append(
                f"-m comment --comment {text_extra!r}" if "/*" in text_extra else text_extra
            )
        parts.append(f"-j {target}")
        rules.append(" ".join(parts))
    return RuleTable(policies, tuple(rules))
