"""A support bundle written from a cluster full of secrets holds none of them, and still reads.

`write_bundle` against the lab's API server over real HTTP (no root): a ConfigMap holding a
kubeconfig and an env file, a flannel container with a password in its env and a token in its
args, a log that prints keys, and node probes whose output and stderr hold the whole corpus of
tests/secret_corpus.py."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from flannel_bot.executors.bundle import write_bundle
from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.lab import objects
from flannel_bot.lab.apiserver import ApiServer
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.wiring import evidence_from_bundle
from tests.secret_corpus import LOOK_ALIKES, RSA, SECRETS

pytestmark = pytest.mark.integration

FL = "kube-flannel"
SPEC = LabSpec(name="bs", nodes=2)
SECRET_TEXT = "\n".join(s.text for s in SECRETS)
LEAKS = sorted({fragment for s in SECRETS for fragment in s.leaks})
ALIKE_TEXT = "\n".join(a.text for a in LOOK_ALIKES)
PASSWORD = "Env-Passw0rd-EXAMPLE"
ARG_TOKEN = "arg-token-EXAMPLE-0123456789"


class Nodes:
    """Every probe prints the corpus; its stderr prints a private key."""

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        return {
            node: [
                CommandResult(node, tuple(a), 0, f"{shlex.join(a)}\n{SECRET_TEXT}\n", RSA)
                for a in argvs
            ]
            for node, argvs in commands.items()
        }


def leaky_pod(n: objects.NodeSpec, name: str) -> dict[str, object]:
    pod = objects.flannel_pod(SPEC, n, name)
    container = pod["spec"]["containers"][0]
    container["env"].append({"name": "ETCD_PASSWORD", "value": PASSWORD})
    container["args"] += ["--etcd-token", ARG_TOKEN]
    return pod


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    with ApiServer() as srv:
        srv.create(objects.namespace(FL))
        for n in SPEC.all_nodes():
            name = f"kube-flannel-ds-{n.name}"
            srv.create(objects.node(n))
            srv.create(leaky_pod(n, name))
            srv.set_log(FL, name, "kube-flannel", f"I0101 starting\n{SECRET_TEXT}\n{ALIKE_TEXT}\n")
        srv.create(objects.flannel_daemonset(SPEC.nodes))
        cfg = objects.flannel_configmap()
        cfg["data"]["kubeconfig"] = SECRET_TEXT
        srv.create(cfg)
        yield srv


def test_a_bundle_holds_no_secret_and_still_reads(server: ApiServer, tmp_path: Path) -> None:
    config = server.write_kubeconfig(tmp_path / "kubeconfig")
    with KubeClient.from_settings(KubeSettings(kubeconfig=config)) as kube:
        path = write_bundle(kube, Nodes(), tmp_path / "bundle")
    files = {f.relative_to(path).as_posix(): f.read_text() for f in path.rglob("*") if f.is_file()}
    assert f"{FL}/configmaps.json" in files and "probes/w1/subnet-env.err" in files
    for rel, text in files.items():
        found = [x for x in (*LEAKS, PASSWORD, ARG_TOKEN) if x in text]
        assert found == [], (rel, found)
        if rel.endswith(".json"):
            json.loads(text)  # redacted, and still what kubectl would read
    pods = json.loads(files[f"{FL}/pods.json"])
    container = pods["items"][0]["spec"]["containers"][0]
    assert {"name": "ETCD_PASSWORD", "value": "[REDACTED]"} in container["env"]
    assert {"name": "EVENT_QUEUE_DEPTH", "value": "5000"} in container["env"]
    assert container["args"][-2:] == ["--etcd-token", "[REDACTED]"]
    assert ALIKE_TEXT in files[f"{FL}/kube-flannel-ds-w1/logs.txt"]  # the rest is kept
    ev = evidence_from_bundle(path)
    assert len(ev.flannel_pods()) == 2 and ev.configmaps and ev.probes
