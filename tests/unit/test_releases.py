"""Known defects of flannel releases: named only when the node runs a release that carries the
defect and meets its condition; never for the release that fixed it or a node it cannot bite."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.releases import flannel_release, parse_version
from flannel_bot.diagnosis.rules import diagnose
from tests.unit.test_rules import healthy, set_probe


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("iptables v1.4.21", (1, 4, 21)),
        ("iptables v1.8.7 (nf_tables)", (1, 8, 7)),
        ("v0.21.1", (0, 21, 1)),
        ("v0.11.0-amd64", (0, 11, 0)),
        ("no version here", None),
    ],
)
def test_versions_are_read_as_numbers_not_text(
    text: str, version: tuple[int, int, int] | None
) -> None:
    assert parse_version(text) == version


def with_flannel_image(ev: Evidence, image: str) -> None:
    ev.pods = [
        replace(p, containers=tuple(replace(c, image=image) for c in p.containers))
        if p.labels.get("app") == "flannel"
        else p
        for p in ev.pods
    ]
    ev.daemonsets = [replace(d, images={}) for d in ev.daemonsets]


def as_embedded_k3s(ev: Evidence, version: str) -> None:
    ev.nodes = [replace(n, kubelet_version=version) for n in ev.nodes]
    ev.pods = [p for p in ev.pods if p.labels.get("app") != "flannel"]
    ev.daemonsets = []


def bugs(ev: Evidence) -> list[str]:
    return [", ".join(f.nodes) for f in diagnose(ev) if f.id == "flannel-bug"]


def test_the_release_is_read_from_the_flanneld_image_not_the_cni_plugin_image() -> None:
    ev = healthy()
    node = ev.nodes[0].name
    release = flannel_release(ev, node)
    assert release is not None and release.text == "v0.26.1"
    with_flannel_image(ev, "quay.io/coreos/flannel:v0.11.0-amd64")
    release = flannel_release(ev, node)
    assert release is not None and release.version == (0, 11, 0)
    assert "image" in release.where


def test_embedded_k3s_takes_the_flannel_release_of_its_k3s_release() -> None:
    ev = healthy()
    as_embedded_k3s(ev, "v1.26.2+k3s1")
    release = flannel_release(ev, ev.nodes[0].name)
    assert release is not None and release.text == "v0.21.1"
    as_embedded_k3s(ev, "v1.30.4+k3s1")  # a release the table does not know: nothing guessed
    assert flannel_release(ev, ev.nodes[0].name) is None


@pytest.mark.parametrize(
    ("image", "iptables", "named"),
    [
        ("docker.io/flannel/flannel:v0.21.2", "iptables v1.4.21", True),
        ("docker.io/flannel/flannel:v0.21.4", "iptables v1.4.21", False),  # the fix
        ("docker.io/flannel/flannel:v0.20.2", "iptables v1.4.21", False),  # before the defect
        ("docker.io/flannel/flannel:v0.21.2", "iptables v1.6.2 (legacy)", False),  # can't bite
    ],
)
def test_the_random_fully_defect_needs_both_the_release_and_an_old_iptables(
    image: str, iptables: str, named: bool
) -> None:
    ev = healthy()
    node = ev.nodes[1].name
    with_flannel_image(ev, image)
    set_probe(ev, node, "iptables-version", iptables + "\n")
    assert bugs(ev) == ([node] if named else [])


def test_on_embedded_k3s_the_defect_is_named_first_with_the_release_and_the_fix() -> None:
    ev = healthy()
    as_embedded_k3s(ev, "v1.25.7+k3s1")
    node = ev.nodes[0].name
    set_probe(ev, node, "iptables-version", "iptables v1.4.21\n")
    findings = diagnose(ev)
    first = findings[0]
    assert first.id == "flannel-bug" and first.nodes == (node,)
    quoted = " ".join(line.text for line in first.evidence)
    assert "v0.21.1" in quoted and "v1.4.21" in quoted
    assert "v1.25.8+k3s1" in first.fix.manual and first.fix.runbook is None
