"""Rules about reaching the API through its Service: kube-proxy's config, IPVS routes, timeouts."""

from __future__ import annotations

from collections.abc import Iterator

import yaml

from bot.diagnosis.evidence import Evidence, matching_lines
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.kube_proxy_config import configured_mode, suggestion, unknown_fields
from bot.diagnosis.node_facts import LOCAL_ROUTES
from bot.diagnosis.rule import Found, rule


@rule(
    "kube-proxy-config-invalid",
    "critical",
    explains=("apiserver-unreachable", "flannel-crashloop", "subnet-env-missing"),
)
def kube_proxy_config_invalid(ev: Evidence) -> Iterator[Found]:
    cm = ev.configmaps.get(("kube-system", "kube-proxy"))
    if cm is None or "config.conf" not in cm.data:
        return
    try:
        config = yaml.safe_load(cm.data["config.conf"])
    except yaml.YAMLError as exc:
        bad = [f"unparsable YAML: {exc}"]
    else:
        bad = unknown_fields(config) if isinstance(config, dict) else ["not a mapping"]
    if not bad:
        return
    lines = [
        EvidenceLine(
            "API: configmap kube-system/kube-proxy config.conf",
            f"unknown field `{f}`"
            + (f" (did you mean `{suggestion(f)}`?)" if suggestion(f) else ""),
        )
        for f in bad
    ]
    proxies = [p for p in ev.pods if p.labels.get("k8s-app") == "kube-proxy"]
    for pod in proxies:
        source, text = ev.log(pod, "kube-proxy")
        for line in matching_lines(text, r"unknown field|strict decoding", 1):
            lines.append(EvidenceLine(source, line))
            break
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


@rule("apiserver-unreachable", "critical", explains=("flannel-crashloop", "subnet-env-missing"))
def apiserver_unreachable(ev: Evidence) -> Iterator[Found]:
    for pod, source, text in ev.flannel_logs():
        hits = matching_lines(
            text,
            r"dial tcp [0-9.]+:443: (i/o timeout|connect: connection "
            r"refused)",
            1,
        )
        if hits:
            yield Found(
                (pod.node,),
                f"flannel on {pod.node} cannot reach the API server",
                "flanneld talks to the API through the `kubernetes` Service; when that ClusterIP "
                "does not answer from the node (kube-proxy down or misconfigured, a stale local "
                "route, a firewall) it cannot fetch its pod or lease and exits.",
                [EvidenceLine(source, hits[0])],
                Fix(
                    f"check kube-proxy on {pod.node} and that {ev.api_service_ip()}:443 answers "
                    "from the node, then restart flannel"
                ),
            )
