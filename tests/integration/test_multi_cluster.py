"""One bot, two live clusters: two API servers behind two contexts of one kubeconfig.

Both clusters have nodes w1 and w2 and a flannel pod of the same name on each, so anything routed
to the wrong cluster shows: a diagnose that reads the other API, a DELETE that lands on the
other server, a change lock that blocks the other cluster's node. The audit log records which
cluster each command, diagnose and run was about, and a report selects by it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.lab import objects
from flannel_bot.lab.apiserver import ApiServer, StatusError
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.store import Requester
from flannel_bot.process.metrics import METRICS, Metrics
from flannel_bot.settings import load_settings
from flannel_bot.slack.serve import watch_metrics
from flannel_bot.wiring import build_app
from tests.integration.conftest import BotEnv

pytestmark = pytest.mark.integration
SPEC = LabSpec(name="mc", nodes=2)  # w1 and w2
POD = "kube-flannel-ds-w2"


@dataclass
class TwoClusters:
    bot: BotEnv
    eu: ApiServer
    us: ApiServer


def _serve(crashloop_on_w2: bool) -> ApiServer:
    server = ApiServer().start()
    server.create(objects.namespace(objects.FLANNEL_NS))
    for n in SPEC.all_nodes():
        node = objects.node(n)
        # SSH goes to 127.0.0.1 whatever the config says: no lab underlay address leaves the host
        node["status"]["addresses"][0]["address"] = "127.0.0.1"
        server.create(node)
        broken = crashloop_on_w2 and n.name == "w2"
        name = f"kube-flannel-ds-{n.name}"
        server.create(objects.flannel_pod(SPEC, n, name, ready=not broken, restarts=7 * broken))
    server.create(objects.flannel_daemonset(SPEC.nodes))
    server.create(objects.flannel_configmap())
    for obj in objects.rbac_objects():
        server.create(obj)
    by_name = {n.name: n for n in SPEC.all_nodes()}

    @server.on_delete
    def replace(verb: str, obj: dict[str, Any]) -> None:
        """The DaemonSet controller's part: a deleted flannel pod comes back, healthy."""
        meta = obj["metadata"]
        if obj.get("kind") == "Pod" and meta.get("namespace") == objects.FLANNEL_NS:
            node = by_name[obj["spec"]["nodeName"]]
            server.create(objects.flannel_pod(SPEC, node, meta["name"] + "-r"))

    return server


def _kubeconfig(path: Path, servers: dict[str, ApiServer]) -> Path:
    """One kubeconfig, one context per cluster, as an operator's merged config has."""
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": c, "cluster": {"server": s.url}} for c, s in servers.items()],
                "users": [{"name": c, "user": {}} for c in servers],
                "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in servers],
                "current-context": next(iter(servers)),
            }
        )
    )
    return path


@pytest.fixture
def two(tmp_path: Path) -> Iterator[TwoClusters]:
    eu, us = _serve(crashloop_on_w2=False), _serve(crashloop_on_w2=True)
    try:
        _kubeconfig(tmp_path / "kubeconfig", {"prod-eu": eu, "prod-us": us})
        config = tmp_path / "flannel-bot.toml"
        # no sshd answers here: every node maps to a closed local port, per cluster
        config.write_text(
            'db = "state/audit.db"\nkubeconfig = "kubeconfig"\ndefault_cluster = "prod-eu"\n'
            "check_interval = 0.2\n"
            '[ssh]\nconnect_timeout = 2\nhosts = { w1 = "127.0.0.1:9", w2 = "127.0.0.1:9" }\n'
            '[policy.groups]\noperators = ["alice"]\napprovers = ["bob"]\n'
            '[terminal]\napprover = "asserted"\n'  # one login plays alice and bob
            '[clusters.prod-eu]\ncontext = "prod-eu"\n'
            '[clusters.prod-us]\ncontext = "prod-us"\n'
            "[clusters.prod-us.ssh]\nconnect_timeout = 1\n"
            '[clusters.prod-ap]\nkubeconfig = "no-such-kubeconfig"\n'
        )
        yield TwoClusters(BotEnv(tmp_path, config, tmp_path / "state" / "audit.db", config), eu, us)
    finally:
        eu.stop()
        us.stop()


def _json(proc: Any) -> dict[str, Any]:
    assert proc.stdout, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_diagnose_reads_the_cluster_it_is_asked_about(two: TwoClusters) -> None:
    default = _json(two.bot.cli("diagnose", "--json", check=True))
    assert default["cluster"] == "prod-eu"
    # no sshd answers, so both clusters say so; only prod-us has the crash-looping flannel
    assert {f["id"] for f in default["findings"]} & {"node-unreachable", "flannel-crashloop"} == {
        "node-unreachable"
    }

    us = _json(two.bot.cli("diagnose", "--cluster", "prod-us", "--json"))
    assert us["cluster"] == "prod-us"
    crash = next(f for f in us["findings"] if f["id"] == "flannel-crashloop")
    assert crash["nodes"] == ["w2"]
    # the fix offered is for the cluster that has the problem
    assert crash["fix"]["command"].endswith("--cluster prod-us")
    assert crash["fix"]["cluster"] == "prod-us"

    text = two.bot.cli("diagnose", "--cluster=prod-us").stdout
    assert "flannel diagnose of cluster prod-us" in text

    recorded = {e["data"]["cluster"]: e["data"]["summary"] for e in two.bot.events("diagnosed")}
    assert set(recorded) == {"prod-eu", "prod-us"}
    assert "critical" in recorded["prod-us"]


def test_unknown_and_broken_clusters_are_clear_errors_and_the_others_still_work(
    two: TwoClusters,
) -> None:
    unknown = two.bot.cli("diagnose", "--cluster", "prod-xx")
    assert unknown.returncode == 1
    assert "there is no cluster `prod-xx`; this bot serves: prod-eu, prod-us, prod-ap" in (
        unknown.stderr + unknown.stdout
    )
    broken = two.bot.cli("diagnose", "--cluster", "prod-ap")
    assert broken.returncode != 0
    said = broken.stderr + broken.stdout
    assert "cluster prod-ap:" in said and "no-such-kubeconfig" in said
    assert "Traceback" not in said
    still = two.bot.cli("diagnose", "--cluster", "prod-us", "--json", check=True)
    assert _json(still)["cluster"] == "prod-us"
    malformed = two.bot.cli("diagnose", "--cluster", "Prod;rm -rf /")
    assert malformed.returncode == 2 and "is not a cluster name" in malformed.stdout
    rejected = [e["data"]["text"] for e in two.bot.events("command_rejected")]
    assert any("prod-xx" in t for t in rejected) and any("Prod;rm" in t for t in rejected)


def test_a_run_acts_on_its_own_cluster_only_and_the_audit_says_which(two: TwoClusters) -> None:
    started = _json(
        two.bot.cli("run", "flannel.restart-pods", "nodes=w2", "--cluster", "prod-us", "--json")
    )
    assert started["status"] == "awaiting_approval" and started["cluster"] == "prod-us"
    assert started["plan"]["cluster"] == "prod-us"
    # the same node name on the default cluster is a different target: no lock conflict (1.1.0
    # restarts healthy pods too, so this run waits for approval and holds its lock)
    eu_run = _json(two.bot.cli("run", "flannel.restart-pods@1.1.0", "nodes=w2", "--json"))
    assert eu_run["status"] == "awaiting_approval" and eu_run["cluster"] == "prod-eu"

    shown = two.bot.cli("status", str(started["id"])).stdout
    assert "on cluster prod-us" in shown
    assert two.bot.cli("approve", str(started["id"]), "--cluster", "prod-us").returncode == 2

    done = _json(two.bot.cli("approve", str(started["id"]), "--json", user="bob"))
    assert done["status"] == "succeeded", done.get("error")
    with pytest.raises(StatusError, match="not found"):
        two.us.get("pods", POD, objects.FLANNEL_NS)
    assert two.us.get("pods", POD + "-r", objects.FLANNEL_NS)
    # the other cluster's pod of the same name was not touched
    assert two.eu.get("pods", POD, objects.FLANNEL_NS)

    listed = _json(two.bot.cli("status", "--cluster", "prod-us", "--json"))
    assert [r["id"] for r in listed["runs"]] == [started["id"]]

    commands = [e["data"] for e in two.bot.events("command")]
    assert commands[0]["cluster"] == "prod-us" and commands[1]["cluster"] == "prod-eu"
    run_started = two.bot.events("run_started")
    assert [e["data"]["cluster"] for e in run_started] == ["prod-us", "prod-eu"]

    report = two.bot.cli("audit", "report", "cluster=prod-us", "format=jsonl", check=True)
    lines = [json.loads(line) for line in report.stdout.splitlines() if line.strip()]
    events = lines[1:]
    assert events and {x["run_id"] for x in events if x["run_id"]} == {started["id"]}
    # events of no run are there because they name the cluster: the command, the plan
    assert all(x["data"]["cluster"] == "prod-us" for x in events if not x["run_id"])
    assert lines[0]["chain"]["ok"] is True
    assert two.bot.cli("audit", "verify").returncode == 0


def test_doctor_checks_every_cluster_and_collect_reads_the_one_named(two: TwoClusters) -> None:
    doctor = two.bot.cli("doctor")
    lines = doctor.stdout.splitlines()
    assert doctor.returncode == 1  # prod-ap is broken and no node answers SSH
    assert any(line.startswith("OK   cluster prod-eu: 2 nodes via http://") for line in lines)
    assert any(line.startswith("OK   cluster prod-us: 2 nodes via http://") for line in lines)
    assert any(
        line.startswith("FAIL cluster prod-ap:") and "no-such-kubeconfig" in line for line in lines
    )
    assert any(line.startswith("FAIL ssh prod-us w2:") for line in lines)

    bundle = two.bot.root / "bundle-us"
    collected = two.bot.cli("collect", str(bundle), "--cluster", "prod-us")
    assert collected.returncode == 0, collected.stderr
    from_dump = _json(two.bot.cli("diagnose", "--dump", str(bundle), "--json"))
    assert "flannel-crashloop" in {f["id"] for f in from_dump["findings"]}
    recording = two.bot.cli("collect", str(bundle) + "-x", "--cluster", "prod-xx")
    assert recording.returncode == 2 and "there is no cluster `prod-xx`" in recording.stderr


def test_metrics_name_the_cluster_of_each_command_run_step_and_ssh_failure(
    two: TwoClusters,
) -> None:
    app = build_app(load_settings(two.bot.config, {"HOME": str(two.bot.root)}))
    metrics = Metrics()
    watch_metrics(app, metrics)
    unreachable = {"cluster": "prod-us", "kind": "NodeUnreachable"}
    ssh_before = METRICS.value("flannel_bot_ssh_errors_total", **unreachable)
    alice, bob = Requester("alice", {"adapter": "test"}), Requester("bob", {"adapter": "test"})
    try:
        app.service.handle("run flannel.restart-pods nodes=w2 --cluster prod-us", alice)
        [run] = app.store.recent_runs(cluster="prod-us")
        done = app.service.handle(f"approve {run.id}", bob)
        carol = Requester("carol", {"adapter": "test"})  # in no group: may not run anything
        refused = app.service.handle("run flannel.restart-pods nodes=w1 --cluster prod-us", carol)
        assert refused.data["error_type"] == "NotAllowed", refused.data
        assert done.data["status"] == "succeeded", done.data
        value = metrics.value
        assert value("flannel_bot_commands_total", cluster="prod-us", verb="run") == 2  # +carol
        assert value("flannel_bot_commands_total", cluster="", verb="approve") == 1
        # a refusal is counted under the cluster it was for, and the audit event names it
        assert value("flannel_bot_commands_rejected_total", cluster="prod-us") == 1
        [rejected] = [e for e in app.store.events() if e.kind == "command_rejected"]
        assert rejected.data["cluster"] == "prod-us"
        us_approved = {"cluster": "prod-us", "decision": "approved"}
        assert value("flannel_bot_approvals_total", **us_approved) == 1
        assert value("flannel_bot_runs_finished_total", cluster="prod-us", status="succeeded") == 1
        assert value("flannel_bot_step_duration_seconds_count", cluster="prod-us") >= 1
        assert value("flannel_bot_step_duration_seconds_count", cluster="prod-eu") == 0
        assert value("flannel_bot_runs", cluster="prod-us", state="succeeded") == 1
        assert value("flannel_bot_runs", cluster="prod-eu", state="succeeded") == 0
        assert value("flannel_bot_runs", cluster="prod-ap", state="running") == 0
        # the nodes' sshd is a closed port: the failures are counted under the run's cluster
        assert METRICS.value("flannel_bot_ssh_errors_total", **unreachable) > ssh_before
    finally:
        app.store.close()
