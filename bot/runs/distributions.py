"""Runbooks that are wrong on a distribution, and the step to take there by hand instead.

k3s runs flannel and kube-proxy inside its own process and writes its CNI config under
/var/lib/rancher/k3s; RKE2 deploys flannel through its rke2-canal chart. A runbook written for
the upstream DaemonSet would there install a second flannel, write a config the runtime never
reads, or restart pods that do not exist. Keyed by runbook id, so every version is covered,
including versions pinned before this table existed.
"""

from __future__ import annotations

from collections.abc import Mapping

K3S_FLANNEL = (
    "k3s runs flannel inside the k3s process: fix it through k3s's own flags "
    "(--flannel-backend, --flannel-iface, --flannel-conf in /etc/rancher/k3s/config.yaml) and "
    "`systemctl restart k3s` (k3s-agent on agents); read `journalctl -u k3s` for its flannel lines"
)
RKE2_CANAL = (
    "RKE2 deploys flannel with its rke2-canal chart: change it with a HelmChartConfig for "
    "rke2-canal in /var/lib/rancher/rke2/server/manifests, or delete the node's rke2-canal pod "
    "to restart it"
)

WRONG_ON: Mapping[tuple[str, str], str] = {
    ("flannel.repair", "k3s"): K3S_FLANNEL + "; never apply the flannel manifest beside it",
    ("flannel.repair", "rke2"): RKE2_CANAL + "; never apply the flannel manifest beside it",
    ("flannel.restart-pods", "k3s"): K3S_FLANNEL,
    ("node.restore-cni-config", "k3s"): (
        "k3s writes its CNI config to /var/lib/rancher/k3s/agent/etc/cni/net.d when it starts: "
        "`systemctl restart k3s` (k3s-agent on agents) on the node"
    ),
    ("node.restore-cni-config", "rke2"): (
        "rke2-canal's install-cni container writes the CNI config: delete the node's "
        "rke2-canal pod so it runs again"
    ),
    ("node.clean-interfaces", "k3s"): (
        "on the node: `ip link delete cni0; ip link delete flannel.1; systemctl restart k3s` "
        "(k3s-agent on agents); k3s recreates both"
    ),
    ("kube-proxy.fix-config", "k3s"): (
        "k3s runs kube-proxy inside the k3s process: set its options with --kube-proxy-arg in "
        "/etc/rancher/k3s/config.yaml and `systemctl restart k3s`"
    ),
}


def wrong_on(runbook_id: str, distribution: str) -> str:
    """The step to take by hand when `runbook_id` is wrong on `distribution`, else ""."""
    return WRONG_ON.get((runbook_id, distribution), "")


def refused_somewhere(runbook_id: str) -> bool:
    """Whether any distribution makes `runbook_id` wrong."""
    return any(rid == runbook_id for rid, _ in WRONG_ON)
