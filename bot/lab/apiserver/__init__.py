"""A stateful Kubernetes API server stand-in, served over real HTTP on localhost.

No kube-apiserver can be installed on the project's machines, and the emulators on PyPI ignore
selectors, watch timeouts and `pods/log`, which would hide exactly the bugs the Kubernetes
executor can have. This one keeps the semantics the bot depends on: one global resourceVersion
with optimistic concurrency, the three PATCH types, label and field selectors (and 400 for the
ones a real server rejects), watches with resume and timeouts, `pods/log`, discovery that kubectl
accepts, `Status` errors worded like the real server's, and RBAC-style rules per bearer token.
`flannel-bot lab up` runs it in place of the cluster, and the executor's integration tests drive
it with the official client.

In-process writes (`ApiServer.create` and friends) go through the same store as HTTP ones, so
watches and hooks see them; only `create` is trusted to keep the status and creationTimestamp it
is given, because the lab plays the kubelet and the controllers.

Left out on purpose: admission (no ServiceAccount or LimitRange defaulting), the garbage collector
and the DaemonSet/Deployment controllers (register hooks instead), server-side apply, protobuf and
Table output, watch bookmarks, and consistent snapshots for paginated lists (a `continue` token
resumes after the last key against the current state).

One module per part: `resources` (the kinds served), `errors` (`StatusError`), `authorization`,
`store`, `validation` (defaults, validation, immutability), `selectors`, `http` (the request
handler) and `server` (`ApiServer`, `write_kubeconfig`).
"""

from flannel_bot.lab.apiserver.authorization import Authorizer, PolicyRule, RequestAttributes
from flannel_bot.lab.apiserver.errors import StatusError
from flannel_bot.lab.apiserver.resources import RESOURCES, Resource, ResourceTable
from flannel_bot.lab.apiserver.server import (
    DEFAULT_NAMESPACES,
    VERSION_INFO,
    ApiServer,
    write_kubeconfig,
)
from flannel_bot.lab.apiserver.store import Change, ObjectStore

__all__ = [
    "DEFAULT_NAMESPACES",
    "RESOURCES",
    "VERSION_INFO",
    "ApiServer",
    "Authorizer",
    "Change",
    "ObjectStore",
    "PolicyRule",
    "RequestAttributes",
    "Resource",
    "ResourceTable",
    "StatusError",
    "write_kubeconfig",
]
