"""The support bundle's layout, shared by its reader and its writer: file names, which
namespaces and lists are dumped, what may be joined to a path, and what a missing file loses.

The layout itself is documented for people in the package docstring (`bot.executors.bundle`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Json = dict[str, Any]

PROBES_DIR = "probes"
UNREACHABLE = "UNREACHABLE"
# a node's VXLAN peer tables reduced where the bundle was written (see bot.diagnosis.peer_tables)
PEER_FACTS = "peer-tables.json"
PEER_FACTS_VERSION = 1
ERRORS = "errors.txt"
RBAC = "rbac.json"
# kubectl cluster-info dump's files per namespace: file stem -> API resource
NAMESPACED_LISTS: Mapping[str, str] = {
    "events": "events",
    "replication-controllers": "replicationcontrollers",
    "services": "services",
    "daemonsets": "daemonsets",
    "deployments": "deployments",
    "replicasets": "replicasets",
    "pods": "pods",
}
READ_LISTS = frozenset({"pods", "events", "daemonsets", "services"})  # the rest is for people
# Always dumped by write_bundle: flannel lives in one of the first two, `default` holds the
# `kubernetes` Service.
BASE_NAMESPACES = ("kube-system", "kube-flannel", "default")
# Where flannel and kube-proxy live: write_bundle adds their ConfigMaps and their pods' logs, and
# the reader notes a gap when one of them is asked for and its directory is missing.
FLANNEL_NAMESPACES = ("kube-flannel", "kube-system")
LOG_LINES = 1000

# Kubernetes names (DNS-1123 subdomains, container names) are safe path components; a name from a
# tampered bundle that is not (`..`, `/`) is never joined to a path.
SAFE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")

LOST_NODES = (
    "node readiness, conditions, podCIDRs and flannel annotations are unknown, and no node was "
    "probed (their names come from this file)"
)


def _lost_services(ns: str) -> str:
    if ns == "default":
        return "the Services of default are unknown (the `kubernetes` Service flanneld reaches)"
    return f"the Services of {ns} are unknown"


# what is lost when <ns>/<kind>.json is missing
LOST: Mapping[str, Callable[[str], str]] = {
    "pods": lambda ns: (
        f"the pods of {ns} (flannel and kube-proxy pod states, restarts) are unknown and their "
        f"logs were not read"
    ),
    "events": lambda ns: f"the events of {ns} (BackOff, FailedCreatePodSandBox, ...) are unknown",
    "daemonsets": lambda ns: (
        f"the DaemonSets of {ns} (flannel's desired/ready counts, image and args) are unknown"
    ),
    "services": _lost_services,
    "configmaps": lambda ns: (
        f"the ConfigMaps of {ns} (kube-flannel-cfg's net-conf.json, kube-proxy's config) were "
        f"not checked"
    ),
}


def field_value(obj: Json, dotted: str) -> str:
    """A field selector's value: the dotted path's value as the API compares it ("" if absent)."""
    value: Any = obj
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None or isinstance(value, dict | list) else str(value)
