"""`diagnose --dump` of an API-only support bundle at cluster scale, beside an earlier commit's.

An API-only bundle holds what `diagnose --dump` writes without node access: the Kubernetes
objects (nodes, pods, DaemonSets, ConfigMaps, events, RBAC) and the flannel and kube-proxy logs,
no probes/ directory (bench/_gen.py with probes=False; about 1% of the nodes broken). Two
bundles are written, one of `--nodes` nodes and `--pods` pods and one a tenth of that, and on
each two steps are measured, each in a fresh process so that its peak memory is its own:

  evidence   evidence_from_bundle(DIR), then diagnose(evidence) (each timed in the process)
  command    `flannel-bot diagnose --dump DIR --json` (timed: the whole process)

With `--before REV` each step also runs on the code of REV (a `git worktree` of it in a
temporary directory, first on PYTHONPATH), on the same bundle in the same run, so the figures
are side by side; a step of REV that runs past `--before-timeout` seconds is stopped and shown
as more than that. Peak RSS is ru_maxrss of a wrapper process whose only child is the step.

The findings must name exactly the broken nodes with what their fault shows from the API alone
(API_EXPECTED), on this code and on REV's, or the run fails.

Usage: python bench/diagnose_api.py [--nodes 5000] [--pods 150000] [--before REV]
       [--before-timeout 600] [--keep DIR]
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

from _gen import API_EXPECTED, Dump, check, write_dump

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


def step_evidence(path: str) -> dict[str, Any]:
    import flannel_bot
    from flannel_bot.diagnosis.rules import diagnose
    from flannel_bot.wiring import evidence_from_bundle

    start = time.perf_counter()
    ev = evidence_from_bundle(path)
    loaded = time.perf_counter()
    findings = diagnose(ev)
    done = time.perf_counter()
    return {
        "seconds": done - start,
        "load": loaded - start,
        "diagnose": done - loaded,
        "code": str(Path(flannel_bot.__file__).resolve().parents[1]),
        "nodes": len(ev.nodes),
        "pods": len(ev.pods),
        "findings": [{"id": f.id, "nodes": list(f.nodes)} for f in findings],
    }


def measure(out: Path, timeout: float, cmd: list[str]) -> None:
    """Run `cmd` as this process's only child, its stdout to `out`; print wall time, peak RSS."""
    with out.open("wb") as sink:
        start = time.perf_counter()
        try:
            rc = subprocess.run(cmd, stdout=sink, check=False, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"rc": rc, "wall": wall, "maxrss_kb": peak}))


def flannel_bot() -> str:
    beside = Path(sys.executable).parent / "flannel-bot"
    found = str(beside) if beside.exists() else shutil.which("flannel-bot")
    if found is None:
        raise SystemExit("flannel-bot is not installed (pip install -e .)")
    return found


def run_step(
    step: str, dump: Path, work: Path, code: Path | None, timeout: float
) -> dict[str, Any]:
    """One step on one dump in fresh processes, on this checkout (code None) or on `code`."""
    out = work / f"{dump.name}-{step}.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")}
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(code), str(HERE.parent)])
    if step == "command":
        cmd = [flannel_bot(), "--db", str(work / f"{dump.name}.db"), "--user", "bench"]
        cmd += ["diagnose", "--dump", str(dump), "--json"]
    else:
        cmd = [sys.executable, str(HERE), "--step", step, str(dump)]
    wrapper = [sys.executable, str(HERE), "--measure", str(out), str(timeout), "--", *cmd]
    done = subprocess.run(wrapper, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"{step} on {dump}: wrapper failed: {done.stderr.strip()[-2000:]}")
    usage = json.loads(done.stdout.strip().splitlines()[-1])
    if usage["rc"] == -1:
        out.unlink()
        return {"seconds": usage["wall"], "maxrss_kb": usage["maxrss_kb"], "stopped": True}
    if usage["rc"] != 0:
        raise SystemExit(f"{step} on {dump} exited {usage['rc']}: {done.stderr.strip()[-2000:]}")
    report = json.loads(out.read_text())
    out.unlink()
    if step == "command":
        report = {"seconds": usage["wall"], "findings": report["findings"]}
    return {**report, "maxrss_kb": usage["maxrss_kb"], "stopped": False}


def worktree(rev: str, into: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), rev],
        check=True,
        capture_output=True,
    )
    return into


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150000)
    parser.add_argument("--before", help="a commit to measure beside this checkout")
    parser.add_argument("--before-timeout", type=float, default=600.0)
    parser.add_argument("--keep", type=Path, help="write the dumps here and leave them")
    args = parser.parse_args()

    base = args.keep or Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-api-"))
    base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="flannel-bot-diagnose-api-work-"))
    before = worktree(args.before, work / "before") if args.before else None
    sides = {"now": None, **({f"before {args.before}": before} if before else {})}
    rows: list[tuple[Dump, dict[str, dict[str, dict[str, Any]]]]] = []
    try:
        for nodes, pods in ((args.nodes // 10, args.pods // 10), (args.nodes, args.pods)):
            path = base / f"{nodes}-nodes-api"
            start = time.perf_counter()
            dump = write_dump(path, nodes, pods, probes=False)
            print(
                f"wrote {nodes} nodes, {dump.pods} pods, {dump.events} events, "
                f"{len(dump.faults)} broken nodes, no probes: {dump.bytes / 1e6:.0f} MB in "
                f"{dump.files} files ({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            measured: dict[str, dict[str, dict[str, Any]]] = {}
            for side, code in sides.items():
                measured[side] = {}
                for step in ("evidence", "command"):
                    timeout = args.before_timeout if code else 24 * 3600.0
                    r = measured[side][step] = run_step(step, dump.path, work, code, timeout)
                    if "code" in r and r["code"] != str((code or REPO).resolve()):
                        raise SystemExit(f"{side} ran the code in {r['code']}, not {code or REPO}")
                    shown = f"> {r['seconds']:.0f} s (stopped)" if r["stopped"] else ""
                    print(
                        f"  {side:20} {step:9} {shown or format(r['seconds'], '8.2f') + ' s'} "
                        f"{r['maxrss_kb'] / 1024:7.0f} MB",
                        flush=True,
                    )
            rows.append((dump, measured))
            if not args.keep:
                shutil.rmtree(dump.path)
    finally:
        if before is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)],
                check=False,
                capture_output=True,
            )
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    report(rows, list(sides))


def cell(r: dict[str, Any], key: str = "seconds") -> str:
    if r.get("stopped"):
        return f"> {r['seconds']:6.0f} s"
    return f"{r[key]:8.2f} s"


def report(rows: list[tuple[Dump, dict[str, dict[str, dict[str, Any]]]]], sides: list[str]) -> None:
    print()
    print(f"  {'bundle':28} {'side':20} {'step':40} {'time':>10} {'peak RSS':>9}")
    problems = []
    for dump, measured in rows:
        what = f"{dump.nodes} nodes / {dump.pods} pods"
        for side in sides:
            ev, cmd = measured[side]["evidence"], measured[side]["command"]
            lines = [
                ("evidence_from_bundle()", ev, "load"),
                ("diagnose(evidence)", ev, "diagnose"),
                ("flannel-bot diagnose --dump --json", cmd, "seconds"),
            ]
            for label, r, key in lines:
                rss = f"{r['maxrss_kb'] / 1024:6.0f} MB" if key != "diagnose" else ""
                print(f"  {what:28} {side:20} {label:40} {cell(r, key)} {rss:>9}")
            for step, r in (("evidence", ev), ("command", cmd)):
                if not r["stopped"]:
                    wrong = check(r["findings"], dump.faults, API_EXPECTED)
                    problems += [f"{what}, {side}, {step}: {p}" for p in wrong]
        now, *others = sides
        for other in others:
            a, b = measured[other]["command"], measured[now]["command"]
            more = ">" if a["stopped"] else ""
            print(
                f"  {what:28} {'ratio':20} {'command, ' + other + ' / now':40} "
                f"{more}{a['seconds'] / b['seconds']:8.1f}x {a['maxrss_kb'] / b['maxrss_kb']:7.1f}x"
            )
        found = Counter(f["id"] for f in measured[now]["command"]["findings"])
        print(f"  findings: {', '.join(f'{i} {n}' for i, n in sorted(found.items()))}")
    if problems:
        print("\nFAILED: the findings do not match the injected faults:")
        for p in problems[:20]:
            print(f"  {p}")
        raise SystemExit(1)
    print("\nevery broken node was found with what the API shows of its fault, and nothing else")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--step"]:
        print(json.dumps(step_evidence(sys.argv[3])))
    elif sys.argv[1:2] == ["--measure"] and sys.argv[4:5] == ["--"]:
        measure(Path(sys.argv[2]), float(sys.argv[3]), sys.argv[5:])
    else:
        main()
