"""The wheel as a user installs it: built from this checkout (offline), installed into a fresh
venv, and run from another directory with no config, cluster or FLANNEL_BOT_TEMPLATES: the
templates must come with it, every command's --help must answer without a cluster, and the
version it prints is the one its METADATA (with URLs, classifiers and a CHANGELOG entry) carries."""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
COMMANDS = [
    *("help", "diagnose", "runbooks", "plan", "run", "approve", "deny", "cancel", "status"),
    *("audit", "doctor", "serve", "shell", "collect", "version", "node"),
]
CLASSIFIERS = {
    "Environment :: Console",
    "Intended Audience :: System Administrators",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Python :: 3.11",
    "Topic :: System :: Networking",
}
URLS = {"Homepage", "Documentation", "Changelog", "Issues"}
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".state")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's flannel-bot, a scratch directory outside the checkout)."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index"]
    # from a copy: setuptools builds in the source tree, and a checkout's stale build/ (say, from
    # before a package was renamed) would otherwise end up in the wheel
    source = root / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    build += ["--no-build-isolation", "--wheel-dir", str(wheels), str(source)]
    done = subprocess.run(build, capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    # the dependencies from this environment (nothing is downloaded), the package from the wheel
    purelib = subprocess.run(
        [
            str(env_dir / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next(wheels.glob("flannel_bot-*.whl"))
    pip = [
        str(env_dir / "bin" / "pip"),
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        str(wheel),
    ]
    done = subprocess.run(pip, capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
    work = root / "elsewhere"
    work.mkdir()
    return env_dir / "bin" / "flannel-bot", work


def metadata(installed: tuple[Path, Path]) -> str:
    """The installed wheel's METADATA, as pip wrote it from the wheel."""
    bot, work = installed
    return subprocess.run(
        [
            str(bot.parent / "python"),
            "-c",
            "import importlib.metadata as m; "
            "print(m.distribution('flannel-bot').read_text('METADATA'))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout


def run(installed: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess[str]:
    bot, work = installed
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "FLANNEL_BOT_DB": str(work / "a.db")}
    return subprocess.run(
        [str(bot), *args], env=env, cwd=work, capture_output=True, text=True, timeout=60
    )


def test_the_installed_bot_is_not_the_checkout_and_renders_with_its_own_templates(
    installed: tuple[Path, Path],
) -> None:
    where = run(installed, "--recording", str(REPO / "examples" / "cluster.json"), "diagnose")
    assert where.returncode == 0, where.stderr
    assert "flannel diagnose of cluster default" in where.stdout
    as_json = run(installed, "--recording", str(REPO / "examples" / "dump"), "--json", "diagnose")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["findings"]
    bot, work = installed
    files = subprocess.run(
        [
            str(bot.parent / "python"),
            "-c",
            "import flannel_bot, flannel_bot.settings as s; "
            "print(flannel_bot.__file__); print(s.default_templates())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout.split()
    assert not files[0].startswith(str(REPO)), files[0]
    assert files[1].endswith("share/flannel-bot/templates"), files[1]


def test_the_wheel_installs_under_import_names_of_its_own(installed: tuple[Path, Path]) -> None:
    """`bot` and `runbooks` are names other projects install too: the wheel must not take them."""
    bot, work = installed
    tops = subprocess.run(
        [
            str(bot.parent / "python"),
            "-c",
            "import importlib.metadata as m; d = m.distribution('flannel-bot'); "
            "print('\\n'.join(sorted({str(f).split('/')[0] for f in d.files or ()})))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=work,
    ).stdout.split()
    packages = {t for t in tops if not t.endswith((".dist-info", ".."))}
    assert packages == {"flannel_bot", "flannel_bot_runbooks"}, tops


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_its_own_help_without_a_cluster(
    installed: tuple[Path, Path], command: str
) -> None:
    helped = run(installed, command, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: flannel-bot {command}"), helped.stdout
    assert "no cluster configured" not in helped.stdout + helped.stderr


def test_an_unknown_command_s_help_says_so(installed: tuple[Path, Path]) -> None:
    helped = run(installed, "frobnicate", "--help")
    assert helped.returncode == 2
    assert "unknown command `frobnicate`" in helped.stderr


@pytest.mark.parametrize("argv", [["--version"], ["version"]])
def test_the_installed_bot_says_its_version_without_config_or_cluster(
    installed: tuple[Path, Path], argv: list[str]
) -> None:
    said = run(installed, *argv)
    assert said.returncode == 0, said.stderr
    version = re.search(r"^Version: (\S+)$", metadata(installed), re.M)
    assert version is not None
    assert said.stdout == f"flannel-bot {version[1]}\n"
    assert not said.stderr


def test_the_wheel_s_metadata_has_urls_classifiers_and_a_changelog_entry(
    installed: tuple[Path, Path],
) -> None:
    meta = metadata(installed)
    version = re.search(r"^Version: (\S+)$", meta, re.M)
    assert version is not None
    assert set(re.findall(r"^Classifier: (.+)$", meta, re.M)) >= CLASSIFIERS
    assert re.search(r"^License-Expression: Apache-2\.0$", meta, re.M)
    urls = dict(re.findall(r"^Project-URL: ([^,]+), (https://\S+)$", meta, re.M))
    assert set(urls) >= URLS, urls
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(version[1])}\] - \d{{4}}-\d\d-\d\d$", changelog, re.M)
    assert "[Unreleased]" in changelog


def test_the_installed_bot_lists_runbooks_reports_and_renders_slack_from_its_own_files(
    installed: tuple[Path, Path],
) -> None:
    """What a user of the wheel does after diagnose: list the runbooks, render an audit report,
    and the Slack reply built from the templates the wheel installed."""
    listed = run(installed, "--recording", str(REPO / "examples" / "dump"), "runbooks")
    assert listed.returncode == 0, listed.stderr
    assert "flannel.restart-pods" in listed.stdout and "node.fix-br-netfilter" in listed.stdout
    diagnosed = run(installed, "--recording", str(REPO / "examples" / "dump"), "--json", "diagnose")
    assert diagnosed.returncode == 0, diagnosed.stderr
    bot, work = installed
    (work / "diagnose.json").write_text(diagnosed.stdout)
    report = run(installed, "audit", "report", "format=html")
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("<!DOCTYPE html>") and "diagnose" in report.stdout
    slack = subprocess.run(
        [
            str(bot.parent / "python"),
            "-c",
            "import json; from flannel_bot.settings import default_templates; "
            "from flannel_bot.slack.messages import Messages; "
            "from flannel_bot.service.handler import Reply; "
            "data = json.load(open('diagnose.json')); "
            "m = Messages(default_templates()); "
            "print(json.dumps(m.reply(Reply('diagnose', data), '<@U1>', 'diagnose')))",
        ],
        capture_output=True,
        text=True,
        cwd=work,
    )
    assert slack.returncode == 0, slack.stderr
    payload = json.loads(slack.stdout)
    assert payload["blocks"] and payload["text"]
