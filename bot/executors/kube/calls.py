"""One Kubernetes API request, described: its HTTP form for error messages, its RBAC form for
advice on a 403.

Why apart from the client: the Lease calls (lease.py) describe their requests the same way and
send them through the same plumbing, without the client module importing them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flannel_bot.errors import ApiForbidden

_USER = re.compile(r'User "([^"]*)"')
_SERVICE_ACCOUNT = "system:serviceaccount:"


@dataclass(frozen=True)
class ApiCall:
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


def api_call(
    verb: str,
    resource: str,
    namespace: str | None = None,
    name: str | None = None,
    *,
    group: str = "",
    subresource: str = "",
    namespaced: bool = True,
    **query: str | None,
) -> ApiCall:
    # An empty name would turn `DELETE .../pods/<name>` into a request on the whole collection.
    for what, value in (("namespace", namespace), ("name", name)):
        if value is not None and (not value or "/" in value):
            raise ValueError(f"{resource}: invalid {what} {value!r}")
    text = "&".join(f"{k}={v}" for k, v in query.items() if v)
    return ApiCall(
        verb, resource, namespace, name, group, "v1", subresource, text, namespaced=namespaced
    )


def forbidden(call: ApiCall, message: str) -> ApiForbidden:
    """A 403 as advice: who may not do what, and which Role or ClusterRole would allow it."""
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
