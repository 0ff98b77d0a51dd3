"""Which flannel release a node runs, and the known defects of releases still in use.

Some incidents print nothing that names their cause: flannel of one release fails quietly under a
condition of the node (k3s v1.26.2's flannel left its masquerade chain empty on iptables 1.4).
What names them is upstream knowledge: the releases that carry a defect (the tags that hold the
faulty code and the tag of the fix), and what on a node makes it bite. Each defect here cites the
fix's commit and thread; `flannel-bug` reports one only when both the release and the condition
are seen.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine

Version = tuple[int, int, int]

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
# k3s embeds flannel: the flannel release of the k3s patch releases a defect concerns. Source:
# k3s-io/k3s PRs #6944 (master, 1.26), #6915 (1.25), #6925 (1.24) moved to flannel v0.21.1 in
# February 2023; PRs #7136/#7138 moved to v0.21.4 for the next patch releases.
K3S_FLANNEL = {
    "v1.26.2+k3s1": "v0.21.1",
    "v1.25.7+k3s1": "v0.21.1",
    "v1.24.11+k3s1": "v0.21.1",
    "v1.26.3+k3s1": "v0.21.4",
    "v1.25.8+k3s1": "v0.21.4",
    "v1.24.12+k3s1": "v0.21.4",
}


def parse_version(text: str) -> Version | None:
    """(1, 6, 2) from "v1.6.2", "iptables v1.4.21", "flannel:v0.21.1-amd64"; None if none."""
    m = _VERSION.search(text)
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


@dataclass(frozen=True)
class Release:
    version: Version
    text: str  # as read: "v0.21.1"
    where: str  # the evidence it was read from


def _image_tag(image: str) -> str:
    """The tag of a flanneld image (`docker.io/flannel/flannel:v0.21.1`, `quay.io/coreos/
    flannel:v0.11.0-amd64`, `rancher/mirrored-flannelcni-flannel:v0.21.1`); "" for the CNI
    plugin's image (`flannel-cni-plugin:v1.1.2`), whose numbers are not flannel's."""
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name.split("/")[-1].endswith("flannel"):
        return ""
    return tag


def _tagged(image: str) -> tuple[str, Version] | None:
    tag = _image_tag(image)
    version = parse_version(tag) if tag else None
    return (tag, version) if version else None


def flannel_releases(ev: Evidence) -> dict[str, Release]:
    """Node -> the flannel release it runs: its flannel pod's image, else the DaemonSet's, else
    the k3s release it is embedded in; nodes nothing speaks for are left out. One pass over the
    pods, so it costs what the cluster holds, not nodes times pods."""
    by_pod: dict[str, Release] = {}
    for pod in ev.flannel_pods():
        for c in pod.containers:
            tagged = _tagged(c.image)
            if tagged and pod.node not in by_pod:
                where = f"API: pod {pod.namespace}/{pod.name} image"
                by_pod[pod.node] = Release(tagged[1], tagged[0], where)
    shipped = next(
        (
            Release(tagged[1], tagged[0], f"API: daemonset {ds.namespace}/{ds.name} image")
            for ds in ev.flannel_daemonsets()
            for image in ds.images.values()
            if (tagged := _tagged(image))
        ),
        None,
    )
    out: dict[str, Release] = {}
    for info in ev.nodes:
        release = by_pod.get(info.name) or shipped
        if release is None and info.kubelet_version in K3S_FLANNEL:
            text = K3S_FLANNEL[info.kubelet_version]
            version = parse_version(text)
            where = f"API: node {info.name} k3s {info.kubelet_version}"
            release = Release(version, text, where) if version else None
        if release is not None:
            out[info.name] = release
    return out


def flannel_release(ev: Evidence, node: str) -> Release | None:
    """The flannel release on `node` (see flannel_releases)."""
    return flannel_releases(ev).get(node)


@dataclass(frozen=True)
class Defect:
    """A defect of flannel releases [first, fixed), and what on a node makes it bite."""

    name: str
    first: Version
    fixed: Version
    bites: Callable[[Evidence, str], EvidenceLine | None]
    effect: str
    fix: str
    url: str

    def carried_by(self, release: Release) -> bool:
        return self.first <= release.version < self.fixed


def _iptables_without_random_fully(ev: Evidence, node: str) -> EvidenceLine | None:
    """The node's iptables is older than 1.6.2, the first with MASQUERADE --random-fully
    (coreos/go-iptables' HasRandomFully asks for 1.6.2)."""
    out = ev.probe(node, "iptables-version")
    version = parse_version(out.stdout) if out is not None else None
    if version is None or version >= (1, 6, 2):
        return None
    return EvidenceLine.probe(node, "iptables-version", out.stdout if out else "")


DEFECTS = (
    Defect(
        "masquerade rules with an empty argument where iptables lacks --random-fully",
        (0, 21, 0),
        (0, 21, 4),
        _iptables_without_random_fully,
        "flannel v0.21.0-v0.21.3 pass an empty argument in place of --random-fully when the "
        "node's iptables is older than 1.6.2, so every masquerade rule fails and the "
        "FLANNEL-POSTRTG chain stays empty: pods lose NAT to addresses outside the cluster "
        "(flannel-io/flannel 053f68a, 'Fixed iptables rules in case random-fully is not "
        "supported', first in v0.21.4).",
        "move to flannel v0.21.4 or later (k3s v1.26.3+k3s1, v1.25.8+k3s1, v1.24.12+k3s1 or "
        "later), or to an iptables of 1.6.2 or later",
        "https://github.com/k3s-io/k3s/issues/7096",
    ),
)


def defects(ev: Evidence) -> list[tuple[str, Defect, Release, EvidenceLine]]:
    """(node, defect, release, what shows the condition) for every known defect a node's flannel
    release carries and whose condition the node meets."""
    out = []
    for node, release in flannel_releases(ev).items():
        for defect in DEFECTS:
            if defect.carried_by(release) and (seen := defect.bites(ev, node)) is not None:
                out.append((node, defect, release, seen))
    return out
