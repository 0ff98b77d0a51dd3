"""`diagnose --dump` at cluster scale: time and peak memory with each node's VXLAN peer tables kept
whole to the end and reduced node by node as they are read, side by side in one run.

For each size in `--sizes` (nodes; `--pods-per-node` pods each, 30 by default) bench/_gen.py writes
a support bundle (the `kubectl cluster-info dump` layout with flannel-bot's extras; every node
probed, about 1% of nodes broken) into a temporary directory, and each way of diagnosing it runs in
a fresh process, so its peak memory is its own:

  whole     collect(BundleReader(DIR), reduce_tables=False) + diagnose(): every node's route,
            neighbour and FDB tables held whole until every rule has run (the path before)
  reduced   evidence_from_bundle(DIR) + diagnose() (what `diagnose --dump` runs): node by node,
            each node's peer tables reduced to what differs from the peers it should know
  facts     the same, after `write_peer_facts(DIR)` (what `flannel-bot collect` runs once the
            probes are written; its time is printed apart) put each node's reduced tables in
            probes/<node>/peer-tables.json: the tables themselves are then not read
  before    `--before REV`: evidence_from_bundle + diagnose() of that commit (a `git archive` of
            it on PYTHONPATH), at sizes up to --before-max nodes (its vtep-mac-mismatch check
            grows with nodes cubed: 88 s at 500 nodes, hours at 2,000)
  command   `--command`: `flannel-bot diagnose --dump DIR --json`, the whole process, with the
            reader's default limits, on the bundle with peer-tables.json (without them, past
            4 GiB of bundle, about 3,500 nodes, it would read no more; with them the tables
            are not read, and the 5,000-node bundle is read whole)

`--api-only N`: also a bundle of N nodes without probes/ (`diagnose --dump` of a cluster without
node access), diagnosed the reduced way.

Time is the call (read + every rule) for whole/reduced/before, the whole process for command.
CPU and peak RSS are of the step and every process it starts (the probe workers of a bundle
from 1,000 probed nodes, children of a forkserver): a small wrapper process, whose only child is
the step, makes itself their subreaper, reaps them all and reads getrusage(RUSAGE_CHILDREN) for
the CPU; the peak RSS is their summed resident memory sampled every 20 ms from /proc (at least
the largest process's ru_maxrss), the memory the machine must have. Every step's findings must
name exactly the broken nodes, each with the findings its fault causes, or the run fails: a
benchmark that finds nothing measures nothing.

Each node's peer tables hold every peer (as on a real VXLAN cluster), so the bundle grows with
nodes squared: 500 nodes 0.14 GB, 1,000 0.5 GB, 2,000 1.4 GB, 5,000 8 GB of disk. The default
(500 and 1,000 nodes) takes about 3 minutes; `--sizes 500,1000,2000,5000 --api-only 5000` about
40 minutes on 2 cores (most of it writing the 5,000-node bundle and diagnosing it whole).

Usage: python bench/diagnose_scale.py [--sizes 500,1000] [--pods-per-node 30] [--api-only N]
         [--before REV] [--before-max 500] [--whole-max NODES] [--command] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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

from _gen import API_EXPECTED, EXPECTED, Dump, check, write_dump

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
MODES = ("before", "whole", "reduced", "facts", "command")
# the findings of each fault that the API alone shows (flannel's log, the kubelet's events)


# -- the steps, each run in its own process -----------------------------------------------------


def step_diagnose(path: str, mode: str) -> dict[str, Any]:
    """Read the bundle into evidence and run every rule, the way `mode` says."""
    # imported before the clock starts: the modes differ in what they do, not in imports
    from flannel_bot.diagnosis.rules import diagnose
    from flannel_bot.executors.bundle.limits import Limits
    from flannel_bot.wiring import evidence_from_bundle

    # a 5,000-node bundle is 7 GB, over the reader's default 4 GiB, and on a busy machine its
    # reading can pass the default 120 s: every file must be read, or nodes go unchecked
    limits = Limits(total_bytes=64 << 30, seconds=7200.0)

    if mode == "whole":  # the same code with every node's tables kept whole to the end
        from flannel_bot.diagnosis.collect import collect
        from flannel_bot.executors.bundle import BundleReader

        start = time.perf_counter()
        reader = BundleReader(path, limits)
        ev = collect(reader, reader, reduce_tables=False)
    else:  # reduced: today's `diagnose --dump`; before: the checkout of --before REV
        start = time.perf_counter()
        ev = evidence_from_bundle(path, limits=limits)
    loaded = time.perf_counter() - start
    findings = diagnose(ev)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "load_seconds": loaded,
        "nodes": len(ev.nodes),
        "pods": len(ev.pods),
        "events": len(ev.events),
        "probed": len(ev.probes),
        "gaps": ev.gaps,
        "findings": [{"id": f.id, "nodes": list(f.nodes)} for f in findings],
    }


def write_facts(path: Path) -> tuple[float, int]:
    """`write_peer_facts` (what `flannel-bot collect` runs after writing the probes) on the
    bundle, in a process of its own: (seconds, nodes written)."""
    code = "import sys; from flannel_bot.wiring import write_peer_facts as w; print(w(sys.argv[1]))"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    return time.perf_counter() - start, int(done.stdout.strip())


def _tree_rss_kb(root: int) -> int:
    """Resident memory of every process below `root` (this wrapper: as a subreaper it also
    adopts the step's forkserver and its workers when the step exits), summed, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, ())
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * PAGE_KB
        except (OSError, ValueError, IndexError):
            continue
    return total


PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
PR_SET_CHILD_SUBREAPER = 36


def measure(out: Path, cmd: list[str]) -> None:
    """Run `cmd` as this process's only child, its stdout to `out`; print wall time, CPU time
    (user + system: on a shared machine the wall time also counts waiting for a core and for
    the disk) and peak RSS, of the step and of every process it starts: the probe workers of a
    large bundle are children of a forkserver that outlives the step, so this process makes
    itself their subreaper (Linux) and reaps them all before reading its children's usage.
    `maxrss_kb` is the largest process's peak (getrusage); `tree_kb` the peak of the processes'
    summed RSS, sampled every 20 ms (the memory the machine must have)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    me, tree_kb = os.getpid(), 0
    with out.open("wb") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=sink)
        while proc.poll() is None:
            tree_kb = max(tree_kb, _tree_rss_kb(me))
            time.sleep(0.02)
        wall = time.perf_counter() - start
    while True:  # the forkserver and anything else adopted, once the step has let them go
        try:
            os.wait()
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    tree_kb = max(tree_kb, usage.ru_maxrss)
    print(
        json.dumps(
            {
                "rc": proc.returncode,
                "wall": wall,
                "cpu": cpu,
                "maxrss_kb": usage.ru_maxrss,
                "tree_kb": tree_kb,
            }
        )
    )


# -- the parent -----------------------------------------------------------------------------------


def flannel_bot() -> str:
    beside = Path(sys.executable).parent / "flannel-bot"
    found = str(beside) if beside.exists() else shutil.which("flannel-bot")
    if found is None:
        raise SystemExit("flannel-bot is not installed (pip install -e .)")
    return found


def run_step(step: str, dump: Path, work: Path, before: Path | None = None) -> dict[str, Any]:
    """Measure one step on one dump in fresh processes; its own report plus wall time and RSS."""
    out = work / f"{dump.name}-{step}.out"
    env = dict(os.environ)
    if step == "command":
        env = {k: v for k, v in env.items() if not k.startswith("FLANNEL_BOT_")}
        cmd = [flannel_bot(), "--db", str(work / f"{dump.name}.db"), "--user", "bench"]
        cmd += ["diagnose", "--dump", str(dump), "--json"]
    else:
        cmd = [sys.executable, str(HERE), "--step", step, str(dump)]
        if step == "before":
            assert before is not None
            env["PYTHONPATH"] = str(before)
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
    return {
        **report,
        "maxrss_kb": usage["tree_kb"],
        "largest_kb": usage["maxrss_kb"],
        "cpu": usage["cpu"],
    }


def checkout(rev: str, into: Path) -> Path:
    """The source of commit `rev` (git archive), importable as flannel_bot from the result."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", rev],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def counts(findings: list[dict[str, Any]]) -> Counter[str]:
    return Counter(f["id"] for f in findings)


def mb(kb: float) -> str:
    return f"{kb / 1024:7.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="500,1000", help="node counts, comma-separated")
    parser.add_argument("--pods-per-node", type=int, default=30)
    parser.add_argument("--api-only", type=int, default=0, metavar="N", help="nodes, no probes")
    parser.add_argument("--before", metavar="REV", help="also diagnose with this commit's code")
    parser.add_argument("--before-max", type=int, default=500, metavar="NODES")
    parser.add_argument("--command", action="store_true", help="also time the CLI")
    parser.add_argument(
        "--whole-max", type=int, default=10**6, metavar="NODES", help="tables whole up to this"
    )
    parser.add_argument("--keep", type=Path, help="write the dumps here and leave them")
    args = parser.parse_args()

    sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        if any(args.keep.iterdir()):
            raise SystemExit(f"--keep {args.keep}: give a new or empty directory")
        base = args.keep
    else:
        base = Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-scale-"))
    work = Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-scale-work-"))
    before = checkout(args.before, work / "before") if args.before else None
    runs: list[tuple[Dump, str, dict[str, dict[str, Any]]]] = []
    plan = [(n, True) for n in sizes] + ([(args.api_only, False)] if args.api_only else [])
    try:
        for nodes, probes in plan:
            start = time.perf_counter()
            name = f"{nodes}-nodes" + ("" if probes else "-api-only")
            dump = write_dump(base / name, nodes, nodes * args.pods_per_node, probes=probes)
            written = time.perf_counter() - start
            label = "all probed" if probes else "API only"
            print(
                f"wrote {nodes} nodes ({label}), {dump.pods} pods, {dump.events} events, "
                f"{len(dump.faults)} broken nodes: {dump.bytes / 1e6:.0f} MB in {dump.files} "
                f"files ({written:.0f} s)",
                flush=True,
            )
            steps = ["reduced"] if not probes else ["reduced", "whole"]
            if probes and nodes > args.whole_max:
                steps.remove("whole")
            if probes and before is not None and nodes <= args.before_max:
                steps.insert(0, "before")
            if probes:
                steps.append("facts")
            if args.command:
                steps.append("command")
            measured = {}
            for step in steps:
                if step == "facts":  # the tables reduced where the bundle is written
                    took, written = write_facts(dump.path)
                    print(f"  peer-tables.json written for {written} nodes in {took:.1f} s")
                measured[step] = run_step(step, dump.path, work, before)
                print(
                    f"  {step:8} {measured[step]['seconds']:8.2f} s "
                    f"(CPU {measured[step]['cpu']:.1f} s) "
                    f"{mb(measured[step]['maxrss_kb'])} "
                    f"(largest process {mb(measured[step]['largest_kb']).strip()})",
                    flush=True,
                )
            runs.append((dump, label, measured))
            if not args.keep:
                shutil.rmtree(dump.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(runs, args.before)


def report(runs: list[tuple[Dump, str, dict[str, dict[str, Any]]]], rev: str | None) -> None:
    print()
    print(
        "diagnose --dump, each in its own process: time of the call (read + every rule), CPU "
        "time of its processes\n(user + system, imports and probe workers included), peak of "
        "their summed RSS"
    )
    heads = {
        "before": f"before ({rev})" if rev else "before",
        "whole": "tables whole",
        "reduced": "reduced, streamed",
        "facts": "peer-tables.json",
        "command": "CLI (peer-tables.json)",
    }
    shown = [m for m in MODES if any(m in r for _, _, r in runs)]
    width = 32
    print(
        f"  {'nodes':>6} {'pods':>7} {'':10} {'bundle':>8}  "
        + "".join(f"{heads[m]:>{width}}" for m in shown)
        + f"  {'whole/reduced':>20}"
    )
    print(
        f"  {'':36}"
        + "".join(f"{'time':>9} {'CPU':>9} {'peak RSS':>10}  " for _ in shown)
        + f"  {'time':>6} {'CPU':>6} {'RSS':>6}"
    )
    for dump, label, r in runs:
        cells = "".join(
            f"{r[m]['seconds']:7.1f} s {r[m]['cpu']:7.1f} s {mb(r[m]['maxrss_kb'])}  "
            if m in r
            else f"{'-':>{width}}"
            for m in shown
        )
        ratio = ""
        if "whole" in r:
            w, d = r["whole"], r["reduced"]
            ratio = (
                f"{w['seconds'] / d['seconds']:5.1f}x {w['cpu'] / d['cpu']:5.1f}x "
                f"{w['maxrss_kb'] / d['maxrss_kb']:5.1f}x"
            )
        print(
            f"  {dump.nodes:>6} {dump.pods:>7} {label:10} {dump.bytes / 1e6:6.0f} MB  "
            f"{cells}  {ratio:>20}"
        )
    problems = []
    for dump, label, r in runs:
        injected = Counter(dump.faults.values())
        print(
            f"\n{dump.nodes} nodes ({label}): injected "
            + ", ".join(f"{fault} on {n} nodes" for fault, n in sorted(injected.items()))
        )
        for step, result in r.items():
            if step != "command":
                held = (result["nodes"], result["pods"], result["probed"])
                want = (dump.nodes, dump.pods, dump.nodes if label == "all probed" else 0)
                if held != want:
                    problems.append(f"{dump.nodes} nodes, {step}: evidence holds {held}")
            gaps = [g for g in result["gaps"] if label == "all probed" or "probes/" not in g]
            problems += [f"{dump.nodes} nodes, {step}: gap: {g}" for g in gaps[:5]]
            found = result["findings"]
            print(
                f"  {step:8} found "
                + ", ".join(f"{i} {n}" for i, n in sorted(counts(found).items()))
            )
            wanted = EXPECTED if label == "all probed" else API_EXPECTED
            expected = check(found, dump.faults, wanted)
            problems += [f"{dump.nodes} nodes ({label}), {step}: {p}" for p in expected]
    if problems:
        print("\nFAILED: the findings do not match the injected faults:")
        for p in problems[:20]:
            print(f"  {p}")
        raise SystemExit(1)
    print("\nevery broken node was found with its expected findings, and nothing else")


if __name__ == "__main__":
    # the processes run_step starts: `--step MODE DIR` and `--measure OUT -- CMD...`
    if sys.argv[1:2] == ["--step"]:
        mode, path = sys.argv[2:4]
        print(json.dumps(step_diagnose(path, mode)))
    elif sys.argv[1:2] == ["--measure"] and sys.argv[3:4] == ["--"]:
        measure(Path(sys.argv[2]), sys.argv[4:])
    else:
        main()
