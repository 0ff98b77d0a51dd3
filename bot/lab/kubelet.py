"""The lab's kubelet for pods people and the bot create: flannel-bot's node-exec pods.

With `[nodes] access = "pod"` the bot reaches a node through a short-lived privileged pod bound
to it (`spec.nodeName`), and reads what it did from the container log. No kubelet or container
runtime runs here, so this plays one for every lab node: it notices a pod bound to a lab node
that no kubelet has accepted yet (Pending, no `startTime`), admits it or refuses it the way a
node would, runs the container's command on the VM in that node's namespaces, stores its output
as the container log, and reports the phase and exit status as a kubelet would.

What a real node does and the lab does not pretend to: pull images and isolate containers. A
lab node shares the VM's PID namespace and filesystem, so the kubelet runs only privileged
host-namespace pods of flannel-bot's own image (`flannel-bot` is this interpreter's
`-m flannel_bot.cli`), and tells the command which process holds the node's namespaces through
FLANNEL_BOT_HOST_PID (and `--host-pid`): PID 1 here is the VM's init, never a node's.

Pods the lab itself plays (flannel, kube-proxy, workloads) carry a `startTime` from the start,
so this kubelet never touches them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flannel_bot.lab.apiserver import ApiServer, StatusError

Obj = dict[str, Any]

IMAGE_NAME = "flannel-bot"  # the repository flannel-bot's image is published under
ENTRY_POINT = "flannel-bot"
HOST_PID_ENV = "FLANNEL_BOT_HOST_PID"
REJECTED_REASON = "PodAdmissionRejected"
ONLY_OUR_IMAGE = "the lab kubelet runs only flannel-bot's image (command `flannel-bot ...`)"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
CONTAINER_ENV = {  # what a container starts with: not the lab process's own environment
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class NodeRuntime:
    """A lab node as its kubelet sees it: the process holding its namespaces (None: the node
    is down, so pods bound to it stay Pending) and its address (the pod's hostIP)."""

    holder_pid: int | None
    address: str


@dataclass
class _Run:
    namespace: str
    name: str
    uid: str
    container: str
    process: subprocess.Popen[bytes] | None = None
    deleted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_repository(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    return last.split("@", 1)[0].split(":", 1)[0]


def admission_problems(pod: Obj) -> list[str]:
    """Why this lab's kubelet cannot run `pod` as asked (empty: it can), worded like the
    PodSecurity admission lists the fields it objects to."""
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    problems = []
    namespaces = [f"{key}=false" for key in ("hostNetwork", "hostPID") if not spec.get(key)]
    if namespaces:
        problems.append(f"host namespaces ({', '.join(namespaces)})")
    unprivileged = [
        str(c.get("name"))
        for c in containers
        if (c.get("securityContext") or {}).get("privileged") is not True
    ]
    if unprivileged:
        quoted = ", ".join(f'"{n}"' for n in unprivileged)
        which = "container" if len(unprivileged) == 1 else "containers"
        problems.append(f"unprivileged ({which} {quoted} must set securityContext.privileged=true)")
    if len(containers) != 1 or spec.get("initContainers"):
        problems.append(f"containers ({len(containers)} given; the lab kubelet runs exactly one)")
    return problems


def container_argv(container: Obj, python: str, holder_pid: int) -> list[str] | None:
    """The command to run for `container` on the VM, or None if it is not flannel-bot's.

    `--host-pid` is translated to the node's holder as FLANNEL_BOT_HOST_PID is: in a pod on a
    real node, PID 1 of the host PID namespace is the node's init; here it is the VM's."""
    command = [str(a) for a in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if not command or command[0] != ENTRY_POINT:
        return None
    rest = [*command[1:], *args]
    out: list[str] = []
    skip = False
    for i, arg in enumerate(rest):
        if skip:
            skip = False
            continue
        if arg == "--host-pid" and i + 1 < len(rest):
            out += [arg, str(holder_pid)]
            skip = True
        elif arg.startswith("--host-pid="):
            out.append(f"--host-pid={holder_pid}")
        else:
            out.append(arg)
    return [python, "-m", "flannel_bot.cli", *out]


class Kubelet:
    """One kubelet for every node of a lab, on a background thread of the lab's process.

    `nodes(name)` says whether `name` is a lab node (None: not one of ours, the pod is left
    alone) and which process holds its namespaces now. At most `parallel` pods run at once; the
    others wait, Pending, as pods do behind a slow image pull.
    """

    def __init__(
        self,
        api: ApiServer,
        nodes: Callable[[str], NodeRuntime | None],
        *,
        python: str = sys.executable,
        parallel: int = 8,
        poll_interval: float = 0.5,
    ) -> None:
        self.api = api
        self.nodes = nodes
        self.python = python
        self.poll_interval = poll_interval
        self._pool = ThreadPoolExecutor(parallel, thread_name_prefix="lab-kubelet-pod")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._accepted: dict[str, _Run] = {}  # pod uid -> its run, while the pod exists
        self._thread = threading.Thread(target=self._loop, name="lab-kubelet", daemon=True)

    # lifecycle

    def start(self) -> Kubelet:
        self.api.on_change(self._changed)
        self.api.on_delete(self._deleted)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting pods and kill the ones still running (the node goes away)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            runs = list(self._accepted.values())
        for run in runs:
            run.deleted = True
            _kill(run)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def running(self) -> list[str]:
        """`namespace/name` of the pods whose command is running now."""
        with self._lock:
            runs = list(self._accepted.values())
        return sorted(f"{r.namespace}/{r.name}" for r in runs if r.process is not None)

    # hooks (in the writing thread: no waiting here)

    def _changed(self, verb: str, obj: Obj) -> None:
        if verb == "create" and obj.get("kind") == "Pod" and not self._stop.is_set():
            self._wake.set()

    def _deleted(self, verb: str, obj: Obj) -> None:
        if obj.get("kind") != "Pod":
            return
        with self._lock:
            run = self._accepted.pop(str(obj["metadata"].get("uid")), None)
        if run is not None:  # a deleted pod's containers are killed (grace period 0 here)
            run.deleted = True
            _kill(run)

    # the sync loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync()
            except (StatusError, OSError, ValueError, KeyError):
                continue  # the next pass retries; a lab API hiccup must not stop the kubelet

    def sync(self) -> None:
        """One pass: admit every pod bound to a running lab node that no kubelet accepted."""
        for pod in self.api.list("pods"):
            status = pod.get("status") or {}
            if status.get("phase", "Pending") != "Pending" or status.get("startTime"):
                continue
            uid = str(pod["metadata"]["uid"])
            with self._lock:
                if uid in self._accepted:
                    continue
            node_name = (pod.get("spec") or {}).get("nodeName")
            runtime = self.nodes(str(node_name)) if node_name else None
            if runtime is None or runtime.holder_pid is None:
                continue  # not a lab node, or a node whose kubelet is down: stays Pending
            self._admit(pod, runtime)

    def _admit(self, pod: Obj, runtime: NodeRuntime) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        containers = spec.get("containers") or [{}]
        run = _Run(meta["namespace"], meta["name"], str(meta["uid"]), str(containers[0]["name"]))
        with self._lock:
            self._accepted[run.uid] = run
        problems = admission_problems(pod)
        if problems:
            message = (
                f'Pod was rejected: pod "{run.name}" violates the lab kubelet\'s admission: '
                f"{'; '.join(problems)} (the lab runs pods only in a node's own namespaces)"
            )
            self._set_status(run, _pod_status(runtime, "Failed", REJECTED_REASON, message))
            self._event(run, spec, "Warning", REJECTED_REASON, message)
            return
        container = containers[0]
        image = str(container.get("image") or "")
        if _image_repository(image) != IMAGE_NAME:
            message = f'Failed to pull image "{image}": {ONLY_OUR_IMAGE}'
            status = _pod_status(runtime, "Pending")
            status["containerStatuses"] = [
                _container(run, image, {"waiting": {"reason": "ErrImagePull", "message": message}})
            ]
            self._set_status(run, status)
            self._event(run, spec, "Warning", "Failed", message)
            return
        self._pool.submit(self._run, run, container, spec, runtime)

    def _run(self, run: _Run, container: Obj, spec: Obj, runtime: NodeRuntime) -> None:
        if run.deleted or self._stop.is_set():
            return
        holder = runtime.holder_pid
        image = str(container.get("image"))
        if holder is None or holder <= 1 or holder == os.getpid():  # never the VM's own init
            raise RuntimeError(f"refusing to run {run.name}: no node namespace holder ({holder})")
        argv = container_argv(container, self.python, holder)
        status = _pod_status(runtime, "Running")
        started = time.monotonic()
        if argv is None:
            command = [*(container.get("command") or []), *(container.get("args") or [])]
            first = json.dumps(str(command[0]) if command else "")
            message = f"failed to create containerd task: exec: {first}: {ONLY_OUR_IMAGE}"
            state = {"terminated": _terminated(128, "StartError", message)}
            status.update(phase="Failed")
            status["containerStatuses"] = [_container(run, image, state)]
            self._set_status(run, status)
            return
        env = {**CONTAINER_ENV, "HOSTNAME": str(spec.get("nodeName"))}
        for item in container.get("env") or []:
            if isinstance(item, dict) and "value" in item:
                env[str(item["name"])] = str(item["value"])
        env[HOST_PID_ENV] = str(holder)  # last: a pod cannot point it elsewhere
        with run.lock:
            if run.deleted:
                return
            process = run.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # a container log holds both streams
                env=env,
                cwd="/",
                start_new_session=True,
            )
        running = {"running": {"startedAt": status["startTime"]}}
        status["containerStatuses"] = [_container(run, image, running, ready=True)]
        status["conditions"] = _conditions(ready=True)
        if not self._set_status(run, status):
            _kill(run)
        deadline = spec.get("activeDeadlineSeconds")
        timeout = None
        if deadline is not None:
            timeout = max(0.0, float(deadline) - (time.monotonic() - started))
        exceeded = False
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            exceeded = True
            _kill(run)
            out, _ = process.communicate()
        code = 128 - process.returncode if process.returncode < 0 else process.returncode
        with run.lock:
            run.process = None
        if run.deleted:
            return
        self.api.set_log(run.namespace, run.name, run.container, out.decode(errors="replace"))
        reason = "Completed" if code == 0 and not exceeded else "Error"
        final = copy.deepcopy(status)
        final["conditions"] = _conditions(ready=False)
        terminated = {"terminated": _terminated(code, reason, started_at=status["startTime"])}
        final["containerStatuses"] = [_container(run, image, terminated)]
        if exceeded:
            final.update(phase="Failed", reason="DeadlineExceeded", message=DEADLINE_MESSAGE)
            self._event(run, spec, "Normal", "DeadlineExceeded", DEADLINE_MESSAGE)
        else:
            final["phase"] = "Succeeded" if code == 0 else "Failed"
        self._set_status(run, final)

    # writes

    def _set_status(self, run: _Run, status: Obj) -> bool:
        """False when the pod is gone (deleted meanwhile, or replaced by one of the same name)."""
        try:
            pod = self.api.get("pods", run.name, run.namespace)
            if pod["metadata"]["uid"] != run.uid:
                return False
            self.api.patch(
                "pods", run.name, {"status": status}, run.namespace, "merge", subresource="status"
            )
        except StatusError as exc:
            if exc.code == 404:
                return False
            raise
        return True

    def _event(self, run: _Run, spec: Obj, type_: str, reason: str, message: str) -> None:
        t = _now()
        with contextlib.suppress(StatusError):
            self.api.create(
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": f"{run.name}.{secrets.token_hex(8)}",
                        "namespace": run.namespace,
                    },
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": run.namespace,
                        "name": run.name,
                        "uid": run.uid,
                        "apiVersion": "v1",
                    },
                    "reason": reason,
                    "message": message,
                    "type": type_,
                    "source": {"component": "kubelet", "host": str(spec.get("nodeName"))},
                    "reportingComponent": "kubelet",
                    "reportingInstance": str(spec.get("nodeName")),
                    "firstTimestamp": t,
                    "lastTimestamp": t,
                    "count": 1,
                }
            )


def _kill(run: _Run) -> None:
    """Kill the pod's command and everything it started, as removing a container's cgroup
    would: `flannel-bot node` starts each command in a session of its own, out of reach of
    a process-group kill."""
    with run.lock:
        process = run.process
        if process is None or process.poll() is not None:
            return
        for _ in range(3):  # a process forking meanwhile is caught on the next pass
            tree = _process_tree(process.pid)
            for pid in tree:  # stopped first: nothing forks or is reparented while we kill
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if len(tree) <= 1:
                break


def _process_tree(root: int) -> list[int]:
    """`root` and its descendants (from /proc), parents first."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        tree.append(pid)
        queue += children.get(pid, [])
    return tree


def _conditions(ready: bool) -> list[Obj]:
    t = _now()
    return [
        {
            "type": kind,
            "status": "True" if ready or kind in ("PodScheduled", "Initialized") else "False",
            "lastProbeTime": None,
            "lastTransitionTime": t,
        }
        for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]


def _pod_status(runtime: NodeRuntime, phase: str, reason: str = "", message: str = "") -> Obj:
    t = _now()
    status: Obj = {
        "phase": phase,
        "conditions": _conditions(ready=False),
        "hostIP": runtime.address,
        "hostIPs": [{"ip": runtime.address}],
        "podIP": runtime.address,  # hostNetwork: the pod has the node's address
        "podIPs": [{"ip": runtime.address}],
        "startTime": t,
    }
    if reason:
        status.update(reason=reason, message=message)
    return status


def _terminated(code: int, reason: str, message: str = "", started_at: str | None = None) -> Obj:
    t = _now()
    out: Obj = {"exitCode": code, "reason": reason, "startedAt": started_at or t, "finishedAt": t}
    if message:
        out["message"] = message
    return out


def _container(run: _Run, image: str, state: Obj, ready: bool = False) -> Obj:
    started = "running" in state or "terminated" in state
    out: Obj = {
        "name": run.container,
        "image": image,
        "imageID": "",
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
    }
    if started:
        out["containerID"] = f"containerd://{run.uid.replace('-', '')}"
        out["imageID"] = f"{image.split(':')[0]}@sha256:{'0' * 64}"
    return out


__all__: Sequence[str] = [
    "HOST_PID_ENV",
    "Kubelet",
    "NodeRuntime",
    "admission_problems",
    "container_argv",
]
