"""`diagnose --dump` at cluster scale: time and peak memory at N nodes and at N/10, side by side.

Writes two support bundles (bench/_gen.py: the `kubectl cluster-info dump` layout with flannel-bot's
extras; every node probed, about 1% of nodes broken) into a temporary directory, one of `--nodes`
nodes and `--pods` pods and one a tenth of that, then measures three steps on each, every step in a
fresh process so its peak memory is its own:

  load       evidence_from_bundle(DIR): read every file into Evidence (timed: the call)
  diagnose   diagnose(evidence): every rule (timed: the call; the process loads the evidence first,
             untimed, so its peak RSS includes it, and the growth during the call is shown too)
  command    `flannel-bot diagnose --dump DIR --json` (timed: the whole process)

Peak RSS is resource.getrusage(RUSAGE_CHILDREN).ru_maxrss read by a small wrapper process whose
only child is the step (RUSAGE_CHILDREN holds the largest of all children waited for, so one parent
measuring several steps would report the biggest so far). The findings of `diagnose` and of the
command must name exactly the broken nodes, each with the findings its fault causes, or the run
fails: a benchmark that finds nothing measures nothing.

Each node's route, neighbour and FDB tables hold every peer (as on a real VXLAN cluster), so the
bundle grows with nodes squared. The default (1,000 nodes / 30,000 pods) takes about 2 minutes;
`--nodes 5000 --pods 150000` about 25 minutes, 7 GB of disk and 7.5 GB of memory per step.

Usage: python bench/diagnose_scale.py [--nodes 1000] [--pods 30000] [--events N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _gen import EXPECTED, Dump, write_dump

HERE = Path(__file__).resolve()
STEPS = {
    "load": "evidence_from_bundle()",
    "diagnose": "diagnose(evidence)",
    "command": "flannel-bot diagnose --dump --json",
}


# -- the steps, each run in its own process -----------------------------------------------------


def step_load(path: str) -> dict[str, Any]:
    from flannel_bot.wiring import evidence_from_bundle

    start = time.perf_counter()
    ev = evidence_from_bundle(path)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "nodes": len(ev.nodes),
        "pods": len(ev.pods),
        "events": len(ev.events),
        "probed": len(ev.probes),
        "gaps": ev.gaps,
    }


def step_diagnose(path: str) -> dict[str, Any]:
    from flannel_bot.diagnosis.rules import diagnose
    from flannel_bot.wiring import evidence_from_bundle

    ev = evidence_from_bundle(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    findings = diagnose(ev)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "maxrss_before_kb": before,
        "findings": [{"id": f.id, "nodes": list(f.nodes)} for f in findings],
    }


def measure(out: Path, cmd: list[str]) -> None:
    """Run `cmd` as this process's only child, its stdout to `out`; print wall time and peak RSS."""
    with out.open("wb") as sink:
        start = time.perf_counter()
        rc = subprocess.run(cmd, stdout=sink, check=False).returncode
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": rc, "wall": wall, "maxrss_kb": peak}))


# -- the parent -----------------------------------------------------------------------------------


def flannel_bot() -> str:
    beside = Path(sys.executable).parent / "flannel-bot"
    found = str(beside) if beside.exists() else shutil.which("flannel-bot")
    if found is None:
        raise SystemExit("flannel-bot is not installed (pip install -e .)")
    return found


def run_step(step: str, dump: Path, work: Path) -> dict[str, Any]:
    """Measure one step on one dump in fresh processes; its own report plus wall time and RSS."""
    out = work / f"{dump.name}-{step}.out"
    if step == "command":
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")}
        cmd = [flannel_bot(), "--db", str(work / f"{dump.name}.db"), "--user", "bench"]
        cmd += ["diagnose", "--dump", str(dump), "--json"]
    else:
        env = dict(os.environ)
        cmd = [sys.executable, str(HERE), "--step", step, str(dump)]
    wrapper = [sys.executable, str(HERE), "--measure", str(out), "--", *cmd]
    done = subprocess.run(wrapper, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{step} on {dump}: wrapper failed: {done.stderr.strip()[-2000:]}")
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    if usage["rc"] != 0:
        raise SystemExit(f"{step} on {dump} exited {usage['rc']}: {done.stderr.strip()[-2000:]}")
    report = json.loads(out.read_text())
    out.unlink()
    if step == "command":
        report = {"seconds": usage["wall"], "findings": report["findings"], "gaps": report["gaps"]}
    return {**report, "maxrss_kb": usage["maxrss_kb"]}


def check(findings: list[dict[str, Any]], faults: dict[str, str]) -> list[str]:
    """What differs from the injected faults: a broken node missing an expected finding, or a
    finding on a node (or none) that was not broken that way."""
    by_node: dict[str, set[str]] = {}
    problems = []
    for f in findings:
        if not f["nodes"]:
            problems.append(f"unexpected cluster-wide finding {f['id']}")
        for node in f["nodes"]:
            by_node.setdefault(node, set()).add(f["id"])
    for node, ids in sorted(by_node.items()):
        extra = ids - EXPECTED.get(faults.get(node, ""), frozenset())
        if extra:
            problems.append(
                f"unexpected on {node} ({faults.get(node, 'healthy')}): {sorted(extra)}"
            )
    for node, fault in sorted(faults.items()):
        missing = EXPECTED[fault] - by_node.get(node, set())
        if missing:
            problems.append(f"{node} ({fault}): not found: {sorted(missing)}")
    return problems


def counts(findings: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f["id"] for f in findings)


def mb(kb: float) -> str:
    return f"{kb / 1024:7.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=30000)
    parser.add_argument("--events", type=int, help="background events (default: pods / 10)")
    parser.add_argument("--keep", type=Path, help="write the dumps here and leave them")
    args = parser.parse_args()

    sizes = [(args.nodes // 10, args.pods // 10), (args.nodes, args.pods)]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: give a new or empty directory")
        base = args.keep
    else:
        base = Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-scale-"))
    work = Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-scale-work-"))
    results: list[tuple[Dump, float, dict[str, dict[str, Any]]]] = []
    try:
        for nodes, pods in sizes:
            start = time.perf_counter()
            events = None if args.events is None else args.events * nodes // args.nodes
            dump = write_dump(base / f"{nodes}-nodes", nodes, pods, events)
            written = time.perf_counter() - start
            print(
                f"wrote {nodes} nodes, {dump.pods} pods, {dump.events} events, "
                f"{len(dump.faults)} broken nodes: {dump.bytes / 1e6:.0f} MB in {dump.files} files "
                f"({written:.0f} s)",
                flush=True,
            )
            measured = {}
            for step in STEPS:
                measured[step] = run_step(step, dump.path, work)
                print(f"  {step:9} {measured[step]['seconds']:8.2f} s", flush=True)
            results.append((dump, written, measured))
            if not args.keep:
                shutil.rmtree(dump.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(results)


def report(results: list[tuple[Dump, float, dict[str, dict[str, Any]]]]) -> None:
    (small, _, a), (big, _, b) = results
    ratio_n = big.nodes / small.nodes
    print()
    print(
        f"diagnose --dump: {small.nodes} nodes / {small.pods} pods vs {big.nodes} nodes / "
        f"{big.pods} pods ({ratio_n:.0f}x); bundle {small.bytes / 1e6:.0f} MB vs "
        f"{big.bytes / 1e6:.0f} MB ({big.bytes / small.bytes:.0f}x)"
    )
    head = f"{small.nodes} nodes"
    big_head = f"{big.nodes} nodes"
    print(f"  {'step':44} {head:>21}  {big_head:>21}   {'ratio time':>10} {'memory':>7}")
    print(f"  {'':44} {'time':>10} {'peak RSS':>10}  {'time':>10} {'peak RSS':>10}")
    for step, what in STEPS.items():
        x, y = a[step], b[step]
        print(
            f"  {step + '  ' + what:44} {x['seconds']:8.2f} s {mb(x['maxrss_kb'])}  "
            f"{y['seconds']:8.2f} s {mb(y['maxrss_kb'])}   "
            f"{y['seconds'] / x['seconds']:9.1f}x {y['maxrss_kb'] / x['maxrss_kb']:6.1f}x"
        )
    grow = [r["diagnose"]["maxrss_kb"] - r["diagnose"]["maxrss_before_kb"] for r in (a, b)]
    print(
        f"  (diagnose's peak includes the evidence it reads; growth during diagnose() itself: "
        f"{grow[0] / 1024:.0f} MB vs {grow[1] / 1024:.0f} MB)"
    )
    problems = []
    for dump, r in ((small, a), (big, b)):
        load = r["load"]
        print(
            f"\n{dump.nodes} nodes: evidence holds {load['nodes']} nodes, {load['pods']} pods, "
            f"{load['events']} events, {load['probed']} nodes probed, {len(load['gaps'])} gaps"
        )
        if (load["nodes"], load["pods"], load["probed"]) != (dump.nodes, dump.pods, dump.nodes):
            problems.append(f"{dump.nodes} nodes: the evidence does not hold the whole bundle")
        problems += [f"{dump.nodes} nodes: gap: {g}" for g in load["gaps"][:5]]
        injected = Counter(dump.faults.values())
        print(
            "  injected: "
            + ", ".join(f"{fault} on {n} nodes" for fault, n in sorted(injected.items()))
        )
        for source in ("diagnose", "command"):
            found = r[source]["findings"]
            print(
                f"  findings ({source}): "
                + ", ".join(f"{i} {n}" for i, n in sorted(counts(found).items()))
            )
            problems += [f"{dump.nodes} nodes, {source}: {p}" for p in check(found, dump.faults)]
    if problems:
        print("\nFAILED: the findings do not match the injected faults:")
        for p in problems[:20]:
            print(f"  {p}")
        raise SystemExit(1)
    print("\nevery broken node was found with its expected findings, and nothing else")


if __name__ == "__main__":
    # the processes run_step starts: `--step STEP DIR` and `--measure OUT -- CMD...`
    if sys.argv[1:2] == ["--step"]:
        step, path = sys.argv[2:4]
        print(json.dumps(step_load(path) if step == "load" else step_diagnose(path)))
    elif sys.argv[1:2] == ["--measure"] and sys.argv[3:4] == ["--"]:
        measure(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
