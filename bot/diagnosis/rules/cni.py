"""Rules about the CNI plugins and their config on the node."""

from __future__ import annotations

from collections.abc import Iterator

from bot.diagnosis.evidence import Evidence
from bot.diagnosis.findings import EvidenceLine, Fix
from bot.diagnosis.node_facts import CNI_CONFIG, CNI_PLUGINS, ConfFile, is_flannel_conf
from bot.diagnosis.rule import Found, rule

REQUIRED_PLUGINS = ("bridge", "flannel", "host-local", "portmap")
CONFIG_SUFFIXES = (".conf", ".conflist", ".json")


@rule("cni-plugin-missing", "critical")
def cni_plugin_missing(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        out = ev.probe(node, "cni-bin")
        if out is None:
            continue
        have = ev.fact(node, CNI_PLUGINS) or set()
        missing = [p for p in REQUIRED_PLUGINS if p not in have]
        if missing:
            yield Found(
                (node,),
                f"CNI plugins missing on {node}: {', '.join(missing)}",
                "The flannel CNI plugin delegates to bridge and host-local (and portmap for "
                "hostPorts); without the binaries in /opt/cni/bin every pod sandbox fails.",
                [EvidenceLine.probe(node, "cni-bin", out.stdout or out.stderr or "empty")],
                Fix(
                    "install the CNI plugins (containernetworking-plugins) into /opt/cni/bin; "
                    "flannel's install-cni-plugin init container installs `flannel`"
                ),
            )


def _cni_configs(ev: Evidence, node: str) -> tuple[list[ConfFile], list[ConfFile], str] | None:
    """(config files in the kubelet's order, flannel's among them, what is wrong with flannel's
    or ""); None when the node's CNI config was not probed."""
    out = ev.probe(node, "cni-config")
    if out is None:
        return None
    files = [f for f in ev.fact(node, CNI_CONFIG) or [] if f.path.endswith(CONFIG_SUFFIXES)]
    flannel = [f for f in files if "flannel" in f.path or is_flannel_conf(f.content)]
    problem = ""
    if not out.ok and not files:
        problem = out.stderr.strip() or "/etc/cni/net.d is missing"
    elif not flannel:
        problem = "no flannel CNI config in /etc/cni/net.d"
    elif flannel[0].size == 0 or not flannel[0].content.strip():
        problem = f"{flannel[0].path} is empty"
    elif not is_flannel_conf(flannel[0].content):
        problem = f"{flannel[0].path} is not valid JSON with a flannel plugin"
    return files, flannel, problem


@rule("cni-config-conflict", "critical")
def cni_config_conflict(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        state = _cni_configs(ev, node)
        if state is None:
            continue
        files, flannel, problem = state
        if not problem and files and files[0] not in flannel:
            yield Found(
                (node,),
                f"{files[0].path} sorts before flannel's config on {node}",
                "The kubelet uses the first config file in sort order; another CNI's leftover "
                "config shadows flannel's, so pods get networking flannel does not route.",
                [EvidenceLine.probe(node, "cni-config", " ".join(f.path for f in files))],
                Fix(f"remove {files[0].path} (left by another CNI) and recreate affected pods"),
            )


@rule("cni-config-invalid", "critical")
def cni_config_invalid(ev: Evidence) -> Iterator[Found]:
    for node in ev.probed():
        state = _cni_configs(ev, node)
        if state is None or not state[2]:
            continue
        problem = state[2]
        yield Found(
            (node,),
            f"{problem} on {node}",
            "The kubelet uses the first CNI config in /etc/cni/net.d; flannel's init "
            "container copies it there from kube-flannel-cfg. Missing, empty or broken, "
            "the node reports NetworkPluginNotReady and pods stay in ContainerCreating.",
            [EvidenceLine.probe(node, "cni-config", problem)],
            Fix(
                "write /etc/cni/net.d/10-flannel.conflist from ConfigMap kube-flannel-cfg "
                "(cni-conf.json), or restart flannel so install-cni copies it",
                "node.restore-cni-config",
                {"node": node},
            ),
        )
