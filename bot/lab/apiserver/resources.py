"""The REST resources the stand-in serves, and the look-ups over them.

Kinds are data here (URL, short names, subresources, field labels, required fields, name format),
so serving one more kind is one more row in `RESOURCES`, and URL routing, kubectl's names and
discovery all read the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flannel_bot.lab.apiserver.errors import StatusError

Obj = dict[str, Any]

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    """One REST resource. Serving another one is one more entry in `RESOURCES`."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()  # beyond metadata.name / metadata.namespace
    required: tuple[str, ...] = ()  # dotted paths that validation insists on
    name_format: str = "subdomain"  # or "label" (DNS-1123 label) or "path" (RBAC names)
    returns_object: bool = False  # DELETE answers with the object, not a Status
    generation: bool = False  # metadata.generation counts spec changes
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """How the real server names the resource in messages: `pods`, `daemonsets.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def details(self, name: str | None = None, **extra: Any) -> Obj:
        out: Obj = {}
        if name:
            out["name"] = name
        if self.group:
            out["group"] = self.group
        out["kind"] = self.plural
        out.update(extra)
        return out


CORE, APPS, RBAC = "", "apps", "rbac.authorization.k8s.io"
_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_WORKLOAD = ("spec.selector", "spec.template", "spec.template.spec.containers")

# fmt: off
RESOURCES: tuple[Resource, ...] = (
    Resource(CORE, "v1", "namespaces", "Namespace", False, ("ns",), ("status",), ("status.phase",), name_format="label", returns_object=True),  # noqa: E501
    Resource(CORE, "v1", "nodes", "Node", False, ("no",), ("status",), ("spec.unschedulable",)),
    Resource(CORE, "v1", "pods", "Pod", True, ("po",), ("status", "log"), _POD_FIELDS, ("spec.containers",), returns_object=True, categories=("all",)),  # noqa: E501
    Resource(CORE, "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource(CORE, "v1", "secrets", "Secret", True, field_labels=("type",)),
    Resource(CORE, "v1", "services", "Service", True, ("svc",), ("status",), name_format="label", returns_object=True, categories=("all",)),  # noqa: E501
    Resource(CORE, "v1", "endpoints", "Endpoints", True, ("ep",)),
    Resource(CORE, "v1", "events", "Event", True, ("ev",), (), _EVENT_FIELDS, ("involvedObject",)),
    Resource(CORE, "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), returns_object=True),
    Resource(APPS, "v1", "daemonsets", "DaemonSet", True, ("ds",), ("status",), (), _WORKLOAD, generation=True, categories=("all",)),  # noqa: E501
    Resource(APPS, "v1", "deployments", "Deployment", True, ("deploy",), ("status",), (), _WORKLOAD, generation=True, categories=("all",)),  # noqa: E501
    Resource(RBAC, "v1", "clusterroles", "ClusterRole", False, name_format="path"),
    Resource(RBAC, "v1", "clusterrolebindings", "ClusterRoleBinding", False, required=("roleRef",), name_format="path"),  # noqa: E501
    Resource(RBAC, "v1", "roles", "Role", True, name_format="path"),
    Resource(RBAC, "v1", "rolebindings", "RoleBinding", True, required=("roleRef",), name_format="path"),  # noqa: E501
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False, verbs=("create",)),  # noqa: E501
)
# fmt: on


class ResourceTable:
    """Look-ups over `RESOURCES`: by URL, by apiVersion/kind, and by the names kubectl accepts."""

    def __init__(self, resources: Iterable[Resource]) -> None:
        self.all = tuple(resources)
        self._by_path = {(r.group, r.version, r.plural): r for r in self.all}
        self._by_kind = {(r.api_version, r.kind): r for r in self.all}
        self._by_name: dict[str, Resource] = {}
        for r in self.all:
            for name in (r.plural, r.singular, *r.short_names):
                self._by_name.setdefault(name.lower(), r)
                self._by_name.setdefault(f"{name}.{r.group}".lower(), r)
            self._by_name.setdefault(r.kind.lower(), r)

    def at(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def find(self, name: str) -> Resource:
        """A resource by plural, singular, short name or kind, optionally `.group`-qualified."""
        found = self._by_name.get(name.lower())
        if found is None:
            raise StatusError(404, "NotFound", f'the server doesn\'t have a resource type "{name}"')
        return found

    def of(self, obj: Mapping[str, Any]) -> Resource:
        found = self._by_kind.get((str(obj.get("apiVersion")), str(obj.get("kind"))))
        if found is None:
            raise StatusError(
                400,
                "BadRequest",
                f'no matches for kind "{obj.get("kind")}" in version "{obj.get("apiVersion")}"',
            )
        return found

    def group_versions(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((r.group, r.version) for r in self.all))
