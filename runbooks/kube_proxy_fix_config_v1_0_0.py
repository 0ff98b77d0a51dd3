"""Correct misspelt fields in kube-proxy's config, restart kube-proxy, then stuck flannel pods.

kube-proxy decodes its config strictly: one unknown field (`masqueradeAl` for `masqueradeAll`)
and it does not start, so no Service rules exist, 10.96.0.1:443 does not answer from the nodes
and flanneld crash-loops. This reads config.conf from ConfigMap kube-system/kube-proxy (kubeadm
clusters), renames each unknown field to the field it most likely meant (the plan shows the diff;
a field with no close match is refused, for a person to fix), restarts kube-proxy one node at a
time, restarts the flannel pods that are not Ready, and checks that every node reaches the API
Service again. A config without unknown fields is left alone.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import yaml

from flannel_bot.core.kube_proxy_config import suggestion, unknown_fields
from flannel_bot.core.runbook import (
    Action,
    CheckResult,
    Facts,
    PatchConfigMap,
    Risk,
    step,
)
from flannel_bot.errors import ExecutorError, ParameterError

from ._common import FLANNEL_LABEL, KUBE_PROXY_LABEL, flannel_pods, replacements_ready, rolling

ID = "kube-proxy.fix-config"
VERSION = "1.0.0"
VERIFIES = ("kube-proxy-config-invalid", "apiserver-unreachable", "flannel-crashloop")
NAMESPACE, NAME, KEY = "kube-system", "kube-proxy", "config.conf"


@dataclass(frozen=True)
class Params:
    pass


def current(facts: Facts) -> str:
    try:
        cm = facts.kube.get_configmap(NAMESPACE, NAME)
    except ExecutorError as exc:
        raise ParameterError(
            f"cannot read ConfigMap {NAMESPACE}/{NAME} ({exc}); on a systemd install fix "
            "kube-proxy's config file on each node by hand"
        ) from None
    if KEY not in cm.data:
        raise ParameterError(f"ConfigMap {NAMESPACE}/{NAME} has no {KEY}")
    return cm.data[KEY]


def corrected(text: str) -> str:
    """`text` with each unknown field renamed; the YAML is edited as text to keep comments."""
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParameterError(f"{KEY} is not valid YAML ({exc}); fix it by hand") from None
    if not isinstance(config, dict):
        raise ParameterError(f"{KEY} is not a YAML mapping; fix it by hand")
    bad = unknown_fields(config)
    lines = text.splitlines(keepends=True)
    for path in bad:
        better = suggestion(path)
        if better is None:
            raise ParameterError(
                f"kube-proxy's config has unknown field `{path}` with no close match; fix it "
                "by hand"
            )
        leaf, new_leaf = path.rpartition(".")[2], better.rpartition(".")[2]
        depth = path.count(".")
        hits = [
            i
            for i, line in enumerate(lines)
            if re.match(rf"^(\s*){re.escape(leaf)}(\s*):", line)
            and (depth == 0) == (not line[:1].isspace())
        ]
        if len(hits) != 1:
            raise ParameterError(f"cannot find `{path}` exactly once in {KEY}; fix it by hand")
        lines[hits[0]] = re.sub(rf"^(\s*){re.escape(leaf)}", rf"\g<1>{new_leaf}", lines[hits[0]])
    fixed = "".join(lines)
    check: Any = yaml.safe_load(fixed)
    if unknown_fields(check):
        raise ParameterError(f"renaming did not fix {KEY}: {', '.join(unknown_fields(check))}")
    return fixed


def config_valid(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    config = yaml.safe_load(current(facts))
    bad = unknown_fields(config) if isinstance(config, dict) else ["(not a mapping)"]
    if bad:
        return CheckResult(False, f"still unknown: {', '.join(bad)}")
    return CheckResult(True, f"{NAMESPACE}/{NAME} {KEY} has no unknown fields")


def api_reachable(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    """From each node with a flannel pod, a TCP connect to the API Service answers."""
    ip = facts.kube.get_service("default", "kubernetes").cluster_ip
    failed = []
    nodes = sorted({pod.node for pod in flannel_pods(facts)})
    for node in nodes:
        res = facts.run(
            node,
            ["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{ip}/443"],
            timeout=10,
        )
        if not res.ok:
            failed.append(node)
    if failed:
        return CheckResult(False, f"{ip}:443 does not answer from {', '.join(failed)}")
    return CheckResult(True, f"{ip}:443 answers from {', '.join(nodes)}")


def needs_fix(facts: Facts) -> bool:
    text = current(facts)
    return corrected(text) != text


@step("Rename the unknown fields in kube-proxy's config", risk=Risk.DESTRUCTIVE, check=config_valid)
def fix_config(facts: Facts, p: Params) -> list[Action]:
    text = current(facts)
    fixed = corrected(text)
    if fixed == text:
        return []
    diff = "".join(
        difflib.unified_diff(
            text.splitlines(keepends=True),
            fixed.splitlines(keepends=True),
            f"a/{NAME}/{KEY}",
            f"b/{NAME}/{KEY}",
            n=1,
        )
    )
    return [PatchConfigMap(NAMESPACE, NAME, ((KEY, fixed),), diff)]


@step(
    "Restart kube-proxy one node at a time",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=replacements_ready,
)
def restart_kube_proxy(facts: Facts, p: Params) -> list[Action]:
    pods = facts.kube.list_pods(NAMESPACE, KUBE_PROXY_LABEL)
    if not needs_fix(facts):
        pods = [pod for pod in pods if not pod.ready]
    return rolling(pods, KUBE_PROXY_LABEL)


@step(
    "Restart the flannel pods that are not Ready, then check the API Service from every node",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=api_reachable,
)
def restart_flannel(facts: Facts, p: Params) -> list[Action]:
    return rolling([pod for pod in flannel_pods(facts) if not pod.ready], FLANNEL_LABEL)
