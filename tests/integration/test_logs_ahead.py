"""A large bundle's pod logs read and scanned by a second process (`logs_ahead`) give the evidence
one reader gives: the same logs in the same order, the same gaps in the same order (a previous
log missing, a log missing, a log cut off), the same sightings and findings. Where the worker
cannot have read what `collect` asks for (a kube-proxy pod outside flannel's namespaces), or
its reading does not fit the budget, the logs are read here, as by one reader. The bundle is
bench/_gen.py's, API objects only, with 40 nodes; `logs_from=0` reads the logs ahead (by
default only from 1,000 nodes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.ports.store import Requester
from flannel_bot.process import logs_ahead
from flannel_bot.settings import load_settings
from flannel_bot.wiring import build_app, evidence_from_bundle
from tests.integration.test_diagnose_memory import generator

pytestmark = pytest.mark.integration

NODES = 40
ALONE = 10**9  # logs_from that never reads them ahead


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ahead") / "bundle"
    generator().write_dump(root, NODES, NODES * 4, probes=False, share=0.2)
    previous = sorted(root.glob("kube-flannel/*/logs-kube-flannel-previous.txt"))
    assert len(previous) >= 2, "the bundle should hold crash-looping flannel pods"
    previous[0].unlink()  # restarted, its previous log missing: a gap
    proxies = sorted(root.glob("kube-system/kube-proxy-*/logs.txt"))
    proxies[0].unlink()  # a log missing: a gap
    flannel = sorted(root.glob("kube-flannel/*/logs.txt"))
    text = flannel[1].read_text()
    flannel[1].write_text(text[: text.index("==== END")])  # cut off: a gap
    return root


def seen(ev: Evidence) -> dict[str, Any]:
    return {
        "logs": list(ev.logs.items()),  # the order they were read in, too
        "gaps": ev.gaps,
        "sightings": ev.sightings(),
        "findings": diagnose(ev),
    }


def test_logs_read_ahead_give_the_evidence_of_one_reader(bundle: Path) -> None:
    alone = evidence_from_bundle(bundle, logs_from=ALONE)
    ahead = evidence_from_bundle(bundle, logs_from=0)
    assert alone.log_scans == {}
    assert set(ahead.log_scans) == set(ahead.logs)  # every log was read and scanned ahead
    assert seen(ahead) == seen(alone)
    gaps = " ".join(alone.gaps)
    assert "is missing" in gaps and "is cut off" in gaps and "restarted" in gaps
    assert {s.finding for s in alone.sightings()} >= {"br-netfilter-missing"}


def test_a_log_the_worker_could_not_know_of_is_read_here(bundle: Path, tmp_path: Path) -> None:
    """A kube-proxy pod in another namespace (its label makes it one): the worker, reading only
    flannel's namespaces, asked for other logs than `collect` does, so all are read here."""
    path = tmp_path / "bundle"
    shutil.copytree(bundle, path)
    proxy = next(p for p in _pods(path, "kube-system") if p["metadata"]["name"].startswith("kube-"))
    stray = json.loads(json.dumps(proxy))
    stray["metadata"].update(namespace="default", name="kube-proxy-elsewhere", uid="u-elsewhere")
    default = _pods(path, "default")
    _write_pods(path, "default", [*default, stray])
    (path / "default" / "kube-proxy-elsewhere").mkdir()
    shutil.copy(
        next((path / "kube-system").glob("kube-proxy-*/logs.txt")),
        path / "default" / "kube-proxy-elsewhere" / "logs.txt",
    )
    alone = evidence_from_bundle(path, logs_from=ALONE)
    ahead = evidence_from_bundle(path, logs_from=0)
    assert ahead.log_scans == {}
    assert seen(ahead) == seen(alone)


def test_logs_whose_reading_would_pass_the_budget_are_read_here(
    bundle: Path, tmp_path: Path
) -> None:
    """The bundle's byte budget ends halfway through the logs: a single reader refuses the
    rest; the worker, with a budget of its own, read them all, so its reading is not taken."""
    files = [p for p in bundle.rglob("*") if p.is_file()]
    logs = sum(p.stat().st_size for p in files if p.name.startswith("logs"))
    rest = sum(p.stat().st_size for p in files if not p.name.startswith("logs"))
    limits = Limits(total_bytes=rest + logs // 2)
    alone = evidence_from_bundle(bundle, limits=limits, logs_from=ALONE)
    ahead = evidence_from_bundle(bundle, limits=limits, logs_from=0)
    assert any("were refused" in g for g in alone.gaps), alone.gaps
    assert ahead.log_scans == {}
    assert seen(ahead) == seen(alone)


def _pods(path: Path, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads((path / namespace / "pods.json").read_text())["items"]
    return items


def _write_pods(path: Path, namespace: str, items: list[dict[str, Any]]) -> None:
    document = json.loads((path / namespace / "pods.json").read_text())
    document["items"] = items
    (path / namespace / "pods.json").write_text(json.dumps(document))


def test_diagnose_of_a_bundle_reads_its_logs_ahead_and_answers_as_without(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`flannel-bot diagnose --dump` as the service runs it: the bundle's cluster comes with
    `logs_ahead` wired to its reader; with the threshold at 0 nodes its logs are read ahead
    (the reader itself read none), and the reply is the one without."""
    replies = []
    for from_nodes in (ALONE, 0):
        monkeypatch.setattr(logs_ahead, "LOGS_FROM", from_nodes)
        settings = load_settings(
            env={"HOME": str(tmp_path)},
            overrides={"db": str(tmp_path / f"{from_nodes}.db"), "recording": str(bundle)},
        )
        app = build_app(settings)
        reply = app.service.handle(["diagnose"], Requester("sre", {"adapter": "test"}))
        assert reply.ok, reply.data
        reader = app.clusters.get().reader
        assert isinstance(reader, BundleReader) and app.clusters.get().logs_ahead is not None
        assert reader.logs_read == (from_nodes == ALONE)
        replies.append(reply.data)
    assert replies[0] == replies[1]
