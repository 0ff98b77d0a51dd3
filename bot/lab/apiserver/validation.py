"""What the real server does to an object before storing it: defaults, validation, immutability.

Only for the fields the bot reads or shows: a pod written by a test then reads like one from a
cluster (imagePullPolicy, qosClass, a Pending status), and a write a cluster would refuse fails
here with the same 400 or 422.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from flannel_bot.lab.apimachinery import (
    LabelSelector,
    SelectorError,
    is_dns1123_label,
    name_problem,
)
from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.resources import APPS, CORE, Obj, Resource


def check_type(res: Resource, obj: Obj) -> Obj:
    """apiVersion and kind default from the URL, and must agree with it when given."""
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version and api_version != res.api_version:
        raise StatusError.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API "
            f"version ({res.api_version})"
        )
    if kind and kind != res.kind:
        raise StatusError.bad_request(
            f'{kind} in version "{res.version}" cannot be handled as a {res.kind}: the kind in '
            f"the data does not match the resource"
        )
    obj["apiVersion"], obj["kind"] = res.api_version, res.kind
    return obj


def _path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.partition(":")[2]
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    for field_name in ("initContainers", "containers"):
        for container in spec.get(field_name) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("resources", {})
            if isinstance(container.get("image"), str):
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))


def apply_defaults(res: Resource, obj: Obj, name: str) -> None:
    """The defaulting the real server does for the fields the bot reads or shows."""
    if res.group == CORE and res.plural == "pods":
        _default_pod_spec(obj.get("spec"))
    elif res.group == APPS and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        _default_pod_spec(_path(spec, "template.spec"))
        spec.setdefault("revisionHistoryLimit", 10)
        if res.plural == "daemonsets":
            spec.setdefault(
                "updateStrategy",
                {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
            )
        else:
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
    elif res.group == CORE and res.plural == "namespaces" and name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj.setdefault("status", {}).setdefault("phase", "Active")


def _qos_class(spec: Any) -> str:
    containers = (spec or {}).get("containers") or []
    resources = [c.get("resources") or {} for c in containers if isinstance(c, dict)]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for k in ("cpu", "memory"):
            if not limits.get(k) or requests.get(k, limits[k]) != limits[k]:
                return "Burstable"  # requests default to limits, so only a gap makes Burstable
    return "Guaranteed"


def reset_status(res: Resource, obj: Obj) -> None:
    """Clients cannot create status: the server sets the initial one (nodes keep theirs)."""
    if res.group == CORE and res.plural == "pods":
        obj["status"] = {"phase": "Pending", "qosClass": _qos_class(obj.get("spec"))}
    elif res.group == APPS and res.plural == "daemonsets":
        obj["status"] = {
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
        }
    elif res.group == APPS and res.plural == "deployments":
        obj["status"] = {}
    elif res.group == CORE and res.plural == "services":
        obj["status"] = {"loadBalancer": {}}
    elif res.group == CORE and res.plural == "namespaces":
        obj["status"] = {"phase": "Active"}


def validate(res: Resource, obj: Obj) -> None:
    meta = obj["metadata"]
    name = str(meta.get("name") or "")
    causes: list[tuple[str, str, str]] = []
    if not name:
        causes.append(
            (
                "metadata.name",
                "FieldValueRequired",
                "Required value: name or generateName is required",
            )
        )
    else:
        problem = name_problem(name, res.name_format)
        if problem:
            causes.append(
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f"Invalid value: {json.dumps(name)}: {problem}",
                )
            )
    for label_field in ("labels", "annotations"):
        values = meta.get(label_field)
        if values is not None and (
            not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
        ):
            raise StatusError.bad_request(
                f"json: cannot unmarshal into Go struct field ObjectMeta.metadata.{label_field} "
                "of type string"
            )
    for required in res.required:
        if not _path(obj, required):
            causes.append((required, "FieldValueRequired", "Required value"))
    if res.group == CORE and res.plural == "pods":
        causes += _pod_spec_problems(obj.get("spec"), "spec")
    if res.group == APPS and _path(obj, "spec.template.spec.containers"):
        causes += _pod_spec_problems(_path(obj, "spec.template.spec"), "spec.template.spec")
        selector = _path(obj, "spec.selector")
        labels = _path(obj, "spec.template.metadata.labels") or {}
        try:
            parsed = LabelSelector.from_api(selector)
        except SelectorError as exc:
            causes.append(("spec.selector", "FieldValueInvalid", f"Invalid value: {exc}"))
        else:
            if parsed.empty:
                causes.append(
                    (
                        "spec.selector",
                        "FieldValueInvalid",
                        "Invalid value: empty selector is invalid",
                    )
                )
            elif not parsed.matches(labels):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        "FieldValueInvalid",
                        f"Invalid value: {json.dumps(labels, sort_keys=True)}: `selector` does "
                        "not match template `labels`",
                    )
                )
    if causes:
        raise StatusError.invalid(res, name, causes)


_POD_MUTABLE = (
    "`spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
    "`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)


def check_immutable(res: Resource, old: Obj, new: Obj) -> None:
    """Updates the real server refuses: most of a pod's spec, and a workload's selector."""
    name = new["metadata"]["name"]
    if res.group == CORE and res.plural == "pods":

        def frozen(spec: Any) -> Any:
            spec = copy.deepcopy(spec or {})
            for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
                spec.pop(key, None)
            for field_name in ("containers", "initContainers"):
                for container in spec.get(field_name) or []:
                    if isinstance(container, dict):
                        container.pop("image", None)
            return spec

        if frozen(old.get("spec")) != frozen(new.get("spec")):
            text = f"Forbidden: pod updates may not change fields other than {_POD_MUTABLE}"
            raise StatusError.invalid(res, name, [("spec", "FieldValueForbidden", text)])
    if res.group == APPS and _path(old, "spec.selector") != _path(new, "spec.selector"):
        selector = json.dumps(_path(new, "spec.selector"), sort_keys=True)
        text = f"Invalid value: {selector}: field is immutable"
        raise StatusError.invalid(res, name, [("spec.selector", "FieldValueInvalid", text)])


def _pod_spec_problems(spec: Any, prefix: str) -> list[tuple[str, str, str]]:
    causes: list[tuple[str, str, str]] = []
    if not isinstance(spec, dict):
        return causes
    seen: set[str] = set()
    for field_name in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(field_name) or []):
            where = f"{prefix}.{field_name}[{i}]"
            if not isinstance(container, dict):
                causes.append((where, "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            name = container.get("name")
            if not name:
                causes.append((f"{where}.name", "FieldValueRequired", "Required value"))
            elif not is_dns1123_label(str(name)):
                causes.append(
                    (f"{where}.name", "FieldValueInvalid", f"Invalid value: {json.dumps(name)}")
                )
            elif name in seen:
                causes.append(
                    (f"{where}.name", "FieldValueDuplicate", f"Duplicate value: {json.dumps(name)}")
                )
            else:
                seen.add(str(name))
            if not container.get("image"):
                causes.append((f"{where}.image", "FieldValueRequired", "Required value"))
    return causes


PSA_ENFORCE = "pod-security.kubernetes.io/enforce"


def pod_security_problems(pod: Obj, level: str) -> list[str]:
    """What the PodSecurity admission's `level` ("baseline" or "restricted") objects to in
    `pod`, worded as kube-apiserver lists it; only the checks a node-exec pod can trip."""
    if level not in ("baseline", "restricted"):
        return []
    spec = pod.get("spec") or {}
    containers = [
        c
        for field_name in ("initContainers", "containers")
        for c in spec.get(field_name) or []
        if isinstance(c, dict)
    ]
    problems = []
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        problems.append(f"host namespaces ({', '.join(host)})")
    privileged = [
        str(c.get("name")) for c in containers if (c.get("securityContext") or {}).get("privileged")
    ]
    if privileged:
        problems.append(
            f"privileged ({_containers(privileged)} must not set securityContext.privileged=true)"
        )
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    host_paths = [str(v.get("name")) for v in volumes if "hostPath" in v]
    if host_paths:
        quoted = ", ".join(f'"{n}"' for n in host_paths)
        problems.append(f"hostPath volumes (volume{'s' if len(host_paths) > 1 else ''} {quoted})")
    if level == "restricted":
        pod_context = spec.get("securityContext") or {}

        def unset(key: str, ok: Any) -> list[str]:
            return [
                str(c.get("name"))
                for c in containers
                if not ok((c.get("securityContext") or {}).get(key))
            ]

        escalation = unset("allowPrivilegeEscalation", lambda v: v is False)
        if escalation:
            problems.append(
                f"allowPrivilegeEscalation != false ({_containers(escalation)} must set "
                "securityContext.allowPrivilegeEscalation=false)"
            )
        caps = unset("capabilities", lambda v: "ALL" in ((v or {}).get("drop") or []))
        if caps:
            problems.append(
                f"unrestricted capabilities ({_containers(caps)} must set "
                'securityContext.capabilities.drop=["ALL"])'
            )
        if pod_context.get("runAsNonRoot") is not True:
            non_root = unset("runAsNonRoot", lambda v: v is True)
            if non_root:
                problems.append(
                    f"runAsNonRoot != true (pod or {_containers(non_root)} must set "
                    "securityContext.runAsNonRoot=true)"
                )
        confined = ("RuntimeDefault", "Localhost")
        if (pod_context.get("seccompProfile") or {}).get("type") not in confined:
            seccomp = unset("seccompProfile", lambda v: (v or {}).get("type") in confined)
            if seccomp:
                problems.append(
                    f"seccompProfile (pod or {_containers(seccomp)} must set "
                    'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
                )
    return problems


def _containers(names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"container {quoted}" if len(names) == 1 else f"containers {quoted}"


def check_pod_security(res: Resource, obj: Obj, namespace: Obj | None) -> None:
    """The PodSecurity admission of a namespace labelled `pod-security.kubernetes.io/enforce`:
    a pod that violates its level is refused with the 403 kube-apiserver gives."""
    if not (res.group == CORE and res.plural == "pods") or namespace is None:
        return
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    level = labels.get(PSA_ENFORCE, "privileged")
    problems = pod_security_problems(obj, level)
    if problems:
        version = labels.get(f"{PSA_ENFORCE}-version", "latest")
        name = obj["metadata"].get("name", "")
        raise StatusError(
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": '
            + ", ".join(problems),
            {"name": name, "kind": "pods"},
        )
