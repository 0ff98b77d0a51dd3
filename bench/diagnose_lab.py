"""`diagnose` on a live lab: flannel-bot's collect + diagnose vs the `ssh` loops a person writes.

Builds its own 20-node lab (Linux, root), then runs, side by side in one run, and prints median
wall times and ratios:

  ssh per probe      for each node, for each probe of bot/core/probes.py: one OpenSSH `ssh` call
                     (a new connection per command, as a shell loop over nodes and commands does)
  ssh per node       one `ssh` call per node with the probes joined into one script
  bot cold           collect (API lists + the probe set on every node) + diagnose, with executors
                     built from the lab's bot config for each run (fresh SSH connections)
  bot warm           the same with the executors of the previous run (connections open)
  bot probes only    the probe fan-out of collect alone (warm), for the like-for-like comparison
                     with the loops, which read no API and conclude nothing

The per-probe loop opens one connection per command (about 0.4 s each with OpenSSH here, two
minutes a run on 20 nodes), so it runs `--loop-repeat` times (default 1), the others `--repeat`.

Every method must see the same exit code for every probe on every node (the loops print `$?`
after each probe), so all of them ran the same probe set.

Usage: python bench/diagnose_lab.py [--nodes 20] [--repeat 3] [--loop-repeat 1]
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flannel_bot.diagnosis.collect import collect, probe_nodes
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.lab.lab import Lab
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.clock import SystemClock
from flannel_bot.ports.probes import PROBES
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_executors

MARK = "@@flannel-bot-bench rc="
Codes = dict[str, list[int]]  # node -> exit code of each probe, in PROBES order


def timed(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def ssh(ssh_config: Path, node: str, command: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ssh", "-F", str(ssh_config), node, "--", command],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 255:  # ssh's own failure, not the command's
        raise SystemExit(f"ssh {node}: {done.stderr.strip()}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loop-repeat", type=int, default=1, help="runs of the per-probe loop")
    args = parser.parse_args()
    spec = LabSpec(
        name="bdl",
        nodes=args.nodes,
        underlay="172.31.246.0/24",
        root=Path("/run/flannel-bot-bench"),
    )
    with Lab(spec) as lab:
        assert lab.files is not None
        ssh_config = lab.files.ssh_config
        names = [n.name for n in spec.all_nodes()]
        settings = load_settings(lab.bot_config, env={"HOME": "/root"})
        codes: dict[str, Codes] = {}
        found: list[str] = []

        def per_probe() -> None:
            codes["ssh per probe"] = {
                n: [ssh(ssh_config, n, shlex.join(p.argv)).returncode for p in PROBES]
                for n in names
            }

        script = "; ".join(f"{shlex.join(p.argv)}; echo {MARK}$?" for p in PROBES)
        marks = re.compile(rf"{re.escape(MARK)}(\d+)$", re.M)

        def per_node() -> None:
            # a probe's output need not end in a newline (ipam's does not): find the marks anywhere
            codes["ssh per node"] = {
                n: [int(rc) for rc in marks.findall(ssh(ssh_config, n, script).stdout)]
                for n in names
            }

        def bot(kube: Any, nodes: Any, label: str) -> None:
            ev = collect(kube, nodes)
            found[:] = [f"{f.id} on {', '.join(f.nodes)}" for f in diagnose(ev)]
            codes[label] = probe_codes(ev)

        def bot_cold() -> None:
            kube, nodes = build_executors(settings.cluster(), SystemClock())
            try:
                bot(kube, nodes, "bot cold")
            finally:
                close(kube, nodes)

        warm = build_executors(settings.cluster(), SystemClock())
        bot(*warm, "bot warm")

        def bot_warm() -> None:
            bot(*warm, "bot warm")

        def probes_only() -> None:
            ev = Evidence()
            probe_nodes(warm[1], names, ev)
            codes["bot probes only"] = probe_codes(ev)

        results = {
            "ssh per probe (sequential)": timed(per_probe, args.loop_repeat),
            "ssh per node, probes joined": timed(per_node, args.repeat),
            "bot cold: collect + diagnose": timed(bot_cold, args.repeat),
            "bot warm: collect + diagnose": timed(bot_warm, args.repeat),
            "bot warm: node probes only": timed(probes_only, args.repeat),
        }
        close(*warm)
    reference = codes["ssh per probe"]
    differ = [label for label, seen in codes.items() if seen != reference]
    print(
        f"probe set: {len(PROBES)} read-only commands on each of {args.nodes} lab nodes "
        f"({len(PROBES) * args.nodes} commands), median of {args.repeat} runs "
        f"(ssh per probe: {args.loop_repeat})"
    )
    base = results["ssh per probe (sequential)"]
    for name, seconds in results.items():
        print(f"  {name:32} {seconds * 1000:8.0f} ms   {base / seconds:6.1f}x vs ssh per probe")
    print(f"diagnose on the healthy lab: {'; '.join(found) or 'no findings'}")
    if differ:
        raise SystemExit(f"exit codes differ from the ssh loop's in: {', '.join(differ)}")
    print("every method saw the same exit code for every probe on every node")


def close(*executors: Any) -> None:
    for executor in executors:
        executor.close()


def probe_codes(ev: Evidence) -> Codes:
    missing = set(ev.unreachable)
    if missing:
        raise SystemExit(f"nodes did not answer: {ev.unreachable}")
    return {n: [out.exit_code for out in ev.probes[n].values()] for n in sorted(ev.probes)}


if __name__ == "__main__":
    main()
