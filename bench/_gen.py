"""Support bundles of a synthetic cluster of any size, for bench/diagnose_scale.py.

Why synthetic: a cluster of thousands of nodes is not at hand, but what `diagnose --dump` reads
from one is known exactly: the `kubectl cluster-info dump` layout of bot/executors/bundle/. This
module writes that layout for N nodes and P pods with the objects `bot.lab.objects` builds for the
lab (what the bot reads from a real kubeadm + Flannel cluster), names and addresses changed, and
with the node probe outputs of a real lab node (tests/fixtures/lab-probes-healthy.json) rewritten
for every node.

What the cluster looks like:
- flannel Network 10.128.0.0/9 with a /24 per node (node i: 10.{128 + i // 256}.{i % 256}.0/24),
  so up to 32,767 nodes; InternalIPs in 172.20.0.0/16, outside it; VXLAN backend.
- on every node a flannel pod (kube-flannel) and a kube-proxy pod (kube-system); the other pods
  are workloads spread evenly over the nodes and over WORKLOAD_NAMESPACES, their podIPs taken in
  order from the node's podCIDR and reserved in its host-local IPAM directory (`ipam` probe).
- every node's route, neighbour and FDB tables hold an entry for every peer, as flanneld programs
  them: these three probes grow with the square of the node count, as they do on a real cluster.
- background events: Scheduled/Pulled/Created/Started of workload pods (`events` of them).
- about 1% of the nodes broken, in turn one of FAULTS (see `EXPECTED` for the findings each must
  produce). The probe outputs keep the two lab particularities of the fixture (see
  examples/dump/README.md): `kernel-modules` lists no br_netfilter (exit 2), `offload` exits 127.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flannel_bot.lab import objects
from flannel_bot.lab.flannel import NET_CONF
from flannel_bot.lab.lab import klog
from flannel_bot.lab.nodes import sandbox_id
from flannel_bot.lab.objects import FLANNEL_DS, FLANNEL_NS
from flannel_bot.lab.topology import CLUSTER_CIDR, LabSpec, NodeSpec

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "lab-probes-healthy.json"
FIXTURE_NODE = "w1"  # lab node 1: underlay 172.31.248.11/24, podCIDR 10.244.1.0/24
NETWORK = ipaddress.IPv4Network("10.128.0.0/9")
UNDERLAY = ipaddress.IPv4Network("172.20.0.0/16")
MAX_NODES = 2 ** (24 - NETWORK.prefixlen) - 1  # /24 subnets in NETWORK, index 0 unused
MAX_PODS_PER_NODE = 250  # .2 to .251 of the node's /24 (.0 VTEP, .1 cni0)
WORKLOAD_NAMESPACES = ("default", "shop", "search", "payments", "media", "batch", "ingest", "ml")
SYSTEM_NAMESPACES = ("kube-system", FLANNEL_NS, "kube-public", "kube-node-lease")
FAULTS = ("br-netfilter", "subnet-env", "forward-drop")
# the findings diagnose must report on a node with each fault, and only those
EXPECTED: dict[str, frozenset[str]] = {
    "br-netfilter": frozenset({"br-netfilter-missing", "flannel-crashloop", "ip-forward-disabled"}),
    "subnet-env": frozenset({"subnet-env-missing"}),
    "forward-drop": frozenset({"forward-drop"}),
}
# what each fault shows without node probes (an API-only bundle): ip_forward and the FORWARD
# policy only a node shows
API_EXPECTED: dict[str, frozenset[str]] = {
    "br-netfilter": frozenset({"br-netfilter-missing", "flannel-crashloop"}),
    "subnet-env": frozenset({"subnet-env-missing"}),
    "forward-drop": frozenset(),
}


def check(
    findings: list[dict[str, Any]],
    faults: dict[str, str],
    expected: dict[str, frozenset[str]] = EXPECTED,
) -> list[str]:
    """What differs from the injected faults: a broken node missing an expected finding, or a
    finding on a node (or none) that was not broken that way. A benchmark that finds nothing
    measures nothing."""
    by_node: dict[str, set[str]] = {}
    problems = []
    for f in findings:
        if not f["nodes"]:
            problems.append(f"unexpected cluster-wide finding {f['id']}")
        for node in f["nodes"]:
            by_node.setdefault(node, set()).add(f["id"])
    for node, ids in sorted(by_node.items()):
        extra = ids - expected.get(faults.get(node, ""), frozenset())
        if extra:
            problems.append(
                f"unexpected on {node} ({faults.get(node, 'healthy')}): {sorted(extra)}"
            )
    for node, fault in sorted(faults.items()):
        missing = expected[fault] - by_node.get(node, set())
        if missing:
            problems.append(f"{node} ({fault}): not found: {sorted(missing)}")
    return problems


# what a kubeadm node (no k3s) answers to the probes the fixture predates: (stdout, rc, stderr)
ABSENT = {
    "kubelet-journal": ("-- No entries --\n", 0, ""),
    "k3s-journal": ("-- No entries --\n", 0, ""),
    "kernel-log": ("-- No entries --\n", 0, ""),
    "k3s-cni-config": (
        "",
        1,
        "find: '/var/lib/rancher/k3s/agent/etc/cni/net.d': No such file or directory\n",
    ),
    "k3s-cni-bin": (
        "",
        2,
        "ls: cannot access '/var/lib/rancher/k3s/data/current/bin': No such file or directory\n",
    ),
    "k3s-flannel-conf": (
        "",
        1,
        "cat: /var/lib/rancher/k3s/agent/etc/flannel/net-conf.json: No such file or directory\n",
    ),
}
# kubectl cluster-info dump's per-namespace files: stem -> (list kind, apiVersion)
LISTS = {
    "events": ("EventList", "v1"),
    "replication-controllers": ("ReplicationControllerList", "v1"),
    "services": ("ServiceList", "v1"),
    "daemonsets": ("DaemonSetList", "apps/v1"),
    "deployments": ("DeploymentList", "apps/v1"),
    "replicasets": ("ReplicaSetList", "apps/v1"),
    "pods": ("PodList", "v1"),
}
_SPEC = LabSpec(name="scl", nodes=1, underlay="172.20.0.0/24")  # owner uids, API address .2
_RV = "4711"

Json = dict[str, Any]


class ScaleNode(NodeSpec):
    """A lab NodeSpec whose podCIDR comes from NETWORK, so indexes go past 255."""

    @property
    def prefix(self) -> str:
        return f"10.{NETWORK.network_address.packed[1] + (self.index >> 8)}.{self.index & 255}"

    @property
    def pod_cidr(self) -> str:
        return f"{self.prefix}.0/24"

    @property
    def vtep_ip(self) -> str:
        return f"{self.prefix}.0"

    @property
    def gateway(self) -> str:
        return f"{self.prefix}.1"

    def pod_ip(self, pod: int) -> str:
        return f"{self.prefix}.{pod + 1}"


@dataclass(frozen=True)
class Dump:
    path: Path
    nodes: int
    pods: int
    events: int
    faults: dict[str, str]  # node -> one of FAULTS
    files: int
    bytes: int


def scale_nodes(count: int) -> list[ScaleNode]:
    if not 1 <= count <= MAX_NODES:
        raise ValueError(f"between 1 and {MAX_NODES} nodes fit in {NETWORK} with a /24 each")
    first = int(UNDERLAY.network_address) + 10
    return [
        ScaleNode(_SPEC.name, i, str(ipaddress.IPv4Address(first + i)), _SPEC.dir)
        for i in range(1, count + 1)
    ]


def choose_faults(nodes: list[ScaleNode], share: float = 0.01) -> dict[str, str]:
    """About `share` of the nodes, evenly spaced, at least one of each fault."""
    broken = max(len(FAULTS), round(len(nodes) * share))
    broken = min(broken, len(nodes))
    step = len(nodes) / broken
    return {nodes[int(k * step + step / 2)].name: FAULTS[k % len(FAULTS)] for k in range(broken)}


# -- files -----------------------------------------------------------------------------------------


class _Out:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0
        self.bytes = 0
        self._dirs: set[Path] = set()

    def text(self, rel: str, text: str) -> None:
        path = self.root / rel
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        data = text.encode()
        path.write_bytes(data)
        self.files += 1
        self.bytes += len(data)

    def json(self, rel: str, obj: Any) -> None:
        # as kubectl writes them: indented by 4
        self.text(rel, json.dumps(obj, indent=4, ensure_ascii=False) + "\n")

    def list(self, rel: str, kind: str, api_version: str, items: list[Json]) -> None:
        envelope = {"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": _RV}}
        self.json(rel, {**envelope, "items": items})


def uid(*parts: object) -> str:
    h = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def api_item(obj: Json) -> Json:
    """An object as it appears in a list the API returns: no kind/apiVersion, uid and version."""
    obj = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
    meta = obj["metadata"]
    meta["uid"] = uid(meta.get("namespace", ""), meta["name"])
    meta["resourceVersion"] = _RV
    return obj


def log_block(ns: str, pod: str, container: str, body: str) -> str:
    header = f"container {container} of pod {ns}/{pod} ===="
    return f"==== START logs for {header}\n{body}==== END logs for {header}\n"


def unique_name(seen: set[str], prefix: str, *parts: object) -> str:
    """A DaemonSet pod name (5-letter suffix, as the controller makes); at thousands of nodes the
    suffixes collide, and the API would not have two pods of one name."""
    name, salt = f"{prefix}-{objects.suffix(*parts)}", 0
    while name in seen:
        salt += 1
        name = f"{prefix}-{objects.suffix(*parts, salt)}"
    seen.add(name)
    return name


# -- probe outputs ---------------------------------------------------------------------------------


def _template(text: str) -> str:
    """The fixture node's output as a str.format template of the node's addresses."""
    t = text.replace("{", "{{").replace("}", "}}")
    t = t.replace(CLUSTER_CIDR, "{network}").replace("172.31.248.0/24", "{underlay_net}")
    t = t.replace('"local":"172.31.248.11","prefixlen":24', '"local":"{ip}","prefixlen":{plen}')
    t = re.sub(r"\b10\.244\.1\.(\d+)\b", r"{prefix}.\1", t)
    hosts = {"11": "{ip}", "2": "{api}", "255": "{broadcast}"}
    t = re.sub(r"\b172\.31\.248\.(\d+)\b", lambda m: hosts[m[1]], t)
    t = t.replace("0a:fb:00:01:00:01", "{vtep_mac}")
    t = t.replace("92:bf:c4:8b:5a:c8", "{eth_mac}").replace("aa:bf:2e:8c:47:89", "{cni_mac}")
    left = re.findall(r"10\.244\.\d+\.\d+|172\.31\.248\.\d+", t)
    assert not left, f"fixture addresses not rewritten: {left[:3]}"
    return t


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class ProbeOutputs:
    """Every node's probe outputs, derived from the fixture node's; peer tables for all nodes."""

    def __init__(self, nodes: list[ScaleNode]) -> None:
        fixture = json.loads(FIXTURE.read_text())[FIXTURE_NODE]
        self.fixture = fixture
        dynamic = {"ip-addr", "ip-route", "ip-neigh", "fdb", "ipam"}
        self.templates = {
            pid: (_template(out["stdout"]), out["exit_code"], out["stderr"])
            for pid, out in fixture.items()
            if pid not in dynamic
        }
        # probes added after the fixture was recorded, as a kubeadm node answers them
        for pid, answer in ABSENT.items():
            self.templates.setdefault(pid, answer)
        links = json.loads(fixture["ip-addr"]["stdout"])
        base = [link for link in links if not str(link["ifname"]).startswith("veth")]
        veth = next(link for link in links if str(link["ifname"]).startswith("veth"))
        self.links = _template(_compact(base))[1:-1]  # without [ ]
        v = _compact(veth)
        for old, new in (
            ('"address":"aa:bf:2e:8c:47:89"', '"address":"@veth_mac@"'),
            ('"ifindex":5,', '"ifindex":@ifindex@,'),
            ('"ifname":"veth00101"', '"ifname":"@veth@"'),
            ('"link_netnsid":1,', '"link_netnsid":@netnsid@,'),
            ('"id":"0x8001"', '"id":"@port_id@"'),
            ('"no":"0x1"', '"no":"@port_no@"'),
            ('"designated_port":32769', '"designated_port":@dport@'),
        ):
            assert old in v, old
            v = v.replace(old, new)
        self.veth = re.sub(r"@(\w+)@", r"{\1}", _template(v))
        routes = json.loads(fixture["ip-route"]["stdout"])
        by_dev = {(r["dev"], r.get("gateway") is None): r for r in routes}
        self.route_svc = _template(_compact(by_dev["eth0", False]))
        self.route_own = _template(_compact(by_dev["cni0", True]))
        self.route_underlay = _template(_compact(by_dev["eth0", True]))
        self.position = {n.name: i for i, n in enumerate(nodes)}
        self.routes, self.route_at = self._joined(
            _compact(
                {"dst": n.pod_cidr, "gateway": n.vtep_ip, "dev": "flannel.1", "flags": ["onlink"]}
            )
            for n in nodes
        )
        self.neigh, self.neigh_at = self._joined(
            _compact({"dst": n.vtep_ip, "lladdr": n.vtep_mac, "state": ["PERMANENT"]})
            for n in nodes
        )
        self.fdb, self.fdb_at = self._joined(
            _compact(
                {"mac": n.vtep_mac, "dst": n.underlay_ip, "flags": ["self"], "state": "permanent"}
            )
            for n in nodes
        )

    @staticmethod
    def _joined(entries: Iterator[str]) -> tuple[str, list[int]]:
        """All entries, each followed by a comma, and where each starts (plus the end)."""
        parts = [e + "," for e in entries]
        at = [0]
        for p in parts:
            at.append(at[-1] + len(p))
        return "".join(parts), at

    @staticmethod
    def _without(table: str, at: list[int], i: int) -> str:
        body = table[: at[i]] + table[at[i + 1] :]
        return f"[{body[:-1]}]\n" if body else "[]\n"

    def node(self, n: ScaleNode, pods: int, fault: str | None) -> dict[str, tuple[str, int, str]]:
        """probe id -> (stdout, exit code, stderr) for node `n` running `pods` workload pods."""
        i = self.position[n.name]
        values = {
            "network": str(NETWORK),
            "underlay_net": str(UNDERLAY),
            "plen": UNDERLAY.prefixlen,
            "prefix": n.prefix,
            "ip": n.underlay_ip,
            "api": _SPEC.svc_ip,
            "broadcast": str(UNDERLAY.broadcast_address),
            "vtep_mac": n.vtep_mac,
            "eth_mac": f"92:bf:{n.index >> 16 & 255:02x}:{n.index >> 8 & 255:02x}:"
            f"{n.index & 255:02x}:c8",
            "cni_mac": f"aa:bf:{n.index >> 16 & 255:02x}:{n.index >> 8 & 255:02x}:"
            f"{n.index & 255:02x}:89",
        }
        out = {pid: (t.format(**values), rc, err) for pid, (t, rc, err) in self.templates.items()}
        veths = [
            self.veth.format(
                **values,
                ifindex=5 + k,
                veth=f"veth{n.index:04x}{k:04x}",
                veth_mac=f"6a:{n.index >> 8 & 255:02x}:{n.index & 255:02x}:00:"
                f"{k >> 8 & 255:02x}:{k & 255:02x}",
                netnsid=k + 1,
                port_id=hex(0x8001 + k),
                port_no=hex(1 + k),
                dport=32769 + k,
            )
            for k in range(pods)
        ]
        out["ip-addr"] = ("[" + ",".join([self.links.format(**values), *veths]) + "]\n", 0, "")
        own = self.route_own.format(**values)
        routes = (
            f"[{self.route_svc.format(**values)},{self.routes[: self.route_at[i]]}{own},"
            f"{self.routes[self.route_at[i + 1] :]}{self.route_underlay.format(**values)}]\n"
        )
        out["ip-route"] = (routes, 0, "")
        out["ip-neigh"] = (self._without(self.neigh, self.neigh_at, i), 0, "")
        out["fdb"] = (self._without(self.fdb, self.fdb_at, i), 0, "")
        cbr0 = "/var/lib/cni/networks/cbr0"
        ipam = [f"==> {cbr0}/lock\n"]
        ipam += [f"==> {cbr0}/{n.pod_ip(k)}\n{sandbox_id(n, k)}\neth0" for k in range(1, pods + 1)]
        if pods:
            ipam.append(f"==> {cbr0}/last_reserved_ip.0\n{n.pod_ip(pods)}")
        out["ipam"] = ("".join(ipam), 0, "")
        if fault == "br-netfilter":
            for pid in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
                missing = f"/proc/sys/net/bridge/{pid}"
                out[pid] = ("", 1, f"cat: {missing}: No such file or directory\n")
            out["ip-forward"] = ("0\n", 0, "")
        elif fault == "subnet-env":
            out["subnet-env"] = ("", 1, "cat: /run/flannel/subnet.env: No such file or directory\n")
        elif fault == "forward-drop":  # what `iptables -P FORWARD DROP; iptables -F FLANNEL-FWD`
            text, rc, err = out["iptables-filter"]
            dropped = "".join(
                line
                for line in text.replace(":FORWARD ACCEPT", ":FORWARD DROP").splitlines(True)
                if not line.startswith("-A FLANNEL-FWD")
            )
            assert ":FORWARD DROP" in dropped and dropped != text
            out["iptables-filter"] = (dropped, rc, err)
        return out


# -- the bundle ------------------------------------------------------------------------------------


def write_dump(
    root: Path,
    nodes: int,
    pods: int,
    events: int | None = None,
    share: float = 0.01,
    probes: bool = True,
) -> Dump:
    """Write a bundle of `nodes` nodes and `pods` pods (2 DaemonSet pods per node, the rest
    workloads) into `root`, about `share` of the nodes broken; `events` background events
    (default: one per ten pods). `probes=False`: the API objects and logs only (no probes/
    directory), as `diagnose --dump` without node access writes it."""
    spec, out = _SPEC, _Out(root)
    cluster = scale_nodes(nodes)
    workloads = pods - 2 * nodes
    if workloads < 0:
        raise ValueError(f"{pods} pods cannot hold a flannel and a kube-proxy pod on {nodes} nodes")
    if workloads > nodes * MAX_PODS_PER_NODE:
        raise ValueError(f"at most {MAX_PODS_PER_NODE} workload pods per node fit in a /24")
    events = workloads // 10 if events is None else events
    faults = choose_faults(cluster, share)
    per_node = [workloads // nodes + (1 if i < workloads % nodes else 0) for i in range(nodes)]

    out.list("nodes.json", "NodeList", "v1", [api_item(objects.node(n)) for n in cluster])

    # kube-flannel: the DaemonSet, its pods (crash-looping on br-netfilter nodes), logs, events
    seen: set[str] = set()
    flannel_pods, flannel_events = [], []
    for n in cluster:
        name = unique_name(seen, FLANNEL_DS, spec.name, n.name)
        crashing = faults.get(n.name) == "br-netfilter"
        pod = api_item(
            objects.flannel_pod(spec, n, name, ready=not crashing, restarts=5 * crashing)
        )
        flannel_pods.append(pod)
        healthy = "".join(
            line
            for line in objects.flanneld_log(spec, n, name).splitlines(True)
            if "Attrs:lease.LeaseAttrs" not in line  # lab peers; a real log has one per peer
        )
        body = healthy
        if crashing:
            start = healthy.split("Starting kube subnet manager\n")[0]
            body = start + "Starting kube subnet manager\n"
            body += klog(
                "E",
                "main.go:278",
                "Failed to check br_netfilter: stat /proc/sys/net/bridge/bridge-nf-call-iptables: "
                "no such file or directory",
            )
            body += "\n"
            out.text(f"{FLANNEL_NS}/{name}/logs-kube-flannel-previous.txt", body)
            flannel_events.append(
                api_item(
                    objects.event(
                        FLANNEL_NS,
                        "Pod",
                        name,
                        "BackOff",
                        f"Back-off restarting failed container kube-flannel in pod "
                        f"{name}_{FLANNEL_NS}({pod['metadata']['uid']})",
                        host=n.name,
                        count=5,
                    )
                )
            )
        out.text(
            f"{FLANNEL_NS}/{name}/logs.txt",
            log_block(FLANNEL_NS, name, "install-cni-plugin", "")
            + log_block(FLANNEL_NS, name, "install-cni", "")
            + log_block(FLANNEL_NS, name, "kube-flannel", body),
        )
    crashes = sum(1 for f in faults.values() if f == "br-netfilter")
    ds = objects.flannel_daemonset(nodes)
    ds["status"] = objects.daemonset_status(nodes, nodes - crashes)
    cm = objects.flannel_configmap()
    cm["data"]["net-conf.json"] = json.dumps({**NET_CONF, "Network": str(NETWORK)}, indent=2) + "\n"
    namespace_files(
        out, FLANNEL_NS, pods=flannel_pods, daemonsets=[api_item(ds)], events=flannel_events
    )
    out.list(f"{FLANNEL_NS}/configmaps.json", "ConfigMapList", "v1", [api_item(cm)])
    del flannel_pods

    # kube-system: kube-proxy
    proxy_cm, proxy_ds = objects.kube_proxy_objects(spec)[:2]
    proxy_cm["data"]["config.conf"] = proxy_cm["data"]["config.conf"].replace(
        CLUSTER_CIDR, str(NETWORK)
    )
    proxy_ds["status"] = objects.daemonset_status(nodes, nodes)
    proxy_pods = []
    seen = set()
    for n in cluster:
        name = unique_name(seen, "kube-proxy", spec.name, n.name, "kp")
        proxy_pods.append(api_item(objects.kube_proxy_pod(spec, n, name)))
        line = klog(
            "I",
            "service.go:421",
            'Adding new service port "default/kubernetes:https" at 10.96.0.1:443/TCP',
        )
        out.text(
            f"kube-system/{name}/logs.txt",
            log_block("kube-system", name, "kube-proxy", line + "\n"),
        )
    namespace_files(out, "kube-system", pods=proxy_pods, daemonsets=[api_item(proxy_ds)])
    out.list("kube-system/configmaps.json", "ConfigMapList", "v1", [api_item(proxy_cm)])
    del proxy_pods
    for ns in SYSTEM_NAMESPACES[2:]:
        namespace_files(out, ns)

    # workloads, one namespace at a time
    written = write_workloads(out, cluster, per_node, faults, events)

    rbac = [
        {**api_item(o), "kind": o["kind"], "apiVersion": o["apiVersion"]}
        for o in objects.rbac_objects()
        if o["kind"] != "ServiceAccount"
    ]
    out.list("rbac.json", "List", "v1", rbac)

    if probes:
        write_probes(out, cluster, per_node, faults)
    events_total = written + len(flannel_events)
    return Dump(root, nodes, 2 * nodes + workloads, events_total, faults, out.files, out.bytes)


def write_probes(
    out: _Out, cluster: list[ScaleNode], per_node: list[int], faults: dict[str, str]
) -> None:
    """Every node's probe outputs under probes/ (see ProbeOutputs)."""
    outputs = ProbeOutputs(cluster)
    for i, n in enumerate(cluster):
        fault = faults.get(n.name)
        running = per_node[i] - (fault == "subnet-env" and per_node[i] > 0)  # one is Pending
        for pid, (stdout, rc, stderr) in outputs.node(n, running, fault).items():
            base = f"probes/{n.name}/{pid}"
            out.text(f"{base}.txt", stdout)
            if stderr:
                out.text(f"{base}.err", stderr)
            if rc:
                out.text(f"{base}.exit", f"{rc}\n")


def namespace_files(
    out: _Out,
    ns: str,
    *,
    pods: list[Json] | None = None,
    daemonsets: list[Json] | None = None,
    events: list[Json] | None = None,
    services: list[Json] | None = None,
) -> None:
    """The seven lists kubectl writes for every namespace it dumps (empty where there is none)."""
    given = {"pods": pods, "daemonsets": daemonsets, "events": events, "services": services}
    for stem, (kind, version) in LISTS.items():
        out.list(f"{ns}/{stem}.json", kind, version, given.get(stem) or [])


def write_workloads(
    out: _Out, cluster: list[ScaleNode], per_node: list[int], faults: dict[str, str], events: int
) -> int:
    """Workload pods with logs, and about `events` events about them; returns the events
    written (FailedCreatePodSandBox included).

    A node with the subnet-env fault has its last pod stuck in ContainerCreating (no IP), with the
    kubelet's FailedCreatePodSandBox event, as bot.lab.faults makes it."""
    total = sum(per_node)
    rate = events / total if total else 0.0
    reasons = (
        ("Scheduled", "default-scheduler", "Successfully assigned {ns}/{pod} to {node}"),
        (
            "Pulled",
            "kubelet",
            'Container image "registry.k8s.io/pause:3.9" already present on machine',
        ),
        ("Created", "kubelet", "Created container web"),
        ("Started", "kubelet", "Started container web"),
    )
    written = failed = 0
    service = api_item(objects.kubernetes_service(_SPEC)[0])
    spread = len(WORKLOAD_NAMESPACES)
    for s, ns in enumerate(WORKLOAD_NAMESPACES):
        pods, evs, ordinal, due = [], [], 0, 0.0
        for i, n in enumerate(cluster):
            for k in range(1, per_node[i] + 1):
                ordinal += 1
                if ordinal % spread != s:
                    continue
                pod = objects.workload_pod(n, k)
                pod["metadata"]["namespace"] = ns
                name = pod["metadata"]["name"]
                if faults.get(n.name) == "subnet-env" and k == per_node[i]:
                    name = pod["metadata"]["name"] = f"web-{n.name}-new"
                    pod["status"] = objects.pod_status(n, False, 0, False, phase="Pending")
                    waiting = objects.container_status("web", "registry.k8s.io/pause:3.9", False, 0)
                    waiting["state"] = {"waiting": {"reason": "ContainerCreating"}}
                    pod["status"]["containerStatuses"] = [waiting]
                    failed += 1
                    evs.append(
                        api_item(
                            objects.event(
                                ns,
                                "Pod",
                                name,
                                "FailedCreatePodSandBox",
                                "Failed to create pod sandbox: rpc error: code = Unknown desc = "
                                f'failed to setup network for sandbox "{sandbox_id(n, 99)}": '
                                'plugin type="flannel" failed (add): loadFlannelSubnetEnv '
                                "failed: open /run/flannel/subnet.env: no such file or directory",
                                host=n.name,
                            )
                        )
                    )
                pods.append(api_item(pod))
                out.text(f"{ns}/{name}/logs.txt", log_block(ns, name, "web", ""))
                due += rate
                while due >= 1:
                    due -= 1
                    reason, component, message = reasons[written % len(reasons)]
                    text = message.format(ns=ns, pod=name, node=n.name)
                    host = n.name if component == "kubelet" else ""
                    evs.append(
                        api_item(
                            objects.event(
                                ns, "Pod", name, reason, text, "Normal", component, host=host
                            )
                        )
                    )
                    written += 1
        namespace_files(
            out, ns, pods=pods, events=evs, services=[service] if ns == "default" else None
        )
    return written + failed
