"""Rules about reaching the API through its Service: kube-proxy's config, IPVS routes, timeouts."""

from __future__ import annotations

import re
from collections.abc import Iterator

import yaml

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import EvidenceLine, Fix
from flannel_bot.diagnosis.kube_proxy_config import configured_mode, suggestion, unknown_fields
from flannel_bot.diagnosis.node_facts import LOCAL_ROUTES, ROUTES, in_cidr
from flannel_bot.diagnosis.rule import Found, inferred, quote, rule


@rule(
    "kube-proxy-config-invalid",
    "critical",
    explains=("apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"),
)
def kube_proxy_config_invalid(ev: Evidence) -> Iterator[Found]:
    cm = ev.configmaps.get(("kube-system", "kube-proxy"))
    bad: list[str] = []
    if cm is not None and "config.conf" in cm.data:
        try:
            config = yaml.safe_load(cm.data["config.conf"])
        except yaml.YAMLError as exc:
            bad = [f"unparsable YAML: {exc}"]
        else:
            bad = unknown_fields(config) if isinstance(config, dict) else ["not a mapping"]
    if not bad:
        # the ConfigMap decodes (or was not read): kube-proxy's own log may still refuse a
        # value (an unknown mode, a CIDR that does not parse) or a file on systemd installs
        yield from inferred(
            ev,
            "kube-proxy-config-invalid",
            lambda node: "kube-proxy refuses its configuration",
            "kube-proxy stops at start-up on a config it cannot decode or validate, so it "
            "programs no Service rules and the `kubernetes` Service stops answering on the "
            "nodes; flanneld, which reaches the API through it, then fails.",
            lambda node: Fix(
                "correct kube-proxy's configuration (ConfigMap kube-system/kube-proxy, or its "
                "file on systemd installs), restart kube-proxy, then flannel"
            ),
        )
        return
    lines = [
        EvidenceLine(
            "API: configmap kube-system/kube-proxy config.conf",
            f"unknown field `{f}`"
            + (f" (did you mean `{suggestion(f)}`?)" if suggestion(f) else ""),
        )
        for f in bad
    ]
    proxies = ev.kube_proxy_pods()
    lines += [quote(s) for s in ev.sighted("kube-proxy-config-invalid")[:2]]
    nodes = sorted({p.node for p in proxies} or {n.name for n in ev.nodes})
    yield Found(
        tuple(nodes),
        f"kube-proxy's config has {len(bad)} unknown field(s): {', '.join(bad)}",
        "kube-proxy decodes its config strictly and will not start with an unknown field, so "
        f"it programs no Service rules: {ev.api_service_ip()}:443 stops answering on the nodes "
        "and flanneld, which reaches the API through that Service, crash-loops.",
        lines[:6],
        Fix(
            "correct the field in ConfigMap kube-system/kube-proxy, restart the "
            "kube-proxy pods, then the flannel pods",
            "kube-proxy.fix-config",
            {},
        ),
    )


@rule(
    "ipvs-local-route",
    "critical",
    explains=("apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"),
)
def ipvs_local_route(ev: Evidence) -> Iterator[Found]:
    svc = ev.api_service_ip()
    cm = ev.configmaps.get(("kube-system", "kube-proxy"))
    mode = (configured_mode(cm.data.get("config.conf", "")) if cm is not None else "") or ""
    for node in ev.probed():
        for route in ev.fact(node, LOCAL_ROUTES) or []:
            if (
                route.type == "local"
                and route.dst == svc
                and route.dev == "kube-ipvs0"
                and mode != "ipvs"
            ):
                yield Found(
                    (node,),
                    f"stale `local {svc} dev kube-ipvs0` route on {node}",
                    f"A leftover IPVS local route claims the API Service address {svc} for the "
                    "node itself while kube-proxy is not in IPVS mode: connections to "
                    f"{svc}:443 leave with that address as source and replies never come back, "
                    "so flanneld times out reaching the API.",
                    [
                        EvidenceLine.probe(node, "ip-route-local", f"local {svc} dev kube-ipvs0"),
                        EvidenceLine(
                            "API: configmap kube-system/kube-proxy",
                            f"mode: {mode or '(empty: iptables)'}",
                        ),
                    ],
                    Fix(
                        f"ip route del local {svc} dev kube-ipvs0 table local (and remove "
                        "kube-ipvs0 if IPVS is not used)",
                        "node.fix-ipvs-local-route",
                        {"node": node},
                    ),
                )


OWN_DEVICES = ("flannel", "cni0", "kube-ipvs0", "cali", "cilium", "vxlan")
SERVICE_DIALED = re.compile(r"dial tcp (\d+\.\d+\.\d+\.\d+):443")


@rule(
    "service-route-conflict",
    "critical",
    explains=("apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"),
)
def service_route_conflict(ev: Evidence) -> Iterator[Found]:
    """A host network (a typo'd netmask, a VPN) whose connected route holds the API Service's
    address: a host-network client (flanneld) picks that interface's source address for the
    Service, kube-proxy's DNAT then sends it out another way, and no reply comes back."""
    targets = {ev.api_service_ip()} | {
        m.group(1)
        for s in ev.sighted("apiserver-unreachable")
        for m in [SERVICE_DIALED.search(s.line)]
        if m
    }
    for name in ev.probed():
        for r in ev.fact(name, ROUTES) or []:
            if r.scope != "link" or "/" not in r.dst or r.dev.startswith(OWN_DEVICES):
                continue
            covered = sorted(t for t in targets if in_cidr(t, r.dst))
            if covered:
                yield Found(
                    (name,),
                    f"{r.dev}'s network {r.dst} on {name} holds the API Service address "
                    f"{covered[0]}",
                    "The node routes the Service network out of a host interface: a "
                    "host-network client such as flanneld takes that interface's address as "
                    "its source for the Service, kube-proxy's DNAT then sends the packet out "
                    "another way, and the reply never comes back (i/o timeout).",
                    [
                        EvidenceLine.probe(name, "ip-route", f"{r.dst} dev {r.dev} scope link"),
                        *[quote(s) for s in ev.sighted("apiserver-unreachable", name)[:1]],
                    ],
                    Fix(
                        f"correct {r.dev}'s address/netmask so its network no longer holds the "
                        "Service (and pod) ranges, or choose cluster ranges outside it"
                    ),
                )
                break


@rule("apiserver-unreachable", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def apiserver_unreachable(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "apiserver-unreachable",
        lambda node: f"flannel on {node or 'a node'} cannot reach the API server",
        "flanneld talks to the API through the `kubernetes` Service; when that ClusterIP "
        "does not answer from the node (kube-proxy down or misconfigured, a stale local "
        "route, a firewall) it cannot fetch its pod or lease and exits.",
        lambda node: Fix(
            f"check kube-proxy on {node or 'the node'} and that {ev.api_service_ip()}:443 "
            "answers from the node, then restart flannel"
        ),
    )


@rule("proxy-mode-unsupported", "critical", explains=("apiserver-unreachable",))
def proxy_mode_unsupported(ev: Evidence) -> Iterator[Found]:
    yield from inferred(
        ev,
        "proxy-mode-unsupported",
        lambda node: f"kube-proxy cannot run in its configured mode on {node or 'a node'}",
        "kube-proxy's mode (ipvs, nftables, iptables) needs kernel modules and tools on the "
        "node; without them older kube-proxy falls back to iptables, newer stops, and either "
        "way Services may not work as configured.",
        lambda node: Fix(
            "load the mode's kernel modules (ip_vs, ip_vs_rr, ... for ipvs; a 5.13+ kernel for "
            "nftables) or set kube-proxy's mode to one the node supports"
        ),
    )
