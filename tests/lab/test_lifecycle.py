"""`flannel-bot lab up` then `lab down`, as a user runs them, leave nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flannel_bot.lab.network import blackhole_metric, lab_links, lab_netns, lab_pids, run
from flannel_bot.lab.topology import LabSpec

pytestmark = pytest.mark.integration
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")
SPEC = LabSpec(name="lcy", nodes=2, underlay="172.31.252.0/24", root=Path("/run/flannel-bot-test"))
ARGS = ["--name", SPEC.name, "--root", str(SPEC.root)]


def lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLANNEL_BOT, "lab", *ARGS, *args], capture_output=True, text=True, timeout=120
    )


def leftovers() -> dict[str, object]:
    routes = run(["ip", "route", "show", "type", "blackhole"])
    return {
        "netns": lab_netns(SPEC),
        "links": lab_links(SPEC),
        "processes": lab_pids(SPEC),
        "files": SPEC.dir.exists() or (SPEC.root / f"{SPEC.name}.log").exists(),
        "routes": [r for r in routes.splitlines() if f"metric {blackhole_metric(SPEC)}" in r],
    }


def test_up_status_break_down_leaves_nothing() -> None:
    try:
        up = lab("up", "--nodes", "2", "--underlay", SPEC.underlay)
        assert up.returncode == 0, up.stderr
        assert f"export FLANNEL_BOT_CONFIG={SPEC.dir}/flannel-bot.toml" in up.stdout
        state = json.loads((SPEC.dir / "state.json").read_text())
        assert state["api"].startswith("http://127.0.0.1:")
        assert len(lab_netns(SPEC)) == 5  # svc, 2 nodes, 2 pods
        assert lab_pids(SPEC)
        status = lab("status")
        assert status.returncode == 0 and "w2:ok" in status.stdout, status.stdout
        broke = lab("break", "fdb-missing", "--node", "w1")
        assert broke.returncode == 0 and "broke fdb-missing on w1" in broke.stdout
        assert "w2:FAIL" in lab("status").stdout
        bad = lab("break", "fdb-missing", "--node", "w9")
        assert bad.returncode == 1 and "w9" in bad.stderr
    finally:
        down = lab("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers() == {"netns": [], "links": [], "processes": [], "files": False, "routes": []}


def test_status_of_a_lab_that_is_not_up_says_so() -> None:
    proc = lab("status")
    assert proc.returncode == 1
    assert "lab `lcy` is not up" in proc.stderr and "flannel-bot lab up" in proc.stderr


def test_lab_up_without_root_explains_and_fails(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            FLANNEL_BOT,
            "lab",
            "--name",
            "nrt",
            "--root",
            str(tmp_path),
            "up",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert proc.returncode == 1
    assert "the lab needs root" in proc.stderr
