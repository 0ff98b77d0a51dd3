"""Write flannel's CNI config on a node from the kube-flannel-cfg ConfigMap.

The kubelet needs a CNI config in /etc/cni/net.d; flannel's install-cni init container copies
`cni-conf.json` from ConfigMap kube-flannel-cfg to /etc/cni/net.d/10-flannel.conflist. When that
file is missing or empty the node reports NetworkPluginNotReady and pods stay in
ContainerCreating. This writes the ConfigMap's content to that path (atomically), and does
nothing when the file already holds it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from flannel_bot.core.runbook import Action, CheckResult, Facts, NodeName, Risk, WriteFile, step
from flannel_bot.errors import ExecutorError, ParameterError

from ._common import FLANNEL_NAMESPACES, read_text

ID = "node.restore-cni-config"
VERSION = "1.0.0"
VERIFIES = ("cni-config-invalid",)
PATH = "/etc/cni/net.d/10-flannel.conflist"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node whose CNI config to restore"})


def wanted(facts: Facts) -> str:
    """cni-conf.json from kube-flannel-cfg, checked to be a flannel CNI config."""
    for ns in FLANNEL_NAMESPACES:
        try:
            cm = facts.kube.get_configmap(ns, "kube-flannel-cfg")
        except ExecutorError:
            continue
        text = cm.data.get("cni-conf.json", "")
        try:
            conf = json.loads(text)
        except ValueError:
            conf = None
        plugins = conf.get("plugins", [conf]) if isinstance(conf, dict) else []
        if not any(isinstance(p, dict) and p.get("type") == "flannel" for p in plugins):
            raise ParameterError(
                f"cni-conf.json in {ns}/kube-flannel-cfg is not a flannel CNI config, so "
                "there is nothing right to copy; fix the ConfigMap first"
            )
        return text
    raise ParameterError(
        "there is no kube-flannel-cfg ConfigMap in kube-flannel or kube-system; run "
        "flannel.repair to recreate it"
    )


def in_place(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    if read_text(facts, p.node, PATH) == wanted(facts):
        return CheckResult(True, f"{PATH} on {p.node} matches kube-flannel-cfg")
    return CheckResult(False, f"{PATH} on {p.node} differs from kube-flannel-cfg")


@step("Write the CNI config from kube-flannel-cfg", risk=Risk.CHANGE, timeout=30, check=in_place)
def write_config(facts: Facts, p: Params) -> list[Action]:
    text = wanted(facts)
    if read_text(facts, p.node, PATH) == text:
        return []
    return [WriteFile(p.node, PATH, text)]
