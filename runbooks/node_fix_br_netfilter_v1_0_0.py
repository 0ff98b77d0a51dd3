"""Load br_netfilter, set the bridge and forwarding sysctls, persist them, restart flannel.

flanneld exits at start when /proc/sys/net/bridge/bridge-nf-call-iptables is missing
(br_netfilter not loaded), and pods cannot reach other nodes with net.ipv4.ip_forward=0. This
runs `modprobe br_netfilter`, sets net.bridge.bridge-nf-call-iptables=1,
net.bridge.bridge-nf-call-ip6tables=1 and net.ipv4.ip_forward=1, makes both survive a reboot
(/etc/modules-load.d/k8s.conf, /etc/sysctl.d/99-flannel-bot.conf), then restarts the node's
flannel pod. Every part is skipped when already in place; on a healthy node nothing is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flannel_bot.core.runbook import (
    Action,
    CheckResult,
    Facts,
    NodeName,
    Risk,
    RunOnNode,
    WriteFile,
    step,
)

from ._common import read_dir, read_text, replacements_ready, restart_flannel

ID = "node.fix-br-netfilter"
VERSION = "1.0.0"
VERIFIES = ("br-netfilter-missing", "ip-forward-disabled", "flannel-crashloop")

SYSCTLS = (
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.ip_forward",
)
MODULES_FILE = "/etc/modules-load.d/k8s.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-flannel-bot.conf"


@dataclass(frozen=True)
class Params:
    node: NodeName = field(metadata={"help": "the node to fix"})


def _proc(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def module_loaded(facts: Facts, node: str) -> bool:
    return read_text(facts, node, _proc(SYSCTLS[0])) is not None


def live_values(facts: Facts, node: str) -> dict[str, str]:
    """Each sysctl's current value; "" while br_netfilter is not loaded."""
    return {k: (read_text(facts, node, _proc(k)) or "").strip() for k in SYSCTLS}


def persisted_values(facts: Facts, node: str) -> dict[str, str]:
    """What systemd-sysctl applies at boot from /etc/sysctl.d: files in order, last one wins."""
    values: dict[str, str] = {}
    for text in read_dir(facts, node, "/etc/sysctl.d", ".conf").values():
        for line in text.splitlines():
            key, sep, value = line.strip().partition("=")
            if sep and not key.startswith(("#", ";")):
                values[key.strip().lstrip("-")] = value.strip()
    return values


def module_persisted(facts: Facts, node: str) -> bool:
    for text in read_dir(facts, node, "/etc/modules-load.d", ".conf").values():
        if any(line.strip() == "br_netfilter" for line in text.splitlines()):
            return True
    return False


def needs_fix(facts: Facts, node: str) -> bool:
    return (
        not module_loaded(facts, node)
        or any(v != "1" for v in live_values(facts, node).values())
        or not module_persisted(facts, node)
        or any(persisted_values(facts, node).get(k) != "1" for k in SYSCTLS)
    )


def module_is_loaded(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    if module_loaded(facts, p.node):
        return CheckResult(True, f"{_proc(SYSCTLS[0])} exists on {p.node}")
    return CheckResult(False, f"{_proc(SYSCTLS[0])} still missing on {p.node}")


def sysctls_are_one(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    values = live_values(facts, p.node)
    wrong = [f"{k}={v or 'missing'}" for k, v in values.items() if v != "1"]
    if wrong:
        return CheckResult(False, f"on {p.node}: {', '.join(wrong)}")
    return CheckResult(True, f"{', '.join(SYSCTLS)} are 1 on {p.node}")


def persisted(facts: Facts, p: Params, done: tuple[Action, ...]) -> CheckResult:
    values = persisted_values(facts, p.node)
    wrong = [f"{k}={values.get(k, 'unset')}" for k in SYSCTLS if values.get(k) != "1"]
    if not module_persisted(facts, p.node):
        wrong.append("br_netfilter not in /etc/modules-load.d")
    if wrong:
        return CheckResult(False, f"after a reboot {p.node} would have: {', '.join(wrong)}")
    return CheckResult(True, f"br_netfilter and the sysctls persist on {p.node}")


@step("Load br_netfilter", risk=Risk.CHANGE, timeout=30, check=module_is_loaded)
def load_module(facts: Facts, p: Params) -> list[Action]:
    if module_loaded(facts, p.node):
        return []
    return [RunOnNode(p.node, ("modprobe", "br_netfilter"))]


@step("Set the bridge and forwarding sysctls to 1", risk=Risk.CHANGE, check=sysctls_are_one)
def set_sysctls(facts: Facts, p: Params) -> list[Action]:
    values = live_values(facts, p.node)
    return [RunOnNode(p.node, ("sysctl", "-w", f"{k}=1")) for k, v in values.items() if v != "1"]


@step("Persist the module and sysctls for the next boot", risk=Risk.CHANGE, check=persisted)
def persist(facts: Facts, p: Params) -> list[Action]:
    actions: list[Action] = []
    if not module_persisted(facts, p.node):
        old = read_text(facts, p.node, MODULES_FILE) or ""
        lines = [line for line in old.splitlines() if line.strip()]
        actions.append(WriteFile(p.node, MODULES_FILE, "\n".join([*lines, "br_netfilter"]) + "\n"))
    if any(persisted_values(facts, p.node).get(k) != "1" for k in SYSCTLS):
        content = "# written by flannel-bot node.fix-br-netfilter\n" + "".join(
            f"{k} = 1\n" for k in SYSCTLS
        )
        actions.append(WriteFile(p.node, SYSCTL_FILE, content))
    return actions


@step(
    "Restart the node's flannel pod and wait until it is Ready",
    risk=Risk.DESTRUCTIVE,
    timeout=120,
    check=replacements_ready,
)
def restart(facts: Facts, p: Params) -> list[Action]:
    return restart_flannel(facts, p.node, needed=needs_fix(facts, p.node))
