"""A support bundle may carry each node's VXLAN peer tables reduced where it was written
(`probes/<node>/peer-tables.json`, by `flannel-bot collect`): read back, they give exactly the
findings the tables give, the tables themselves are not needed, and a document that does not
describe this bundle's tables (other Node annotations, an edited table, a hand-made or hostile
file) is not used: the tables are read, and a gap says why.

The bundles are written by bench/_gen.py (the scale bench's generator) with 40 nodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.executors.bundle.layout import PEER_FACTS
from flannel_bot.wiring import evidence_from_bundle, write_peer_facts
from tests.integration.test_diagnose_memory import generator

pytestmark = pytest.mark.integration

NODES = 40
TABLES = ("ip-route", "ip-neigh", "fdb")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("facts") / "bundle"
    generator().write_dump(root, NODES, NODES * 4)
    drop_route(root, "w5", "w9")  # w5 lost its route to w9's pods: vxlan-peer-missing on w5
    return root


@pytest.fixture
def bundle(original: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(original, copy)
    return copy


def drop_route(root: Path, node: str, peer: str) -> None:
    """Remove from `node`'s route table the route to `peer`'s podCIDR."""
    nodes = json.loads((root / "nodes.json").read_text())["items"]
    cidr = next(n["spec"]["podCIDR"] for n in nodes if n["metadata"]["name"] == peer)
    path = root / "probes" / node / "ip-route.txt"
    routes = [r for r in json.loads(path.read_text()) if r.get("dst") != cidr]
    path.write_text(json.dumps(routes, separators=(",", ":")) + "\n")


def findings(root: Path) -> tuple[list[Any], list[str]]:
    ev = evidence_from_bundle(root)
    found = [[f.id, list(f.nodes), [e.text for e in f.evidence]] for f in diagnose(ev)]
    return found, ev.gaps


def facts_of(root: Path, node: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "probes" / node / PEER_FACTS).read_text())
    return doc


def test_reduced_tables_give_the_findings_of_the_tables(bundle: Path) -> None:
    whole, gaps = findings(bundle)
    assert "vxlan-peer-missing" in {f[0] for f in whole if f[1] == ["w5"]}
    assert write_peer_facts(bundle) == NODES
    assert facts_of(bundle, "w5")["tables"]["ip-route"]["missing"] != []
    assert findings(bundle) == (whole, gaps)


def test_the_tables_are_not_needed_once_reduced(bundle: Path) -> None:
    whole = findings(bundle)
    write_peer_facts(bundle)
    for node in (bundle / "probes").iterdir():
        for table in TABLES:
            (node / f"{table}.txt").unlink()
    assert findings(bundle) == whole


def test_other_node_annotations_are_not_read_with_facts_reduced_against_the_old(
    bundle: Path,
) -> None:
    write_peer_facts(bundle)
    nodes_json = bundle / "nodes.json"
    doc = json.loads(nodes_json.read_text())
    node = next(n for n in doc["items"] if n["metadata"]["name"] == "w9")
    node["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"] = json.dumps(
        {"VNI": 1, "VtepMAC": "0a:fb:99:99:99:99"}
    )
    nodes_json.write_text(json.dumps(doc))
    found, gaps = findings(bundle)
    for facts in (bundle / "probes").glob(f"*/{PEER_FACTS}"):
        facts.unlink()
    assert (found, []) == (findings(bundle)[0], findings(bundle)[1])
    why = f"probes/w1/{PEER_FACTS} was not used (it was reduced against other Node annotations"
    assert any(why in g for g in gaps), gaps


def test_a_table_edited_after_its_reduction_is_read_itself(bundle: Path) -> None:
    write_peer_facts(bundle)
    drop_route(bundle, "w7", "w3")  # after the facts were written
    found, gaps = findings(bundle)
    assert ["w7"] in [f[1] for f in found if f[0] == "vxlan-peer-missing"]
    why = f"probes/w7/{PEER_FACTS} was not used (ip-route.txt is not the table it was reduced"
    assert any(why in g for g in gaps), gaps
    (bundle / "probes" / "w7" / PEER_FACTS).unlink()
    assert findings(bundle) == (found, [g for g in gaps if "probes/w7/" not in g])


def _edit(doc: dict[str, Any], how: str) -> str:
    route = doc["tables"]["ip-route"]
    if how == "not-json":
        return "{not json"
    if how == "version":
        doc["version"] = 2
    elif how == "types":
        route["entries"] = "2002"
    elif how == "missing-not-a-list":
        route["missing"] = "10.128.1.0/24"
    elif how == "unknown-table":
        doc["tables"]["ip-rule"] = route
    elif how == "key-of-no-peer":  # the document is well formed; its keys are no node's
        route["missing"] = ["10.99.0.0/24"]
    elif how == "nested-key":
        doc["tables"]["fdb"]["missing"] = [[["a"], "b"]]
    elif how == "kept-not-a-table":
        route["kept"] = "default via 172.20.0.1 dev eth0"
    return json.dumps(doc)


@pytest.mark.parametrize(
    "how",
    [
        "not-json",
        "version",
        "types",
        "missing-not-a-list",
        "unknown-table",
        "key-of-no-peer",
        "nested-key",
        "kept-not-a-table",
    ],
)
def test_a_facts_document_that_does_not_hold_is_not_used(bundle: Path, how: str) -> None:
    whole, _ = findings(bundle)
    write_peer_facts(bundle)
    path = bundle / "probes" / "w5" / PEER_FACTS
    path.write_text(_edit(json.loads(path.read_text()), how))
    found, gaps = findings(bundle)
    assert found == whole
    assert all("probes/w5/" not in g for g in gaps) or any(
        f"probes/w5/{PEER_FACTS}" in g and "the node's peer tables were read instead" in g
        for g in gaps
    ), gaps
