"""Kubernetes API JSON -> the ports' frozen records (`NodeInfo`, `PodInfo`, ...).

Why apart from the client: the support bundle reads the same `kubectl get -o json` shapes from
files, and the bench parses generated ones, so the parsing must not need a live API. Absent and
null fields read as empty, since servers omit empty fields and older ones lack newer fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from flannel_bot.ports.cluster import (
    ConfigMapInfo,
    ContainerInfo,
    DaemonSetInfo,
    EventInfo,
    NodeCondition,
    NodeInfo,
    PodInfo,
    Rbac,
    RbacRule,
    ServiceInfo,
    ServicePort,
    Taint,
)

Json = dict[str, Any]


def parse_node(obj: Json) -> NodeInfo:
    meta, spec, status = _parts(obj)
    conditions = tuple(
        NodeCondition(
            _str(c.get("type")),
            _str(c.get("status")),
            _str(c.get("reason")),
            _str(c.get("message")),
        )
        for c in map(_dict, _list(status.get("conditions")))
    )
    ready = next((c for c in conditions if c.type == "Ready"), None)
    addresses = [_dict(a) for a in _list(status.get("addresses"))]
    internal_ip = next(
        (_str(a.get("address")) for a in addresses if a.get("type") == "InternalIP"), ""
    )
    pod_cidr = _str(spec.get("podCIDR"))
    cidrs = tuple(_str(c) for c in _list(spec.get("podCIDRs"))) or ((pod_cidr,) if pod_cidr else ())
    return NodeInfo(
        name=_str(meta.get("name")),
        internal_ip=internal_ip,
        pod_cidr=pod_cidr,
        ready=ready is not None and ready.status == "True",
        ready_reason=ready.reason if ready is not None else "NoReadyCondition",
        unschedulable=bool(spec.get("unschedulable")),
        annotations=_str_map(meta.get("annotations")),
        labels=_str_map(meta.get("labels")),
        conditions=conditions,
        taints=tuple(
            Taint(_str(t.get("key")), _str(t.get("value")), _str(t.get("effect")))
            for t in map(_dict, _list(spec.get("taints")))
        ),
        pod_cidrs=cidrs,
        kubelet_version=_str(_dict(status.get("nodeInfo")).get("kubeletVersion")),
        container_runtime=_str(_dict(status.get("nodeInfo")).get("containerRuntimeVersion")),
    )


def parse_pod(obj: Json) -> PodInfo:
    meta, spec, status = _parts(obj)
    owners = [_dict(o) for o in _list(meta.get("ownerReferences"))]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in map(_dict, _list(status.get("conditions")))
    )
    containers = _containers(spec, status, init=True) + _containers(spec, status, init=False)
    return PodInfo(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        node=_str(spec.get("nodeName")),
        phase=_str(status.get("phase")) or "Pending",
        ready=ready,
        restarts=sum(c.restart_count for c in containers if not c.init),
        labels=_str_map(meta.get("labels")),
        owner_kind=_str(owner.get("kind")),
        owner_name=_str(owner.get("name")),
        uid=_str(meta.get("uid")),
        containers=containers,
        pod_ip=_str(status.get("podIP")),
        host_ip=_str(status.get("hostIP")),
        host_network=bool(spec.get("hostNetwork")),
        creation=_str(meta.get("creationTimestamp")),
        deletion=_str(meta.get("deletionTimestamp")),
    )


def _containers(spec: Json, status: Json, *, init: bool) -> tuple[ContainerInfo, ...]:
    specs = [_dict(c) for c in _list(spec.get("initContainers" if init else "containers"))]
    statuses = {
        _str(s.get("name")): s
        for s in map(
            _dict, _list(status.get("initContainerStatuses" if init else "containerStatuses"))
        )
    }
    names = [_str(c.get("name")) for c in specs]
    names += [n for n in statuses if n not in names]  # a status without spec: keep, not hide
    images = {_str(c.get("name")): _str(c.get("image")) for c in specs}
    out = []
    for name in names:
        st = statuses.get(name, {})
        state_name, state = next(iter(_dict(st.get("state")).items()), ("", {}))
        state = _dict(state)
        last = _dict(_dict(st.get("lastState")).get("terminated"))
        out.append(
            ContainerInfo(
                name=name,
                image=images.get(name) or _str(st.get("image")),
                init=init,
                ready=bool(st.get("ready")),
                restart_count=_int(st.get("restartCount")),
                state=_str(state_name),
                reason=_str(state.get("reason")),
                message=_str(state.get("message")),
                exit_code=_opt_int(state.get("exitCode")),
                last_reason=_str(last.get("reason")),
                last_exit_code=_opt_int(last.get("exitCode")),
            )
        )
    return tuple(out)


def parse_daemonset(obj: Json) -> DaemonSetInfo:
    meta, spec, status = _parts(obj)
    template = _dict(_dict(spec.get("template")).get("spec"))
    containers = [_dict(c) for c in _list(template.get("containers"))]
    return DaemonSetInfo(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        labels=_str_map(meta.get("labels")),
        selector=_str_map(_dict(spec.get("selector")).get("matchLabels")),
        desired=_int(status.get("desiredNumberScheduled")),
        current=_int(status.get("currentNumberScheduled")),
        ready=_int(status.get("numberReady")),
        updated=_int(status.get("updatedNumberScheduled")),
        available=_int(status.get("numberAvailable")),
        generation=_int(meta.get("generation")),
        observed_generation=_int(status.get("observedGeneration")),
        images={_str(c.get("name")): _str(c.get("image")) for c in containers},
        container_args={
            _str(c.get("name")): tuple(_str(a) for a in _list(c.get("args"))) for c in containers
        },
        container_commands={
            _str(c.get("name")): tuple(_str(a) for a in _list(c.get("command"))) for c in containers
        },
    )


def parse_configmap(obj: Json) -> ConfigMapInfo:
    meta = _dict(obj.get("metadata"))
    return ConfigMapInfo(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        data=_str_map(obj.get("data")),
        labels=_str_map(meta.get("labels")),
        resource_version=_str(meta.get("resourceVersion")),
    )


def parse_event(obj: Json) -> EventInfo:
    meta = _dict(obj.get("metadata"))
    involved = _dict(obj.get("involvedObject"))
    source = _dict(obj.get("source"))
    series = _dict(obj.get("series"))
    last = (
        obj.get("lastTimestamp")
        or series.get("lastObservedTime")
        or obj.get("eventTime")
        or obj.get("firstTimestamp")
        or meta.get("creationTimestamp")
    )
    return EventInfo(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        involved_kind=_str(involved.get("kind")),
        involved_name=_str(involved.get("name")),
        reason=_str(obj.get("reason")),
        message=_str(obj.get("message")),
        type=_str(obj.get("type")),
        count=_int(obj.get("count")) or _int(series.get("count")) or 1,
        last_timestamp=_str(last),
        source_component=_str(source.get("component") or obj.get("reportingComponent")),
        source_host=_str(source.get("host") or obj.get("reportingInstance")),
        involved_namespace=_str(involved.get("namespace")),
    )


def parse_service(obj: Json) -> ServiceInfo:
    meta, spec, _ = _parts(obj)
    return ServiceInfo(
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        type=_str(spec.get("type")) or "ClusterIP",
        cluster_ip=_str(spec.get("clusterIP")),
        cluster_ips=tuple(_str(ip) for ip in _list(spec.get("clusterIPs"))),
        ports=tuple(
            ServicePort(
                port=_int(p.get("port")),
                protocol=_str(p.get("protocol")) or "TCP",
                name=_str(p.get("name")),
                target_port=_str(p.get("targetPort")),
                node_port=_opt_int(p.get("nodePort")),
            )
            for p in map(_dict, _list(spec.get("ports")))
        ),
        selector=_str_map(spec.get("selector")),
        labels=_str_map(meta.get("labels")),
    )


def parse_rbac(roles: Sequence[Json], bindings: Sequence[Json]) -> Rbac:
    """ClusterRoles and ClusterRoleBindings (list items): the bindings keep their
    ServiceAccount subjects only."""
    return Rbac(
        roles={
            _str(_dict(r.get("metadata")).get("name")): tuple(
                RbacRule(
                    tuple(_str(g) for g in _list(rule.get("apiGroups"))),
                    tuple(_str(x) for x in _list(rule.get("resources"))),
                    tuple(_str(v) for v in _list(rule.get("verbs"))),
                )
                for rule in (_dict(x) for x in _list(r.get("rules")))
            )
            for r in roles
        },
        bindings=tuple(
            (
                _str(_dict(b.get("metadata")).get("name")),
                _str(_dict(b.get("roleRef")).get("name")),
                tuple(
                    (_str(s.get("namespace")), _str(s.get("name")))
                    for s in (_dict(x) for x in _list(b.get("subjects")))
                    if s.get("kind") == "ServiceAccount"
                ),
            )
            for b in bindings
        ),
    )


def describe_pod(pod: PodInfo, excluded: frozenset[str] = frozenset()) -> str:
    """One line for timeout messages and chat: `name (phase, readiness; container states)`."""
    notes = [pod.phase, "Ready" if pod.ready else "not Ready"]
    if pod.name in excluded:
        notes.append("excluded")
    if pod.deletion:
        notes.append("terminating")
    if pod.node:
        notes.append(f"node {pod.node}")
    states = [
        f"{c.name} {c.state} {c.reason}".rstrip()
        for c in pod.containers
        if c.state and c.state != "running" and not (c.init and c.reason == "Completed")
    ]
    return f"{pod.name} ({', '.join(notes)}{'; ' + ', '.join(states) if states else ''})"


def _parts(obj: Json) -> tuple[Json, Json, Json]:
    return _dict(obj.get("metadata")), _dict(obj.get("spec")), _dict(obj.get("status"))


def _dict(value: Any) -> Json:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_map(value: Any) -> dict[str, str]:
    return {str(k): _str(v) for k, v in _dict(value).items()}
