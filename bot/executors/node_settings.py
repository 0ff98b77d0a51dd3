"""How the bot reaches nodes, as settings: `[nodes]` (which transport) beside `[ssh]`.

Kept apart from the executors so that reading the configuration loads neither the Kubernetes
client nor paramiko. `pod` runs node work in a short-lived privileged pod pinned to the node
(bot.executors.kube.nodepods), reached through the API server alone: no SSH keys or known_hosts
to distribute, and it still works when the pod network is what is broken (the pod uses the host
network). `ssh` reaches each node's sshd directly, and works when the API server or the kubelet
does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from flannel_bot import __version__

NodeAccess = Literal["ssh", "pod"]
ACCESS: tuple[NodeAccess, ...] = ("ssh", "pod")
DEFAULT_IMAGE = f"ghcr.io/flannel-bot/flannel-bot:{__version__}"
# `image = "self"` (the in-cluster default): the image the bot's own pod runs, read from the API
# when the executor is built, so a mirrored or pinned image (kustomize `images:`, a Helm tag)
# reaches the node-exec pods without being written twice
SELF_IMAGE = "self"
DEFAULT_NAMESPACE = "flannel-bot"
_DNS_LABEL = re.compile(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class NodeSettings:
    """`[nodes]`, defaults resolved: `access` is "pod" in-cluster, else "ssh"; `namespace` the
    in-cluster ServiceAccount's namespace, else "flannel-bot"."""

    access: NodeAccess = "ssh"
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    parallel: int = 16
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.access not in ACCESS:
            raise ValueError(f'access must be "ssh" or "pod", not {self.access!r}')
        if not isinstance(self.namespace, str) or not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} is not a namespace name (lowercase letters, "
                "digits and dashes)"
            )
        if (
            not isinstance(self.image, str)
            or not self.image
            or any(c.isspace() for c in self.image)
        ):
            raise ValueError(f"image {self.image!r} is not an image reference")
        if (
            not isinstance(self.parallel, int)
            or isinstance(self.parallel, bool)
            or self.parallel < 1
        ):
            raise ValueError(
                f"parallel must be a whole number of at least 1, not {self.parallel!r}"
            )
        if (
            not isinstance(self.start_timeout, int | float)
            or isinstance(self.start_timeout, bool)
            or not self.start_timeout > 0
        ):
            raise ValueError(f"start_timeout must be positive seconds, not {self.start_timeout!r}")
