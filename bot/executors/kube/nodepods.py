"""Runs argv on nodes through the Kubernetes API: one short-lived privileged pod per node.

Why: over SSH the bot needs keys, known_hosts and a route to every node's sshd; a pod pinned to
the node (`nodeName`, so no scheduler is involved) with the host's network and PID namespaces
needs only the API server, and keeps working when the pod network is what is broken. The pod
runs the bot's own image with `flannel-bot node` (bot.executors.nodeside), which enters PID 1's
namespaces with nsenter and runs each argv with no shell, as `kubectl debug node` would.

Why logs, not exec: exec needs a SPDY/websocket stream and `create` on `pods/exec` (a broader
grant: exec into any pod of the namespace); a container log is a plain GET, allowed by `get` on
`pods/log`, and survives the container's exit, so the bot reads it once the pod has ended.

Every pod is deleted in a `finally`, whatever happened; pods a killed bot left behind are found
by label and deleted when the executor is built (`cleanup_leftovers`). Each pod is labelled with
the process that made it (host and PID) and when its deadline ends, so a `flannel-bot diagnose`
exec'd beside a serving bot, or a second replica starting, deletes only pods whose maker is gone
(same host, PID not running) or whose deadline has passed, never a live run's.
A pod that cannot start is a named error (bot.errors `NodePod*`) saying why, read from the pod's
status and events, which diagnosis shows as the node's evidence like an unreachable sshd.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import secrets
import string
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

from flannel_bot.errors import (
    ApiError,
    ApiForbidden,
    CommandTimeout,
    ExecutorError,
    NodePodError,
    NodePodFailed,
    NodePodImagePull,
    NodePodNodeMissing,
    NodePodNotStarted,
    NodePodRefused,
    NodePodUnschedulable,
    NotFound,
)
from flannel_bot.executors.node_settings import NodeSettings
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.ports.cluster import EventInfo, NodeInfo, PodInfo
from flannel_bot.ports.nodes import CommandResult, DigestResult, checked_argv

log = logging.getLogger(__name__)

Json = dict[str, Any]
FanOut = dict[str, list[CommandResult] | ExecutorError]

CONTAINER = "node"
COMPONENT = "node-exec"
LABEL_NODE = "flannel-bot.io/node"
LABEL_CLUSTER = "flannel-bot.io/cluster"
LABEL_OWNER_HOST = "flannel-bot.io/owner-host"
LABEL_OWNER_PID = "flannel-bot.io/owner-pid"
LABEL_EXPIRES = "flannel-bot.io/expires"  # Unix seconds past which no live bot waits for it
LEFTOVER_SELECTOR = "app.kubernetes.io/component=node-exec,app.kubernetes.io/managed-by=flannel-bot"
_NAME_PREFIX = "flannel-bot-node-"
_SUFFIX = string.ascii_lowercase + string.digits
_IMAGE_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_START_WAITING = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_BAD = re.compile(r"[^a-z0-9-]+")
_FIRST_POLL_S = 0.05
# How long the fan-out waits past a node's own deadline for its more precise error.
_COLLECT_GRACE_S = 5.0


class PodApi(Protocol):
    """What the executor asks of the API: `KubeClient` provides it."""

    def create_pod(self, namespace: str, body: Mapping[str, Any]) -> Json: ...

    def read_pod_raw(self, namespace: str, name: str) -> Json: ...

    def read_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
        limit_bytes: int | None = None,
    ) -> str: ...

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def list_pods(
        self,
        namespace: str | None = None,
        label_selector: str | None = None,
        node: str | None = None,
    ) -> list[PodInfo]: ...

    def list_events(
        self, namespace: str | None = None, field_selector: str | None = None
    ) -> list[EventInfo]: ...

    def get_node(self, name: str) -> NodeInfo: ...


# -- pure parts: names, the pod, its log ----------------------------------------------------------


def label_value(text: str) -> str:
    """`text` as a label value: [A-Za-z0-9._-], at most 63, alphanumeric at both ends."""
    return _LABEL_BAD.sub("-", text)[:63].strip("._-")


def pod_name(node: str, suffix: str | None = None) -> str:
    """`flannel-bot-node-<node, sanitised and cut>-<5 random>`: a DNS label of at most 63."""
    tail = suffix if suffix is not None else "".join(secrets.choice(_SUFFIX) for _ in range(5))
    room = 63 - len(_NAME_PREFIX) - 1 - len(tail)
    middle = _NAME_BAD.sub("-", node.lower())[:room].strip("-") or "x"
    return f"{_NAME_PREFIX}{middle}-{tail}"


def pod_labels(node: str, cluster: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "flannel-bot",
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "flannel-bot",
        LABEL_NODE: label_value(node),
        LABEL_CLUSTER: label_value(cluster),
    }


@dataclass(frozen=True)
class Owner:
    """The process that creates a pod: its host name (a container's is its pod's) and PID."""

    host: str
    pid: int

    @classmethod
    def current(cls) -> Owner:
        return cls(label_value(os.uname().nodename), os.getpid())

    def labels(self, expires: float) -> dict[str, str]:
        return {
            LABEL_OWNER_HOST: self.host,
            LABEL_OWNER_PID: str(self.pid),
            LABEL_EXPIRES: str(math.ceil(expires)),
        }


def is_leftover(
    labels: Mapping[str, str], me: Owner, now: float, alive: Callable[[int], bool]
) -> bool:
    """Whether no live bot waits for a node-exec pod: its deadline has passed, or its maker ran
    on this host and is gone. A pod made elsewhere within its deadline may be another replica's
    or another command's run in progress: it is left to its maker (or to its deadline)."""
    host = labels.get(LABEL_OWNER_HOST, "")
    pid = labels.get(LABEL_OWNER_PID, "")
    expires = labels.get(LABEL_EXPIRES, "")
    if not (host and pid.isdigit() and expires.isdigit()):
        return True  # made before pods carried their owner: nobody can be waiting for it still
    if int(expires) <= now:
        return True
    return host == me.host and int(pid) != me.pid and not alive(int(pid))


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def leftover_selector(cluster: str) -> str:
    return f"{LEFTOVER_SELECTOR},{LABEL_CLUSTER}={label_value(cluster)}"


def pod_spec(
    node: str,
    name: str,
    commands: Sequence[Sequence[str]],
    timeout: float,
    settings: NodeSettings,
    cluster: str,
    owner: Owner | None = None,
    now: float = 0.0,
    digest: Mapping[int, str] | None = None,
) -> Json:
    """The node-exec pod for `commands` on `node` (the contract in the module docstring), made
    at `now` (Unix seconds) by `owner`; the commands at the indexes of `digest` print their
    peer table's digest (`flannel-bot node --digest`)."""
    seconds = max(1, math.ceil(timeout))
    deadline = seconds + math.ceil(settings.start_timeout)
    labels = pod_labels(node, cluster)
    if owner is not None:
        labels |= owner.labels(now + deadline + _COLLECT_GRACE_S)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": labels,
        },
        "spec": {
            "nodeName": node,
            "hostNetwork": True,
            "hostPID": True,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": deadline,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            # it must run on a NotReady or tainted node: the pod network may be what is broken
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": CONTAINER,
                    "image": settings.image,
                    "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"privileged": True},
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "32Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "command": ["flannel-bot", "node"],
                    "args": [
                        "--host-pid",
                        "1",
                        "--timeout",
                        str(seconds),
                        "--commands",
                        json.dumps([list(a) for a in commands]),
                        *(
                            ["--digest", json.dumps({str(i): t for i, t in digest.items()})]
                            if digest
                            else []
                        ),
                    ],
                }
            ],
        },
    }


@dataclass(frozen=True)
class NodeLog:
    """A node-exec pod's log, read: its results in order, whether `done` came, whether the last
    command was killed at the deadline, and any lines that were not ours (a crash's stderr)."""

    results: tuple[CommandResult, ...]
    done: bool
    timed_out: bool
    noise: tuple[str, ...]


def parse_node_log(node: str, text: str) -> NodeLog:
    """The container log `flannel-bot node` wrote (stderr may be mixed in, as a kubelet does)."""
    results: list[CommandResult] = []
    done = timed_out = False
    noise: list[str] = []
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            if line.strip():
                noise.append(line)
        elif obj.get("done") is True:
            done = True
        elif isinstance(obj.get("argv"), list) and isinstance(obj.get("exit_code"), int):
            result = CommandResult(
                node=node,
                argv=tuple(str(w) for w in obj["argv"]),
                exit_code=int(obj["exit_code"]),
                stdout=str(obj.get("stdout", "")),
                stderr=str(obj.get("stderr", "")),
                duration_s=float(obj.get("duration_s", 0.0)),
                truncated=bool(obj.get("truncated", False)),
            )
            results.append(_digested(result, obj.get("peer_digest")))
            timed_out = bool(obj.get("timed_out"))
        else:
            noise.append(line)
    return NodeLog(tuple(results), done, timed_out, tuple(noise))


def _digested(result: CommandResult, summary: object) -> CommandResult:
    """A `DigestResult` for a line that carries a well-formed `peer_digest`, else the result
    (a line without one is the table itself)."""
    if not isinstance(summary, dict):
        return result
    entries, count, digest = (summary.get(k) for k in ("entries", "count", "digest"))
    if not (type(entries) is int and type(count) is int and isinstance(digest, str)):
        return result
    try:
        value = int(digest, 16)
    except ValueError:
        return result
    fields = {f: getattr(result, f) for f in ("node", "argv", "exit_code", "stdout", "stderr")}
    return DigestResult(
        **fields,
        duration_s=result.duration_s,
        truncated=result.truncated,
        entries=entries,
        count=count,
        digest=value,
    )


def start_problem(pod: Json) -> tuple[str, str] | None:
    """(reason, message) when a Pending pod says it cannot start, else None (still starting)."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            return str(cond.get("reason") or "Unschedulable"), str(cond.get("message") or "")
    for cs in status.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in _IMAGE_WAITING or reason in _START_WAITING:
            return reason, str(waiting.get("message") or "")
    if status.get("phase") == "Failed" and status.get("reason"):
        # e.g. the kubelet's admission refused it (OutOfcpu, NodeAffinity, UnexpectedAdmissionError)
        return str(status["reason"]), str(status.get("message") or "")
    return None


# -- the executor ---------------------------------------------------------------------------------


class PodNodeExecutor:
    """`FanOutExecutor` through node-exec pods: one pod per node per `run_many`, at most
    `[nodes] parallel` at once; each waits `start_timeout` to start, then `timeout` to finish.

    Thread-safe (the API client's pool is). `sleep` and `monotonic` are injectable for tests.
    """

    def __init__(
        self,
        api: PodApi,
        settings: NodeSettings,
        cluster: str = "default",
        *,
        command_timeout: float = SshSettings().command_timeout,
        poll_interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        owner: Owner | None = None,
        alive: Callable[[int], bool] = process_alive,
    ) -> None:
        self.api = api
        self.settings = settings
        self.cluster = cluster
        self.command_timeout = command_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._now = monotonic
        self._wall = wall_clock
        self.owner = owner or Owner.current()
        self._alive = alive

    @property
    def transport(self) -> str:
        return "pod"

    def close(self) -> None:
        """Nothing of its own to close: the API client is the cluster's, closed by its owner;
        every pod was deleted when its `run_many` returned."""

    # -- public API -----------------------------------------------------------------------------

    def cleanup_leftovers(self) -> list[str]:
        """Deletes this cluster's node-exec pods that a killed bot left (`is_leftover`); their
        names."""
        ns = self.settings.namespace
        gone = []
        now = self._wall()
        for pod in self.api.list_pods(ns, label_selector=leftover_selector(self.cluster)):
            if not is_leftover(pod.labels, self.owner, now, self._alive):
                continue
            with contextlib.suppress(NotFound):
                self.api.delete_pod(ns, pod.name)
            gone.append(pod.name)
        if gone:
            log.warning("deleted node-exec pods a previous run left: %s", ", ".join(gone))
        return gone

    def run(
        self, node: str, argv: Sequence[str], timeout: float | None = None, sudo: bool = False
    ) -> CommandResult:
        """One argv on one node (in its own pod); `sudo` changes nothing: the pod is root."""
        outcome = self.run_many({node: [argv]}, timeout)[node]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome[0]

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> FanOut:
        """Each node's argv lists in one pod on it; every node's results or the error that
        stopped it. A node whose pod cannot start costs at most `start_timeout`."""
        return dict(self.run_each(commands, timeout))

    # the node side can digest the VXLAN peer tables (`run_each(..., digest=...)`)
    digests_tables = True

    def run_each(
        self,
        commands: Mapping[str, Sequence[Sequence[str]]],
        timeout: float | None = None,
        digest: Mapping[tuple[str, ...], str] | None = None,
    ) -> Iterator[tuple[str, list[CommandResult] | ExecutorError]]:
        """`run_many`, each node's entry given as soon as its pod has reported (the late ones'
        timeouts last) and not kept here, so diagnose reduces each node's answers as they come,
        as over SSH. A caller that stops early leaves the running pods to delete themselves.

        `digest`: argv -> peer table id; those commands answer with a `DigestResult` (the
        table's digest and the entries without a peer's key) when the node could digest the
        table, so the tables, which grow with the cluster squared, stay on the nodes."""
        budget = self.command_timeout if timeout is None else timeout
        if not budget > 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        plan = {node: [checked_argv(a) for a in argvs] for node, argvs in commands.items()}
        if not plan:
            return
        workers = min(self.settings.parallel, len(plan))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node-pods")
        limit = self.settings.start_timeout + budget
        # a queued node starts late: the wait covers every wave, plus grace
        until = self._now() + math.ceil(len(plan) / workers) * limit + _COLLECT_GRACE_S
        try:
            tables = digest or {}
            node_of = {
                pool.submit(
                    self._run_node,
                    node,
                    argvs,
                    budget,
                    {i: tables[a] for i, a in enumerate(argvs) if a in tables},
                ): node
                for node, argvs in plan.items()
            }
            pending = set(node_of)
            while pending:
                done, pending = wait(
                    pending, timeout=max(until - self._now(), 0), return_when=FIRST_COMPLETED
                )
                if not done:
                    break
                for future in done:
                    yield node_of.pop(future), future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        for node in node_of.values():
            yield (
                node,
                CommandTimeout(
                    f"node {node}: its node-exec pod did not report within {limit:g}s", node=node
                ),
            )

    # -- one node -------------------------------------------------------------------------------

    def _run_node(
        self,
        node: str,
        argvs: Sequence[tuple[str, ...]],
        timeout: float,
        digest: Mapping[int, str] | None = None,
    ) -> list[CommandResult] | ExecutorError:
        name = pod_name(node)
        created = False
        try:
            spec = pod_spec(
                node,
                name,
                argvs,
                timeout,
                self.settings,
                self.cluster,
                self.owner,
                self._wall(),
                digest,
            )
            self._create(node, name, spec)
            created = True
            phase = self._wait_for_end(node, name, timeout)
            return self._results(node, name, phase)
        except (NodePodError, CommandTimeout) as exc:
            return exc
        except ExecutorError as exc:  # the API failed mid-way (unreachable, 5xx): say where
            return NodePodError(
                f"node {node}: node-exec pod {self.settings.namespace}/{name}: {exc}",
                node=node,
                pod=name,
                reason=type(exc).__name__,
            )
        finally:
            if created:
                self._delete(name)

    def _create(self, node: str, name: str, body: Json) -> None:
        ns = self.settings.namespace
        try:
            self.api.create_pod(ns, body)
        except ApiForbidden as exc:
            if "PodSecurity" in str(exc):
                raise NodePodRefused(
                    f"node {node}: namespace {ns} refused the privileged node-exec pod "
                    f"(PodSecurity): label the namespace pod-security.kubernetes.io/enforce="
                    f'privileged, or use [nodes] access = "ssh": {exc}',
                    node=node,
                    pod=name,
                    reason="PodSecurity",
                ) from exc
            raise NodePodRefused(
                f"node {node}: the bot may not create its node-exec pod in namespace {ns} "
                f"(RBAC: needs create, get, delete on pods and get on pods/log there): {exc}",
                node=node,
                pod=name,
                reason="Forbidden",
            ) from exc
        except ApiError as exc:
            raise NodePodRefused(
                f"node {node}: the API server refused the node-exec pod {ns}/{name}: {exc}",
                node=node,
                pod=name,
                reason=exc.reason or "Refused",
            ) from exc

    def _wait_for_end(self, node: str, name: str, timeout: float) -> str:
        ns = self.settings.namespace
        start_deadline = self._now() + self.settings.start_timeout
        end_deadline: float | None = None
        # most pods end within a second: look again soon, then less often up to poll_interval
        pause = min(_FIRST_POLL_S, self.poll_interval)
        while True:
            pod = self.api.read_pod_raw(ns, name)
            status = pod.get("status") or {}
            phase = str(status.get("phase") or "Pending")
            if phase in ("Succeeded", "Failed"):
                if end_deadline is None and start_problem(pod) is not None:
                    self._not_started(node, name, pod)
                return phase
            if phase == "Pending":
                if start_problem(pod) is not None or self._now() >= start_deadline:
                    self._not_started(node, name, pod)
            elif end_deadline is None:  # Running (or Unknown): its own deadline starts now
                end_deadline = self._now() + timeout
            if end_deadline is not None and self._now() >= end_deadline:
                raise CommandTimeout(
                    f"node {node}: node-exec pod {ns}/{name} did not finish within {timeout:g}s",
                    node=node,
                )
            self._sleep(pause)
            pause = min(pause * 2, self.poll_interval)

    def _not_started(self, node: str, name: str, pod: Json) -> None:
        ns = self.settings.namespace
        where = f"node {node}: node-exec pod {ns}/{name}"
        problem = start_problem(pod)
        reason, message = problem if problem else ("", "")
        if reason in _IMAGE_WAITING:
            raise NodePodImagePull(
                f"{where} could not pull image {self.settings.image} ({reason}): {message} "
                "(set [nodes] image to one the node can pull)",
                node=node,
                pod=name,
                reason="ImagePull",
            )
        if reason:
            error = NodePodUnschedulable if reason == "Unschedulable" else NodePodNotStarted
            raise error(
                f"{where} could not start ({reason}): {message}".rstrip(": "),
                node=node,
                pod=name,
                reason=reason,
            )
        try:
            info = self.api.get_node(node)
        except NotFound:
            raise NodePodNodeMissing(
                f"{where} cannot start: node {node} is not in the cluster",
                node=node,
                pod=name,
                reason="NodeMissing",
            ) from None
        except ExecutorError:
            info = None
        events = self._events(name)
        state = ""
        if info is not None and not info.ready:
            state = f"; the node is NotReady ({info.ready_reason or 'no status'})"
        raise NodePodNotStarted(
            f"{where} did not start within {self.settings.start_timeout:g}s{state}"
            + (f"; events: {events}" if events else "")
            + " (is the node's kubelet running?)",
            node=node,
            pod=name,
            reason="NodeNotReady" if state else "NotStarted",
        )

    def _events(self, name: str) -> str:
        try:
            events = self.api.list_events(
                self.settings.namespace, field_selector=f"involvedObject.name={name}"
            )
        except ExecutorError:
            return ""
        return "; ".join(f"{e.reason}: {e.message}" for e in events[-3:])

    def _results(self, node: str, name: str, phase: str) -> list[CommandResult]:
        ns = self.settings.namespace
        where = f"node {node}: node-exec pod {ns}/{name}"
        try:
            text = self.api.read_pod_log(ns, name, CONTAINER)
        except ExecutorError as exc:
            raise NodePodFailed(
                f"{where} ended ({phase}) but its log could not be read: {exc}",
                node=node,
                pod=name,
                reason="LogUnreadable",
            ) from exc
        parsed = parse_node_log(node, text)
        if parsed.timed_out:
            last = parsed.results[-1]
            raise CommandTimeout(
                f"`{' '.join(last.argv)}` on node {node} (node-exec pod {ns}/{name}) did not "
                "finish within its deadline; killed it",
                node=node,
                stdout=last.stdout,
                stderr=last.stderr,
            )
        if not parsed.done:
            said = "; ".join(parsed.noise[-3:])
            raise NodePodFailed(
                f"{where} ended ({phase}) after {len(parsed.results)} command(s) without "
                "reporting the rest (killed, out of memory, or past its deadline)"
                + (f": {said}" if said else ""),
                node=node,
                pod=name,
                reason="Incomplete",
            )
        return list(parsed.results)

    def _delete(self, name: str) -> None:
        try:
            self.api.delete_pod(self.settings.namespace, name)
        except NotFound:
            pass
        except ExecutorError as exc:  # the next start's cleanup_leftovers finds it by label
            log.warning("could not delete node-exec pod %s: %s", name, exc)


__all__ = [
    "LEFTOVER_SELECTOR",
    "NodeLog",
    "PodNodeExecutor",
    "leftover_selector",
    "parse_node_log",
    "pod_name",
    "pod_spec",
    "start_problem",
]
