"""`[nodes] access`: the pod transport's pure parts (pod, names, log, start problems), its
settings, and plans that name the transport and bind it in their hash."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from flannel_bot.executors.kube.nodepods import (
    LEFTOVER_SELECTOR,
    Owner,
    is_leftover,
    label_value,
    leftover_selector,
    parse_node_log,
    pod_name,
    pod_spec,
    start_problem,
)
from flannel_bot.executors.node_settings import DEFAULT_IMAGE, NodeSettings
from flannel_bot.ports.nodes import CommandResult, DigestResult
from flannel_bot.runs.engine import Engine
from flannel_bot.settings import ConfigError, load_settings, parse_nodes
from flannel_bot.store import SqliteStore
from tests.conftest import who

SETTINGS = NodeSettings(access="pod", namespace="ops", image="reg/flannel-bot:1", start_timeout=30)


def test_the_pod_is_pinned_privileged_in_the_host_namespaces_and_runs_argv_as_json() -> None:
    commands = [["ip", "-j", "addr"], ["sh", "-c", "echo $HOME; true"]]
    pod = pod_spec("w1", "flannel-bot-node-w1-abcde", commands, 9.2, SETTINGS, "prod")
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert pod["metadata"]["namespace"] == "ops"
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/name": "flannel-bot",
        "app.kubernetes.io/component": "node-exec",
        "app.kubernetes.io/managed-by": "flannel-bot",
        "flannel-bot.io/node": "w1",
        "flannel-bot.io/cluster": "prod",
    }
    assert (spec["nodeName"], spec["hostNetwork"], spec["hostPID"]) == ("w1", True, True)
    assert spec["restartPolicy"] == "Never" and spec["terminationGracePeriodSeconds"] == 0
    assert spec["activeDeadlineSeconds"] == 10 + 30  # ceil(timeout) + start_timeout
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert container["securityContext"] == {"privileged": True}
    assert container["image"] == "reg/flannel-bot:1"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["command"] == ["flannel-bot", "node"]
    args = container["args"]
    assert args[:4] == ["--host-pid", "1", "--timeout", "10"]
    assert json.loads(args[args.index("--commands") + 1]) == commands  # words, never a shell line


def test_names_and_labels_are_valid_for_any_node_name() -> None:
    long = "node-" + "x" * 80 + ".example.com"
    name = pod_name(long, "abcde")
    assert (
        len(name) <= 63 and name.startswith("flannel-bot-node-node-x") and name.endswith("-abcde")
    )
    assert pod_name("W1.Example", "zzzzz") == "flannel-bot-node-w1-example-zzzzz"
    assert len(pod_name("w1")) == len("flannel-bot-node-w1-") + 5
    assert pod_name("w1") != pod_name("w1")
    value = label_value(long)
    assert len(value) <= 63 and value[0].isalnum() and value[-1].isalnum()
    assert leftover_selector("prod") == f"{LEFTOVER_SELECTOR},flannel-bot.io/cluster=prod"


def test_the_log_is_read_line_by_line_and_done_is_required() -> None:
    lines = [
        {"argv": ["ip", "a"], "exit_code": 0, "stdout": "x", "stderr": "", "duration_s": 0.1,
         "truncated": False},
        {"argv": ["false"], "exit_code": 1, "stdout": "", "stderr": "e", "duration_s": 0.0,
         "truncated": True},
    ]  # fmt: skip
    text = "\n".join(json.dumps(x) for x in lines)
    whole = parse_node_log("w1", text + '\nwarning: noise\n{"done": true, "commands": 2}\n')
    assert whole.done and not whole.timed_out
    assert [(r.node, r.argv, r.exit_code, r.truncated) for r in whole.results] == [
        ("w1", ("ip", "a"), 0, False),
        ("w1", ("false",), 1, True),
    ]
    assert whole.noise == ("warning: noise",)
    cut = parse_node_log("w1", text + "\nKilled\n")
    assert not cut.done and len(cut.results) == 2 and cut.noise == ("Killed",)
    late = parse_node_log(
        "w1", '{"argv": ["sleep"], "exit_code": 124, "timed_out": true}\n{"done": true}\n'
    )
    assert late.timed_out and late.done


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ({"phase": "Pending"}, None),
        (
            {
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
                ]
            },
            "Unschedulable",
        ),
        (
            {"containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]},
            "ImagePullBackOff",
        ),
        ({"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}, None),
        ({"phase": "Failed", "reason": "OutOfcpu", "message": "no cpu"}, "OutOfcpu"),
    ],
)
def test_start_problems_are_read_from_the_pods_status(status: dict, reason: str | None) -> None:
    found = start_problem({"status": status})
    assert (found[0] if found else None) == reason


def test_nodes_settings_default_by_where_the_bot_runs(tmp_path: Path) -> None:
    assert parse_nodes({}, in_cluster=False) == NodeSettings(access="ssh")
    sa = tmp_path / "namespace"
    sa.write_text("bots\n")
    inside = parse_nodes({}, in_cluster=True, sa_namespace=sa)
    # in a cluster the node-exec pods run the image the bot's own pod runs (read when built)
    assert (inside.access, inside.namespace, inside.image) == ("pod", "bots", "self")
    assert parse_nodes({}, in_cluster=False).image == DEFAULT_IMAGE
    assert parse_nodes({}, True, tmp_path / "missing").namespace == "flannel-bot"


def test_nodes_per_cluster_inherit_and_override(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[nodes]\naccess = "pod"\nparallel = 4\n'
        '[clusters.a]\nrecording = "a.json"\n'
        '[clusters.b]\nrecording = "b.json"\n[clusters.b.nodes]\naccess = "ssh"\n'
    )
    settings = load_settings(config, env={})
    a, b = settings.cluster("a").nodes, settings.cluster("b").nodes
    assert (a.access, a.parallel) == ("pod", 4)
    assert (b.access, b.parallel) == ("ssh", 4)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[nodes]\naccess = "kubectl"\n', '[nodes]: access must be "ssh" or "pod"'),
        ("[nodes]\nparallel = 0\n", "[nodes]: parallel must be a whole number of at least 1"),
        ("[nodes]\nstart_timeout = -1\n", "[nodes]: start_timeout must be positive"),
        ('[nodes]\nnamespace = "Bad_NS"\n', "is not a namespace name"),
        ('[nodes]\nimage = "a b"\n', "is not an image reference"),
        ("[nodes]\nacess = 1\n", "[nodes] has no setting `acess`"),
        ('nodes = "pod"\n', "[nodes] must be a table"),
        ("[clusters.a]\nnodes = 3\n", "[clusters.a].nodes must be a table"),
        ('api_server = "10.0.0.1:6443"\n', "api_server must be the API server's URL"),
        ('[clusters.a]\napi_server = "x y"\n', "[clusters.a]: api_server must be"),
    ],
)
def test_nodes_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(config, env={})
    assert message in str(err.value)


def test_a_node_plan_names_its_transport_and_its_hash_binds_it(
    make_engine: Callable[..., Engine],
) -> None:
    over_ssh = make_engine().plan("node.check", {"node": "w2"}, who("alice"))
    over_pod = make_engine(node_access="pod").plan("node.check", {"node": "w2"}, who("alice"))
    assert over_ssh.to_json()["node_access"] == "ssh"
    assert over_pod.to_json()["node_access"] == "pod"
    assert over_ssh.hash != over_pod.hash  # approving one does not approve the other
    renders = [a["render"] for s in over_pod.to_json()["steps"] for a in s["actions"]]
    assert renders and all(r.startswith("node w2 (via pod) -- ") for r in renders)
    ssh_renders = [a["render"] for s in over_ssh.to_json()["steps"] for a in s["actions"]]
    assert all(r.startswith("ssh w2 -- ") for r in ssh_renders)


def test_a_plan_only_through_the_api_is_the_same_over_either_transport(
    make_engine: Callable[..., Engine],
) -> None:
    ref, params = "flannel.restart-pods@1.1.0", {"nodes": "w2"}
    over_ssh = make_engine().plan(ref, params, who("alice"))
    over_pod = make_engine(node_access="pod").plan(ref, params, who("alice"))
    assert "node_access" not in over_ssh.to_json()
    assert over_ssh.hash == over_pod.hash


def test_a_pod_is_a_leftover_only_when_no_live_bot_can_be_waiting_for_it() -> None:
    me = Owner("bot-7f9c", 40)
    settings = NodeSettings(access="pod", start_timeout=60)
    labels = pod_spec("w1", "p", [["true"]], 30, settings, "c", Owner("bot-7f9c", 41), now=1000)
    labels = labels["metadata"]["labels"]
    assert labels["flannel-bot.io/expires"] == str(1000 + 30 + 60 + 5)
    alive = {41: True}.get

    def left(labels: dict[str, str], now: float = 1010, up: bool = True) -> bool:
        return is_leftover(labels, me, now, lambda pid: up and bool(alive(pid, False)))

    assert not left(labels)  # a live process on this host is still waiting for it
    assert left(labels, up=False)  # its maker died (SIGKILL): the next start removes it
    assert left(labels, now=1095)  # past its deadline, whoever made it
    other_host = labels | {"flannel-bot.io/owner-host": "bot-2b1d"}
    assert not left(other_host, up=False)  # another replica's run: its PID means nothing here
    assert left(other_host, now=1095)
    assert left({"app.kubernetes.io/component": "node-exec"})  # made before owners were labelled


def test_a_run_over_pods_records_its_node_actions_as_its_plan_shows_them(
    make_engine: Callable[..., Engine], store: SqliteStore
) -> None:
    """The audit trail must say how a command reached the node, as the approved plan said."""
    run = make_engine(node_access="pod").start("node.check", {"node": "w2"}, who("alice"))
    events = store.events(run_id=run.id)
    started = [r for e in events if e.kind == "step_started" for r in e.data["actions"]]
    applied = [e.data["render"] for e in events if e.kind in ("action_started", "action_finished")]
    assert started and applied
    assert all(r.startswith("node w2 (via pod) -- ") for r in started + applied), started + applied


def test_a_digested_table_is_read_back_as_a_digest_and_a_malformed_one_as_text() -> None:
    good = {"entries": 5, "count": 4, "digest": "00000000000000ff"}
    lines = [
        {"argv": ["ip", "-j", "route", "show"], "exit_code": 0, "stdout": "[]\n"},
        {"argv": ["ip", "-j", "route", "show"], "exit_code": 0, "stdout": "[]\n"},
        {"argv": ["ip", "-j", "route", "show"], "exit_code": 0, "stdout": "[]\n"},
    ]
    lines[0]["peer_digest"] = good
    lines[1]["peer_digest"] = {**good, "digest": "not hex"}
    lines[2]["peer_digest"] = {**good, "count": "4"}
    text = "".join(json.dumps(x) + "\n" for x in lines) + '{"done": true, "commands": 3}\n'
    read = parse_node_log("w1", text)
    first, *rest = read.results
    assert isinstance(first, DigestResult)
    assert (first.entries, first.count, first.digest, first.stdout) == (5, 4, 255, "[]\n")
    assert all(type(r) is CommandResult for r in rest)


def test_the_pod_asks_for_digests_of_the_commands_named() -> None:
    commands = [["true"], ["ip", "-j", "route", "show"]]
    pod = pod_spec("w1", "p", commands, 9, SETTINGS, "prod", digest={1: "ip-route"})
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--digest") + 1] == '{"1": "ip-route"}'
    plain = pod_spec("w1", "p", commands, 9, SETTINGS, "prod")
    assert "--digest" not in plain["spec"]["containers"][0]["args"]
