"""examples/demo.sh, as `make demo` runs it: on the bundled example it succeeds, and it fails when
any step does (a broken flannel-bot must not end in exit 0). DEMO_LAB=0 keeps these runs off the
lab even as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "demo.sh"


def demo(path: str, tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(tmp_path), "TMPDIR": str(tmp_path), **extra}
    return subprocess.run(
        ["bash", str(DEMO)], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def bot_path() -> str:
    """The environment's flannel-bot first, then the system's tools."""
    return f"{Path(sys.executable).parent}:/usr/bin:/bin"


def test_the_demo_runs_the_bundled_example_to_the_end(tmp_path: Path) -> None:
    done = demo(bot_path(), tmp_path, DEMO_LAB="0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cannot approve it" in done.stdout  # alice's own approval, refused as it should be
    assert "audit verify" in done.stdout


@pytest.mark.parametrize("fails", ["always", "diagnose", "approve", "verify"])
def test_a_broken_flannel_bot_fails_the_demo(tmp_path: Path, fails: str) -> None:
    stub = tmp_path / "bin" / "flannel-bot"
    stub.parent.mkdir()
    real = shutil.which("flannel-bot", path=bot_path())
    assert real is not None
    if fails == "always":
        stub.write_text("#!/bin/sh\necho 'flannel-bot: broken' >&2\nexit 1\n")
    else:
        # the real bot, except that one command fails as a crash would
        stub.write_text(
            "#!/bin/bash\n"
            f'for w in "$@"; do [ "$w" = {fails} ] && {{ echo crashed >&2; exit 3; }}; done\n'
            f'exec {real} "$@"\n'
        )
    stub.chmod(0o755)
    done = demo(f"{stub.parent}:{bot_path()}", tmp_path, DEMO_LAB="0")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "demo failed" in done.stderr


def test_a_refusal_that_does_not_come_fails_the_demo(tmp_path: Path) -> None:
    stub = tmp_path / "bin" / "flannel-bot"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")  # says yes to everything, alice's own approval too
    stub.chmod(0o755)
    done = demo(f"{stub.parent}:{bot_path()}", tmp_path, DEMO_LAB="0")
    assert done.returncode != 0, done.stdout + done.stderr
    assert "demo failed" in done.stderr


def test_not_root_runs_the_bundled_example_and_says_why(tmp_path: Path) -> None:
    """As nobody (the checkout's Python lives under /root here, so a stand-in flannel-bot that
    refuses only alice's own approval plays the bot; the real one runs in the tests above)."""
    scratch = Path(tempfile.mkdtemp(prefix="demo-nobody-"))
    try:
        scratch.chmod(0o777)
        stub = scratch / "flannel-bot"
        stub.write_text(
            "#!/bin/bash\n"
            'echo "flannel-bot $*"\n'
            'if [ "$2" = alice ] && [ "$3" = approve ]; then echo "cannot approve it"; exit 1; fi\n'
        )
        stub.chmod(0o755)
        as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
        env = [f"PATH={scratch}:/usr/bin:/bin", f"HOME={scratch}", f"TMPDIR={scratch}"]
        done = subprocess.run(
            [*(as_nobody if os.geteuid() == 0 else []), "env", "-i", *env, "bash", str(DEMO)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
    finally:
        shutil.rmtree(scratch)
    assert done.returncode == 0, done.stdout + done.stderr
    reasons = [line for line in done.stdout.splitlines() if "bundled example" in line]
    assert len(reasons) == 1, done.stdout
    assert "not root" in reasons[0]
    assert "flannel-bot --user alice diagnose --dump dump" in done.stdout
    assert "lab" not in done.stdout.replace(reasons[0], "")


def test_without_the_lab_s_packages_the_demo_says_which_and_runs_the_bundled_example(
    tmp_path: Path,
) -> None:
    """A PATH holding only what the script itself uses: no ip, iptables, ping or ssh-keygen. As
    root the reason names the packages (`make demo` would have installed them); otherwise it is
    the not-root reason. The stand-in bot refuses to build a lab."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "mktemp", "dirname", "id", "uname", "rm", "cat"):
        found = shutil.which(tool)
        assert found is not None, tool
        (tools / tool).symlink_to(found)
    (tools / "flannel-bot").write_text(
        "#!/bin/bash\n"
        '[ "$1" = lab ] && { echo "no lab here" >&2; exit 3; }\n'
        'if [ "$2" = alice ] && [ "$3" = approve ]; then echo "cannot approve it"; exit 1; fi\n'
    )
    (tools / "flannel-bot").chmod(0o755)
    done = subprocess.run(
        [str(tools / "bash"), str(DEMO)],
        env={"PATH": str(tools), "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    reasons = [line for line in done.stdout.splitlines() if "bundled example" in line]
    assert len(reasons) == 1, done.stdout
    if os.geteuid() == 0:
        assert "the lab needs iproute2 iptables" in reasons[0]
        assert "iputils-ping" in reasons[0]
        assert "`make demo` as root installs them" in reasons[0]
    else:
        assert "not root" in reasons[0]


def test_system_packages_not_as_root_names_what_is_missing_and_installs_nothing() -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    as_nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    done = subprocess.run(
        [*(as_nobody if os.geteuid() == 0 else []), "/bin/bash", ".ci/system-packages", "lab"],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 1
    assert done.stderr.startswith("missing system packages (run as root to install): iproute2")
    checked = subprocess.run(
        ["/bin/bash", ".ci/system-packages", "--check", "ci"],
        env={"PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert checked.returncode == 1
    # (CI also finds tools in /usr/sbin, as ip and iptables are here)
    want = {"make", "python3", "openssh-client", "chromium", "kubernetes-client"}
    assert want <= set(checked.stdout.split())
