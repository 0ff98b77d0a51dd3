"""deploy/base and deploy/helm as users apply them: `kubectl kustomize` renders the base (kubectl
comes from Debian's kubernetes-client, which .ci/run installs) and Helm v4's own engine renders
the chart (helm-python-sdk, a dev dependency), so tests read the objects really emitted, not the
files they are made from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parents[1] / "deploy" / "base"
CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "flannel-bot"


class KubectlMissing(RuntimeError):
    """No kubectl to render with: install kubernetes-client (Debian) or any kubectl."""


@cache
def rendered_base() -> tuple[dict[str, Any], ...]:
    """The objects `kubectl kustomize deploy/base` renders; KubectlMissing without kubectl (in
    CI, where .ci/run installs it, that is a failure, never a skip)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise KubectlMissing("kubectl is not on PATH: apt-get install kubernetes-client")
    out = subprocess.run(
        [kubectl, "kustomize", str(BASE)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


@cache
def _rendered_chart(values: str, name: str, namespace: str) -> tuple[dict[str, Any], ...]:
    import helm_python as helm  # its 85 MB libhelm_c loaded only by tests that render the chart

    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(json.loads(values), name=name, namespace=namespace)
    return tuple(
        d
        for path, text in sorted(manifests.items())
        if path.endswith((".yaml", ".yml"))
        for d in yaml.safe_load_all(text)
        if d
    )


def rendered_chart(
    values: dict[str, Any] | None = None,
    *,
    name: str = "flannel-bot",
    namespace: str = "flannel-bot",
) -> tuple[dict[str, Any], ...]:
    """The objects `helm install <name> deploy/helm/flannel-bot -n <namespace>` creates with
    these values (`--set`), rendered offline by Helm's engine."""
    return _rendered_chart(json.dumps(values or {}, sort_keys=True), name, namespace)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def rendered_base_or_skip() -> tuple[dict[str, Any], ...]:
    """rendered_base() for a test: skipped without kubectl on a developer's machine, failed in CI
    (where .ci/run installs it)."""
    import pytest

    try:
        return rendered_base()
    except KubectlMissing as missing:
        if in_ci():
            pytest.fail(f"{missing} (.ci/run installs it)")
        pytest.skip(str(missing))
