"""The cluster through the Kubernetes API: `KubeClient` (client.py) and the parsing of API JSON
into the ports' records (parsing.py), which the support bundle and the bench use without a
client. The Lease calls of leader election are in lease.py; calls.py describes one request for
error messages and RBAC advice.

The client and the Lease calls are imported when first named (PEP 562): reading a support
bundle needs only the parsing, and the Kubernetes client library takes a third of a second to
import (`diagnose --dump` imported it for nothing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from flannel_bot.executors.kube.client import DEFAULT_KUBECONFIG, KubeClient, KubeSettings
    from flannel_bot.executors.kube.lease import Leases

_LAZY = {
    "DEFAULT_KUBECONFIG": "client",
    "KubeClient": "client",
    "KubeSettings": "client",
    "Leases": "lease",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


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
