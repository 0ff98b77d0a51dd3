"""Named error types.

`UserError`s are shown to the person who typed the command, as one sentence that says what to do
next; everything else is a bug or an outage and is recorded with its traceback.
"""

from __future__ import annotations


class BotError(Exception):
    """Root of every error flannel-bot raises on purpose."""


class UserError(BotError):
    """Something the requester can fix: shown without a traceback."""


class CommandSyntaxError(UserError):
    """The command text does not parse; carries the usage line of the command it looked like."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


class UnknownRunbook(UserError):
    pass


class ParameterError(UserError):
    pass


class UnknownNode(ParameterError):
    pass


class UnknownRun(UserError):
    pass


class UnknownCluster(UserError):
    """`--cluster` names a cluster the configuration does not have; the message lists them."""


class NotAllowed(UserError):
    """Policy refused: the message names the role that would be needed."""


class ApprovalRefused(UserError):
    """An approval that cannot count: self-approval, expired, stale plan, wrong state."""


class IdentityRefused(UserError):
    """A name typed at the terminal that the bot cannot check, used to approve or deny."""


class WrongWorkspace(UserError):
    """A Slack approval or denial from another workspace than the one the run was asked in."""


class WrongChannel(UserError):
    """An Approve/Deny click from another channel than the one the run's approval is in."""


class InvalidState(UserError):
    """The run is not in a state where that command makes sense."""


class TargetBusy(UserError):
    """Another run holds the change lock on a target."""


class PlanRefused(UserError):
    """A runbook's plan breaks a safety rule (an action riskier than its step declares, a node
    read outside the probe set, an action the engine cannot apply): nothing of it runs. The
    message names the runbook, step and action; it is a defect of that runbook version."""


class ReadRefused(BotError):
    """A runbook asked to run an argv on a node that is not a read of the probe set."""


class ExecutorError(BotError):
    """An executor could not do what was asked; the message names the node or API call."""


class NotFound(ExecutorError):
    pass


class BundleFileRefused(ExecutorError):
    """A support bundle's file the reader will not read: a link, a FIFO, device or socket, a file
    over its size or JSON depth limit, or one past the bundle's total budget (`budget`). `rel`
    names it, `why` says why; the reader turns it into a gap, so the diagnosis still answers."""

    def __init__(self, rel: str, why: str, *, budget: bool = False) -> None:
        super().__init__(f"{rel} was refused ({why})")
        self.rel = rel
        self.why = why
        self.budget = budget


class RunbookLockMismatch(BotError):
    """Runbook code changed without a version bump."""


class AuditLogError(BotError):
    """The audit log's file cannot be used as it is; the message names the file and what to do.
    Nothing that would have been recorded on it is done."""


class AuditLogUnwritable(AuditLogError):
    """The SQLite file cannot take a write (disk full, read-only): stop before acting."""


class AuditLogBusy(AuditLogError):
    """Another process held the file's write lock for longer than the bot waits."""


class AuditLogCorrupt(AuditLogError):
    """The file is not a SQLite database, or SQLite found it damaged."""


class AuditLogMissing(AuditLogError):
    """A read-only open found no file, or no audit log in it."""


class AuditChainBroken(BotError):
    """The audit log's hash chain does not verify, so nothing more is chained onto it."""


class NodeError(ExecutorError):
    """A node could not be reached or did not run a command; `node` and `address` say which."""

    def __init__(self, message: str, *, node: str = "", address: str = "") -> None:
        super().__init__(message)
        self.node = node
        self.address = address


class NodeUnreachable(NodeError):
    """No working SSH connection: address unknown, TCP refused or silent, handshake failed."""


class NodeUnresolved(NodeUnreachable):
    """No address for the node: not in `hosts`, no ssh_config HostName, the resolver had none."""


class HostKeyRejected(NodeError):
    """The node's host key does not match known_hosts; nothing was sent to it."""


class HostKeyUnknown(HostKeyRejected):
    """known_hosts has no key under the node's name: refused, never learned on first use."""


class HostKeyChanged(HostKeyRejected):
    """known_hosts lists a different key under the node's name: a reinstalled node, a Node
    address pointing at another machine, or an interceptor."""


class HostKeyRevoked(HostKeyRejected):
    """The node presented a key known_hosts marks `@revoked` for it: never accepted."""


class AuthenticationFailed(NodeError):
    """The node refused our key, or the key could not be loaded."""


class CommandTimeout(NodeError):
    """A command did not finish by its deadline; whatever it printed until then is kept."""

    def __init__(
        self,
        message: str,
        *,
        node: str = "",
        address: str = "",
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        super().__init__(message, node=node, address=address)
        self.stdout = stdout
        self.stderr = stderr


class NodePodError(NodeError):
    """Node work through a node-exec pod (`[nodes] access = "pod"`) failed; `pod` names it and
    `reason` says why in one word (Unschedulable, ImagePull, PodSecurity, Forbidden, ...)."""

    def __init__(self, message: str, *, node: str = "", pod: str = "", reason: str = "") -> None:
        super().__init__(message, node=node)
        self.pod = pod
        self.reason = reason


class NodePodNotStarted(NodePodError):
    """The pod did not start on the node within `[nodes] start_timeout`: nothing ran there."""


class NodePodUnschedulable(NodePodNotStarted):
    """The node refused the pod (taints it does not tolerate, no room, the node's admission)."""


class NodePodImagePull(NodePodNotStarted):
    """The node could not pull `[nodes] image` (name, registry access, pull secret)."""


class NodePodNodeMissing(NodePodNotStarted):
    """The node is not in the cluster (any more): the pod can never start there."""


class NodePodRefused(NodePodNotStarted):
    """The API server refused to create the pod: RBAC (`reason` Forbidden) or the namespace's
    PodSecurity level (`reason` PodSecurity)."""


class NodePodFailed(NodePodError):
    """The pod ran but did not report every command: killed, out of memory, past its deadline."""


class KubeConfigError(ExecutorError):
    """No usable kubeconfig or in-cluster config; the message names the file and context."""


class ApiError(ExecutorError):
    """The Kubernetes API answered with an error `Status`; the message names the call.

    `code` is the HTTP status and `reason` the Status reason (`Conflict`, `Invalid`, ...).
    """

    def __init__(self, message: str, *, call: str = "", code: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.call = call
        self.code = code
        self.reason = reason


class ApiForbidden(ApiError):
    """RBAC refused a call; the message says which rule the bot's ServiceAccount lacks."""

    def __init__(
        self,
        message: str,
        *,
        call: str = "",
        verb: str = "",
        resource: str = "",
        group: str = "",
        namespace: str | None = None,
        user: str = "",
    ) -> None:
        super().__init__(message, call=call, code=403, reason="Forbidden")
        self.verb = verb
        self.resource = resource
        self.group = group
        self.namespace = namespace
        self.user = user


class ApiUnreachable(ExecutorError):
    """No answer from the Kubernetes API: refused, timed out, cut off or TLS failed."""

    def __init__(self, message: str, *, call: str = "", server: str = "") -> None:
        super().__init__(message)
        self.call = call
        self.server = server


class WaitTimeout(ExecutorError):
    """A wait reached its deadline; the message and `last_seen` say what was observed last."""

    def __init__(self, message: str, *, last_seen: object = None) -> None:
        super().__init__(message)
        self.last_seen = last_seen


def shown(text: str, limit: int = 60) -> str:
    """User input as an error message may show it: one line, printable, at most `limit` long.
    A newline or a control character in a name is itself the problem, so it is made visible."""
    clean = text if text.isprintable() else repr(text)[1:-1]
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
