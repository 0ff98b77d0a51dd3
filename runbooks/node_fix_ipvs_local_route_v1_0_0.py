"""Remove a stale `local <API service IP> dev kube-ipvs0` route, then restart flannel.

kube-proxy in IPVS mode binds every Service IP to the dummy device kube-ipvs0, which puts a
`local` route for it in the local table. Left behind after a switch back to iptables mode (or
by a broken kube-proxy), the route makes the node treat 10.96.0.1 as its own address:
connections to the API Service leave with that source and never get a reply, and flanneld times
out. The route is removed (by deleting the address from kube-ipvs0, or the route itself) only
when kube-proxy is not in IPVS mode, or IPVS has no real server behind that address; a route
IPVS really uses is refused. Then the node's flannel pod is restarted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from flannel_bot.core.runbook import Action, CheckResult, Facts, NodeName, Risk, RunOnNode, step
from flannel_bot.errors import ExecutorError, ParameterError

from ._common import addresses, replacements_ready, restart_flannel

ID = "node.fix-ipvs-local-route"
VERSION = "1.0.0"
VERIFIES = ("ipvs-local-route", "apiserver-unreachable", "flannel-crashloop")
DEVICE = "kube-ipvs0"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node with the stale route"})


def service_ip(facts: Facts) -> str:
    try:
        svc = facts.kube.get_service("default", "kubernetes")
    except ExecutorError as exc:
        raise ParameterError(f"cannot read Service default/kubernetes: {exc}") from None
    if not svc.cluster_ip:
        raise ParameterError("Service default/kubernetes has no ClusterIP")
    return svc.cluster_ip


def kube_proxy_mode(facts: Facts) -> str:
    try:
        cm = facts.kube.get_configmap("kube-system", "kube-proxy")
        config = yaml.safe_load(cm.data.get("config.conf", "")) or {}
    except (ExecutorError, yaml.YAMLError):
        return "unknown"
    return str(config.get("mode") or "iptables") if isinstance(config, dict) else "unknown"


def stale_route(facts: Facts, node: str) -> bool:
    """True when the local route for the API Service IP on kube-ipvs0 exists and IPVS does not
    need it; raises ParameterError when IPVS does (or may) need it."""
    ip = service_ip(facts)
    res = facts.run(node, ["ip", "-j", "route", "show", "table", "local"])
    if not res.ok:
        raise ParameterError(f"cannot read the local routes on {node}: {res.stderr.strip()}")
    routes = json.loads(res.stdout or "[]")
    if not any(r.get("dst") == ip and r.get("dev") == DEVICE for r in routes):
        return False
    mode = kube_proxy_mode(facts)
    if mode == "iptables" or mode == "nftables":
        return True
    ipvs = facts.run(node, ["ipvsadm", "-L", "-n", "-t", f"{ip}:443"])
    if not ipvs.ok:
        raise ParameterError(
            f"kube-proxy's mode is {mode} and `ipvsadm` cannot say whether IPVS serves {ip}:443 "
            f"on {node} ({ipvs.stderr.strip() or ipvs.exit_code}); refusing to remove a route "
            "IPVS may be using"
        )
    servers = [line for line in ipvs.stdout.splitlines() if line.strip().startswith("->")]
    if len(servers) > 1:  # the first `->` line is the column header
        raise ParameterError(
            f"IPVS on {node} has real servers for {ip}:443, so the local route on {DEVICE} is "
            "legitimate; look at kube-proxy and the apiserver endpoints instead"
        )
    return True


def route_gone(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    if stale_route(facts, p.node):
        return CheckResult(False, f"the local route on {DEVICE} is still on {p.node}")
    return CheckResult(True, f"no local {service_ip(facts)} route on {DEVICE} on {p.node}")


@step("Remove the stale local route", risk=Risk.DESTRUCTIVE, timeout=30, check=route_gone)
def remove_route(facts: Facts, p: Params) -> list[Action]:
    if not stale_route(facts, p.node):
        return []
    ip = service_ip(facts)
    if f"{ip}/32" in addresses(facts, p.node).get(DEVICE, []):
        return [RunOnNode(p.node, ("ip", "addr", "del", f"{ip}/32", "dev", DEVICE))]
    return [RunOnNode(p.node, ("ip", "route", "del", "table", "local", "local", ip, "dev", DEVICE))]


@step(
    "Restart the node's flannel pod and wait until it is Ready",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=replacements_ready,
)
def restart(facts: Facts, p: Params) -> list[Action]:
    return restart_flannel(facts, p.node, needed=stale_route(facts, p.node))
