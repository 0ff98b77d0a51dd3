"""The Lease calls of leader election (coordination.k8s.io/v1): read, create, replace.

Why apart from the client's reads: a Lease is the bot's own state (which replica serves), not
the cluster it looks after, and only the leader election (`LeaderElector`) uses it. The calls go
through the client's one wrapper, so a failure says which call it was, and a 409 on replace
(another replica wrote first) is an `ApiError` with code 409, which the elector reads as a lost
race.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from kubernetes import client

from flannel_bot.errors import NotFound
from flannel_bot.executors.kube.calls import ApiCall, api_call

Json = dict[str, Any]
_GROUP = "coordination.k8s.io"


class JsonRequest(Protocol):
    """The client's wrapper: sends one described call, returns its JSON object."""

    def __call__(
        self, call: ApiCall, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Json: ...


class Leases:
    """Leases in any namespace, as the JSON the API returns (the elector reads `spec` fields)."""

    def __init__(self, api: client.ApiClient, request: JsonRequest) -> None:
        self._coordination = client.CoordinationV1Api(api)
        self._request = request

    def get(self, namespace: str, name: str) -> Json | None:
        """The Lease, or None if there is none yet."""
        call = api_call("get", "leases", namespace, name, group=_GROUP)
        try:
            return self._request(call, self._coordination.read_namespaced_lease, name, namespace)
        except NotFound:
            return None

    def create(self, namespace: str, body: Mapping[str, Any]) -> Json:
        call = api_call("create", "leases", namespace, group=_GROUP)
        return self._request(
            call, self._coordination.create_namespaced_lease, namespace, dict(body)
        )

    def replace(self, namespace: str, name: str, body: Mapping[str, Any]) -> Json:
        """PUT with the body's resourceVersion: ApiError code 409 if someone else wrote first."""
        call = api_call("update", "leases", namespace, name, group=_GROUP)
        return self._request(
            call, self._coordination.replace_namespaced_lease, name, namespace, dict(body)
        )
