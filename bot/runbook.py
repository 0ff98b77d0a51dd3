"""Everything a runbook module needs, in one place: a new runbook imports only this module.

A runbook is a module named `<id>_v<major>_<minor>_<patch>.py` in `runbooks/` with `ID`,
`VERSION`, a docstring (its help), a frozen `Params` dataclass and steps:

    @step("Load br_netfilter", risk=Risk.CHANGE, check=module_is_loaded)
    def load_module(facts: Facts, p: Params) -> Sequence[Action]:
        if facts.read(p.node, BRIDGE_NF_CALL_IPTABLES) is not None:
            return NoChange(f"br_netfilter is loaded on {p.node}")
        return [RunOnNode(p.node, ("modprobe", "br_netfilter"))]

A step only reads (the cluster through `facts.kube`, nodes through `facts.read(node, FACT)`) and
returns actions; the engine applies them after the approvals the risk needs. Each action type
carries the least risk it has (a pod delete is destructive), and a step that declares less is
refused at planning. `NoChange(reason)` says what was checked and found already right.
Optional module names: `VERIFIES` (finding ids diagnose must no longer show afterwards),
`VERIFY_TIMEOUT`, `APPROVALS`. Unit cases live as JSON under `tests/runbooks/<id>/`.
"""

from __future__ import annotations

from flannel_bot.diagnosis.node_facts import (
    ADDRESSES,
    BRIDGE_NF_CALL_IP6TABLES,
    BRIDGE_NF_CALL_IPTABLES,
    CNI_CONFIG,
    CNI_PLUGINS,
    FDB,
    FILTER_TABLE,
    IP_FORWARD,
    IPAM,
    IPAM_FILES,
    KERNEL_MODULES,
    LEGACY_RULES,
    LINKS,
    LOCAL_ROUTES,
    NEIGHBOURS,
    OFFLOAD,
    ROUTES,
    SANDBOX_IDS,
    SUBNET_ENV,
    ConfFile,
    Fact,
    Link,
    Route,
    RuleTable,
    conf_files,
    file_text,
    in_cidr,
    ipvs_servers,
    is_flannel_conf,
    reserved_address,
    tcp_answers,
)
from flannel_bot.errors import ExecutorError, ParameterError
from flannel_bot.ports.cluster import ConfigMapInfo, DaemonSetInfo, NodeInfo, PodInfo, ServiceInfo
from flannel_bot.runs.actions import (
    Action,
    CreateObject,
    DeletePod,
    Disruption,
    ListPods,
    PatchConfigMap,
    PatchDaemonSet,
    Risk,
    RunOnNode,
    WaitForPod,
    WriteFile,
)
from flannel_bot.runs.runbook import CheckResult, Facts, InterfaceName, NoChange, NodeName, step

__all__ = [
    "ADDRESSES",
    "BRIDGE_NF_CALL_IP6TABLES",
    "BRIDGE_NF_CALL_IPTABLES",
    "CNI_CONFIG",
    "CNI_PLUGINS",
    "FDB",
    "FILTER_TABLE",
    "IPAM",
    "IPAM_FILES",
    "IP_FORWARD",
    "KERNEL_MODULES",
    "LEGACY_RULES",
    "LINKS",
    "LOCAL_ROUTES",
    "NEIGHBOURS",
    "OFFLOAD",
    "ROUTES",
    "SANDBOX_IDS",
    "SUBNET_ENV",
    "Action",
    "CheckResult",
    "ConfFile",
    "ConfigMapInfo",
    "CreateObject",
    "DaemonSetInfo",
    "DeletePod",
    "Disruption",
    "ExecutorError",
    "Fact",
    "Facts",
    "InterfaceName",
    "Link",
    "ListPods",
    "NoChange",
    "NodeInfo",
    "NodeName",
    "ParameterError",
    "PatchConfigMap",
    "PatchDaemonSet",
    "PodInfo",
    "Risk",
    "Route",
    "RuleTable",
    "RunOnNode",
    "ServiceInfo",
    "WaitForPod",
    "WriteFile",
    "conf_files",
    "file_text",
    "in_cidr",
    "ipvs_servers",
    "is_flannel_conf",
    "reserved_address",
    "step",
    "tcp_answers",
]
