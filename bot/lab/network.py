"""Building and removing the lab's Linux networking: namespaces, the underlay bridge, sshd per node.

Containment is built in, not bolted on: the root namespace keeps `ip_forward=0`, its lab bridge has
`rp_filter=1`, lab ranges get blackhole routes in the root namespace so nothing addressed to them
can follow the default route out, and no node, pod or service namespace has a default route at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from flannel_bot.lab.topology import (
    API_SERVICE_IP,
    CLUSTER_CIDR,
    K3S_ONLY_MOUNT_POINTS,
    SERVICE_CIDR,
    LabSpec,
    NodeSpec,
    private_paths,
)

SSHD = "/usr/sbin/sshd"
API_ENDPOINT_PORT = 6443


class LabError(Exception):
    """The lab cannot be built or used here; the message says what is missing. `stderr`: what
    the command that failed printed, where one did."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


def run(argv: Sequence[str], input: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(
            f"`{' '.join(argv)}` failed ({proc.returncode}): {proc.stderr.strip()}", proc.stderr
        )
    return proc.stdout


def ip_batch(lines: Iterable[str], netns: str | None = None) -> None:
    script = "\n".join(lines) + "\n"
    prefix = ["ip", "-n", netns] if netns else ["ip"]
    run([*prefix, "-batch", "-"], input=script)


def in_netns(netns: str, argv: Sequence[str], check: bool = True) -> str:
    return run(["ip", "netns", "exec", netns, *argv], check=check)


def make_key(path: Path, comment: str) -> None:
    """An ed25519 key pair without a passphrase (host keys and the bot's client key)."""
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def write_sysctl(netns: str, key: str, value: str) -> None:
    in_netns(netns, ["sysctl", "-q", "-w", f"{key}={value}"])


def check_host() -> None:
    """Refuse early, with the reason, where the lab cannot work or could leak."""
    if os.uname().sysname != "Linux":
        raise LabError("the lab needs Linux network namespaces; this is not Linux")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, sshd): run it with sudo")
    for tool in ("ip", "bridge", "iptables", "nsenter", "unshare", SSHD, "ssh-keygen", "ping"):
        if shutil.which(tool) is None:
            raise LabError(
                f"`{tool}` is missing: apt-get install iproute2 iptables util-linux "
                "openssh-server openssh-client iputils-ping"
            )
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "0":
        raise LabError(
            "the root namespace forwards packets (net.ipv4.ip_forward=1), so lab "
            "traffic could leave this machine; set it to 0 first"
        )


# -- underlay and services ---------------------------------------------------------------------


def blackhole_metric(spec: LabSpec) -> int:
    """Each lab owns its own blackhole routes (same prefix, distinct metric), so labs coexist."""
    return 4000 + zlib.crc32(spec.name.encode()) % 1000


def build_underlay(spec: LabSpec) -> None:
    ip_batch(
        [
            f"link add {spec.bridge} type bridge",
            f"addr add {spec.host_ip}/24 dev {spec.bridge}",
            f"link set {spec.bridge} up",
            # belt and braces: these ranges exist only inside the lab, never via the default route
            f"route add blackhole {CLUSTER_CIDR} proto static metric {blackhole_metric(spec)}",
            f"route add blackhole {SERVICE_CIDR} proto static metric {blackhole_metric(spec)}",
        ]
    )
    run(["sysctl", "-q", "-w", f"net.ipv4.conf.{spec.bridge}.rp_filter=1"])
    run(["sysctl", "-q", "-w", f"net.ipv6.conf.{spec.bridge}.disable_ipv6=1"])


def build_service_namespace(spec: LabSpec) -> None:
    """`fb-<lab>-svc` owns the service network: 10.96.0.1 answers only where kube-proxy DNATs."""
    ns = spec.svc_netns
    run(["ip", "netns", "add", ns])
    ip_batch(
        [
            f"link add {spec.svc_veth} type veth peer name eth0 netns {ns}",
            f"link set {spec.svc_veth} master {spec.bridge} up",
        ]
    )
    ip_batch(
        [
            "link set lo up",
            f"addr add {spec.svc_ip}/24 dev eth0",
            "link set eth0 up",
            f"addr add {API_SERVICE_IP}/32 dev lo",
        ],
        netns=ns,
    )
    write_sysctl(ns, "net.ipv4.ip_forward", "0")
    write_sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")
    # a ClusterIP answers nothing by itself: without kube-proxy's DNAT, connects time out
    in_netns(ns, ["iptables", "-A", "INPUT", "-d", API_SERVICE_IP, "-p", "tcp", "-j", "DROP"])
    endpoint = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "flannel_bot.lab.endpoint",
            spec.svc_ip,
            str(API_ENDPOINT_PORT),
            str(spec.dir),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    (spec.dir / "endpoint.pid").write_text(str(endpoint.pid))
    deadline = time.monotonic() + 10
    while not in_netns(
        ns, ["ss", "-Hltn", f"src {spec.svc_ip}:{API_ENDPOINT_PORT}"], check=False
    ).strip():
        if time.monotonic() > deadline or endpoint.poll() is not None:
            raise LabError("the lab's API service endpoint did not start")
        time.sleep(0.02)


# -- nodes ---------------------------------------------------------------------------------------


def prepare_node_files(spec: LabSpec, node: NodeSpec, authorized_key: str) -> Path:
    """The node's private directories, its sshd config and host key. Returns the sshd config."""
    for sub in private_paths(node.distribution).values():
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    home = node.dir / "root"
    for dotfile in (".bashrc", ".profile"):
        src = Path("/etc/skel") / dotfile
        if src.exists():
            shutil.copy(src, home / dotfile)
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(authorized_key)
    os.chmod(ssh_dir / "authorized_keys", 0o600)
    keys = node.dir / "ssh"
    keys.mkdir(exist_ok=True)
    host_key = keys / "ssh_host_ed25519_key"
    if not host_key.exists():
        make_key(host_key, f"{node.name}@{spec.name}")
    config = keys / "sshd_config"
    config.write_text(
        f"ListenAddress {node.underlay_ip}:22\n"
        f"HostKey {host_key}\n"
        f"PidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {ssh_dir / 'authorized_keys'}\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        "UseDNS no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 50\n"
        "LogLevel ERROR\n"
        "Subsystem sftp internal-sftp\n"
    )
    return config


def build_node(spec: LabSpec, node: NodeSpec) -> None:
    ns = node.netns
    run(["ip", "netns", "add", ns])
    ip_batch(
        [
            f"link add {node.host_veth} type veth peer name eth0 netns {ns}",
            f"link set {node.host_veth} master {spec.bridge} up",
        ]
    )
    ip_batch(
        [
            "link set lo up",
            f"addr add {node.underlay_ip}/24 dev eth0",
            "link set eth0 up",
            # the service network lives in the svc namespace; no default route anywhere
            f"route add {SERVICE_CIDR} via {spec.svc_ip}",
        ],
        netns=ns,
    )
    write_sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1")


def start_sshd(node: NodeSpec, config: Path) -> int:
    """sshd in the node's network namespace and its own mount namespace with private paths.

    `/proc/sys` is read-only inside except `/proc/sys/net`, which belongs to the node's network
    namespace, so a node command can change its own sysctls but never the machine's.
    """
    paths = private_paths(node.distribution)
    mounts = [f"mount --bind {node.dir / sub} {path}" for path, sub in paths.items()]
    script = " && ".join(
        [
            *(f"mkdir -p {path}" for path in paths),
            *mounts,
            "mount --bind /proc/sys /proc/sys",
            "mount -o remount,bind,ro /proc/sys",
            "mount --bind /proc/sys/net /proc/sys/net",
            "mount -o remount,bind,rw /proc/sys/net",
            f"exec {SSHD} -D -e -f {config}",
        ]
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(node.dir / "ssh" / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            node.netns,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    log.close()
    (node.dir / "sshd.pid").write_text(str(proc.pid))
    return proc.pid


def wait_for_sshd(node: NodeSpec, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = in_netns(node.netns, ["ss", "-Hltn", f"src {node.underlay_ip}:22"], check=False)
        if out.strip():
            return
        time.sleep(0.02)
    log = (node.dir / "ssh" / "sshd.log").read_text(errors="replace")[-500:]
    raise LabError(f"sshd on {node.name} did not start listening: {log}")


def sshd_pid(node: NodeSpec) -> int | None:
    try:
        pid = int((node.dir / "sshd.pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def node_exec(
    node: NodeSpec, argv: Sequence[str], check: bool = True, input: str | None = None
) -> str:
    """Run argv as the node sees the world: its network and its mount namespace (private paths)."""
    pid = sshd_pid(node)
    if pid is None:
        raise LabError(f"node {node.name} is not running (no sshd)")
    return run(["nsenter", "-t", str(pid), "-m", "-n", "--", *argv], check=check, input=input)


def host_keys_line(node: NodeSpec) -> str:
    """The node's key filed under its name, where flannel-bot (and OpenSSH with HostKeyAlias)
    looks it up: never under the address, which a Node object can be made to change."""
    key = (node.dir / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()
    return f"{node.name} {key[0]} {key[1]}\n"


# -- pods ----------------------------------------------------------------------------------------


def add_pod(node: NodeSpec, pod: int, mtu: int) -> None:
    """A pod: a network namespace with eth0 on the node's cni0, as the bridge CNI plugin makes."""
    pns, veth = node.pod_netns(pod), node.pod_veth(pod)
    run(["ip", "netns", "add", pns])
    ip_batch(
        [
            f"link add {veth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {pns}",
            f"link set {veth} master cni0 up",
        ],
        netns=node.netns,
    )
    ip_batch(
        [
            "link set lo up",
            f"addr add {node.pod_ip(pod)}/24 dev eth0",
            "link set eth0 up",
            f"route add {CLUSTER_CIDR} via {node.gateway} dev eth0",
        ],
        netns=pns,
    )
    write_sysctl(pns, "net.ipv6.conf.all.disable_ipv6", "1")


# -- teardown --------------------------------------------------------------------------------------


def lab_pids(spec: LabSpec) -> list[int]:
    """Every process started for this lab: found by the lab directory in its command line."""
    marker = str(spec.dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in (os.getpid(), os.getppid()):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """Running and not a zombie; reaps our own dead children on the way."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def lab_netns(spec: LabSpec) -> list[str]:
    out = run(["ip", "netns", "list"], check=False)
    return [
        line.split()[0]
        for line in out.splitlines()
        if line.split() and line.split()[0].startswith(spec.netns_prefix)
    ]


def lab_links(spec: LabSpec) -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False)
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(spec.link_prefix)]


def remove_unused_mount_points() -> None:
    """The directories only k3s nodes mount over (/var/lib/rancher, /etc/rancher) had to be
    made on the machine: remove them again when empty and no lab node has them mounted."""
    in_use: set[str] = set()
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        with contextlib.suppress(OSError, IndexError):
            in_use.update(line.split()[4] for line in mountinfo.read_text().splitlines())
    for path in K3S_ONLY_MOUNT_POINTS:
        if path not in in_use:
            with contextlib.suppress(OSError):
                Path(path).rmdir()  # only if empty: never a real k3s's


def teardown(spec: LabSpec) -> None:
    """Remove every process, namespace, link, route and file of the lab; safe to repeat."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = lab_pids(spec)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            time.sleep(0.02)
    for ns in lab_netns(spec):
        run(["ip", "netns", "delete", ns], check=False)
    for link in lab_links(spec):
        run(["ip", "link", "delete", link], check=False)
    for cidr in (CLUSTER_CIDR, SERVICE_CIDR):
        run(
            [
                "ip",
                "route",
                "delete",
                "blackhole",
                cidr,
                "proto",
                "static",
                "metric",
                str(blackhole_metric(spec)),
            ],
            check=False,
        )
    remove_unused_mount_points()
    if spec.dir.exists():
        shutil.rmtree(spec.dir, ignore_errors=True)
    (spec.root / f"{spec.name}.log").unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        spec.root.rmdir()  # only if no other lab lives there
