from __future__ import annotations

from pathlib import Path

import pytest

from flannel_bot.runs.engine import Engine
from flannel_bot.settings import ConfigError, load_settings
from tests.conftest import who
from tests.fakes import FakeCluster


def test_anyone_may_run_a_read_only_runbook_and_it_needs_no_approval(
    engine: Engine, cluster: FakeCluster
) -> None:
    run = engine.start("test.show-node", {"node": "w1"}, who("mallory"))
    assert run.status == "succeeded"
    assert ("run", "w1", "cat", "/run/flannel/subnet.env") in cluster.calls


def test_read_only_runs_take_no_node_lock(engine: Engine) -> None:
    engine.start("flannel.restart-pods@1.1.0", {"nodes": "w1"}, who("alice"))
    assert engine.start("test.show-node", {"node": "w1"}, who("bob")).status == "succeeded"


def test_policy_from_toml(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        'db = "state/x.db"\nrecording = "c.json"\n'
        "[policy]\napproval_ttl_minutes = 10\n"
        '[policy.groups]\napprovers = ["bob"]\n'
        '[policy.runbooks."flannel.restart-pods"]\napprovals = 2\napprove = ["user:dave"]\n'
    )
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert settings.db_path == tmp_path / "state" / "x.db"
    assert settings.cluster().recording == tmp_path / "c.json"
    assert [c.name for c in settings.clusters] == ["default"]
    policy = settings.policy
    assert policy.approval_ttl.total_seconds() == 600
    assert policy.rules["flannel.restart-pods"].approvals == 2
    assert policy.rules["flannel.restart-pods"].approve == ("user:dave",)


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('db = "file.db"\n')
    env = {"HOME": str(tmp_path), "FLANNEL_BOT_DB": "/env.db"}
    assert load_settings(config, env=env).db_path == Path("/env.db")
    assert load_settings(config, env=env, overrides={"db": "/flag.db"}).db_path == Path("/flag.db")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dbb = 'x'", "has no setting `dbb`"),
        ("[policy]\napprovals = 0", "policy.approvals must be a whole number of at least 1"),
        ("[policy]\napprove = 'bob'", "policy.approve must be a list"),
        ("[policy]\nwho = 1", "[policy] has no setting `who`"),
        ("[policy.runbooks.x]\nrun = ['a']\nfoo = 1", "takes only run, approve and approvals"),
        ("db = ", "is not valid TOML"),
    ],
)
def test_config_errors_say_where(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(config, env={"HOME": str(tmp_path)})
    assert message in str(exc.value)


def test_json_logs_are_one_object_per_line() -> None:
    import json
    import logging
    import sys

    from flannel_bot.process.logs import JsonFormatter

    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
    record = logging.LogRecord("bot.x", logging.ERROR, "f", 1, "run %s failed", (7,), info)
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "\n" not in line
    assert entry["level"] == "error" and entry["message"] == "run 7 failed"
    assert "ValueError: boom" in entry["exception"]


def test_clusters_by_name_inherit_the_kubeconfig_and_ssh(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(
        'kubeconfig = "kube.yaml"\ndefault_cluster = "prod-us"\n'
        '[ssh]\nuser = "ops"\nconnect_timeout = 5\n'
        '[clusters.prod-eu]\ncontext = "eu"\n'
        '[clusters.prod-us]\ncontext = "us"\n[clusters.prod-us.ssh]\nuser = "core"\n'
        '[clusters.lab]\nrecording = "rec.json"\n'
    )
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert [c.name for c in settings.clusters] == ["prod-eu", "prod-us", "lab"]
    assert settings.cluster().name == "prod-us"
    eu, us, lab = settings.clusters
    assert eu.kubeconfig == us.kubeconfig == tmp_path / "kube.yaml"
    assert (eu.context, us.context) == ("eu", "us")
    assert (eu.ssh.user, us.ssh.user) == ("ops", "core")
    assert us.ssh.connect_timeout == 5  # the rest of [ssh] still applies
    assert lab.recording == tmp_path / "rec.json"
    # a recording named on the command line is the only cluster
    alone = load_settings(config, env={"HOME": "/x"}, overrides={"recording": "r.json"})
    assert [(c.name, c.recording) for c in alone.clusters] == [("default", Path("r.json"))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('cluster = "c.json"\n', "`cluster` (a recorded cluster file) is now called `recording`"),
        ("[clusters.Prod_EU]\n", "a cluster name is lowercase letters, digits and dashes"),
        ('[clusters.eu]\nserver = "x"\n', "[clusters.eu] has no setting `server`"),
        (
            'default_cluster = "us"\n[clusters.eu]\ncontext = "eu"\n',
            'default_cluster = "us" is not one of [clusters.*]: eu',
        ),
        (
            '[clusters.eu]\nrecording = "r.json"\nin_cluster = true\n',
            "a recording is read instead of a live API",
        ),
        ("[clusters.eu.ssh]\nport = 0\n", "[clusters.eu]: [ssh]: ssh port must be 1-65535"),
    ],
)
def test_cluster_configuration_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bot.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(config, env={"HOME": str(tmp_path)})
    assert message in str(exc.value)


def test_leader_timings_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text('[leader]\nlease = "ns/bot"\nduration_seconds = 6\nretry_seconds = 0.5\n')
    with pytest.raises(ConfigError, match="retry_seconds < renew_deadline_seconds < duration"):
        load_settings(config, env={"HOME": str(tmp_path)})  # the default deadline is 10 s
    config.write_text(config.read_text() + "renew_deadline_seconds = 4\n")
    leader = load_settings(config, env={"HOME": str(tmp_path)}).leader
    assert (leader.lease, leader.retry_seconds, leader.renew_deadline_seconds) == ("ns/bot", 0.5, 4)
    config.write_text('[leader]\nretry_seconds = "2"\n')
    with pytest.raises(ConfigError, match="retry_seconds must be a positive number"):
        load_settings(config, env={"HOME": str(tmp_path)})


def test_reports_are_capped_by_default_and_the_cap_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("[audit]\nretention_days = 90\n")
    settings = load_settings(config, env={"HOME": str(tmp_path)})
    assert (settings.retention_days, settings.max_report_events) == (90, 50_000)
    config.write_text("[audit]\nmax_report_events = -1\n")
    with pytest.raises(ConfigError, match="max_report_events must be a whole number"):
        load_settings(config, env={"HOME": str(tmp_path)})


def test_serve_workers_default_to_two_and_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "bot.toml"
    config.write_text("")
    serve = load_settings(config, env={"HOME": str(tmp_path)}).serve
    assert (serve.workers, serve.queue) == (2, 20)
    config.write_text("[serve]\nworkers = 0\nqueue = 5\n")  # 0: heavy commands in serve
    serve = load_settings(config, env={"HOME": str(tmp_path)}).serve
    assert (serve.workers, serve.queue) == (0, 5)
    for bad, error in (
        ("workers = -1", "workers must be a whole number"),
        ('queue = "9"', "queue must be a whole number"),
        ("threads = 4", "has no setting `threads`; known: queue, workers"),
    ):
        config.write_text(f"[serve]\n{bad}\n")
        with pytest.raises(ConfigError, match=error):
            load_settings(config, env={"HOME": str(tmp_path)})
