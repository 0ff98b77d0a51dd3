"""Support bundles built to hurt their reader, read side by side in one run: what the reader did
with each, its time and its peak memory, beside a healthy bundle as the baseline.

Why: a bundle comes from someone else's machine (a customer, a ticket, a tarball), and
`diagnose --recording DIR` reads it on ours, inside the bot. This builds, from a copy of
`examples/dump`, one bundle per hostile shape: a link to a secret outside the bundle, a link to
/dev/zero, a FIFO, a sparse multi-gigabyte log, JSON nested 100,000 deep, and a million pods (once
as kubectl writes them, once as small as a pod can be). Each is read by `evidence_from_bundle`
and `diagnose` in its own process, so its peak RSS is its own, under a memory cap and a timeout: a
reader that does not bound itself ends as `MemoryError`, `killed` or `timeout` here instead of
taking the machine down.

Usage: python bench/bundle_hostile.py [--pods 1000000] [--sparse-gb 2] [--timeout 120]
                                      [--memory-gb 8] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dump"
FLANNEL_POD = "kube-flannel-ds-7mlpb"  # one of the example's flannel pods
SECRET = "root:$6$hostile-bundle-secret$:19000:0:99999:7:::"


# -- the bundles ----------------------------------------------------------------------------------


def healthy(root: Path, args: argparse.Namespace) -> str:
    return "examples/dump as it is"


def link_outside(root: Path, args: argparse.Namespace) -> str:
    secret = root.parent / f"{root.name}-shadow"
    secret.write_text(SECRET + "\n")
    for rel in ("probes/w1/cni-config.txt", f"kube-flannel/{FLANNEL_POD}/logs.txt"):
        (root / rel).unlink()
        (root / rel).symlink_to(secret)
    return "probes/w1/cni-config.txt and a logs.txt: links to a file outside the bundle"


def link_dev_zero(root: Path, args: argparse.Namespace) -> str:
    rel = root / "kube-flannel" / FLANNEL_POD / "logs.txt"
    rel.unlink()
    rel.symlink_to("/dev/zero")
    return "a logs.txt: a link to /dev/zero"


def fifo(root: Path, args: argparse.Namespace) -> str:
    (root / "kube-flannel" / "pods.json").unlink()
    os.mkfifo(root / "kube-flannel" / "pods.json")
    return "kube-flannel/pods.json: a FIFO nobody writes to"


def sparse_log(root: Path, args: argparse.Namespace) -> str:
    path = root / "kube-flannel" / FLANNEL_POD / "logs.txt"
    real = path.read_bytes()
    hole = args.sparse_gb * 1024**3
    with path.open("r+b") as f:
        f.truncate(hole)
        f.seek(hole)
        f.write(real)  # the real log after the hole: a bounded reader still finds it
    return f"a logs.txt: {args.sparse_gb} GB sparse (a hole, then the real log)"


def deep_json(root: Path, args: argparse.Namespace) -> str:
    depth = 100_000
    path = root / "kube-system" / "configmaps.json"
    path.write_text('{"kind": "List", "items": [' + "[" * depth + "]" * depth + "]}")
    return f"kube-system/configmaps.json: {depth:,} arrays deep"


def _write_pods(path: Path, count: int, pod: Callable[[int], dict[str, Any]]) -> None:
    with path.open("w") as out:
        out.write('{"kind": "PodList", "apiVersion": "v1", "items": [\n')
        for i in range(count):
            out.write(("," if i else "") + json.dumps(pod(i), separators=(",", ":")) + "\n")
        out.write("]}\n")


def many_pods(root: Path, args: argparse.Namespace) -> str:
    from flannel_bot.lab import objects
    from flannel_bot.lab.topology import LabSpec

    nodes = LabSpec().all_nodes()

    def pod(i: int) -> dict[str, Any]:
        raw = objects.workload_pod(nodes[i % len(nodes)], 2 + i % 250)
        raw["metadata"]["name"] = f"web-{i}"
        return raw

    _write_pods(root / "default" / "pods.json", args.pods, pod)
    size = (root / "default" / "pods.json").stat().st_size
    return f"default/pods.json: {args.pods:,} pods as kubectl writes them ({size >> 20} MB)"


def many_small_pods(root: Path, args: argparse.Namespace) -> str:
    def pod(i: int) -> dict[str, Any]:
        return {"metadata": {"name": f"p{i}", "namespace": "default"}, "spec": {"nodeName": "w1"}}

    _write_pods(root / "default" / "pods.json", args.pods, pod)
    size = (root / "default" / "pods.json").stat().st_size
    return f"default/pods.json: {args.pods:,} pods of two fields each ({size >> 20} MB)"


CASES: dict[str, Callable[[Path, argparse.Namespace], str]] = {
    "healthy": healthy,
    "link-outside": link_outside,
    "link-dev-zero": link_dev_zero,
    "fifo": fifo,
    "sparse-log": sparse_log,
    "deep-json": deep_json,
    "pods-1m": many_pods,
    "pods-1m-small": many_small_pods,
}


# -- one read, in its own process -----------------------------------------------------------------


def read(path: str) -> None:
    """The child: read the bundle as `diagnose --recording` does and say what came of it."""
    from flannel_bot.diagnosis.rules import diagnose
    from flannel_bot.wiring import evidence_from_bundle

    start = time.perf_counter()
    try:
        ev = evidence_from_bundle(path)
        findings = diagnose(ev)
    except BaseException as exc:  # the point is to see how a reader fails
        print(json.dumps({"outcome": type(exc).__name__, "seconds": time.perf_counter() - start}))
        return
    seconds = time.perf_counter() - start
    said = [g for g in ev.gaps if "refused" in g or "only its last" in g or "was cut after" in g]
    print(
        json.dumps(
            {
                "outcome": "answered",
                "seconds": seconds,
                "pods": len(ev.pods),
                "findings": [f.id for f in findings],
                "secret_seen": "hostile-bundle-secret" in repr(ev) + repr(findings),
                "said": said,
                "gaps": len(ev.gaps),
            }
        )
    )


def run_case(path: Path, timeout: float, memory: int) -> dict[str, Any]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--read", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=cap,
    )
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() - start > timeout:
            child.kill()
            pid, status, usage = os.wait4(child.pid, 0)
            return {"outcome": f"timeout ({timeout:.0f} s)", "seconds": timeout, "rss": usage}
        time.sleep(0.05)
    child.returncode = 0  # reaped by wait4: Popen must not wait for it again
    assert child.stdout is not None
    out = child.stdout.read().decode().strip()
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        report: dict[str, Any] = {"outcome": f"killed ({name})"}
    else:
        report = json.loads(out.splitlines()[-1]) if out else {"outcome": "no report"}
    report.setdefault("seconds", time.perf_counter() - start)
    report["rss"] = usage
    return report


def describe(report: dict[str, Any]) -> str:
    if report["outcome"] != "answered":
        return report["outcome"]
    said = report["said"]
    text = said[0] if said else f"{len(report['findings'])} findings, {report['gaps']} gaps"
    if report["secret_seen"]:
        text = "SECRET QUOTED; " + text
    return text[:150] + ("…" if len(text) > 150 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=1_000_000)
    parser.add_argument("--sparse-gb", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--memory-gb", type=float, default=8.0)
    parser.add_argument("--keep", type=Path, help="build the bundles here and keep them")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="only these cases")
    parser.add_argument("--read", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read(args.read)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="bundle-hostile-"))
    work.mkdir(parents=True, exist_ok=True)
    import flannel_bot

    print(f"reader: {Path(flannel_bot.__file__).parent}; memory cap {args.memory_gb:g} GB")
    print(f"{'case':<15} {'time':>8} {'peak RSS':>9}  what the reader did")
    try:
        for name, build in CASES.items():
            if args.only and name not in args.only:
                continue
            root = work / name
            shutil.copytree(EXAMPLE, root, symlinks=True)
            what = build(root, args)
            report = run_case(root, args.timeout, int(args.memory_gb * 1024**3))
            rss = report["rss"].ru_maxrss / 1024
            print(f"{name:<15} {report['seconds']:>7.2f}s {rss:>6.0f} MB  {describe(report)}")
            print(f"{'':<15} {'':>8} {'':>9}  ({what})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
