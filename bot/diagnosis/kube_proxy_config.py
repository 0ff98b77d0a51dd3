"""kube-proxy's configuration schema (KubeProxyConfiguration v1alpha1), for strict checking.

kube-proxy decodes its config strictly: one misspelt field (`masqueradeAl`) and it refuses to start,
so the `kubernetes` Service at 10.96.0.1:443 stops working and flannel crash-loops (seed 003).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import yaml

_CONNECTION = {"acceptContentTypes", "burst", "contentType", "kubeconfig", "qps"}
_SYNC = {"minSyncPeriod", "syncPeriod"}
SCHEMA: Mapping[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "bindAddress": None,
    "bindAddressHardFail": None,
    "clientConnection": _CONNECTION,
    "clusterCIDR": None,
    "configSyncPeriod": None,
    "conntrack": {
        "maxPerCore",
        "min",
        "tcpBeLiberal",
        "tcpCloseWaitTimeout",
        "tcpEstablishedTimeout",
        "udpStreamTimeout",
        "udpTimeout",
    },
    "detectLocal": {"bridgeInterface", "interfaceNamePrefix"},
    "detectLocalMode": None,
    "enableProfiling": None,
    "featureGates": None,
    "healthzBindAddress": None,
    "hostnameOverride": None,
    "iptables": {"localhostNodePorts", "masqueradeAll", "masqueradeBit", *_SYNC},
    "ipvs": {
        "excludeCIDRs",
        "scheduler",
        "strictARP",
        "tcpFinTimeout",
        "tcpTimeout",
        "udpTimeout",
        *_SYNC,
    },
    "logging": None,
    "metricsBindAddress": None,
    "mode": None,
    "nftables": {"masqueradeAll", "masqueradeBit", *_SYNC},
    "nodePortAddresses": None,
    "oomScoreAdj": None,
    "portRange": None,
    "showHiddenMetricsForVersion": None,
    "winkernel": {
        "enableDSR",
        "forwardHealthCheckVip",
        "networkName",
        "rootHnsEndpointName",
        "sourceVip",
    },
}


def unknown_fields(config: Mapping[str, Any]) -> list[str]:
    """Dotted paths of fields kube-proxy's strict decoder rejects, e.g. `iptables.masqueradeAl`."""
    found = []
    for key, value in config.items():
        if key not in SCHEMA:
            found.append(key)
            continue
        allowed = SCHEMA[key]
        if isinstance(allowed, set) and isinstance(value, Mapping):
            found.extend(f"{key}.{sub}" for sub in value if sub not in allowed)
    return found


def suggestion(path: str) -> str | None:
    """The field a misspelling most likely meant (`iptables.masqueradeAl` -> masqueradeAll)."""
    parent, _, leaf = path.rpartition(".")
    allowed = SCHEMA.get(parent) if parent else set(SCHEMA)
    if not isinstance(allowed, set):
        return None
    match = difflib.get_close_matches(leaf, sorted(allowed), n=1, cutoff=0.7)
    return f"{parent}.{match[0]}" if match and parent else (match[0] if match else None)


def configured_mode(text: str) -> str | None:
    """kube-proxy's `mode` as its config.conf writes it ("" when unset: iptables, the default),
    or None when the text is not a readable YAML mapping."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if config is None:
        return ""
    return str(config.get("mode") or "") if isinstance(config, dict) else None
