"""Diagnosis rules by area, and `diagnose`: every rule over the evidence, root cause first.

Each area module declares its rules with `@rule` (`bot.diagnosis.rule`); they are imported here
from the cluster down to the pod, which is also the order rules rank in when no declared
`explains` decides. A rule looks for one failure known from real incidents and quotes the
lines that show it, with where they came from.
"""

from __future__ import annotations

import gc
import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.findings import Finding
from flannel_bot.diagnosis.rule import RULES, rank

# the areas, from the cluster down to the pod: rules rank in this order unless `explains` decides
AREAS = (
    "cluster",
    "config",
    "kube_proxy",
    "subnets",
    "kernel",
    "interfaces",
    "iptables",
    "vxlan",
    "cni",
    "pods",
)
for _area in AREAS:
    importlib.import_module(f"{__name__}.{_area}")


def diagnose(ev: Evidence) -> list[Finding]:
    """Every rule over the evidence, ranked root cause first."""
    with _collector_held_off():
        return rank(f for r in RULES for f in r.findings(ev))


# the cyclic collector while rules run: once per 200,000 new objects, not 700. The rules make
# many short-lived objects and no cycles, and each full collection walks every object of the
# evidence (150,000 pods: millions): at 5,000 probed nodes 1.6 s of the rules' 5 s
_held = threading.Lock()
_holders = 0
_threshold: tuple[int, ...] = ()


@contextmanager
def _collector_held_off() -> Iterator[None]:
    global _holders, _threshold
    with _held:
        if _holders == 0:
            _threshold = gc.get_threshold()
            gc.set_threshold(max(_threshold[0], 200_000), *_threshold[1:])
        _holders += 1
    try:
        yield
    finally:
        with _held:
            _holders -= 1
            if _holders == 0:
                gc.set_threshold(*_threshold)


__all__ = ["AREAS", "RULES", "diagnose"]
