"""What the image holds is enough to run, checked without a container engine (none here).

The Dockerfile's COPY lines are followed into a scratch directory, the package is installed from
there as its `pip install .` does, and the installed bot (not this checkout) diagnoses the bundled
recording with the templates where the image's ENV puts them. A file the bot needs at run time
that the Dockerfile forgets to copy, or that the package does not ship, fails here.
"""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """The arguments of every `name` instruction, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(rf"(?m)^{name}\s+(.*)$", text)]


def test_the_image_is_pinned_non_root_checked_and_serves() -> None:
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", instructions("FROM")[0])
    user = instructions("USER")[-1]
    assert user not in ("root", "0") and "useradd --system --uid 10001" in DOCKERFILE
    assert "/healthz" in instructions("HEALTHCHECK")[0]
    assert instructions("ENTRYPOINT") == ['["flannel-bot"]']
    assert instructions("CMD") == ['["serve"]']


def test_what_the_dockerfile_copies_installs_and_runs_outside_the_checkout(
    tmp_path: Path,
) -> None:
    app = tmp_path / "app"  # WORKDIR /app
    assert instructions("WORKDIR") == ["/app"]
    for line in instructions("COPY"):
        *sources, dest = line.split()
        for source in sources:
            target = app / dest.removeprefix("./") if dest != "./" else app / source
            src = REPO / source
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, target)
    site_dir = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    # the build backend from this environment: nothing is downloaded
    pip += ["--no-build-isolation", "--target", str(site_dir), str(app)]
    done = subprocess.run(pip, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    env_line = " ".join(instructions("ENV"))
    templates = re.search(r"FLANNEL_BOT_TEMPLATES=(\S+)", env_line)
    assert templates is not None
    run = (
        "import sys, json\n"
        f"sys.path[:0] = [{str(site_dir)!r}]\n"
        f"sys.path += {site.getsitepackages()!r}\n"  # the dependencies
        "import flannel_bot, flannel_bot_runbooks\n"
        f"assert flannel_bot.__file__.startswith({str(site_dir)!r}), flannel_bot.__file__\n"
        f"assert flannel_bot_runbooks.__file__.startswith({str(site_dir)!r})\n"
        "from flannel_bot.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path / "home"),
        "FLANNEL_BOT_TEMPLATES": templates.group(1).replace("/app", str(app), 1),
        "FLANNEL_BOT_DB": str(tmp_path / "state" / "flannel-bot.db"),
    }
    recording = str(app / "examples" / "cluster.json")

    def bot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", "-c", run, "--recording", recording, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    diagnosed = bot("diagnose", "--json")
    assert diagnosed.returncode == 0, diagnosed.stderr
    assert json.loads(diagnosed.stdout)["findings"]
    listed = bot("runbooks")  # the runbooks and their lock file came along
    assert listed.returncode == 0, listed.stderr
    assert "flannel.repair" in listed.stdout
    text = bot("diagnose")  # the terminal templates came along
    assert text.returncode == 0 and "flannel diagnose" in text.stdout, text.stderr
