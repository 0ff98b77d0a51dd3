"""The message catalogue: the error lines flanneld, the CNI plugins, kubelet, the runtimes,
kube-proxy, k3s/RKE2 and the kernel really print, each mapped to the finding it establishes.

Data, one module per producer, each entry citing the source file and the releases that print it,
with one literal line as the producer prints it (`example`, which the tests feed back). Rules do
not grep logs with patterns of their own: they ask the evidence for its `sightings` of their
finding, which this catalogue finds in pod logs, events, node conditions and the node journals.
A line that establishes a cause a flannel restart cannot cure says so (`restart_helps=False`).
"""

from __future__ import annotations

from flannel_bot.diagnosis.catalogue import cni, coredns, flanneld, k3s, kernel, kube_proxy, kubelet
from flannel_bot.diagnosis.catalogue.message import (
    DNS_LOG,
    EVENT,
    FLANNEL_LOG,
    K3S_JOURNAL,
    KERNEL_LOG,
    KUBE_PROXY_LOG,
    KUBELET_JOURNAL,
    NODE_CONDITION,
    WHERE,
    Catalogue,
    Message,
    Sighting,
    build,
)

CATALOGUE = build(
    (
        *flanneld.MESSAGES,
        *k3s.MESSAGES,
        *cni.MESSAGES,
        *kubelet.MESSAGES,
        *kube_proxy.MESSAGES,
        *kernel.MESSAGES,
        *coredns.MESSAGES,
    )
)

__all__ = [
    "CATALOGUE",
    "DNS_LOG",
    "EVENT",
    "FLANNEL_LOG",
    "K3S_JOURNAL",
    "KERNEL_LOG",
    "KUBELET_JOURNAL",
    "KUBE_PROXY_LOG",
    "NODE_CONDITION",
    "WHERE",
    "Catalogue",
    "Message",
    "Sighting",
]
