"""Reaching nodes over SSH vs through node-exec pods (`[nodes] access`), side by side on a lab.

Builds its own lab (Linux, root), whose kubelet runs the bot's node-exec pods, and prints median
wall times and the pod/SSH ratio, in one run:

  one command, one node     `true` on one node: one SSH exec on an open connection, one fresh
                            connection, one pod's round trip (create, run, read log, delete)
  probe set, every node     the read-only probe set (bot/ports/probes.py) on every node at once
                            (`run_many`): one pod per node vs SSH (warm and fresh connections)
  collect + diagnose        the whole of `diagnose`, executors built fresh each time

Both transports must give every probe the same exit code on every node.

Usage: python bench/node_access_lab.py [--nodes 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flannel_bot.diagnosis.collect import collect
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.clock import SystemClock
from flannel_bot.ports.probes import PROBES
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def close(nodes: Any) -> None:
    closer = getattr(nodes, "close", None)
    if closer is not None:
        closer()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    spec = LabSpec(
        name="bna",
        nodes=args.nodes,
        underlay="172.31.245.0/24",
        root=Path("/run/flannel-bot-bench"),
    )
    with Lab(spec) as lab:
        pod_config = spec.dir / "flannel-bot-pod.toml"
        pod_config.write_text(lab.bot_config.read_text() + '\n[nodes]\naccess = "pod"\n')
        configs = {"ssh": lab.bot_config, "pod": pod_config}
        clusters = {
            k: load_settings(path, env={"HOME": "/root"}).cluster() for k, path in configs.items()
        }
        names = [n.name for n in spec.all_nodes()]
        probes = {n: [list(p.argv) for p in PROBES] for n in names}
        codes: dict[str, dict[str, list[int]]] = {}

        def executors(access: str) -> Any:
            return build_executors(clusters[access], SystemClock())[1]

        warm_ssh, pods = executors("ssh"), executors("pod")
        warm_ssh.run(names[0], ["true"], 10)  # open the connection

        def fresh_ssh_one() -> None:
            nodes = executors("ssh")
            try:
                nodes.run(names[0], ["true"], 10)
            finally:
                close(nodes)

        def fan_out(label: str, nodes: Any) -> None:
            results = nodes.run_many(probes, 30)
            failed = {n: r for n, r in results.items() if isinstance(r, Exception)}
            if failed:
                raise SystemExit(f"{label}: {failed}")
            codes[label] = {n: [c.exit_code for c in r] for n, r in results.items()}

        def fresh_ssh_fan_out() -> None:
            nodes = executors("ssh")
            try:
                fan_out("ssh fresh", nodes)
            finally:
                close(nodes)

        def whole(access: str) -> Callable[[], None]:
            def run() -> None:
                kube, nodes = build_executors(clusters[access], SystemClock())
                try:
                    diagnose(collect(kube, nodes, timeout=30))
                finally:
                    close(nodes)

            return run

        rows = [
            (
                "one command, one node",
                {
                    "ssh (open connection)": timed(
                        lambda: warm_ssh.run(names[0], ["true"], 10), args.repeat
                    ),
                    "ssh (fresh connection)": timed(fresh_ssh_one, args.repeat),
                    "pod round trip": timed(lambda: pods.run(names[0], ["true"], 10), args.repeat),
                },
            ),
            (
                f"probe set ({len(PROBES)} commands) on {len(names)} nodes",
                {
                    "ssh (open connections)": timed(
                        lambda: fan_out("ssh warm", warm_ssh), args.repeat
                    ),
                    "ssh (fresh connections)": timed(fresh_ssh_fan_out, args.repeat),
                    "pods (one per node)": timed(lambda: fan_out("pods", pods), args.repeat),
                },
            ),
            (
                "collect + diagnose",
                {
                    "ssh (fresh connections)": timed(whole("ssh"), args.repeat),
                    "pods": timed(whole("pod"), args.repeat),
                },
            ),
        ]
        close(warm_ssh)
        left = lab.api.list(
            "pods",
            label_selector="app.kubernetes.io/component=node-exec,"
            "app.kubernetes.io/managed-by=flannel-bot",
        )
    if len({repr(c) for c in codes.values()}) != 1:
        raise SystemExit(f"the transports disagree on exit codes: {codes}")
    if left:
        raise SystemExit(f"node-exec pods left behind: {[p['metadata']['name'] for p in left]}")
    print(f"{len(names)} lab nodes, median of {args.repeat} runs (2 cores shared by everything)")
    for title, times in rows:
        print(f"\n{title}")
        ssh_best = min(v for k, v in times.items() if k.startswith("ssh"))
        for label, seconds in times.items():
            ratio = f"  x{seconds / ssh_best:.1f} of the fastest SSH" if label[:3] == "pod" else ""
            print(f"  {label:<28} {seconds * 1000:8.0f} ms{ratio}")
    print("\nsame exit code for every probe on every node over both transports: yes")


if __name__ == "__main__":
    main()
