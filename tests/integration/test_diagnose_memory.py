"""Diagnosing a support bundle takes memory for its nodes, not for the size of their VXLAN peer
tables: a 200-node bundle whose nodes' route, neighbour and FDB tables hold 200 peers, and the
same 200 nodes in a cluster of 2,000 (each table 2,000 peers, ten times the text), give the same
findings, and the peak memory of `diagnose --dump` grows between them by no more than the 1,800
more Nodes cost (the same bundles without probes/) plus TABLES_BOUND_MB. With each node's tables
held whole to the end (the code before the reduction) it grew by about 200 MB more.

The bundles are written by bench/_gen.py (the scale bench's generator): the lab's real probe
outputs rewritten per node, every peer in every node's tables, three nodes broken. Peak memory is
the diagnosing child process's VmHWM (from /proc/self/status) less its VmRSS before it starts."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flannel_bot.lab import objects
from flannel_bot.lab.flannel import NET_CONF

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PROBED = 200
# beyond what the 1,800 more Nodes cost (measured on the same bundles without probes/), the peak
# may grow by this much: one node's tables while it is reduced (about 1 MB) and allocator slack;
# 200 nodes' tables of 2,000 peers held whole are about 110 MB of text
TABLES_BOUND_MB = 16
CHILD = """
import json, sys
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.wiring import evidence_from_bundle
before = status("VmRSS")
ev = evidence_from_bundle(sys.argv[1])
findings = diagnose(ev)
peak = status("VmHWM")
print(json.dumps({
    "growth_kb": peak - before,
    "probed": len(ev.probes),
    "findings": [[f.id, list(f.nodes), [e.text for e in f.evidence]] for f in findings],
}))
"""


def generator() -> ModuleType:
    name = "flannel_bot_bench_gen"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / "_gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_bundle(root: Path, peers: int) -> dict[str, str]:
    """A bundle of `peers` Nodes, the first PROBED of them probed (their tables hold every
    peer) and with their flannel pods (the API lists grow only by the other Nodes); returns
    the broken nodes and their faults."""
    gen = generator()
    cluster = gen.scale_nodes(peers)
    probed = cluster[:PROBED]
    faults: dict[str, str] = gen.choose_faults(probed)
    out = gen._Out(root)
    out.list("nodes.json", "NodeList", "v1", [gen.api_item(objects.node(n)) for n in cluster])
    seen: set[str] = set()
    pods = [
        gen.api_item(
            objects.flannel_pod(
                gen._SPEC, n, gen.unique_name(seen, "kube-flannel-ds", n.name), ready=True
            )
        )
        for n in probed
    ]
    ds = objects.flannel_daemonset(PROBED)
    ds["status"] = objects.daemonset_status(PROBED, PROBED)
    cm = objects.flannel_configmap()
    cm["data"]["net-conf.json"] = json.dumps({**NET_CONF, "Network": str(gen.NETWORK)})
    gen.namespace_files(out, "kube-flannel", pods=pods, daemonsets=[gen.api_item(ds)])
    out.list("kube-flannel/configmaps.json", "ConfigMapList", "v1", [gen.api_item(cm)])
    outputs = gen.ProbeOutputs(cluster)
    for n in probed:
        fault = faults.get(n.name)
        for pid, (stdout, rc, stderr) in outputs.node(n, 2, fault).items():
            out.text(f"probes/{n.name}/{pid}.txt", stdout)
            if stderr:
                out.text(f"probes/{n.name}/{pid}.err", stderr)
            if rc:
                out.text(f"probes/{n.name}/{pid}.exit", f"{rc}\n")
    return faults


def diagnosed(bundle: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundle)],
        capture_output=True,
        text=True,
        check=True,
        cwd=bundle.parent,  # not the checkout: flannel_bot is the installed one
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def on_probed(findings: list[list[Any]]) -> list[list[Any]]:
    """The findings about the probed nodes (and the cluster): the unprobed 1,800 are the API's."""
    probed = {f"w{i}" for i in range(1, PROBED + 1)}
    return [f for f in findings if not f[1] or set(f[1]) <= probed]


def test_peak_memory_does_not_grow_with_the_peer_tables(tmp_path: Path) -> None:
    faults = write_bundle(tmp_path / "small", PROBED)
    assert write_bundle(tmp_path / "large", 10 * PROBED) == faults
    for name in ("small", "large"):  # the same API objects without probes/
        shutil.copytree(tmp_path / name, tmp_path / f"{name}-api")
        shutil.rmtree(tmp_path / f"{name}-api" / "probes")
    small, large = diagnosed(tmp_path / "small"), diagnosed(tmp_path / "large")
    assert small["probed"] == large["probed"] == PROBED
    found = {node for f in small["findings"] for node in f[1]}
    assert set(faults) <= found, (faults, small["findings"])
    assert on_probed(large["findings"]) == small["findings"]
    api = (
        diagnosed(tmp_path / "large-api")["growth_kb"]
        - diagnosed(tmp_path / "small-api")["growth_kb"]
    )
    tables_mb = (large["growth_kb"] - small["growth_kb"] - api) / 1024
    assert tables_mb < TABLES_BOUND_MB, (
        f"peak memory grew by {tables_mb:.0f} MB more than the API lists' growth ({api / 1024:.0f} "
        f"MB) for tables ten times larger ({small['growth_kb'] / 1024:.0f} MB -> "
        f"{large['growth_kb'] / 1024:.0f} MB)"
    )
