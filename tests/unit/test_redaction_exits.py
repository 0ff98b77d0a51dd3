"""Secrets never leave: every exit other than Slack (tests/slack/test_slack_redaction.py) and
bundles (tests/integration/test_bundle_secrets.py) is given the whole corpus of
tests/secret_corpus.py and must let none of it out: reports in every format, log records in both
formats, and the terminal (one-shot commands, `--json`, the shell)."""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flannel_bot import cli
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.process.logs import configure
from flannel_bot.render import Renderer
from flannel_bot.service.handler import Service
from flannel_bot.settings import REPO_ROOT
from tests.conftest import who
from tests.fakes import FakeCluster
from tests.secret_corpus import LOOK_ALIKES, RSA, SECRETS

FORMATS = ("md", "html", "csv", "jsonl")
SECRET_TEXT = "\n".join(s.text for s in SECRETS)
LEAKS = sorted({fragment for s in SECRETS for fragment in s.leaks})
ALIKE_TEXT = "\n".join(a.text for a in LOOK_ALIKES)
MARK = "OUTPUT-MARK"
RENDER = Renderer(REPO_ROOT / "templates")


def leaks_in(text: str) -> list[str]:
    return [fragment for fragment in LEAKS if fragment in text]


@pytest.fixture
def step_printed(service: Service, cluster: FakeCluster) -> Service:
    """A read-only run whose step printed every secret of the corpus (and a marker), and an AWS
    secret key on the first line of its stderr."""
    cluster.command_results[("w3", "cat", "/run/flannel/subnet.env")] = CommandResult(
        "w3",
        ("cat", "/run/flannel/subnet.env"),
        0,
        f"FLANNEL_NETWORK=10.244.0.0/16\n{MARK}\n{SECRET_TEXT}\n",
        f"{MARK} {SECRETS[2].text}\n{RSA}",  # the CSV shows the first line of stderr
    )
    assert service.handle("run test.show-node node=w3", who("alice")).data["status"] == (
        "succeeded"
    )
    return service


def report_data(service: Service, fmt: str) -> dict[str, Any]:
    """The data the templates lay out (jsonl and csv stream instead: see the test below)."""
    return service.report({}, who("carol"))


def replaced(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: replaced(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [replaced(v, old, new) for v in value]
    return value


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_report_holds_no_secret_a_step_printed(step_printed: Service, fmt: str) -> None:
    text = RENDER.report(report_data(step_printed, fmt), fmt)
    assert "FLANNEL_NETWORK" in text or fmt == "csv"
    assert leaks_in(text) == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_report_masks_secrets_the_store_kept_before_a_pattern_knew_them(
    step_printed: Service, fmt: str
) -> None:
    """Events stored by an older flannel-bot hold what its patterns missed: the report, rendered
    now, masks them anyway (as if the marker had been the corpus all along)."""
    data = replaced(report_data(step_printed, fmt), MARK, SECRET_TEXT)
    assert leaks_in(json.dumps(data))  # the report's data does hold them
    assert leaks_in(RENDER.report(data, fmt)) == []


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_streamed_export_holds_no_secret_a_step_printed(step_printed: Service, fmt: str) -> None:
    """The export written an event at a time masks the secret inside an event, as the template
    over the whole report does, and writes the same bytes."""
    reply = step_printed.handle(["audit", "report", f"format={fmt}"], who("carol"))
    assert reply.ok and "export" in reply.data, reply.data
    text = RENDER.reply(reply)
    assert "FLANNEL_NETWORK" in text or fmt == "csv"
    assert leaks_in(text) == []
    assert text == RENDER.report(report_data(step_printed, fmt), fmt)


def test_a_report_keeps_every_look_alike(step_printed: Service) -> None:
    data = replaced(report_data(step_printed, "jsonl"), MARK, ALIKE_TEXT)
    lines = [json.loads(line) for line in RENDER.report(data, "jsonl").splitlines()]
    outputs = [e["data"]["stdout"] for e in lines[1:] if "stdout" in e.get("data", {})]
    assert any(ALIKE_TEXT in out for out in outputs)
    md = RENDER.report(replaced(report_data(step_printed, "md"), MARK, ALIKE_TEXT), "md")
    assert "kube-flannel-ds-x7k2p   0/1   CrashLoopBackOff" in md or "FLANNEL_NETWORK" in md
    page = html.unescape(
        RENDER.report(replaced(report_data(step_printed, "html"), MARK, "w2 10.244.1.0/24"), "html")
    )
    assert "w2 10.244.1.0/24" in page
    rows = list(csv.reader(io.StringIO(RENDER.report(report_data(step_printed, "csv"), "csv"))))
    assert rows[0][0] == "id" and len(rows) > 2


# -- logs ---------------------------------------------------------------------------------------


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    yield logger
    logger.handlers[:] = handlers
    logger.setLevel(level)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_records_hold_no_secret(
    root_logger: logging.Logger, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    configure(fmt)  # binds the handler to the captured stderr
    log = logging.getLogger("bot.test")
    log.warning("a node printed %s", SECRET_TEXT)
    log.info(SECRET_TEXT)
    try:
        raise RuntimeError(f"probe failed: {RSA}\n{SECRET_TEXT}")
    except RuntimeError:
        log.exception("collecting failed")
    log.info("look-alikes %s", ALIKE_TEXT)
    err = capsys.readouterr().err
    assert "a node printed" in err and "collecting failed" in err and "RuntimeError" in err
    assert leaks_in(err) == []
    if fmt == "json":
        records = [json.loads(line) for line in err.splitlines()]
        assert records[-1]["message"] == f"look-alikes {ALIKE_TEXT}"


# -- the terminal -------------------------------------------------------------------------------


@pytest.fixture
def leaky_cluster(tmp_path: Path) -> Path:
    """The example support bundle, where w2's missing br_netfilter sysctl errors with a private key
    (diagnose quotes that stderr) and its subnet.env holds every secret (node.check prints it)."""
    dump = Path(shutil.copytree(REPO_ROOT / "examples" / "dump", tmp_path / "dump"))
    probes = dump / "probes" / "w2"
    err = probes / "bridge-nf-call-iptables.err"
    err.write_text(err.read_text().rstrip("\n") + f" {RSA}\n")
    (probes / "subnet-env.txt").write_text(f"FLANNEL_NETWORK=10.244.0.0/16\n{SECRET_TEXT}\n")
    return dump


def run_cli(tmp_path: Path, cluster: Path, *words: str) -> int:
    config = tmp_path / "flannel-bot.toml"
    config.write_text('[policy.groups]\noperators = ["alice"]\napprovers = ["bob"]\n')
    argv = ["--config", str(config), "--db", str(tmp_path / "bot.db"), "--recording"]
    return cli.main([*argv, str(cluster), "--user", "alice", *words], env={"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    "words",
    [
        ("diagnose",),
        ("diagnose", "--json"),
        ("run", "node.check", "node=w2"),
        ("run", "node.check", "node=w2", "--json"),
    ],
    ids=" ".join,
)
def test_the_terminal_prints_no_secret(
    tmp_path: Path, leaky_cluster: Path, capsys: pytest.CaptureFixture[str], words: tuple[str, ...]
) -> None:
    assert run_cli(tmp_path, leaky_cluster, *words) in (0, 1)
    out, err = capsys.readouterr()
    assert "w2" in out + err
    assert leaks_in(out + err) == [], (words, leaks_in(out + err))
    if "--json" in words:
        json.loads(out)  # redacted, and still JSON
    if words == ("diagnose",):
        assert "bridge-nf-call-iptables: No such file or directory [REDACTED PRIVATE KEY]" in out


def test_the_shell_prints_no_secret(
    tmp_path: Path,
    leaky_cluster: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("diagnose\nrun node.check node=w2\n"))
    assert run_cli(tmp_path, leaky_cluster, "shell") == 0
    out, err = capsys.readouterr()
    assert "/flannel> " in out and "br-netfilter-missing" in out
    assert leaks_in(out + err) == []
