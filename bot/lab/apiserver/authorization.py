"""Who may do what: RBAC-style rules per bearer token, checked before a request reaches the store.

Lab tests give the bot's token the rules its deploy manifest grants, so a verb missing there
fails with the 403 a cluster would give; SelfSubjectAccessReviews answer from the same rules.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flannel_bot.lab.apiserver.errors import StatusError

if TYPE_CHECKING:
    from flannel_bot.lab.apiserver.resources import Obj


@dataclass(frozen=True)
class PolicyRule:
    """An RBAC PolicyRule: `resources` may name subresources (`pods/log`, `pods/*`, `*/status`)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    namespace: str | None = None  # a Role's rule: only in its namespace; None: cluster-wide

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any], namespace: str | None = None) -> PolicyRule:
        """From the JSON shape of a ClusterRole rule (`apiGroups`, `resourceNames`, ...), or of
        a Role's rule in `namespace`."""
        return cls(
            verbs=tuple(rule.get("verbs", ())),
            api_groups=tuple(rule.get("apiGroups", ())),
            resources=tuple(rule.get("resources", ())),
            resource_names=tuple(rule.get("resourceNames", ())),
            non_resource_urls=tuple(rule.get("nonResourceURLs", ())),
            namespace=namespace,
        )

    def allows(self, attrs: RequestAttributes) -> bool:
        if self.namespace is not None and attrs.namespace != self.namespace:
            return False
        if not ("*" in self.verbs or attrs.verb in self.verbs):
            return False
        if not ("*" in self.api_groups or attrs.group in self.api_groups):
            return False
        if not any(_resource_matches(r, attrs.resource, attrs.subresource) for r in self.resources):
            return False
        return not self.resource_names or attrs.name in self.resource_names

    def allows_path(self, verb: str, path: str) -> bool:
        if not ("*" in self.verbs or verb in self.verbs):
            return False
        return any(
            url == path or url == "*" or (url.endswith("*") and path.startswith(url[:-1]))
            for url in self.non_resource_urls
        )


def _resource_matches(rule: str, resource: str, subresource: str) -> bool:
    if rule == "*":
        return True
    if not subresource:
        return rule == resource
    return rule in (f"{resource}/{subresource}", f"{resource}/*", f"*/{subresource}")


@dataclass(frozen=True)
class RequestAttributes:
    """What RBAC decides on; `namespace` None means cluster scope."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None

    def forbidden(self, user: str) -> StatusError:
        res_text = f"{self.resource}.{self.group}" if self.group else self.resource
        subject = f'{res_text} "{self.name}"' if self.name else res_text
        full = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        scope = (
            f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        )
        message = (
            f'{subject} is forbidden: User "{user}" cannot {self.verb} resource "{full}" '
            f'in API group "{self.group}"{scope}'
        )
        details: Obj = {"name": self.name} if self.name else {}
        if self.group:
            details["group"] = self.group
        details["kind"] = self.resource
        return StatusError(403, "Forbidden", message, details)


_DISCOVERY_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/healthz")


class Authorizer:
    """Bearer token -> rules. Other tokens, and requests without one, may do anything."""

    def __init__(
        self,
        rules: Mapping[str, Sequence[PolicyRule | Mapping[str, Any]]] | None = None,
        users: Mapping[str, str] | None = None,
    ) -> None:
        self._rules = {
            token: tuple(r if isinstance(r, PolicyRule) else PolicyRule.from_dict(r) for r in rs)
            for token, rs in (rules or {}).items()
        }
        self._users = dict(users or {})
        self.decisions: list[tuple[str, RequestAttributes, int | None]] = []
        self._lock = threading.Lock()

    def grant(self, token: str, rules: Sequence[PolicyRule], user: str) -> None:
        """Restrict `token` to `rules` from now on; its decisions are recorded in `decisions`
        as (token, request, index of the rule that allowed it or None)."""
        with self._lock:
            self._rules[token] = tuple(rules)
            self._users[token] = user

    def user(self, token: str | None) -> str:
        if token is None:
            return "system:admin"
        return self._users.get(token, "lab-user")

    def decide(self, token: str | None, attrs: RequestAttributes) -> tuple[bool, str]:
        """(allowed, reason), the reason worded like the one a SelfSubjectAccessReview shows."""
        rules = self._rules.get(token) if token is not None else None
        if rules is None:
            return True, "unrestricted token"
        assert token is not None
        for index, rule in enumerate(rules):
            if rule.allows(attrs):
                with self._lock:
                    self.decisions.append((token, attrs, index))
                return True, f"allowed by lab policy rule #{index}"
        with self._lock:
            self.decisions.append((token, attrs, None))
        return False, ""

    def decide_path(self, token: str | None, verb: str, path: str) -> tuple[bool, str]:
        rules = self._rules.get(token) if token is not None else None
        if rules is None:
            return True, "unrestricted token"
        if any(
            path == p or (p.endswith("*") and path.startswith(p[:-1])) for p in _DISCOVERY_PATHS
        ):
            return True, "discovery is open to every user"
        for index, rule in enumerate(rules):
            if rule.allows_path(verb, path):
                return True, f"allowed by lab policy rule #{index}"
        return False, ""

    def check(self, token: str | None, attrs: RequestAttributes) -> None:
        allowed, _ = self.decide(token, attrs)
        if not allowed:
            raise attrs.forbidden(self.user(token))
