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

The client does not wait: the engine's checks poll through it with their own deadline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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

from flannel_bot.errors import ApiError, ApiUnreachable, KubeConfigError, NotFound
from flannel_bot.executors.kube.calls import ApiCall, api_call, forbidden
from flannel_bot.executors.kube.lease import Leases
from flannel_bot.executors.kube.parsing import (
    Json,
    _dict,
    _list,
    _str,
    parse_configmap,
    parse_daemonset,
    parse_event,
    parse_node,
    parse_pod,
    parse_rbac,
    parse_service,
)
from flannel_bot.ports.cluster import (
    ConfigMapInfo,
    DaemonSetInfo,
    EventInfo,
    NodeInfo,
    PodInfo,
    Rbac,
    ServiceInfo,
)

DEFAULT_KUBECONFIG = Path("~/.kube/config")
# kubectl's chunk size: the server builds (and the bot holds) at most this many items at a time.
_LIST_CHUNK = 500
_STRATEGIC_MERGE = "application/strategic-merge-patch+json"


@dataclass(frozen=True)
class KubeSettings:
    """How to reach the API server.

    `kubeconfig` None means ~/.kube/config (settings.py already turned $KUBECONFIG into a path);
    `context` None means the file's current-context. `request_timeout` bounds each HTTP request.
    """

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    request_timeout: float = 10.0
    # the API server's own address, instead of the in-cluster Service IP (or the kubeconfig's):
    # the Service IP goes through kube-proxy, which may be the very thing that is broken
    server: str | None = None

    def __post_init__(self) -> None:
        if self.in_cluster and (self.kubeconfig is not None or self.context is not None):
            raise ValueError("kube in_cluster cannot be combined with a kubeconfig or context")
        if not self.request_timeout > 0:
            raise ValueError(f"kube request_timeout must be positive, got {self.request_timeout}")


@dataclass(frozen=True)
class _Kind:
    resource: str
    group: str
    create: Callable[..., Any]
    read: Callable[..., Any]
    namespaced: bool


class KubeClient:
    """`KubeExecutor` on the official client, plus the reads diagnosis and support bundles need
    and the Lease calls of leader election.

    Returns our own frozen dataclasses; raises NotFound, ApiForbidden, ApiError and
    ApiUnreachable. Thread-safe: the client's connection pool is.
    """

    def __init__(self, api: client.ApiClient, settings: KubeSettings | None = None) -> None:
        self.settings = settings or KubeSettings()
        self._api = api
        self._core = client.CoreV1Api(api)
        self._apps = client.AppsV1Api(api)
        self._authz = client.AuthorizationV1Api(api)
        self._leases = Leases(api, self._json)

    @classmethod
    def from_settings(cls, settings: KubeSettings) -> KubeClient:
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
            if settings.server:
                cfg.host = settings.server
            return cls(client.ApiClient(cfg), settings)
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
        if settings.server:
            api.configuration.host = settings.server
        return cls(api, settings)

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
        call = api_call("list", "nodes", namespaced=False, labelSelector=label_selector)
        items = self._list_all(call, self._core.list_node, label_selector=label_selector)
        return [parse_node(item) for item in items]

    def get_node(self, name: str) -> NodeInfo:
        call = api_call("get", "nodes", None, name, namespaced=False)
        return parse_node(self._json(call, self._core.read_node, name))

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]:
        """Pods in `namespace` (all namespaces when None), selected by the server."""
        fields = f"spec.nodeName={node}" if node else None
        call = api_call(
            "list", "pods", namespace, labelSelector=label_selector, fieldSelector=fields
        )
        selectors = {"label_selector": label_selector, "field_selector": fields}
        if namespace is None:
            items = self._list_all(call, self._core.list_pod_for_all_namespaces, **selectors)
        else:
            items = self._list_all(call, self._core.list_namespaced_pod, namespace, **selectors)
        return [parse_pod(item) for item in items]

    def get_pod(self, namespace: str, name: str) -> PodInfo:
        call = api_call("get", "pods", namespace, name)
        return parse_pod(self._json(call, self._core.read_namespaced_pod, name, namespace))

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        call = api_call("list", "daemonsets", namespace, group="apps", labelSelector=label_selector)
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
        call = api_call("get", "daemonsets", namespace, name, group="apps")
        obj = self._json(call, self._apps.read_namespaced_daemon_set, name, namespace)
        return parse_daemonset(obj)

    def get_configmap(self, namespace: str, name: str) -> ConfigMapInfo:
        call = api_call("get", "configmaps", namespace, name)
        return parse_configmap(
            self._json(call, self._core.read_namespaced_config_map, name, namespace)
        )

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]:
        """Events, oldest first, e.g. field_selector `involvedObject.name=kube-flannel-ds-x`."""
        call = api_call("list", "events", namespace, fieldSelector=field_selector)
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
        call = api_call(
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
        call = api_call(
            "list", "clusterrolebindings", group="rbac.authorization.k8s.io", namespaced=False
        )
        bindings = self._list_all(call, rbac_api.list_cluster_role_binding)
        call = api_call("list", "clusterroles", group="rbac.authorization.k8s.io", namespaced=False)
        roles = self._list_all(call, rbac_api.list_cluster_role)
        return parse_rbac(roles, bindings)

    def get_service(self, namespace: str, name: str) -> ServiceInfo:
        call = api_call("get", "services", namespace, name)
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
        call = api_call(
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
            call = api_call("list", resource, group=group, namespaced=namespaced_method is not None)
            fn, args = getattr(api, cluster_method), []
        else:
            call = api_call("list", resource, namespace, group=group)
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
        call = api_call("delete", "pods", namespace, name)
        self._send(call, self._core.delete_namespaced_pod, name, namespace)

    def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Json:
        """POST a pod (a node-exec pod: bot.executors.kube.nodepods); the server's copy back."""
        call = api_call("create", "pods", namespace)
        return self._json(call, self._core.create_namespaced_pod, namespace, dict(body))

    def read_pod_raw(self, namespace: str, name: str) -> Json:
        """A pod as the API returns it: its conditions and container states say why it waits."""
        call = api_call("get", "pods", namespace, name)
        return self._json(call, self._core.read_namespaced_pod, name, namespace)

    def patch_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """Sets the given keys of `data`; other keys are kept."""
        call = api_call("patch", "configmaps", namespace, name)
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
        call = api_call("patch", "daemonsets", namespace, name, group="apps")
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
        call = api_call("get", k.resource, ns, name, group=k.group, namespaced=k.namespaced)
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
        call = api_call(
            "create",
            k.resource,
            namespace if k.namespaced else None,
            None,
            group=k.group,
            namespaced=k.namespaced,
        )
        args = (namespace, dict(obj)) if k.namespaced else (dict(obj),)
        self._send(call, k.create, *args)

    # -- leases (leader election, `LeaderElector`): the calls live in lease.py -------------------

    def get_lease(self, namespace: str, name: str) -> Json | None:
        return self._leases.get(namespace, name)

    def create_lease(self, namespace: str, body: Mapping[str, Any]) -> Json:
        return self._leases.create(namespace, body)

    def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> Json:
        """PUT with the body's resourceVersion: ApiError code 409 if someone else wrote first."""
        return self._leases.replace(namespace, name, body)

    # -- the one wrapper ------------------------------------------------------------------------

    def _list_all(
        self, call: ApiCall, fn: Callable[..., Any], *args: Any, **kwargs: Any
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

    def _json(self, call: ApiCall, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
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

    def _send(self, call: ApiCall, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
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

    def _api_error(self, call: ApiCall, exc: client.ApiException) -> Exception:
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
            return forbidden(call, message)
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


def _status_of(body: Any) -> Json:
    if not body:
        return {}
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return {"message": str(body)[:500]}
    return status if isinstance(status, dict) else {}
