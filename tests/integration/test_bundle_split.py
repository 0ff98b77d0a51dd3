"""A large bundle's probes read by two worker processes give the evidence one reader gives: the
same probe outputs, the same reduced peer tables, the same gaps (a node marked unreachable, a
probe file missing, a node directory empty) and the same findings. The bundle is bench/_gen.py's
with 40 nodes; `split_from=1` splits it (by default only from 1,000 probed nodes)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.peer_tables import peers_wanted, wanted_digest
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.executors.bundle.limits import size
from flannel_bot.ports.probes import PROBES
from flannel_bot.process.bundle_split import SplitProbes
from flannel_bot.wiring import evidence_from_bundle, write_peer_facts
from tests.integration.test_diagnose_memory import generator

pytestmark = pytest.mark.integration

NODES = 40


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("split") / "bundle"
    generator().write_dump(root, NODES, NODES * 4)
    probes = root / "probes"
    (probes / "w3" / "UNREACHABLE").write_text("ssh: connect to host w3: No route to host\n")
    (probes / "w5" / "fdb.txt").unlink()
    for leftover in (probes / "w7").iterdir():
        leftover.unlink()
    return root


def seen(ev: Evidence) -> dict[str, Any]:
    return {
        "probes": ev.probes,
        "tables": {
            node: {p: (t.out, t.entries, t.missing) for p, t in tables.items()}
            for node, tables in ev.peer_tables.items()
        },
        "unreachable": ev.unreachable,
        "gaps": sorted(ev.gaps),
        "findings": diagnose(ev),
    }


@pytest.mark.parametrize("facts", [False, True])
def test_two_processes_read_the_probes_as_one_reader(
    bundle: Path, tmp_path: Path, facts: bool, caplog: pytest.LogCaptureFixture
) -> None:
    path = bundle
    if facts:  # some nodes with their reduced tables beside, some without
        path = tmp_path / "bundle"
        shutil.copytree(bundle, path)
        write_peer_facts(path)
        for node in ("w10", "w11"):
            (path / "probes" / node / "peer-tables.json").unlink()
    assert isinstance(SplitProbes.of(BundleReader(path), 1), SplitProbes)
    one = evidence_from_bundle(path, split_from=10**9)
    with caplog.at_level(logging.WARNING, logger="flannel_bot.process.bundle_split"):
        two = evidence_from_bundle(path, split_from=1)
    assert caplog.records == []  # the workers read it: no fall back to one reader
    assert one.peer_tables and "w3" in one.unreachable
    assert any("probes/w5/fdb.txt is missing" in g for g in one.gaps), one.gaps
    assert seen(two) == seen(one)


def test_the_workers_share_the_read_budget_and_say_so(bundle: Path) -> None:
    # what a reader reads before the probes: the lists, and the logs of flannel's namespaces
    lists = [*bundle.glob("*.json"), *bundle.glob("*/*.json")]
    logs = [f for ns in ("kube-flannel", "kube-system") for f in (bundle / ns).glob("*/*")]
    probes = sum(f.stat().st_size for f in (bundle / "probes").rglob("*") if f.is_file())
    total = sum(f.stat().st_size for f in lists + logs) + probes // 2
    limits = Limits(total_bytes=total)
    one = evidence_from_bundle(bundle, limits=limits, split_from=10**9)
    two = evidence_from_bundle(bundle, limits=limits, split_from=1)
    said = f"reach the bundle's {size(total)}"
    assert any(f"{said};" in g for g in one.gaps), one.gaps
    assert any(f"{said} (this reader's 1/2 of it)" in g for g in two.gaps), two.gaps


def test_a_read_begun_early_is_handed_back_only_for_what_it_read(bundle: Path) -> None:
    """`start` sets the workers reading every node's probes before the API objects are read;
    `run_each` hands that read back when asked for the same nodes, probes and peers, and
    otherwise drops it and reads what it is asked for."""
    facts = wanted_digest(peers_wanted(BundleReader(bundle).list_nodes()))
    argvs = [list(p.argv) for p in PROBES]
    every = {n.name: argvs for n in BundleReader(bundle).list_nodes()}
    some = {n: argvs for n in ("w1", "w3", "w12")}

    def read(commands: dict[str, list[list[str]]], early: bool) -> list[tuple[str, Any]]:
        split = SplitProbes(BundleReader(bundle, cache_probes=False))
        if early:
            split.start()
            begun = split._ahead.read() if split._ahead is not None else None
            assert begun is not None and begun.asked[0] == list(every)
        try:
            return [
                (node, out if isinstance(out, list) else str(out))
                for node, out in split.run_each(commands, None, facts)
            ]
        finally:
            split.close()

    assert read(every, early=True) == read(every, early=False)
    assert [n for n, _ in read(some, early=True)] == ["w1", "w3", "w12"]
    assert read(some, early=True) == read(some, early=False)
    left = SplitProbes(BundleReader(bundle))
    left.start()
    left.close()  # the caller failed before the probes: the workers are stopped
    assert left._ahead is None
