"""Runbook unit cases as data, pyinfra-style: a recorded cluster in, the expected plan out.

Each `cases/<runbook id>/<case>.json` pins one runbook version, the parameters a user types, the
cluster as a recording (API objects, and the output of every node read the runbook makes) and
what planning must give: every step's actions, or the refusal. Planning is the real `build_plan`
over facts answered from the recording; nothing runs anywhere, so no root and no network. The
lab test (tests/lab/test_runbooks_lab.py) stays the end-to-end proof that the actions work.

A case holds:
- `description`: the situation and what the runbook should do, in one sentence;
- `runbook`: `id@version`, pinned; the case lives in the folder named after the id;
- `params`: the `key=value` words a user types, as strings;
- `cluster`: a recorded cluster in `SnapshotCluster`'s format (`nodes`, `pods`, `configmaps`,
  and `commands`: node -> `shlex.join(argv)` -> `{stdout, stderr, exit_code}`), plus what a
  snapshot does not record: `daemonsets`, `services`, `objects` (`"Kind name"` or
  `"Kind namespace/name"` of other objects that exist) and `rbac`;
- `findings` (only where the runbook asks diagnose): what diagnose returns;
- `expect`: `{"steps": [{"name", "actions", "no_change"?}, ...]}`, every step in order, or
  `{"refused": "<part of the message>", "error": "<error class>"}`.

A case must record exactly what the runbook reads: a node read (or a section of the cluster)
the case lacks fails with what to add, and a recorded command no step reads fails as well.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import pytest

from flannel_bot.diagnosis.findings import EvidenceLine, Finding, Fix
from flannel_bot.diagnosis.node_facts import Fact
from flannel_bot.errors import BotError, NotFound, ReadRefused
from flannel_bot.executors.selectors import labels_match
from flannel_bot.executors.snapshot import SnapshotCluster
from flannel_bot.ports.cluster import (
    ContainerInfo,
    DaemonSetInfo,
    NodeCondition,
    Rbac,
    RbacRule,
    ServiceInfo,
    ServicePort,
    Taint,
)
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.ports.probes import ProbeOutput, recognise
from flannel_bot.runs.actions import Risk
from flannel_bot.runs.params import parse_params
from flannel_bot.runs.plan import Plan, build_plan
from flannel_bot.runs.registry import Registry
from flannel_bot.runs.runbook import Runbook
from tests.fakes import FakeClock

T = TypeVar("T")

CASES_DIR = Path(__file__).with_name("cases")
CASE_FILES = sorted(CASES_DIR.rglob("*.json"))
REGISTRY = Registry.from_package()

CASE_KEYS = {"description", "runbook", "params", "cluster", "expect"}
OPTIONAL_KEYS = {"findings"}

# Change runbooks that cannot have a case where they plan nothing, and why.
NO_IDLE_CASE = {
    "flannel.restart-pods@1.1.0": (
        "restarts unconditionally: it needs one or more nodes, refuses a node without a flannel "
        "pod, and deletes the flannel pod of every node named; there is no state it skips"
    ),
}


def case_id(path: Path) -> str:
    return path.relative_to(CASES_DIR).as_posix()


def load_case(path: Path) -> dict[str, Any]:
    case = json.loads(path.read_text())
    assert isinstance(case, dict), f"{case_id(path)}: a case is a JSON object"
    keys = set(case)
    assert keys >= CASE_KEYS, f"{case_id(path)}: missing {sorted(CASE_KEYS - keys)}"
    assert keys <= CASE_KEYS | OPTIONAL_KEYS, (
        f"{case_id(path)}: unknown keys {sorted(keys - CASE_KEYS - OPTIONAL_KEYS)}"
    )
    assert isinstance(case["description"], str) and case["description"].strip()
    assert all(isinstance(v, str) for v in case["params"].values()), (
        f"{case_id(path)}: params are the words a user types, so every value is a string"
    )
    return case


# -- the recorded cluster ------------------------------------------------------------------------


class RecordedCluster(SnapshotCluster):
    """A SnapshotCluster that also answers what a snapshot does not record: DaemonSets, Services,
    which other objects exist, and RBAC. A section the case does not record fails the test when a
    runbook reads it; an object missing from a recorded section does not exist."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        super().__init__(_snapshot_shape(data), FakeClock())
        self._where = where
        self._data = data

    def _section(self, key: str, what: str) -> Any:
        if key not in self._data:
            pytest.fail(f"{self._where}: the runbook reads {what}; record `cluster.{key}`")
        return self._data[key]

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        out = []
        for raw in self._section("daemonsets", "DaemonSets"):
            ds = DaemonSetInfo(
                **{
                    **raw,
                    "container_args": _tuples(raw.get("container_args", {})),
                    "container_commands": _tuples(raw.get("container_commands", {})),
                }
            )
            if namespace in (None, ds.namespace) and labels_match(label_selector, ds.labels):
                out.append(ds)
        return out

    def get_service(self, namespace: str, name: str) -> ServiceInfo:
        for raw in self._section("services", f"Service {namespace}/{name}"):
            if (raw["namespace"], raw["name"]) == (namespace, name):
                return ServiceInfo(
                    **{
                        **raw,
                        "cluster_ips": tuple(raw.get("cluster_ips", ())),
                        "ports": tuple(ServicePort(**p) for p in raw.get("ports", ())),
                    }
                )
        raise NotFound(f"GET service {namespace}/{name}: not found")

    def object_exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        if kind == "ConfigMap":
            return f"{namespace}/{name}" in self._data.get("configmaps", {})
        if kind == "DaemonSet":
            return any(ds.name == name for ds in self.list_daemonsets(namespace))
        listed = self._section("objects", f"whether {kind} {name} exists")
        return (f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}") in listed

    def read_rbac(self) -> Rbac:
        raw = self._section("rbac", "flannel's RBAC")
        return Rbac(
            roles={
                role: tuple(
                    RbacRule(tuple(r["api_groups"]), tuple(r["resources"]), tuple(r["verbs"]))
                    for r in rules
                )
                for role, rules in raw.get("roles", {}).items()
            },
            bindings=tuple(
                (
                    b["name"],
                    b["role"],
                    tuple(tuple(s.split("/", 1)) for s in b["subjects"]),  # namespace/account
                )
                for b in raw.get("bindings", ())
            ),
            readable=raw.get("readable", True),
        )


def _tuples(by_container: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    return {name: tuple(argv) for name, argv in by_container.items()}


def _snapshot_shape(data: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON as SnapshotCluster takes it, with nested records made the records they are."""
    nodes = [
        {
            **n,
            "conditions": tuple(NodeCondition(*c) for c in n.get("conditions", ())),
            "taints": tuple(Taint(*t) for t in n.get("taints", ())),
            "pod_cidrs": tuple(n.get("pod_cidrs", ())),
        }
        for n in data.get("nodes", [])
    ]
    pods = [
        {**p, "containers": tuple(ContainerInfo(**c) for c in p.get("containers", ()))}
        for p in data.get("pods", [])
    ]
    return {**data, "nodes": nodes, "pods": pods}


# -- the facts a planner gets --------------------------------------------------------------------


class RecordedFacts:
    """The `Facts` protocol over a recorded cluster. Reads follow `LiveFacts`: `run` refuses an
    argv the probe set does not recognise; a read the case did not record fails the test."""

    def __init__(self, case: Mapping[str, Any], where: str) -> None:
        self._where = where
        self._cluster = RecordedCluster(case["cluster"], where)
        self._commands: Mapping[str, Mapping[str, Any]] = case["cluster"].get("commands", {})
        self._findings = case.get("findings")
        self.reads: set[tuple[str, str]] = set()

    @property
    def kube(self) -> RecordedCluster:
        return self._cluster

    def read(self, node: str, fact: Fact[T], timeout: float = 10.0) -> T:
        res = self._replay(node, fact.probe.argv, timeout)
        return fact.parse(ProbeOutput(res.exit_code, res.stdout, res.stderr))

    def run(self, node: str, argv: Sequence[str], timeout: float = 10.0) -> CommandResult:
        if recognise(tuple(argv)) is None:
            raise ReadRefused(
                f"`{shlex.join(argv)}` on {node} is not a read of the probe set "
                "(bot/ports/probes.py); a runbook reads nodes with `facts.read(node, fact)`"
            )
        return self._replay(node, argv, timeout)

    def _replay(self, node: str, argv: Sequence[str], timeout: float) -> CommandResult:
        key = shlex.join(argv)
        if key not in self._commands.get(node, {}):
            pytest.fail(
                f"{self._where}: the runbook reads `{key}` on {node}, which the case does not "
                f"record; add {json.dumps(key)} under cluster.commands.{node} with its "
                '{"stdout": ..., "stderr": ..., "exit_code": ...}'
            )
        self.reads.add((node, key))
        return self._cluster.run(node, argv, timeout)

    def diagnose(self, nodes: Sequence[str] = ()) -> list[Finding]:
        if self._findings is None:
            pytest.fail(
                f"{self._where}: the runbook asks diagnose about "
                f'{", ".join(nodes) or "every node"}; add "findings" (what diagnose returns, '
                "[] when it finds nothing)"
            )
        return [_finding(f) for f in self._findings]

    def unread(self) -> list[str]:
        return [
            f"{node}: {key}"
            for node, recorded in self._commands.items()
            for key in recorded
            if (node, key) not in self.reads
        ]


def _finding(raw: Mapping[str, Any]) -> Finding:
    known = {f.name for f in fields(Finding)}
    assert set(raw) <= known, f"a finding has no {sorted(set(raw) - known)}"
    fix = raw.get("fix", {})
    return Finding(
        id=raw["id"],
        severity=raw.get("severity", "critical"),
        nodes=tuple(raw.get("nodes", ())),
        summary=raw.get("summary", ""),
        mechanism=raw.get("mechanism", ""),
        evidence=[EvidenceLine(e["source"], e["text"]) for e in raw.get("evidence", ())],
        fix=Fix(fix.get("manual", ""), fix.get("runbook"), fix.get("params", {})),
        explained_by=list(raw.get("explained_by", ())),
    )


# -- planning and comparing ----------------------------------------------------------------------


def plan_case(runbook: Runbook, case: Mapping[str, Any], facts: RecordedFacts) -> Plan:
    params = parse_params(runbook.params, case["params"], runbook.ref)
    return build_plan(runbook, params, facts)


def planned_steps(plan: Plan) -> list[dict[str, Any]]:
    out = []
    for s in plan.steps:
        step: dict[str, Any] = {"name": s.step.name, "actions": [a.to_json() for a in s.actions]}
        if s.no_change:
            step["no_change"] = s.no_change
        out.append(step)
    return out


@pytest.mark.parametrize("path", CASE_FILES, ids=case_id)
def test_case(path: Path) -> None:
    where = case_id(path)
    case = load_case(path)
    runbook = REGISTRY.get(case["runbook"])
    assert "@" in case["runbook"], f"{where}: pin the version (`{runbook.ref}`)"
    assert path.parent.name == runbook.id, f"{where}: belongs in cases/{runbook.id}/"
    assert path.name.startswith(f"{runbook.version}-"), f"{where}: name it {runbook.version}-..."
    facts = RecordedFacts(case, where)
    expect = case["expect"]

    if "refused" in expect:
        assert set(expect) == {"refused", "error"}, f"{where}: expect refused and error"
        try:
            plan = plan_case(runbook, case, facts)
        except BotError as exc:
            assert type(exc).__name__ == expect["error"], f"{where}: {exc!r}"
            assert expect["refused"] in str(exc), f"{where}: refused with: {exc}"
            return
        pytest.fail(
            f"{where}: expected a refusal ({expect['error']}: {expect['refused']}), got the plan\n"
            + json.dumps(planned_steps(plan), indent=2)
        )

    assert set(expect) == {"steps"}, f"{where}: expect either steps or refused"
    got = planned_steps(plan_case(runbook, case, facts))
    assert got == expect["steps"], f"{where} planned:\n{json.dumps(got, indent=2)}"
    unread = facts.unread()
    assert not unread, f"{where}: recorded but never read by the runbook: {unread}"


# -- every runbook has its cases -----------------------------------------------------------------


def cases_by_ref() -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for path in CASE_FILES:
        case = load_case(path)
        found.setdefault(case["runbook"], []).append(case)
    return found


def changes_something(runbook: Runbook, case: Mapping[str, Any]) -> bool:
    risks = {s.name: s.risk for s in runbook.steps}
    return any(risks[s["name"]] is not Risk.READ and s["actions"] for s in case["expect"]["steps"])


def test_every_shipped_runbook_version_has_a_case() -> None:
    covered = cases_by_ref()
    missing = [rb.ref for rb in REGISTRY.all() if rb.ref not in covered]
    assert not missing, f"no case under tests/runbooks/cases for {missing}"
    unknown = set(covered) - {rb.ref for rb in REGISTRY.all()}
    assert not unknown, f"cases for runbook versions that do not exist: {sorted(unknown)}"


def test_every_changing_runbook_has_a_case_that_changes_and_one_that_plans_nothing() -> None:
    by_ref = cases_by_ref()
    problems = []
    for rb in REGISTRY.all():
        if rb.risk is Risk.READ:
            continue
        planned = [c for c in by_ref.get(rb.ref, []) if "steps" in c["expect"]]
        if not any(changes_something(rb, c) for c in planned):
            problems.append(f"{rb.ref} has no case where it changes something")
        idle = any(not changes_something(rb, c) for c in planned)
        if rb.ref in NO_IDLE_CASE:
            if idle:
                problems.append(
                    f"{rb.ref} has a case that plans nothing: drop it from NO_IDLE_CASE"
                )
        elif not idle:
            problems.append(
                f"{rb.ref} has no case where it plans nothing (run twice: the second reports "
                "no change)"
            )
    assert not problems, "\n".join(problems)
    assert set(NO_IDLE_CASE) <= {rb.ref for rb in REGISTRY.all()}
