"""deploy/base as users apply it: `kubectl kustomize` renders it (kubectl comes from Debian's
kubernetes-client, which .ci/run installs), so tests read the objects kustomize really emits, not
the files it reads."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

BASE = Path(__file__).resolve().parents[1] / "deploy" / "base"


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


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")
