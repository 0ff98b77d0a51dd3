"""The audit log on a full disk: the bot says so and what to do, applies nothing it cannot record,
and the log it has stays intact. (A real tmpfs: needs root, like the rest of tests/lab.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO

pytestmark = pytest.mark.integration
FLANNEL_BOT = str(Path(sys.executable).parent / "flannel-bot")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_bot_before_it_acts(small_disk: Path, tmp_path: Path) -> None:
    cluster = json.loads((REPO / "examples" / "cluster.json").read_text())
    (tmp_path / "cluster.json").write_text(json.dumps(cluster))
    config = tmp_path / "flannel-bot.toml"
    config.write_text(
        f'db = "{small_disk / "audit.db"}"\nrecording = "{tmp_path / "cluster.json"}"\n'
        '[policy.groups]\noperators = ["alice"]\napprovers = ["bob"]\n'
        '[terminal]\napprover = "asserted"\n'  # one login plays alice and bob
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLANNEL_BOT_")}
    env["FLANNEL_BOT_CONFIG"] = str(config)

    def bot(user: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLANNEL_BOT, "--user", user, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert bot("alice", "run", "flannel.restart-pods@1.1.0", "nodes=w2").returncode == 0
    filler = small_disk / "filler"
    # fill the rest; unbuffered, so closing it has no partial write left to fail on
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    approved = bot("bob", "approve", "1")
    assert approved.returncode == 1, approved.stdout + approved.stderr
    assert "cannot be written" in approved.stderr and "Free space on that disk" in approved.stderr
    assert "Traceback" not in approved.stderr
    filler.unlink()
    status = bot("alice", "status", "1")
    assert "AWAITING_APPROVAL" in status.stdout  # the approval was not half-recorded
    assert bot("alice", "audit", "verify").returncode == 0
    # with room again, the same approval goes through
    assert "SUCCEEDED" in bot("bob", "approve", "1").stdout
