"""Node probe fan-out over lab nodes: flannel-bot's SSH and pod executors vs Ansible vs `ssh` loops.

Builds its own lab (Linux, root), runs the same read-only probe set on every node, side by side
in one run, and prints median wall times and ratios:

  ssh-loop          one OpenSSH `ssh` call per node, the probe commands joined into one script
  ssh, 8 parallel   the same calls, 8 at a time
  ansible default   `ansible all -m shell -a SCRIPT` (the same joined script), ansible-core's
                    defaults: forks 5, no pipelining, ssh_args `-C -o ControlMaster=auto
                    -o ControlPersist=60s`
  ansible tuned     the same with forks = node count, pipelining = True, ssh_args
                    `-o ControlMaster=auto -o ControlPersist=300s` (no `-C`: compression only
                    costs CPU on a local link), gathering = explicit (a no-op for ad-hoc commands)
  ansible warm      ansible tuned again, its ssh ControlPersist masters already open
  bot-cold          SshExecutor.run_many with fresh connections (connect + 12 commands per node)
  bot-warm          the same executor again, its connections already open
  pods              PodNodeExecutor.run_many as `[nodes] access = "pod"` runs it: one node-exec
                    pod per node (all 12 commands in it), 16 at a time, through the lab's API
                    server (HTTP on 127.0.0.1) and the lab's kubelet, which runs `flannel-bot node`
                    in the node's namespaces; results read from the pod log, the pod deleted
  pods, one at a time  the same, one node after the other, as a loop of `kubectl debug node/...`
                    runs would go (create, wait, read, delete, next node)

The lab's kubelet starts each pod as a Python process (`flannel-bot node`, ~0.1-0.2 s of start-up
on these cores) with no image pull and no container runtime; on a real node a pod's start adds the
runtime's sandbox and container start (typically 1-2 s, the image already pulled), so the pod
rows are a lower bound of the API round trips, not a prediction of a real cluster's figure.

The cold Ansible rows start every run with no ssh master open (the previous run's are closed,
untimed), like bot-cold. Both Ansible configurations, besides the knobs above, only point
Ansible at the lab: a temporary inventory and ansible.cfg (never in the repo) with
`ansible_ssh_common_args=-F <lab ssh_config>` (the lab's key and known_hosts, strict host key
checking on), ansible_python_interpreter=/usr/bin/python3 (nodes share the host's /usr), and
ANSIBLE_HOME in the temporary directory. Every run of every method must succeed on every node
(for Ansible: exit code 0, `CHANGED | rc=0` for each host, and each host's output shows its own
underlay address), or the benchmark fails.

ansible-core is not a dependency of flannel-bot: pass `--ansible PATH`, have `ansible` on PATH, or
`--no-ansible` to leave its rows out.

Usage: python bench/fanout.py [--nodes 20] [--repeat 5] [--ansible PATH | --no-ansible]
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.executors.kube.nodepods import PodNodeExecutor
from flannel_bot.executors.node_settings import NodeSettings
from flannel_bot.executors.ssh import SshExecutor
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.nodes import ClientFiles
from flannel_bot.lab.topology import LabSpec

PROBES: list[list[str]] = [
    ["cat", "/proc/sys/net/ipv4/ip_forward"],
    ["cat", "/proc/sys/net/bridge/bridge-nf-call-iptables"],
    ["cat", "/run/flannel/subnet.env"],
    ["ls", "-la", "/etc/cni/net.d"],
    ["ls", "/opt/cni/bin"],
    ["ls", "/var/lib/cni/networks/cbr0"],
    ["ip", "-d", "-j", "addr", "show"],
    ["ip", "-j", "route", "show"],
    ["ip", "-j", "neigh", "show", "dev", "flannel.1"],
    ["bridge", "-j", "fdb", "show", "dev", "flannel.1"],
    ["ip", "route", "show", "table", "local"],
    ["iptables", "-S", "FORWARD"],
]

INSTALL_HINT = (
    "ansible not found: pass --ansible PATH or put `ansible` on PATH. ansible-core is not a "
    "flannel-bot dependency; install it apart, e.g.\n"
    "  python -m venv /tmp/ansible-venv && /tmp/ansible-venv/bin/pip install ansible-core\n"
    "then run with --ansible /tmp/ansible-venv/bin/ansible"
)


def timed(
    fn: Callable[[], object], repeat: int, before: Callable[[], object] | None = None
) -> float:
    """Median wall time of `fn`; `before` runs untimed ahead of each sample."""
    samples = []
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def ansible_env(home: Path, config: Path | None = None) -> dict[str, str]:
    """The caller's environment without ANSIBLE_* settings; Ansible's files kept under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_HOME"] = str(home)
    if config is not None:
        env["ANSIBLE_CONFIG"] = str(config)
    return env


def find_ansible(given: str | None, tmp: Path) -> tuple[str, str]:
    """The `ansible` executable and its version line; exits non-zero with how to install it."""
    path = given or shutil.which("ansible")
    if path is None or not os.access(path, os.X_OK):
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    out = subprocess.run(
        [path, "--version"],
        capture_output=True,
        text=True,
        env=ansible_env(tmp / "home"),
        check=False,
    )
    if out.returncode != 0:
        print(f"{path} --version failed:\n{out.stderr}\n{INSTALL_HINT}", file=sys.stderr)
        raise SystemExit(2)
    return path, out.stdout.splitlines()[0]


@dataclass(frozen=True)
class Ansible:
    """One Ansible configuration for the lab: `run()` is one ad-hoc probe over every node."""

    exe: str
    dir: Path
    ssh_config: Path
    hosts: dict[str, str]  # inventory name -> underlay address its output must show
    script: str

    @classmethod
    def write(
        cls, exe: str, tmp: Path, name: str, files: ClientFiles, hosts: dict[str, str], script: str
    ) -> Ansible:
        """Writes inventory and ansible.cfg under tmp/name; `name` "tuned" sets the knobs."""
        d = tmp / name
        d.mkdir()
        (d / "hosts.ini").write_text(
            "[all:vars]\n"
            "ansible_python_interpreter=/usr/bin/python3\n"
            f"ansible_ssh_common_args=-F {files.ssh_config}\n"
            "[lab]\n" + "".join(f"{h}\n" for h in hosts)
        )
        defaults = [f"inventory = {d / 'hosts.ini'}", f"local_tmp = {d / 'tmp'}"]
        defaults.append("host_key_checking = True")
        ssh = [f"control_path_dir = {d / 'cp'}"]
        if name == "tuned":
            defaults += [f"forks = {len(hosts)}", "gathering = explicit"]
            ssh += ["pipelining = True", "ssh_args = -o ControlMaster=auto -o ControlPersist=300s"]
        (d / "ansible.cfg").write_text(
            "[defaults]\n" + "\n".join(defaults) + "\n[ssh_connection]\n" + "\n".join(ssh) + "\n"
        )
        return cls(exe, d, files.ssh_config, hosts, script)

    def run(self) -> None:
        out = subprocess.run(
            [self.exe, "all", "-m", "shell", "-a", self.script],
            capture_output=True,
            text=True,
            env=ansible_env(self.dir / "home", self.dir / "ansible.cfg"),
            check=False,
        )
        self.check(out)

    def check(self, out: subprocess.CompletedProcess[str]) -> None:
        """Every host once, `CHANGED | rc=0`, its block showing its own address; exit code 0."""
        names = "|".join(re.escape(h) for h in self.hosts)
        header = re.compile(rf"^({names}) \| (.*)$", re.MULTILINE)
        heads = list(header.finditer(out.stdout))
        blocks: dict[str, str] = {}
        bad: dict[str, str] = {}
        for i, m in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(out.stdout)
            host, status = m.group(1), m.group(2)
            if status != "CHANGED | rc=0 >>" or host in blocks:
                bad[host] = "more than one result" if host in blocks else status
            blocks[host] = out.stdout[m.end() : end]
        bad |= {h: "no result" for h in self.hosts if h not in blocks}
        bad |= {
            h: f"output lacks {ip}"
            for h, ip in self.hosts.items()
            if h in blocks and f'"local":"{ip}"' not in blocks[h]
        }
        if out.returncode != 0 or bad:
            raise SystemExit(
                f"ansible ({self.dir.name}) exit {out.returncode}, failed hosts {bad}\n"
                f"{out.stderr[-2000:]}"
            )

    def close_masters(self) -> None:
        """Stops the ssh ControlPersist masters this configuration left open."""
        for sock in (self.dir / "cp").glob("*"):
            if sock.is_socket():
                subprocess.run(
                    ["ssh", "-F", str(self.ssh_config), "-S", str(sock), "-O", "exit", "x"],
                    capture_output=True,
                    check=False,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ansible", help="the ansible executable (default: `ansible` on PATH)")
    parser.add_argument("--no-ansible", action="store_true", help="leave the Ansible rows out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fanout-ansible-") as tmp:
        bench(args, Path(tmp))


def bench(args: argparse.Namespace, tmp: Path) -> None:
    ansible_exe, ansible_version = (
        ("", "no ansible") if args.no_ansible else find_ansible(args.ansible, tmp)
    )
    spec = LabSpec(
        name="bch",
        nodes=args.nodes,
        underlay="172.31.251.0/24",
        root=Path("/run/flannel-bot-bench"),
    )
    with Lab(spec) as lab:
        assert lab.files is not None
        files = lab.files
        names = [n.name for n in spec.all_nodes()]
        script = "; ".join(shlex.join(p) for p in PROBES)
        settings = SshSettings(
            private_key=files.key,
            known_hosts=files.known_hosts,
            ssh_config=files.ssh_config,
            max_workers=8,
        )
        hosts = {n.name: n.underlay_ip for n in spec.all_nodes()}
        default = Ansible.write(ansible_exe, tmp, "default", files, hosts, script)
        tuned = Ansible.write(ansible_exe, tmp, "tuned", files, hosts, script)

        def ssh_loop() -> None:
            for name in names:
                subprocess.run(
                    ["ssh", "-F", str(files.ssh_config), name, "--", script],
                    capture_output=True,
                    check=True,
                )

        def ssh_parallel() -> None:
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda n: subprocess.run(
                            ["ssh", "-F", str(files.ssh_config), n, "--", script],
                            capture_output=True,
                            check=True,
                        ),
                        names,
                    )
                )

        def bot_cold() -> None:
            with SshExecutor(settings) as ex:
                check(ex.run_many({n: PROBES for n in names}, timeout=60))

        warm = SshExecutor(settings)
        check(warm.run_many({n: PROBES for n in names}, timeout=60))

        def bot_warm() -> None:
            check(warm.run_many({n: PROBES for n in names}, timeout=60))

        kube = KubeClient.from_settings(KubeSettings(kubeconfig=lab.kubeconfig))
        pods = PodNodeExecutor(kube, NodeSettings(access="pod"), "bench")
        one_by_one = PodNodeExecutor(kube, NodeSettings(access="pod", parallel=1), "bench")

        def over_pods() -> None:
            check(pods.run_many({n: PROBES for n in names}, timeout=60))

        def pods_sequential() -> None:
            for n in names:  # a loop of `kubectl debug node/N`: one pod, then the next
                check(one_by_one.run_many({n: PROBES}, timeout=60))

        try:
            results = {
                "ssh-loop (sequential)": timed(ssh_loop, args.repeat),
                "ssh, 8 in parallel": timed(ssh_parallel, args.repeat),
            }
            if not args.no_ansible:
                results["ansible -m shell, default (5 forks)"] = timed(
                    default.run, args.repeat, before=default.close_masters
                )
                results[f"ansible -m shell, tuned ({args.nodes} forks)"] = timed(
                    tuned.run, args.repeat, before=tuned.close_masters
                )
                tuned.close_masters()
                tuned.run()  # opens the masters the warm row reuses
                results["ansible tuned, ssh masters open"] = timed(tuned.run, args.repeat)
            results["bot-cold (fresh connections)"] = timed(bot_cold, args.repeat)
            results["bot-warm (reused connections)"] = timed(bot_warm, args.repeat)
            results["pods (16 at a time)"] = timed(over_pods, args.repeat)
            results["pods, one at a time (kubectl debug)"] = timed(pods_sequential, args.repeat)
            left = kube.list_pods(NodeSettings().namespace)
            if left:
                raise SystemExit(f"node-exec pods left behind: {[p.name for p in left]}")
        finally:
            default.close_masters()
            tuned.close_masters()
            warm.close()
    base = results["ssh-loop (sequential)"]
    ans = results.get("ansible -m shell, default (5 forks)", base)
    ansible = "ansible -m shell, default (5 forks)" in results
    print(
        f"probe set: {len(PROBES)} read-only commands on each of {args.nodes} lab nodes, "
        f"median of {args.repeat} runs; {ansible_version}"
    )
    for name, seconds in results.items():
        print(
            f"  {name:38} {seconds * 1000:8.0f} ms   {base / seconds:6.1f}x vs ssh-loop"
            + (f"   {ans / seconds:6.1f}x vs ansible default" if ansible else "")
        )


def check(results: Mapping[str, object]) -> None:
    failed = {n: r for n, r in results.items() if not isinstance(r, list)}
    if failed:
        raise SystemExit(f"probe failed on {failed}")


if __name__ == "__main__":
    main()
