"""Reads and changes the cluster through the Kubernetes API, with the official client.

Why raw JSON: the client's model deserialisation is the known bottleneck on big clusters (it
builds and validates an object per field of every pod), so every read asks for the undecoded
response (`_preload_content=False`) and parses `json.loads` output straight into our own frozen
dataclasses, which is also the shape the rest of the bot saves and replays. Lists are fetched in
chunks of `_LIST_CHUNK` and selectors always go to the server: a node's pods are one indexed
query, not a copy of every pod in the cluster.

Why one wrapper (`_send`): every call that fails says which call it was (`GET /api/v1/...`), and
a 403 says which RBAC rule the bot's ServiceAccount lacks, so the person on call can fix the Role
without a traceback. 404 is `NotFound`, 403 `ApiForbidden`, other statuses `ApiError`, and no
answer at all (refused, timed out, TLS) `ApiUnreachable` naming the server.

Why polling for the waits: a poll is one selector-limited list with its own request timeout, and
the deadline is kept by the injected clock, so a wait is bounded (its timeout, plus the request
in flight: `request_timeout`, twice for a GET that is retried once) and its timeout is tested
without sleeping. A watch would save a few requests per repair at the cost of reconnect and
resume logic for streams that may stall.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from bot.errors import (
    ApiError,
    ApiForbidden,
    ApiUnreachable,
    KubeConfigError,
    NotFound,
    WaitTimeout,
)
from bot.ports.clock import Clock, SystemClock
from bot.ports.cluster import (
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

DEFAULT_KUBECONFIG = Path("~/.kube/config")
# kubectl's chunk size: the server builds (and the bot holds) at most this many items at a time.
_LIST_CHUNK = 500
_STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_USER = re.compile(r'User "([^"]*)"')
_SERVICE_ACCOUNT = "system:serviceaccount:"


@dataclass(frozen=True)
class KubeSettings:
    """How to reach the API server.

    `kubeconfig` None means ~/.kube/config (settings.py already turned $KUBECONFIG into a path);
    `context` None means the file's current-context. `request_timeout` bounds each HTTP request;
    `poll_interval` is how often the waits look again.
    """

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    request_timeout: float = 10.0
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("kube in_cluster cannot be combined with a kubeconfig or context")
        for name in ("request_timeout", "poll_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"kube {name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class _Call:
    """One API request, described for error messages and RBAC advice."""

    verb: str  # the RBAC verb: get, list, delete, patch, create
    resource: str
    namespace: str | None = None
    name: str | None = None
    group: str = ""
    version: str = "v1"
    subresource: str = ""
    query: str = ""
    namespaced: bool = True

    @property
    def method(self) -> str:
        verbs = {"get": "GET", "list": "GET", "delete": "DELETE", "patch": "PATCH"}
        return verbs.get(self.verb, "POST")

    @property
    def path(self) -> str:
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if self.namespace:
            parts.append(f"/namespaces/{self.namespace}")
        parts.append(f"/{self.resource}")
        if self.name:
            parts.append(f"/{self.name}")
        if self.subresource:
            parts.append(f"/{self.subresource}")
        return "".join(parts)

    @property
    def where(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''}"

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _call(
    verb: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    *,
    group: str = "",
    subresource: str = "",
    namespaced: bool = True,
    **query: str | None,
) -> _Call:
    # An empty name would turn `DELETE .../pods/<name>` into a request on the whole collection.
    for what, value in (("namespace", namespace), ("name", name)):
        if value is not None and (not value or "/" in value):
            raise ValueError(f"{resource}: invalid {what} {value!r}")
    text = "&".join(f"{k}={v}" for k, v in query.items() if v)
    return _Call(
        verb, resource, namespace, name, group, "v1", subresource, text, namespaced=namespaced
    )


@dataclass(frozen=True)
class _Kind:
    resource: str
    group: str
    create: Callable[..., Any]
    read: Callable[..., Any]
    namespaced: bool


class KubeClient:
    """`KubeExecutor` on the official client, plus the reads and waits diagnosis needs.

    Returns our own frozen dataclasses; raises NotFound, ApiForbidden, ApiError, ApiUnreachable
    and WaitTimeout. Thread-safe: the client's connection pool is.
    """

    def __init__(
        self,
        api: client.ApiClient,
        settings: KubeSettings | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings or KubeSettings()
        self._api = api
        self._clock = clock or SystemClock()
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._authz = client.AuthorizationV1Api(api)

    @classmethod
    def from_settings(cls, settings: KubeSettings, clock: Clock | None = None) -> KubeClient:
        """Builds its own ApiClient; the client library's global configuration is not touched."""
        cfg = client.Configuration()
        # urllib3 retries 3 times by default, each try with the full timeout. Retry once, and
        # only where it is safe: a connection that never got the request, or a GET.
        cfg.retries = urllib3.Retry(
            total=1,
            connect=1,
            read=1,
            status=0,
            redirect=0,
            other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),
            raise_on_status=False,
        )
        if settings.in_cluster:
            try:
                config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
            except (ConfigException, OSError) as exc:
                raise KubeConfigError(
                    f"cannot load the in-cluster Kubernetes config: {exc} (is the bot running in "
                    f"a pod with a ServiceAccount token mounted?)"
                ) from exc
            return cls(client.ApiClient(cfg), settings, clock)
        path = (settings.kubeconfig or DEFAULT_KUBECONFIG).expanduser()
        context = f"context {settings.context!r}" if settings.context else "its current context"
        if not path.is_file():
            problem = "is not a file" if path.exists() else "does not exist"
            raise KubeConfigError(
                f"kubeconfig {path} {problem}: set kubeconfig (or $KUBECONFIG), or run the bot "
                f"in the cluster with in_cluster"
            )
        try:
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(path),
                context=settings.context,
                persist_config=False,  # never rewrite the operator's kubeconfig
                client_configuration=cfg,
            )
        # The loader indexes into whatever YAML it got: a malformed file raises the odd
        # TypeError or KeyError, which is the operator's to fix, not a bug of ours.
        except (
            ConfigException,
            OSError,
            yaml.YAMLError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
        ) as exc:
            raise KubeConfigError(f"cannot load kubeconfig {path} with {context}: {exc}") from exc
        return cls(api, settings, clock)

    @property
    def server(self) -> str:
        return str(self._api.configuration.host)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reads ----------------------------------------------------------------------------------

    def list_nodes(self, label_selector: str | None = None) -> list[NodeInfo]:
        call = _call("list", "nodes", namespaced=False, labelSelector=label_selector)
        items = self._list_all(call, self._core.list_node, label_selector=label_selector)
        return [parse_node(item) for item in items]

    def get_node(self, name: str) -> NodeInfo:
        call = _call("get", "nodes", None, name, namespaced=False)
        return parse_node(self._json(call, self._core.read_node, name))

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        """Pods in `namespace` (all namespaces when None), selected by the server."""
        fields = f"spec.nodeName={node}" if node else None
        call = _call("list", "pods", namespace, labelSelector=label_selector, fieldSelector=fields)
        selectors = {"label_selector": label_selector, "field_selector": fields}
        if namespace is None:
            items = self._list_all(call, self._core.list_pod_for_all_namespaces, **selectors)
        else:
            items = self._list_all(call, self._core.list_namespaced_pod, namespace, **selectors)
        return [parse_pod(item) for item in items]

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        call = _call("get", "pods", namespace, name)
        return parse_pod(self._json(call, self._core.read_namespaced_pod, name, namespace))

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        call = _call("list", "daemonsets", namespace, group="apps", labelSelector=label_selector)
        if namespace is None:
            items = self._list_all(
                call, self._apps.list_daemon_set_for_all_namespaces, label_selector=label_selector
            )
        else:
            items = self._list_all(
                call,
                self._apps.list_namespaced_daemon_set,
                namespace,
                label_selector=label_selector,
            )
        return [parse_daemonset(item) for item in items]

    def get_daemonset(self, namespace: str, name: str) -> DaemonSetInfo:
        call = _call("get", "daemonsets", namespace, name, group="apps")
        obj = self._json(call, self._apps.read_namespaced_daemon_set, name, namespace)
        return parse_daemonset(obj)

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo:
        call = _call("get", "configmaps", namespace, name)
        return parse_configmap(
            self._json(call, self._core.read_namespaced_config_map, name, namespace)
        )

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]:
        """Events, oldest first, e.g. field_selector `involvedObject.name=kube-flannel-ds-x`."""
        call = _call("list", "events", namespace, fieldSelector=field_selector)
        if namespace is None:
            items = self._list_all(
                call, self._core.list_event_for_all_namespaces, field_selector=field_selector
            )
        else:
            items = self._list_all(
                call, self._core.list_namespaced_event, namespace, field_selector=field_selector
            )
        return sorted((parse_event(item) for item in items), key=lambda e: e.last_timestamp)

    def read_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
    ) -> str:
        """A container's log (`previous`: of its last terminated run, where crash loops explain
        themselves); undecodable bytes are replaced, not fatal."""
        call = _call(
            "get",
            "pods",
            namespace,
            pod,
            subresource="log",
            container=container,
            previous="true" if previous else None,
            tailLines=None if tail_lines is None else str(tail_lines),
        )
        raw = self._send(
            call,
            self._core.read_namespaced_pod_log,
            pod,
            namespace,
            container=container,
            previous=previous or None,
            tail_lines=tail_lines,
            limit_bytes=limit_bytes,
        )
        return raw.decode("utf-8", errors="replace")

    def read_rbac(self) -> Rbac:
        """ClusterRoleBindings and the ClusterRoles they bind (what flannel's account may do)."""
        rbac_api = client.RbacAuthorizationV1Api(self._api)
        call = _call(
            "list", "clusterrolebindings", group="rbac.authorization.k8s.io", namespaced=False
        )
        bindings = self._list_all(call, rbac_api.list_cluster_role_binding)
        call = _call("list", "clusterroles", group="rbac.authorization.k8s.io", namespaced=False)
        roles = self._list_all(call, rbac_api.list_cluster_role)
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

    def get_service(self, namespace: str, name: str) -> ServiceInfo:
        call = _call("get", "services", namespace, name)
        return parse_service(self._json(call, self._core.read_namespaced_service, name, namespace))

    def can_i(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        group: str = "",
        name: str | None = None,
    ) -> bool:
        """Whether the bot's own credentials allow `verb` on `resource` (`pods/log` names a
        subresource), asked with a SelfSubjectAccessReview like `kubectl auth can-i`."""
        plural, _, subresource = resource.partition("/")
        attributes = client.V1ResourceAttributes(
            verb=verb,
            resource=plural,
            subresource=subresource or None,
            group=group,
            namespace=namespace,
            name=name,
        )
        body = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=attributes)
        )
        call = _call(
            "create",
            "selfsubjectaccessreviews",
            group="authorization.k8s.io",
            namespaced=False,
        )
        review = self._json(call, self._authz.create_self_subject_access_review, body)
        return bool(_dict(review.get("status")).get("allowed"))

    # resource -> (API group, namespaced list method or None if cluster-scoped, cluster-wide one)
    _RAW_LISTS: Mapping[str, tuple[str, str | None, str]] = {
        "nodes": ("", None, "list_node"),
        "namespaces": ("", None, "list_namespace"),
        "pods": ("", "list_namespaced_pod", "list_pod_for_all_namespaces"),
        "events": ("", "list_namespaced_event", "list_event_for_all_namespaces"),
        "services": ("", "list_namespaced_service", "list_service_for_all_namespaces"),
        "configmaps": ("", "list_namespaced_config_map", "list_config_map_for_all_namespaces"),
        "replicationcontrollers": (
            "",
            "list_namespaced_replication_controller",
            "list_replication_controller_for_all_namespaces",
        ),
        "daemonsets": ("apps", "list_namespaced_daemon_set", "list_daemon_set_for_all_namespaces"),
        "deployments": ("apps", "list_namespaced_deployment", "list_deployment_for_all_namespaces"),
        "replicasets": (
            "apps",
            "list_namespaced_replica_set",
            "list_replica_set_for_all_namespaces",
        ),
        "clusterroles": ("rbac.authorization.k8s.io", None, "list_cluster_role"),
        "clusterrolebindings": ("rbac.authorization.k8s.io", None, "list_cluster_role_binding"),
    }

    def list_raw(self, resource: str, namespace: str | None = None) -> Json:
        """A list as the API returns it (`{"kind": "PodList", "apiVersion": "v1", "metadata":
        {...}, "items": [...]}`), its chunks joined; all namespaces when `namespace` is None.

        For support bundles, which keep what the server said rather than our dataclasses.
        `resource` is a plural from `_RAW_LISTS`."""
        if resource not in self._RAW_LISTS:
            raise ValueError(f"list_raw: {resource!r} is not one of {sorted(self._RAW_LISTS)}")
        group, namespaced_method, cluster_method = self._RAW_LISTS[resource]
        apis = {"": self._core, "apps": self._apps}
        api = apis.get(group) or client.RbacAuthorizationV1Api(self._api)
        if namespaced_method is None and namespace is not None:
            raise ValueError(f"list_raw: {resource} are cluster-scoped, not in a namespace")
        if namespaced_method is None or namespace is None:
            call = _call("list", resource, group=group, namespaced=namespaced_method is not None)
            fn, args = getattr(api, cluster_method), []
        else:
            call = _call("list", resource, namespace, group=group)
            fn, args = getattr(api, namespaced_method), [namespace]
        pages: list[Json] = []
        token: str | None = None
        while token is not None or not pages:
            page = self._json(call, fn, *args, limit=_LIST_CHUNK, _continue=token)
            pages.append(page)
            token = _dict(page.get("metadata")).get("continue") or None
        metadata = {
            k: v
            for k, v in _dict(pages[0].get("metadata")).items()
            if k not in ("continue", "remainingItemCount")
        }
        return {
            "kind": pages[0].get("kind") or "List",
            "apiVersion": pages[0].get("apiVersion") or (f"{group}/v1" if group else "v1"),
            "metadata": metadata,
            "items": [_dict(item) for page in pages for item in _list(page.get("items"))],
        }

    # -- writes ---------------------------------------------------------------------------------

    def delete_pod(self, namespace: str, name: str) -> None:
        """Deletes with the pod's own grace period; NotFound if it is already gone."""
        call = _call("delete", "pods", namespace, name)
        self._send(call, self._core.delete_namespaced_pod, name, namespace)

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Sets the given keys of `data`; other keys are kept."""
        call = _call("patch", "configmaps", namespace, name)
        body = {"data": dict(data)}
        self._send(
            call,
            self._core.patch_namespaced_config_map,
            name,
            namespace,
            body,
            _content_type=_STRATEGIC_MERGE,
        )

    def patch_daemonset(self, namespace: str, name: str, patch: Mapping[str, Any]) -> DaemonSetInfo:
        """Strategic merge patch: containers merge by name, so a patch can name just one."""
        call = _call("patch", "daemonsets", namespace, name, group="apps")
        obj = self._json(
            call,
            self._apps.patch_namespaced_daemon_set,
            name,
            namespace,
            dict(patch),
            _content_type=_STRATEGIC_MERGE,
        )
        return parse_daemonset(obj)

    def _kind(self, kind: str) -> _Kind:
        """The manifest kinds the runbooks read and recreate (flannel's own objects)."""
        rbac = client.RbacAuthorizationV1Api(self._api)
        group = "rbac.authorization.k8s.io"
        kinds = {
            "Namespace": _Kind(
                "namespaces", "", self._core.create_namespace, self._core.read_namespace, False
            ),
            "ServiceAccount": _Kind(
                "serviceaccounts",
                "",
                self._core.create_namespaced_service_account,
                self._core.read_namespaced_service_account,
                True,
            ),
            "ConfigMap": _Kind(
                "configmaps",
                "",
                self._core.create_namespaced_config_map,
                self._core.read_namespaced_config_map,
                True,
            ),
            "DaemonSet": _Kind(
                "daemonsets",
                "apps",
                self._apps.create_namespaced_daemon_set,
                self._apps.read_namespaced_daemon_set,
                True,
            ),
            "ClusterRole": _Kind(
                "clusterroles", group, rbac.create_cluster_role, rbac.read_cluster_role, False
            ),
            "ClusterRoleBinding": _Kind(
                "clusterrolebindings",
                group,
                rbac.create_cluster_role_binding,
                rbac.read_cluster_role_binding,
                False,
            ),
        }
        if kind not in kinds:
            raise ValueError(f"{kind or 'a kind-less object'} is not a kind the runbooks manage")
        return kinds[kind]

    def object_exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        k = self._kind(kind)
        ns = namespace if k.namespaced else None
        if k.namespaced and not ns:
            raise ValueError(f"{kind} {name}: a namespace is needed")
        call = _call("get", k.resource, ns, name, group=k.group, namespaced=k.namespaced)
        args = (name, ns) if k.namespaced else (name,)
        try:
            self._send(call, k.read, *args)
        except NotFound:
            return False
        return True

    def create_object(self, obj: Mapping[str, Any]) -> None:
        """POST one object of a kind flannel's manifest holds."""
        k = self._kind(str(obj.get("kind", "")))
        meta = _dict(obj.get("metadata"))
        namespace = _str(meta.get("namespace")) or None
        if k.namespaced and namespace is None:
            raise ValueError(f"{obj.get('kind')} {meta.get('name')} needs metadata.namespace")
        call = _call(
            "create",
            k.resource,
            namespace if k.namespaced else None,
            None,
            group=k.group,
            namespaced=k.namespaced,
        )
        args = (namespace, dict(obj)) if k.namespaced else (dict(obj),)
        self._send(call, k.create, *args)

    # -- leases (leader election) --------------------------------------------------------------

    def get_lease(self, namespace: str, name: str) -> Json | None:
        call = _call("get", "leases", namespace, name, group="coordination.k8s.io")
        coordination = client.CoordinationV1Api(self._api)
        try:
            return self._json(call, coordination.read_namespaced_lease, name, namespace)
        except NotFound:
            return None

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> Json:
        call = _call("create", "leases", namespace, group="coordination.k8s.io")
        coordination = client.CoordinationV1Api(self._api)
        return self._json(call, coordination.create_namespaced_lease, namespace, dict(body))

    def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> Json:
        """PUT with the body's resourceVersion: ApiError code 409 if someone else wrote first."""
        call = _call("update", "leases", namespace, name, group="coordination.k8s.io")
        coordination = client.CoordinationV1Api(self._api)
        return self._json(call, coordination.replace_namespaced_lease, name, namespace, dict(body))

    # -- waits ----------------------------------------------------------------------------------

    def wait_for_pod_ready(
        self,
        namespace: str,
        label_selector: str,
        node: str | None = None,
        exclude_names: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> PodInfo:
        """The newest Ready, Running, not terminating pod matching the selector (on `node`),
        skipping `exclude_names` (the pod just deleted); WaitTimeout says what it saw last."""
        excluded = frozenset(exclude_names)
        where = f"in {namespace} matching {label_selector}" + (f" on node {node}" if node else "")
        pods: list[PodInfo] = []
        for _ in self._polls(timeout):
            pods = self.list_pods(namespace, label_selector, node)
            ready = [
                p
                for p in pods
                if p.name not in excluded and not p.deletion and p.ready and p.phase == "Running"
            ]
            if ready:
                return max(ready, key=lambda p: p.creation)
        seen = "; ".join(describe_pod(p, excluded) for p in pods) or "no matching pods"
        raise WaitTimeout(
            f"no Ready pod {where} within {timeout:g}s; last saw: {seen}", last_seen=tuple(pods)
        )

    def wait_for_daemonset_rollout(
        self, namespace: str, name: str, timeout: float = 300.0
    ) -> DaemonSetInfo:
        """Waits like `kubectl rollout status`: the controller saw the latest spec, and every
        scheduled pod is updated, ready and available."""
        ds: DaemonSetInfo | None = None
        for _ in self._polls(timeout):
            ds = self.get_daemonset(namespace, name)
            if ds.rolled_out:
                return ds
        assert ds is not None
        raise WaitTimeout(
            f"DaemonSet {namespace}/{name} not rolled out within {timeout:g}s; last saw: "
            f"generation {ds.generation} (observed {ds.observed_generation}), desired "
            f"{ds.desired}, updated {ds.updated}, ready {ds.ready}, available {ds.available}",
            last_seen=ds,
        )

    def _polls(self, timeout: float) -> Iterator[int]:
        """Yields once at once, then every poll_interval until `timeout` has passed."""
        if timeout < 0:
            raise ValueError(f"timeout must not be negative, got {timeout}")
        deadline = self._clock.now() + timedelta(seconds=timeout)
        attempt = 0
        while True:
            yield attempt
            attempt += 1
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                return
            self._clock.sleep(min(self.settings.poll_interval, remaining))

    # -- the one wrapper ------------------------------------------------------------------------

    def _list_all(
        self, call: _Call, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> list[Json]:
        """Every item of a list, in chunks: the server need not build a huge answer at once."""
        items: list[Json] = []
        token: str | None = None
        while True:
            page = self._json(call, fn, *args, limit=_LIST_CHUNK, _continue=token, **kwargs)
            items.extend(_dict(item) for item in _list(page.get("items")))
            token = _dict(page.get("metadata")).get("continue") or None
            if token is None:
                return items

    def _json(self, call: _Call, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        raw = self._send(call, fn, *args, **kwargs)
        try:
            obj = json.loads(raw)
        except ValueError:
            raise ApiError(
                f"{call.where}: the server at {self.server} did not answer with JSON: "
                f"{raw[:200]!r}",
                call=call.where,
            ) from None
        if not isinstance(obj, dict):
            raise ApiError(
                f"{call.where}: expected a JSON object, got {obj!r:.200}", call=call.where
            )
        return obj

    def _send(self, call: _Call, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
        """Sends one request and returns the undecoded body; every API failure is mapped here."""
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            response = fn(
                *args,
                _preload_content=False,
                _request_timeout=self.settings.request_timeout,
                **kwargs,
            )
            try:
                return bytes(response.data)
            finally:
                response.release_conn()
        except client.ApiException as exc:
            raise self._api_error(call, exc) from exc
        except HTTPError as exc:  # urllib3's root: refused, timed out, cut off mid-body
            raise ApiUnreachable(
                f"{call.where}: cannot reach the Kubernetes API server at {self.server}: "
                f"{self._why(exc)}",
                call=call.where,
                server=self.server,
            ) from exc

    def _api_error(self, call: _Call, exc: client.ApiException) -> Exception:
        code = int(exc.status or 0)
        status = _status_of(exc.body)
        message = str(status.get("message") or exc.reason or "").strip()
        reason = str(status.get("reason") or exc.reason or "")
        if code == 0:  # the client reports TLS failures as a status-less ApiException
            return ApiUnreachable(
                f"{call.where}: cannot talk to the Kubernetes API server at {self.server}: "
                f"{message}",
                call=call.where,
                server=self.server,
            )
        if code == 404:
            return NotFound(f"{call.where}: not found")
        if code == 403:
            return _forbidden(call, message)
        if code == 401:
            return ApiError(
                f"{call.where}: the API server at {self.server} did not accept the bot's "
                f"credentials (401 Unauthorized: {message}); check the token or client "
                f"certificate in the kubeconfig",
                call=call.where,
                code=code,
                reason=reason,
            )
        return ApiError(
            f"{call.where}: {code} {reason}: {message}", call=call.where, code=code, reason=reason
        )

    def _why(self, exc: HTTPError) -> str:
        cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason else exc
        timeout = self.settings.request_timeout
        # NewConnectionError subclasses ConnectTimeoutError, so it is checked first.
        if isinstance(cause, NewConnectionError):
            return str(cause).rsplit(": ", 1)[-1]
        if isinstance(cause, ConnectTimeoutError):
            return f"no connection within {timeout:g}s"
        if isinstance(cause, ReadTimeoutError):
            return f"no answer within {timeout:g}s"
        if isinstance(cause, ProtocolError):
            return f"the connection broke off ({cause})"
        return str(cause)


def _forbidden(call: _Call, message: str) -> ApiForbidden:
    found = _USER.search(message)
    user = found.group(1) if found else ""
    if user.startswith(_SERVICE_ACCOUNT) or not user:
        who = "the bot's ServiceAccount"
    else:
        who = f'the bot\'s user "{user}"'
    subject = call.rbac_resource + (f' "{call.name}"' if call.name else "")
    if call.namespace:
        scope = f"in namespace {call.namespace}"
        binding = "a Role or ClusterRole"
    elif call.namespaced:
        scope = "across all namespaces"
        binding = "a ClusterRole bound with a ClusterRoleBinding"
    else:
        scope = "at cluster scope"
        binding = "a ClusterRole bound with a ClusterRoleBinding"
    return ApiForbidden(
        f"{call.where}: {who} may not {call.verb} {subject} {scope} (needs verb "
        f'"{call.verb}" on resource "{call.rbac_resource}" in API group "{call.group}", from '
        f"{binding}): {message}",
        call=call.where,
        verb=call.verb,
        resource=call.rbac_resource,
        group=call.group,
        namespace=call.namespace,
        user=user,
    )


def _status_of(body: Any) -> Json:
    if not body:
        return {}
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return {"message": str(body)[:500]}
    return status if isinstance(status, dict) else {}


# -- JSON -> our dataclasses -------------------------------------------------------------------
# Parsed from `kubectl get -o json` shapes; absent and null fields read as empty, since servers
# omit empty fields and older ones lack newer fields.


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
