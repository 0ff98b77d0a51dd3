"""Playing k3s on a lab node: the files k3s keeps for its embedded flannel, and its journal.

On k3s flannel runs inside the k3s process: no DaemonSet, no pods, no kube-flannel-cfg. k3s writes
the CNI config to /var/lib/rancher/k3s/agent/etc/cni/net.d, flannel's net-conf.json to
/var/lib/rancher/k3s/agent/etc/flannel, ships the CNI plugins as links to one `cni` binary in
/var/lib/rancher/k3s/data/current/bin, and logs its flannel (and its kubelet) to the journal of the
`k3s` unit (`k3s-agent` on agents). A lab node has no systemd and no journal, so the lab keeps
each unit's journal as a file and puts a `journalctl` first in the node's PATH that prints it.

The lines are the ones k3s v1.30 prints (k3s-io/k3s pkg/agent/flannel/setup.go and flannel.go,
pkg/agent/config/config.go, pkg/agent/syssetup), in logrus's text form, with the embedded
flannel's and kubelet's own lines in klog's form, each behind the journal's short-iso prefix.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import yaml

from flannel_bot.lab import flannel
from flannel_bot.lab.topology import (
    CLUSTER_CIDR,
    K3S_CONFIG,
    K3S_FLANNEL_CONF,
    K3S_VERSION,
    SERVICE_CIDR,
    LabSpec,
    NodeSpec,
)

K3S_COMMIT = "98262b5d"
# the release's data directory (data/current links to it); k3s names it by the content's hash
DATA_HASH = "b7f0e0e5b1d7e6c2a1c3f5b8a9d4e6f70a1b2c3d4e5f60718293a4b5c6d7e8f9"
# k3s's generated CNI config, byte for byte (pkg/agent/flannel/setup_linux.go: cniConf)
CNI_CONF = """{
  "name":"cbr0",
  "cniVersion":"1.0.0",
  "plugins":[
    {
      "type":"flannel",
      "delegate":{
        "hairpinMode":true,
        "forceAddress":true,
        "isDefaultGateway":true
      }
    },
    {
      "type":"portmap",
      "capabilities":{
        "portMappings":true
      }
    },
    {
      "type":"bandwidth",
      "capabilities":{
        "bandwidth":true
      }
    }
  ]
}
"""
# the CNI plugins k3s ships, each a link to its multi-call `cni` binary
CNI_LINKS = ("bandwidth", "bridge", "firewall", "flannel", "host-local", "loopback", "portmap")
OTHER_BINARIES = ("containerd", "containerd-shim-runc-v2", "crictl", "ctr", "kubectl", "runc")


def net_conf(network: str = CLUSTER_CIDR) -> str:
    """flannel's net-conf.json as k3s fills its template for an IPv4 cluster with vxlan
    (setup.go: flannelConf with vxlanBackend), tabs and all."""
    return (
        "{\n"
        f'\t"Network": "{network}",\n'
        '\t"EnableIPv6": false,\n'
        '\t"EnableIPv4": true,\n'
        '\t"IPv6Network": "::/0",\n'
        '\t"Backend": {\n'
        '\t"Type": "vxlan"\n'
        "}\n"
        "}\n"
    )


def unit(node: NodeSpec) -> str:
    """The systemd unit k3s runs as: the first node is the server, the others are agents."""
    return "k3s" if node.index == 1 else "k3s-agent"


def default_args(node: NodeSpec) -> list[str]:
    """The k3s command line of a lab node: the first node is the server (with the lab's pod and
    service networks, not k3s's 10.42/10.43 defaults); the others are agents (their server URL
    and token come from the unit's environment). Lab nodes have no default route, so flannel is
    told its interface."""
    if node.index == 1:
        verb = ["server", "--cluster-cidr", CLUSTER_CIDR, "--service-cidr", SERVICE_CIDR]
    else:
        verb = ["agent"]
    return [*verb, "--flannel-iface", "eth0"]


def write_config(node: NodeSpec, args: list[str]) -> None:
    """/etc/rancher/k3s/config.yaml with the flags of `args` (the verb is the unit's)."""
    flags = dict(zip(args[1::2], args[2::2], strict=False))
    config = {k.removeprefix("--"): v for k, v in flags.items()}
    path = node.private(K3S_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def read_args(node: NodeSpec) -> list[str]:
    """The command line k3s starts with: the unit's verb and config.yaml's flags."""
    path = node.private(K3S_CONFIG)
    config = yaml.safe_load(path.read_text()) if path.is_file() else {}
    verb = "server" if unit(node) == "k3s" else "agent"
    pairs = config.items() if isinstance(config, dict) else []
    return [verb, *(x for k, v in pairs for x in (f"--{k}", str(v)))]


def write_node_files(node: NodeSpec, conflist: str = CNI_CONF) -> None:
    """What the k3s installer and a first start leave on the node (flannel's part of it is
    rewritten on every start)."""
    write_config(node, default_args(node))
    write_flannel_files(node, conflist)
    flannel.write_subnet_env(node)
    data = node.private("/var/lib/rancher/k3s/data")
    bin_dir = data / DATA_HASH / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("cni", *OTHER_BINARIES):
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n# lab stand-in for k3s's {name}\nexit 0\n")
        path.chmod(0o755)
    current = data / "current"
    current.unlink(missing_ok=True)
    current.symlink_to(DATA_HASH)
    for plugin in CNI_LINKS:
        restore_plugin(node, plugin)
    sbin = node.private("/usr/local/sbin")
    for name, text in (("modprobe", MODPROBE), ("journalctl", journalctl_script(node))):
        (sbin / name).write_text(text)
        (sbin / name).chmod(0o755)
    node.journal.mkdir(parents=True, exist_ok=True)


def write_flannel_files(node: NodeSpec, conflist: str = CNI_CONF) -> None:
    """The CNI config and net-conf.json k3s writes each time it starts."""
    node.cni_conf.parent.mkdir(parents=True, exist_ok=True)
    node.cni_conf.write_text(conflist)
    conf = node.private(K3S_FLANNEL_CONF)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(net_conf())


def restore_plugin(node: NodeSpec, plugin: str) -> None:
    link = node.cni_bin / plugin
    link.unlink(missing_ok=True)
    link.symlink_to("cni")


def plugins_missing(node: NodeSpec, conflist: str) -> list[str]:
    """The plugins a pod ADD with `conflist` would call that the node's bin directory lacks
    (the flannel plugin delegates to bridge, which calls host-local)."""
    try:
        conf = json.loads(conflist)
    except ValueError:
        return []
    needed = [str(p.get("type")) for p in conf.get("plugins", []) if isinstance(p, dict)]
    if "flannel" in needed:
        needed += ["bridge", "host-local"]
    return [p for p in needed if not (node.cni_bin / p).exists()]


def force_address(conflist: str) -> bool:
    """Whether the bridge plugin may replace cni0's address (the flannel delegate's
    forceAddress, which k3s's own config sets)."""
    try:
        plugins = json.loads(conflist).get("plugins", [])
    except (ValueError, AttributeError):
        return False
    return any(
        isinstance(p, dict) and (p.get("delegate") or {}).get("forceAddress") is True
        for p in plugins
    )


# -- the journal ---------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def pid() -> int:
    """A fresh process id for each k3s start."""
    return 2000 + time.time_ns() // 1000 % 30000


def logrus(level: str, message: str, at: datetime | None = None) -> str:
    """A line as k3s's logrus text formatter prints it."""
    t = (at or _now()).strftime("%Y-%m-%dT%H:%M:%SZ")
    quoted = message.replace("\\", "\\\\").replace('"', '\\"')
    return f'time="{t}" level={level} msg="{quoted}"'


def klog(level: str, where: str, message: str, process: int, at: datetime | None = None) -> str:
    """A line as klog prints it inside the k3s process (flannel, kubelet)."""
    t = (at or _now()).strftime("%m%d %H:%M:%S.%f")
    return f"{level}{t} {process:>7} {where}] {message}"


def append(node: NodeSpec, journal: str, lines: Iterable[str], process: int = 0) -> str:
    """Write lines to one of the node's journals (a unit's, or `kernel`) with the journal's
    short-iso prefix; returns what was written."""
    stamp = _now().strftime("%Y-%m-%dT%H:%M:%S+00:00")
    who = "kernel" if journal == "kernel" else f"k3s[{process}]"
    text = "".join(f"{stamp} {node.name} {who}: {line}\n" for line in lines)
    node.journal.mkdir(parents=True, exist_ok=True)
    with (node.journal / f"{journal}.log").open("a") as out:
        out.write(text)
    return text


def starting(spec: LabSpec, node: NodeSpec, process: int) -> str:
    """What k3s prints as it starts, up to its flannel."""
    server = unit(node) == "k3s"
    lines = [
        logrus(
            "info",
            f"Starting k3s {'' if server else 'agent '}{K3S_VERSION} ({K3S_COMMIT})",
        )
    ]
    if not server:
        lines.append(
            logrus(
                "info",
                "Adding server to load balancer k3s-agent-load-balancer: "
                f"{spec.node(1).underlay_ip}:6443",
            )
        )
    lines += [
        logrus("info", f"Module {m} was already loaded")
        for m in ("overlay", "nf_conntrack", "br_netfilter", "iptable_nat", "iptable_filter")
    ]
    return append(node, unit(node), lines, process)


def flannel_started(spec: LabSpec, node: NodeSpec, iface: str, address: str, process: int) -> str:
    """The embedded flannel's start as k3s v1.30 logs it (setup.go Run, flannel.go flannel)."""
    peers = [p for p in spec.all_nodes() if p.index != node.index]

    def k(where: str, message: str) -> str:
        return klog("I", where, message, process)

    lines = [
        logrus("info", "Starting flannel with backend vxlan"),
        logrus("info", f"Flannel found PodCIDR assigned for node {node.name}"),
        logrus(
            "info", f"The interface {iface} with ipv4 address {address} will be used by flannel"
        ),
        k("kube.go:139", "Waiting 10m0s for node controller to sync"),
        k("kube.go:469", "Starting kube subnet manager"),
        k("kube.go:146", "Node controller sync successful"),
        k(
            "vxlan.go:141",
            "VXLAN config: VNI=1 Port=0 GBP=false Learning=false DirectRouting=false",
        ),
        k(
            "kube.go:490",
            f"Creating the node lease for IPv4. This is the n.Spec.PodCIDRs: [{node.pod_cidr}]",
        ),
        k("iptables.go:211", "Changing default FORWARD chain policy to ACCEPT"),
        logrus("info", "Wrote flannel subnet file to /run/flannel/subnet.env"),
        logrus("info", "Running flannel backend."),
        k("vxlan_network.go:65", "watching for new subnet leases"),
        *(
            k(
                "vxlan_network.go:100",
                f"Received Subnet Event with VxLan: BackendType: vxlan, PublicIP: "
                f"{p.underlay_ip}, PublicIPv6: (nil), BackendData: "
                f'{{"VNI":1,"VtepMAC":"{p.vtep_mac}"}}, BackendV6Data: (nil)',
            )
            for p in peers
        ),
        k("iptables.go:357", "bootstrap done"),
    ]
    return append(node, unit(node), lines, process)


def iface_missing(node: NodeSpec, iface: str, process: int, times: int = 3) -> str:
    """k3s's agent configuration loop when --flannel-iface names no interface of the node
    (pkg/agent/config/config.go: get wraps net.InterfaceByName's error, Get retries every 5 s
    and logs it); the kubelet and flannel never start."""
    now = _now()
    line = (
        "Waiting to retrieve agent configuration; server is not ready: unable to find "
        f"interface {iface}: route ip+net: no such network interface"
    )
    lines = [
        logrus("info", line, now - timedelta(seconds=5 * (times - 1 - i))) for i in range(times)
    ]
    return append(node, unit(node), lines, process)


def kubelet_sandbox_failed(node: NodeSpec, pod: str, error: str, process: int) -> str:
    """The embedded kubelet's lines when a pod's sandbox fails (k8s v1.30 cri-client and
    kuberuntime), `error` as the runtime returned it."""
    quoted = error.replace("\\", "\\\\").replace('"', '\\"')
    lines = [
        klog(
            "E",
            "log.go:32",
            f'"RunPodSandbox from runtime service failed" err="{quoted}"',
            process,
        ),
        klog(
            "E",
            "kuberuntime_sandbox.go:72",
            f'"Failed to create sandbox for pod" err="{quoted}" pod="default/{pod}"',
            process,
        ),
    ]
    return append(node, unit(node), lines, process)


def kernel_ports(node: NodeSpec, pods: int) -> str:
    """The bridge's lines as each pod's veth joins cni0."""
    lines = []
    for p in range(1, pods + 1):
        port = f"cni0: port {p}({node.pod_veth(p)})"
        lines += [f"{port} entered blocking state", f"{port} entered forwarding state"]
    return append(node, "kernel", lines)


_STAMPS = (
    (re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\+00:00"), "%Y-%m-%dT%H:%M:%S", "{}+00:00"),
    (re.compile(r'time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)Z"'), "%Y-%m-%dT%H:%M:%S", 'time="{}Z"'),
)
_KLOG = re.compile(r": ([IWEF])(\d{4} \d\d:\d\d:\d\d)\.(\d{6}) ")


def age(node: NodeSpec, seconds: float) -> None:
    """Move every line of the node's journals `seconds` into the past, as if that much time had
    gone by since they were written (what `--since` sees)."""
    delta = timedelta(seconds=seconds)
    for path in node.journal.glob("*.log"):
        path.write_text("".join(_aged(line, delta) for line in path.read_text().splitlines(True)))


def _aged(line: str, delta: timedelta) -> str:
    for rx, fmt, out in _STAMPS:

        def shift(m: re.Match[str], fmt: str = fmt, out: str = out) -> str:
            t = datetime.strptime(m.group(1), fmt) - delta
            return out.format(t.strftime(fmt))

        line = rx.sub(shift, line, count=1)
    year = line[:4]

    def shift_klog(m: re.Match[str]) -> str:
        t = datetime.strptime(f"{year}{m.group(2)}", "%Y%m%d %H:%M:%S") - delta
        return f": {m.group(1)}{t.strftime('%m%d %H:%M:%S')}.{m.group(3)} "

    return _KLOG.sub(shift_klog, line, count=1)


MODPROBE = """#!/bin/sh
# lab stand-in for modprobe (first in root's PATH on a lab node): modules are reported loaded
# when the kernel has them, and never loaded for real.
status=0
for arg in "$@"; do
  case "$arg" in
    -*) ;;
    *) if [ ! -e "/sys/module/$arg" ]; then
         echo "modprobe: FATAL: Module $arg not found" >&2; status=1
       fi ;;
  esac
done
exit $status
"""


def journalctl_script(node: NodeSpec) -> str:
    """`journalctl` for a lab node: the unit journals asked for with -u (nothing for a unit the
    node has no journal of), the kernel's with -k, merged in time order; --since (relative:
    -1h, -30min, -2d, -90s), --lines/-n and --output/-o taken, every other option ignored."""
    return JOURNALCTL.replace("@JOURNAL@", str(node.journal))


JOURNALCTL = r"""#!/bin/sh
# lab stand-in for journalctl (first in root's PATH on a lab k3s node): there is no systemd or
# journal on a lab node, so this prints the lab's journal files of the units asked for.
dir=@JOURNAL@
files=""
since=""
lines=""
while [ $# -gt 0 ]; do
  case "$1" in
    -u|--unit) shift; files="$files $dir/$1.log" ;;
    --unit=*) files="$files $dir/${1#--unit=}.log" ;;
    -k|--dmesg) files="$files $dir/kernel.log" ;;
    -S|--since) shift; since="$1" ;;
    --since=*) since="${1#--since=}" ;;
    -n|--lines) shift; lines="$1" ;;
    --lines=*) lines="${1#--lines=}" ;;
    -o|--output|-U|--until|-p|--priority|-t|--identifier) shift ;;
    *) ;;
  esac
  shift
done
cutoff=""
case "$since" in
  -*[0-9]h) ago="${since#-}"; cutoff=$(date -u -d "${ago%h} hours ago" +%Y-%m-%dT%H:%M:%S) ;;
  -*[0-9]min) ago="${since#-}"; cutoff=$(date -u -d "${ago%min} minutes ago" +%Y-%m-%dT%H:%M:%S) ;;
  -*[0-9]d) ago="${since#-}"; cutoff=$(date -u -d "${ago%d} days ago" +%Y-%m-%dT%H:%M:%S) ;;
  -*[0-9]s) ago="${since#-}"; cutoff=$(date -u -d "${ago%s} seconds ago" +%Y-%m-%dT%H:%M:%S) ;;
esac
out=$(
  for f in $files; do
    if [ -f "$f" ]; then cat "$f"; fi
  done | sort -s -k1,1 | awk -v c="$cutoff" 'c == "" || substr($0, 1, 19) >= c'
)
if [ -n "$lines" ] && [ -n "$out" ]; then
  out=$(printf '%s\n' "$out" | tail -n "$lines")
fi
if [ -z "$out" ]; then
  echo "-- No entries --"
else
  printf '%s\n' "$out"
fi
"""


def journal_text(node: NodeSpec, journal: str) -> str:
    path = node.journal / f"{journal}.log"
    return path.read_text() if path.is_file() else ""


__all__ = [
    "CNI_CONF",
    "CNI_LINKS",
    "age",
    "append",
    "flannel_started",
    "force_address",
    "iface_missing",
    "journal_text",
    "kernel_ports",
    "kubelet_sandbox_failed",
    "net_conf",
    "plugins_missing",
    "restore_plugin",
    "starting",
    "unit",
    "write_flannel_files",
    "write_node_files",
]
