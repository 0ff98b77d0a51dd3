"""What a runbook step may ask the engine to do, each with the least risk it carries.

A step never changes anything itself: it returns these records and the engine applies them, after
approval where the risk needs one. Each type says how risky it is at the least, so a step that
declares `read` cannot smuggle in a pod delete.
"""

from __future__ import annotations

import enum
import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from flannel_bot.ports.probes import recognise


class Risk(enum.Enum):
    READ = "read"
    CHANGE = "change"
    DESTRUCTIVE = "destructive"

    @property
    def marker(self) -> str:
        return {"read": "[read]", "change": "[CHANGE]", "destructive": "[DESTRUCTIVE]"}[self.value]

    @property
    def rank(self) -> int:
        return ("read", "change", "destructive").index(self.value)


# ---------------------------------------------------------------------------------------- actions


class Action(Protocol):
    """Something the engine does on a step's behalf. `target` is what a change lock covers;
    `least_risk` is the least a step that returns it must declare."""

    @property
    def target(self) -> str: ...

    @property
    def least_risk(self) -> Risk: ...

    def render(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ListPods:
    namespace: str
    label_selector: str
    node: str = ""

    least_risk: ClassVar[Risk] = Risk.READ

    @property
    def target(self) -> str:
        return f"node/{self.node}" if self.node else f"namespace/{self.namespace}"

    def render(self) -> str:
        query = f"labelSelector={self.label_selector}"
        if self.node:
            query += f"&fieldSelector=spec.nodeName={self.node}"
        return f"GET /api/v1/namespaces/{self.namespace}/pods?{query}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "list_pods",
            "namespace": self.namespace,
            "label_selector": self.label_selector,
            "node": self.node,
        }


def _on_node(node: str, via: str) -> str:
    return f"ssh {node}" if via == "ssh" else f"node {node} (via {via})"


@dataclass(frozen=True)
class RunOnNode:
    """argv on a node. A non-zero exit fails the step unless `may_fail` (a probe whose failure
    is itself the evidence, e.g. a missing /proc file)."""

    node: str
    argv: tuple[str, ...]
    sudo: bool = False
    may_fail: bool = False

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    @property
    def least_risk(self) -> Risk:
        """A read when the argv is one of the probe set's reads; anything else changes the node."""
        return Risk.READ if recognise(self.argv) is not None else Risk.CHANGE

    def render(self, via: str = "ssh") -> str:
        """`via`: the node transport ([nodes] access); "ssh" keeps the form plans always had."""
        words = shlex.join(("sudo", *self.argv) if self.sudo else self.argv)
        line = f"{_on_node(self.node, via)} -- {words}"
        return f"{line}  (a failure is recorded, not fatal)" if self.may_fail else line

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "run_on_node",
            "node": self.node,
            "argv": list(self.argv),
            "sudo": self.sudo,
        }
        if self.may_fail:
            out["may_fail"] = True
        return out


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    node: str

    least_risk: ClassVar[Risk] = Risk.DESTRUCTIVE

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def render(self) -> str:
        return f"DELETE /api/v1/namespaces/{self.namespace}/pods/{self.name}  (on {self.node})"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "delete_pod",
            "namespace": self.namespace,
            "name": self.name,
            "node": self.node,
        }


@dataclass(frozen=True)
class PatchConfigMap:
    """Sets keys of a ConfigMap's data. `diff` (unified, old to new) is shown in the plan."""

    namespace: str
    name: str
    data: tuple[tuple[str, str], ...]
    diff: str = ""

    least_risk: ClassVar[Risk] = Risk.CHANGE

    @property
    def target(self) -> str:
        return f"configmap/{self.namespace}/{self.name}"

    def render(self) -> str:
        keys = ", ".join(k for k, _ in self.data)
        head = f"PATCH /api/v1/namespaces/{self.namespace}/configmaps/{self.name}  data: {keys}"
        return f"{head}\n{self.diff.rstrip()}" if self.diff else head

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "patch_configmap",
            "namespace": self.namespace,
            "name": self.name,
            "data": dict(self.data),
        }
        if self.diff:
            out["diff"] = self.diff
        return out


@dataclass(frozen=True)
class WaitForPod:
    """Waits for a Ready pod matching the selector on `node` that is none of `replacing`:
    the DaemonSet's replacement for a pod just deleted. Fails the step at the deadline."""

    namespace: str
    label_selector: str
    node: str
    replacing: tuple[str, ...] = ()

    least_risk: ClassVar[Risk] = Risk.READ

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def render(self) -> str:
        instead = f" (replacing {', '.join(self.replacing)})" if self.replacing else ""
        return (
            f"WAIT until a new pod {self.label_selector} in {self.namespace} on {self.node} "
            f"is Ready{instead}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "wait_for_pod",
            "namespace": self.namespace,
            "label_selector": self.label_selector,
            "node": self.node,
            "replacing": list(self.replacing),
        }


FILE_MODE = re.compile(r"\A0[0-7]{3}\Z")
ABSOLUTE_PATH = re.compile(r"\A(/[A-Za-z0-9._-]+)+\Z")


@dataclass(frozen=True)
class WriteFile:
    """Replaces a file on a node atomically (temp file, then rename). The content travels as an
    argument of a fixed script, never as shell text, and is part of the plan and its hash."""

    node: str
    path: str
    content: str
    mode: str = "0644"

    def __post_init__(self) -> None:
        if not ABSOLUTE_PATH.fullmatch(self.path) or "/../" in f"{self.path}/":
            raise ValueError(f"refusing to write to {self.path!r}: not a plain absolute path")
        if not FILE_MODE.fullmatch(self.mode):
            raise ValueError(f"file mode {self.mode!r} is not octal like 0644")

    least_risk: ClassVar[Risk] = Risk.CHANGE

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    @property
    def argv(self) -> tuple[str, ...]:
        script = (
            'set -e; dir=$(dirname "$1"); mkdir -p "$dir"; '
            'tmp=$(mktemp "$dir/.flannel-bot.XXXXXX"); printf %s "$3" > "$tmp"; '
            'chmod "$2" "$tmp"; mv -f "$tmp" "$1"'
        )
        return ("sh", "-c", script, "write-file", self.path, self.mode, self.content)

    def render(self, via: str = "ssh") -> str:
        body = "\n".join(f"    | {line}" for line in self.content.splitlines())
        return f"{_on_node(self.node, via)} -- write {self.path} (mode {self.mode}):\n{body}"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "write_file",
            "node": self.node,
            "path": self.path,
            "mode": self.mode,
            "content": self.content,
        }


@dataclass(frozen=True)
class Disruption:
    """What a step's other actions will disrupt, stated in the plan so the approver sees it.
    Applying it only records that the disruption was accepted."""

    node: str
    what: str

    least_risk: ClassVar[Risk] = Risk.DESTRUCTIVE

    @property
    def target(self) -> str:
        return f"node/{self.node}"

    def render(self) -> str:
        return f"DISRUPTS {self.node}: {self.what}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "disruption", "node": self.node, "what": self.what}


@dataclass(frozen=True)
class CreateObject:
    """Creates one API object from a manifest (JSON text, so the action stays hashable)."""

    manifest: str

    @property
    def obj(self) -> dict[str, Any]:
        value = json.loads(self.manifest)
        assert isinstance(value, dict)
        return value

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.obj.get("metadata", {}).get("namespace", ""))

    least_risk: ClassVar[Risk] = Risk.CHANGE

    @property
    def target(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{where}{self.name}"

    def render(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"CREATE {self.obj.get('apiVersion')} {self.kind} {self.name}{where}"

    def to_json(self) -> dict[str, Any]:
        return {"type": "create_object", "manifest": self.obj}

    @classmethod
    def of(cls, obj: dict[str, Any]) -> CreateObject:
        return cls(json.dumps(obj, sort_keys=True, separators=(",", ":")))


@dataclass(frozen=True)
class PatchDaemonSet:
    """A strategic merge patch of a DaemonSet (JSON text); pods pick it up when recreated."""

    namespace: str
    name: str
    patch: str

    least_risk: ClassVar[Risk] = Risk.CHANGE

    @property
    def target(self) -> str:
        return f"daemonset/{self.namespace}/{self.name}"

    def render(self) -> str:
        return (
            f"PATCH /apis/apps/v1/namespaces/{self.namespace}/daemonsets/{self.name}  {self.patch}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "patch_daemonset",
            "namespace": self.namespace,
            "name": self.name,
            "patch": json.loads(self.patch),
        }
