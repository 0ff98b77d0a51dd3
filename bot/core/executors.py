"""`bot.core.executors` as locked runbook versions import it: the ports' records, re-exported."""

from flannel_bot.ports.cluster import (
    ClusterReader,
    ConfigMapInfo,
    ContainerInfo,
    DaemonSetInfo,
    EventInfo,
    KubeExecutor,
    KubeReader,
    NodeCondition,
    NodeInfo,
    PodInfo,
    Rbac,
    RbacRule,
    ServiceInfo,
    ServicePort,
    Taint,
)
from flannel_bot.ports.nodes import CommandResult, FanOutExecutor, NodeExecutor

__all__ = [
    "ClusterReader",
    "CommandResult",
    "ConfigMapInfo",
    "ContainerInfo",
    "DaemonSetInfo",
    "EventInfo",
    "FanOutExecutor",
    "KubeExecutor",
    "KubeReader",
    "NodeCondition",
    "NodeExecutor",
    "NodeInfo",
    "PodInfo",
    "Rbac",
    "RbacRule",
    "ServiceInfo",
    "ServicePort",
    "Taint",
]
