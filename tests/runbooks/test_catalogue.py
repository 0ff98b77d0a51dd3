"""The shipped runbooks as a set: every fix diagnose offers exists, and every change is proven."""

from __future__ import annotations

import dataclasses
import inspect
import pkgutil

from flannel_bot.diagnosis import findings, rules
from flannel_bot.runs.actions import Risk
from flannel_bot.runs.params import parse_params
from flannel_bot.runs.registry import Registry

REGISTRY = Registry.from_package()

FINDING_IDS = {
    "br-netfilter-missing", "ip-forward-disabled", "flannel-crashloop", "stale-interface-address",
    "ipam-exhausted", "cni-config-invalid", "kube-proxy-config-invalid", "apiserver-unreachable",
    "ipvs-local-route", "flannel-not-deployed", "flannel-rbac-missing", "wrong-interface",
    "forward-drop", "subnet-env-missing", "vxlan-peer-missing",
}  # fmt: skip
EXPECTED = {
    "node.check", "flannel.restart-pods", "node.fix-br-netfilter", "node.clean-interfaces",
    "node.release-leaked-ips", "node.restore-cni-config", "kube-proxy.fix-config",
    "node.fix-ipvs-local-route", "flannel.repair", "node.fix-forward-policy",
}  # fmt: skip


def rules_source() -> str:
    """The text of every rule module, and of the findings' own fixes (restarting flannel)."""
    modules = [
        __import__(f"{rules.__name__}.{info.name}", fromlist=["_"])
        for info in pkgutil.iter_modules(rules.__path__)
    ]
    return "\n".join(inspect.getsource(m) for m in [*modules, findings])


def test_every_runbook_the_issue_names_is_installed() -> None:
    assert {rb.id for rb in REGISTRY.newest()} == EXPECTED


def test_every_changing_runbook_proves_its_fix_with_real_finding_ids() -> None:
    declared = {r.id for r in rules.RULES}
    for rb in REGISTRY.newest():
        if rb.risk is Risk.READ:
            assert rb.verifies == (), rb.ref
            continue
        assert rb.verifies, f"{rb.ref} changes things but names no finding to verify"
        unknown = set(rb.verifies) - FINDING_IDS
        assert not unknown, f"{rb.ref} verifies unknown findings {unknown}"
        for fid in rb.verifies:
            assert fid in declared, f"no rule yields {fid}"


def test_the_fixes_diagnose_suggests_name_installed_runbooks_with_valid_params() -> None:
    source = rules_source()
    for rb in REGISTRY.newest():
        if rb.id != "node.check":
            assert f'"{rb.id}"' in source, f"no finding suggests {rb.ref}"
    # the parameter shapes the rules produce parse against the runbook that takes them
    samples = {
        "node.fix-br-netfilter": {"node": "w2"},
        "node.clean-interfaces": {"node": "w2"},
        "node.release-leaked-ips": {"node": "w2"},
        "node.restore-cni-config": {"node": "w2"},
        "node.fix-ipvs-local-route": {"node": "w2"},
        "node.fix-forward-policy": {"node": "w2"},
        "flannel.restart-pods": {"nodes": "w2", "namespace": "kube-flannel"},
        "flannel.repair": {"iface": "eth0"},
        "kube-proxy.fix-config": {},
    }
    for rid, params in samples.items():
        rb = REGISTRY.get(rid)
        assert dataclasses.is_dataclass(parse_params(rb.params, params, rb.ref))
