"""Node probe fan-out over lab nodes: flannel-bot's SSH executor vs a sequential `ssh` loop.

Builds its own lab (Linux, root), runs the same read-only probe set on every node three ways,
side by side in one run, and prints median wall times and ratios:

  ssh-loop       one OpenSSH `ssh` call per node, the probe commands joined into one script
  bot-cold       SshExecutor.run_many with fresh connections (connect + 12 commands per node)
  bot-warm       the same executor again, its connections already open

Usage: python bench/fanout.py [--nodes 20] [--repeat 5]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bot.executors.ssh import SshExecutor, SshSettings
from bot.lab.lab import Lab
from bot.lab.topology import LabSpec

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


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
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

        results = {
            "ssh-loop (sequential)": timed(ssh_loop, args.repeat),
            "ssh, 8 in parallel": timed(ssh_parallel, args.repeat),
            "bot-cold (fresh connections)": timed(bot_cold, args.repeat),
            "bot-warm (reused connections)": timed(bot_warm, args.repeat),
        }
        warm.close()
    base = results["ssh-loop (sequential)"]
    print(
        f"probe set: {len(PROBES)} read-only commands on each of {args.nodes} lab nodes, "
        f"median of {args.repeat} runs"
    )
    for name, seconds in results.items():
        print(f"  {name:32} {seconds * 1000:8.0f} ms   {base / seconds:6.1f}x vs ssh-loop")


def check(results: dict[str, object]) -> None:
    failed = {n: r for n, r in results.items() if not isinstance(r, list)}
    if failed:
        raise SystemExit(f"probe failed on {failed}")


if __name__ == "__main__":
    main()
