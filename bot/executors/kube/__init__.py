"""The cluster through the Kubernetes API: `KubeClient` (client.py) and the parsing of API JSON
into the ports' records (parsing.py), which the support bundle and the bench use without a
client. The Lease calls of leader election are in lease.py; calls.py describes one request for
error messages and RBAC advice.
"""

from flannel_bot.executors.kube.client import DEFAULT_KUBECONFIG, KubeClient, KubeSettings
from flannel_bot.executors.kube.lease import Leases
from flannel_bot.executors.kube.parsing import (
    describe_pod,
    parse_configmap,
    parse_daemonset,
    parse_event,
    parse_node,
    parse_pod,
    parse_rbac,
    parse_service,
)

__all__ = [
    "DEFAULT_KUBECONFIG",
    "KubeClient",
    "KubeSettings",
    "Leases",
    "describe_pod",
    "parse_configmap",
    "parse_daemonset",
    "parse_event",
    "parse_node",
    "parse_pod",
    "parse_rbac",
    "parse_service",
]
