"""Support bundles read back through `BundleReader` / `evidence_from_bundle`: hand-assembled
bundles in kubectl's layout, every file missing or corrupt in turn, the bundled example, and
`write_bundle` against the lab's API server over real HTTP (no root needed)."""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from flannel_bot.diagnosis.collect import collect
from flannel_bot.diagnosis.evidence import Evidence, ProbeOutput
from flannel_bot.diagnosis.rule import rank
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.errors import ExecutorError, NodeUnreachable, NotFound, UserError
from flannel_bot.executors import bundle as bundle_module
from flannel_bot.executors.bundle import BundleReader, write_bundle
from flannel_bot.executors.kube import KubeClient, KubeSettings
from flannel_bot.executors.snapshot import SnapshotCluster
from flannel_bot.lab import objects
from flannel_bot.lab.apiserver import ApiServer
from flannel_bot.lab.topology import LabSpec
from flannel_bot.ports.cluster import Recording
from flannel_bot.ports.nodes import CommandResult
from flannel_bot.ports.probes import BY_ID, PROBES
from flannel_bot.wiring import evidence_from_bundle
from tests.fakes import FakeClock

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dump"
FL = "kube-flannel"
POD = {"w1": "kube-flannel-ds-aaaaa", "w2": "kube-flannel-ds-bbbbb", "w3": "kube-flannel-ds-ccccc"}
PROXY = {"w1": "kube-proxy-11111", "w2": "kube-proxy-22222", "w3": "kube-proxy-33333"}
BR_ERROR = (
    "E0101 10:00:05.000000       1 main.go:278] Failed to check br_netfilter: stat "
    "/proc/sys/net/bridge/bridge-nf-call-iptables: no such file or directory\n"
)
W1_LOG = "I0101 10:00:00.000000       1 main.go:212] CLI flags config\nline two\nline three\n"


# -- a hand-assembled bundle, in kubectl cluster-info dump's layout --------------------------------


def k8s_list(kind: str, items: Sequence[Mapping[str, Any]], api: str = "v1") -> dict[str, Any]:
    return {"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": "42"}, "items": items}


def node(name: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": f"10.244.{index}.0/24", "podCIDRs": [f"10.244.{index}.0/24"]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": f"192.168.1.{10 + index}"}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def flannel_pod(node_name: str, crashing: bool = False) -> dict[str, Any]:
    running = {"running": {"startedAt": "2025-01-01T10:00:00Z"}}
    waiting = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}}
    return {
        "metadata": {
            "name": POD[node_name],
            "namespace": FL,
            "labels": {"app": "flannel", "k8s-app": "flannel", "tier": "node"},
            "ownerReferences": [
                {"kind": "DaemonSet", "name": "kube-flannel-ds", "controller": True}
            ],
            "creationTimestamp": "2025-01-01T09:00:00Z",
        },
        "spec": {
            "nodeName": node_name,
            "hostNetwork": True,
            "initContainers": [{"name": "install-cni", "image": "flannel-cni"}],
            "containers": [{"name": "kube-flannel", "image": "ghcr.io/flannel-io/flannel:v0.26.1"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "False" if crashing else "True"}],
            "initContainerStatuses": [
                {"name": "install-cni", "ready": True, "restartCount": 0, "state": {}}
            ],
            "containerStatuses": [
                {
                    "name": "kube-flannel",
                    "ready": not crashing,
                    "restartCount": 4 if crashing else 0,
                    "state": waiting if crashing else running,
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}
                    if crashing
                    else {},
                }
            ],
        },
    }


def proxy_pod(node_name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": PROXY[node_name],
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-proxy"},
        },
        "spec": {"nodeName": node_name, "containers": [{"name": "kube-proxy", "image": "kp"}]},
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "kube-proxy", "ready": True, "restartCount": 0, "state": {"running": {}}}
            ],
        },
    }


def event(
    ns: str, name: str, involved: str, reason: str, at: str, kind: str = "Pod"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": {"kind": kind, "name": involved, "namespace": ns},
        "reason": reason,
        "message": f"{reason} of {involved}",
        "type": "Warning",
        "count": 3,
        "lastTimestamp": at,
        "source": {"component": "kubelet", "host": "w2"},
    }


def daemonset(ns: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "generation": 1},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"spec": {"containers": [{"name": name, "image": "img", "args": ["-v"]}]}},
        },
        "status": {
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "numberReady": 2,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
            "observedGeneration": 1,
        },
    }


def configmap(ns: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": "7"}, "data": data}


def log_block(ns: str, pod: str, container: str, body: str) -> str:
    where = f"container {container} of pod {ns}/{pod} ===="
    return f"==== START logs for {where}\n{body}==== END logs for {where}\n"


NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


def bundle_files() -> dict[str, str]:
    """relative path -> content of a complete bundle: 3 nodes, flannel crash-looping on w2
    (br_netfilter missing), w3 unreachable."""
    files: dict[str, Any] = {
        "nodes.json": k8s_list("NodeList", [node(n, i) for i, n in enumerate(POD, 1)]),
        f"{FL}/pods.json": k8s_list("PodList", [flannel_pod(n, n == "w2") for n in POD]),
        f"{FL}/events.json": k8s_list(
            "EventList",
            [
                event(FL, "ev-backoff", POD["w2"], "BackOff", "2025-01-01T10:05:00Z"),
                event(FL, "ev-started", POD["w1"], "Started", "2025-01-01T09:00:00Z"),
            ],
        ),
        f"{FL}/daemonsets.json": k8s_list(
            "DaemonSetList", [daemonset(FL, "kube-flannel-ds", {"app": "flannel"})], "apps/v1"
        ),
        f"{FL}/services.json": k8s_list("ServiceList", []),
        f"{FL}/deployments.json": k8s_list("DeploymentList", [], "apps/v1"),
        f"{FL}/replicasets.json": k8s_list("ReplicaSetList", [], "apps/v1"),
        f"{FL}/replication-controllers.json": k8s_list("ReplicationControllerList", []),
        f"{FL}/configmaps.json": k8s_list(
            "ConfigMapList", [configmap(FL, "kube-flannel-cfg", {"net-conf.json": NET_CONF})]
        ),
        "kube-system/pods.json": k8s_list("PodList", [proxy_pod(n) for n in PROXY]),
        "kube-system/events.json": k8s_list(
            "EventList", [event("kube-system", "ev-node", "w2", "Rebooted", "2025-01-01T08:00:00Z")]
        ),
        "kube-system/daemonsets.json": k8s_list(
            "DaemonSetList",
            [daemonset("kube-system", "kube-proxy", {"k8s-app": "kube-proxy"})],
            "apps/v1",
        ),
        "kube-system/services.json": k8s_list("ServiceList", []),
        "kube-system/configmaps.json": k8s_list(
            "ConfigMapList", [configmap("kube-system", "kube-proxy", {"config.conf": "mode: ''"})]
        ),
        "default/pods.json": k8s_list("PodList", []),
        "default/events.json": k8s_list("EventList", []),
        "default/daemonsets.json": k8s_list("DaemonSetList", [], "apps/v1"),
        "default/services.json": k8s_list(
            "ServiceList",
            [
                {
                    "metadata": {"name": "kubernetes", "namespace": "default"},
                    "spec": {
                        "clusterIP": "10.96.0.1",
                        "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                    },
                }
            ],
        ),
        "rbac.json": {
            "apiVersion": "v1",
            "kind": "List",
            "metadata": {"resourceVersion": ""},
            "items": [
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": {"name": "flannel"},
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
                },
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRoleBinding",
                    "metadata": {"name": "flannel"},
                    "roleRef": {"kind": "ClusterRole", "name": "flannel"},
                    "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": FL}],
                },
            ],
        },
        # kubectl writes spec.containers only (older) or init containers first (newer)
        f"{FL}/{POD['w1']}/logs.txt": log_block(FL, POD["w1"], "kube-flannel", W1_LOG),
        f"{FL}/{POD['w2']}/logs.txt": log_block(FL, POD["w2"], "install-cni", "copied\n")
        # a log that does not end in a newline: END follows the last line directly
        + log_block(FL, POD["w2"], "kube-flannel", BR_ERROR.rstrip("\n")),
        f"{FL}/{POD['w2']}/logs-kube-flannel-previous.txt": "I0101 starting\n" + BR_ERROR,
        f"{FL}/{POD['w3']}/logs.txt": log_block(
            FL,
            POD["w3"],
            "kube-flannel",
            "Request log error: the server rejected our request (get pods kube-flannel-ds-ccccc)\n",
        ),
        "probes/w3/UNREACHABLE": "node w3 (192.168.1.13:22) did not answer within 30s\n",
    }
    for name in PROXY:
        files[f"kube-system/{PROXY[name]}/logs.txt"] = log_block(
            "kube-system", PROXY[name], "kube-proxy", "I0101 proxier started\n"
        )
    for n in ("w1", "w2"):
        for probe in PROBES:
            files[f"probes/{n}/{probe.id}.txt"] = f"{n}: {probe.id}\n"
    for sysctl in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
        files[f"probes/w1/{sysctl}.txt"] = "1\n"
        files[f"probes/w2/{sysctl}.txt"] = ""
        files[f"probes/w2/{sysctl}.err"] = (
            f"cat: /proc/sys/net/bridge/{sysctl}: No such file or directory\n"
        )
        files[f"probes/w2/{sysctl}.exit"] = "1\n"
    return {
        rel: content if isinstance(content, str) else json.dumps(content, indent=4)
        for rel, content in files.items()
    }


FILES = bundle_files()
# kept for people, never read
NOT_READ = {"deployments.json", "replicasets.json", "replication-controllers.json"}
# lists `collect` does not ask for (it reads flannel's namespaces' DaemonSets, one Service)
NOT_COLLECTED = {"default/daemonsets.json", f"{FL}/services.json", "kube-system/services.json"}
ALL_NODES = ("w1", "w2", "w3")
# every flannel log is read, and w3's failed request is a gap
W3_LOG_GAP = (
    f"{FL}/{POD['w3']}/logs.txt: the log of container kube-flannel could not be read when the "
    "bundle was written (the server rejected our request (get pods kube-flannel-ds-ccccc))"
)


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    for rel, content in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    return root


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return write_files(tmp_path / "dump", FILES)


# -- the reader -------------------------------------------------------------------------------


def test_a_complete_bundle_gives_full_evidence_and_no_gaps(bundle: Path) -> None:
    ev = evidence_from_bundle(bundle)
    assert ev.source == f"bundle {bundle}"
    assert ev.gaps == [W3_LOG_GAP]  # every flannel pod's log is read, w3's request had failed
    assert [n.name for n in ev.nodes] == ["w1", "w2", "w3"]
    assert ev.node("w2") is not None and ev.node("w2").pod_cidr == "10.244.2.0/24"  # type: ignore[union-attr]
    flannel = {p.node: p for p in ev.flannel_pods()}
    assert set(flannel) == {"w1", "w2", "w3"}
    assert not flannel["w2"].ready and flannel["w2"].restarts == 4
    assert flannel["w2"].containers[0].init and flannel["w2"].containers[0].name == "install-cni"
    assert {p.name for p in ev.pods if p.namespace == "kube-system"} == set(PROXY.values())
    assert {d.name for d in ev.daemonsets} == {"kube-flannel-ds", "kube-proxy"}
    assert ev.net_conf() == json.loads(NET_CONF)
    assert ev.configmaps[("kube-system", "kube-proxy")].data == {"config.conf": "mode: ''"}
    assert ev.services[("default", "kubernetes")].cluster_ip == "10.96.0.1"
    assert ev.rbac.readable and ev.rbac.allows(FL, "flannel", "get", "pods")
    # events of every namespace, oldest first, like the live client
    assert [e.name for e in ev.events] == ["ev-node", "ev-started", "ev-backoff"]
    # every flannel and kube-proxy pod's current log, and the previous one where a container
    # restarted (w2's); w3's failed request is a gap, not a log
    assert set(ev.logs) == {
        (FL, POD["w1"], "kube-flannel", False),
        (FL, POD["w2"], "kube-flannel", False),
        (FL, POD["w2"], "kube-flannel", True),
        *(("kube-system", pod, "kube-proxy", False) for pod in PROXY.values()),
    }
    assert ev.log(flannel["w2"])[1].endswith(BR_ERROR)
    assert ev.logs[(FL, POD["w2"], "kube-flannel", False)] == BR_ERROR.rstrip("\n")
    # probes: stdout, stderr and exit codes; w3 unreachable with the recorded reason
    assert ev.probe("w1", "bridge-nf-call-iptables") == ProbeOutput(0, "1\n", "")
    w2 = ev.probe("w2", "bridge-nf-call-iptables")
    assert w2 is not None and w2.exit_code == 1 and "No such file" in w2.stderr
    assert set(ev.probes) == {"w1", "w2"} and set(ev.probes["w1"]) == set(BY_ID)
    assert ev.unreachable == {"w3": "node w3 (192.168.1.13:22) did not answer within 30s"}


def test_selectors_are_honoured(bundle: Path) -> None:
    r = BundleReader(bundle)
    assert {p.node for p in r.list_pods(FL, "app=flannel")} == {"w1", "w2", "w3"}
    assert [p.name for p in r.list_pods(FL, "app=flannel", node="w2")] == [POD["w2"]]
    assert [p.name for p in r.list_pods(None, node="w3")] == [POD["w3"], PROXY["w3"]]
    assert {p.name for p in r.list_pods(None, "k8s-app==kube-proxy")} == set(PROXY.values())
    assert {p.name for p in r.list_pods(None, "k8s-app,k8s-app!=flannel")} == set(PROXY.values())
    assert {p.name for p in r.list_pods(None, "!app")} == set(PROXY.values())
    assert r.list_pods(FL, "app=flannel,tier!=node") == []
    assert r.list_pods("kube-system", "app=flannel") == []
    assert [d.name for d in r.list_daemonsets(None, "app=flannel")] == ["kube-flannel-ds"]
    assert [d.name for d in r.list_daemonsets("kube-system")] == ["kube-proxy"]
    assert [e.name for e in r.list_events(None, f"involvedObject.name={POD['w2']}")] == [
        "ev-backoff"
    ]
    assert [e.name for e in r.list_events(FL, "metadata.name=ev-started")] == ["ev-started"]
    assert [e.name for e in r.list_events(None, "involvedObject.kind=Pod,reason!=BackOff")] == [
        "ev-node",
        "ev-started",
    ]
    assert [n.name for n in r.list_nodes("kubernetes.io/hostname=w2")] == ["w2"]
    with pytest.raises(ExecutorError, match="only equality selectors"):
        r.list_pods(FL, "app in (flannel)")
    assert r.gaps == []


def test_logs_are_split_per_container_with_tail_and_previous(bundle: Path) -> None:
    r = BundleReader(bundle)
    assert r.read_pod_log(FL, POD["w1"], "kube-flannel") == W1_LOG
    assert r.read_pod_log(FL, POD["w1"]) == W1_LOG  # the pod's only container
    assert r.read_pod_log(FL, POD["w1"], "kube-flannel", tail_lines=2) == "line two\nline three\n"
    assert r.read_pod_log(FL, POD["w1"], "kube-flannel", tail_lines=0) == ""
    assert r.read_pod_log(FL, POD["w2"], "install-cni") == "copied\n"
    assert r.read_pod_log(FL, POD["w2"], "kube-flannel", previous=True).endswith(BR_ERROR)
    assert r.read_pod_log(FL, POD["w2"], "kube-flannel", True, 1) == BR_ERROR
    assert r.read_pod_log("kube-system", PROXY["w1"], "kube-proxy") == "I0101 proxier started\n"
    assert r.gaps == []
    # never restarted: no previous log is normal, not a gap
    with pytest.raises(NotFound):
        r.read_pod_log(FL, POD["w1"], "kube-flannel", previous=True)
    assert r.gaps == []
    # kubectl's error line inside a block is a failed request, never log text
    with pytest.raises(ExecutorError, match="the server rejected our request"):
        r.read_pod_log(FL, POD["w3"], "kube-flannel")
    with pytest.raises(NotFound):
        r.read_pod_log(FL, POD["w1"], "no-such-container")
    with pytest.raises(NotFound):
        r.read_pod_log(FL, "../../etc", "kube-flannel")
    gaps = r.gaps
    assert any("could not be read when the bundle was written" in g for g in gaps)
    assert any("has no logs of container no-such-container" in g for g in gaps)


def test_a_cut_off_logs_file_keeps_what_is_there(bundle: Path) -> None:
    logs = bundle / FL / POD["w1"] / "logs.txt"
    logs.write_text(logs.read_text().split("==== END")[0])
    r = BundleReader(bundle)
    assert r.read_pod_log(FL, POD["w1"], "kube-flannel") == W1_LOG
    assert any("is cut off" in g for g in r.gaps)


def test_probe_outputs_exit_codes_and_unreachable_nodes(bundle: Path) -> None:
    r = BundleReader(bundle)
    argv = BY_ID["bridge-nf-call-iptables"].argv
    ok = r.run("w1", argv, 5)
    assert (ok.exit_code, ok.stdout, ok.stderr, ok.argv) == (0, "1\n", "", argv)
    failed = r.run("w2", list(argv), 5)
    assert failed.exit_code == 1 and "No such file or directory" in failed.stderr
    assert r.run("w2", BY_ID["subnet-env"].argv, 5).stdout == "w2: subnet-env\n"
    unknown = r.run("w1", ["rm", "-rf", "/"], 5)
    assert unknown.exit_code == 127 and "not one of the probes" in unknown.stderr
    with pytest.raises(NodeUnreachable, match="did not answer within 30s") as info:
        r.run("w3", argv, 5)
    assert info.value.node == "w3"
    fan_out = r.run_many({n: [p.argv for p in PROBES] for n in ("w1", "w3", "w9")})
    assert set(fan_out) == {"w1", "w3"}  # w9 was never probed: left out, and a gap
    assert isinstance(fan_out["w3"], NodeUnreachable)
    assert [c.exit_code for c in fan_out["w1"]] == [0] * len(PROBES)  # type: ignore[union-attr]
    assert r.gaps == ["probes/w9/ is missing: nothing on node w9 was checked (no probe outputs)"]


def test_the_reader_is_a_recording_and_the_snapshot_is_not(bundle: Path) -> None:
    r = BundleReader(bundle)
    assert isinstance(r, Recording) and r.description == f"bundle {bundle}"
    assert not isinstance(SnapshotCluster({}, FakeClock()), Recording)
    ev = evidence_from_bundle(bundle)
    assert ev.source == f"bundle {bundle}"


def test_a_missing_probe_is_unknown_not_failed(bundle: Path) -> None:
    (bundle / "probes/w2/subnet-env.txt").unlink()
    r = BundleReader(bundle)
    result = r.run("w2", BY_ID["subnet-env"].argv, 5)
    assert result.exit_code == 127 and "has no output of probe subnet-env" in result.stderr
    assert r.missing_probes == {("w2", "subnet-env")}
    ev = evidence_from_bundle(bundle)
    assert ev.probe("w2", "subnet-env") is None
    assert ev.probe("w2", "ip-route") is not None
    assert any(g.startswith("probes/w2/subnet-env.txt is missing") for g in ev.gaps)


@pytest.mark.parametrize("rel", sorted(FILES))
def test_each_missing_file_is_a_gap_never_a_crash(bundle: Path, rel: str) -> None:
    (bundle / rel).unlink()
    ev = evidence_from_bundle(bundle, only=ALL_NODES)  # reads every flannel/kube-proxy log
    gaps = [g for g in ev.gaps if g != W3_LOG_GAP]
    name = rel.rsplit("/", 1)[-1]
    if name in NOT_READ or rel in NOT_COLLECTED:
        assert gaps == []
    elif rel.endswith(".err"):
        assert gaps == []
        assert ev.probe("w2", name.removesuffix(".err")).stderr == ""  # type: ignore[union-attr]
    elif rel.endswith(".exit"):
        assert gaps == []
        assert ev.probe("w2", name.removesuffix(".exit")).exit_code == 0  # type: ignore[union-attr]
    elif name == "UNREACHABLE":  # an empty node directory: nothing known about w3
        assert "w3" not in ev.unreachable and "w3" not in ev.probes
        assert any(g.startswith("probes/w3/") for g in gaps)
    else:
        assert any(g.startswith(f"{rel} is missing") for g in gaps), gaps
    if rel == "rbac.json":
        assert not ev.rbac.readable
    if rel.endswith(".txt") and rel.startswith("probes/"):
        assert ev.probe(rel.split("/")[1], name.removesuffix(".txt")) is None


JSON_FILES = sorted(rel for rel in FILES if rel.endswith(".json"))


@pytest.mark.parametrize("rel", JSON_FILES)
@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"kind": "PodList", "items": [', "is not valid JSON"),
        ('["not", "a", "list object"]', "is not a Kubernetes list"),
        ('{"kind": "PodList", "items": {"a": 1}}', "is not a Kubernetes list"),
    ],
)
def test_corrupt_json_is_a_gap_never_a_crash(
    bundle: Path, rel: str, content: str, why: str
) -> None:
    (bundle / rel).write_text(content)
    ev = evidence_from_bundle(bundle, only=ALL_NODES)
    name = rel.rsplit("/", 1)[-1]
    if name in NOT_READ or rel in NOT_COLLECTED:
        assert [g for g in ev.gaps if g != W3_LOG_GAP] == []
    else:
        assert any(g.startswith(f"{rel} {why}") for g in ev.gaps), ev.gaps


def test_odd_items_and_undecodable_bytes_do_not_crash(bundle: Path) -> None:
    pods = json.loads(FILES[f"{FL}/pods.json"])
    pods["items"] += ["a string", None, {"metadata": "not a dict", "spec": []}]
    (bundle / FL / "pods.json").write_text(json.dumps(pods))
    (bundle / FL / POD["w2"] / "logs-kube-flannel-previous.txt").write_bytes(b"\xff\xfe bad\n")
    (bundle / "probes/w1/ip-forward.exit").write_text("one\n")
    ev = evidence_from_bundle(bundle)
    assert len(ev.pods) == 3 + 3 + 1  # flannel, kube-proxy, and the dict without metadata
    assert ev.logs[(FL, POD["w2"], "kube-flannel", True)] == "\ufffd\ufffd bad\n"
    assert ev.probe("w1", "ip-forward") is None
    assert any("2 item(s) are not JSON objects" in g for g in ev.gaps)
    assert any("probes/w1/ip-forward.exit is not an exit code" in g for g in ev.gaps)


def test_missing_namespaces_and_probes(bundle: Path) -> None:
    shutil.rmtree(bundle / "default")
    shutil.rmtree(bundle / "probes")
    ev = evidence_from_bundle(bundle, deep=True)
    assert ("default", "kubernetes") not in ev.services
    assert any(g.startswith("namespace default is not in the bundle") for g in ev.gaps)
    assert any(g.startswith("probes/ is missing") for g in ev.gaps)
    assert any("deep check" in g for g in ev.gaps)
    assert ev.probes == {} and ev.unreachable == {} and ev.deep == {}
    # flannel may live in kube-system (older manifests): no kube-flannel/ is no gap
    shutil.rmtree(bundle / FL)
    ev = evidence_from_bundle(bundle)
    assert not any("namespace kube-flannel" in g for g in ev.gaps)
    # but every cluster has kube-system (kube-proxy, maybe flannel)
    shutil.rmtree(bundle / "kube-system")
    ev = evidence_from_bundle(bundle)
    assert any(g.startswith("namespace kube-system is not in the bundle") for g in ev.gaps)


def test_only_names_nodes_and_an_unknown_node_is_a_gap(bundle: Path) -> None:
    ev = evidence_from_bundle(bundle, only=("w2", "w9"))
    assert set(ev.probes) == {"w2"}
    assert "probes/w9/ is missing: nothing on node w9 was checked (no probe outputs)" in ev.gaps
    # pods on the nodes asked about get their logs read even when healthy
    assert (FL, POD["w2"], "kube-flannel", False) in ev.logs


def test_a_bundle_is_read_only(bundle: Path) -> None:
    r = BundleReader(bundle)
    with pytest.raises(ExecutorError, match="read-only record"):
        r.delete_pod(FL, POD["w2"])
    with pytest.raises(ExecutorError, match="read-only record"):
        r.patch_configmap(FL, "kube-flannel-cfg", {"net-conf.json": "{}"})
    assert [p.name for p in r.list_pods(FL, node="w2")] == [POD["w2"]]


def test_not_a_bundle_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        BundleReader(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is not a directory"):
        evidence_from_bundle(tmp_path / "file")


def test_an_empty_directory_reads_as_nothing_known(tmp_path: Path) -> None:
    ev = evidence_from_bundle(tmp_path)
    assert ev.nodes == [] and ev.pods == [] and not ev.rbac.readable
    assert any(g.startswith("nodes.json is missing") for g in ev.gaps)
    assert any(g.startswith("rbac.json is missing") for g in ev.gaps)


# -- the bundled example --------------------------------------------------------------------------


def test_the_example_bundle_shows_flannel_crash_looping_on_w2() -> None:
    ev = evidence_from_bundle(EXAMPLE)
    assert ev.gaps == []
    assert sorted(n.name for n in ev.nodes) == ["w1", "w2", "w3"]
    pods = {p.node: p for p in ev.flannel_pods()}
    crashing = pods["w2"]
    assert not crashing.ready and crashing.restarts > 0
    assert any(c.reason == "CrashLoopBackOff" for c in crashing.containers)
    assert pods["w1"].ready and pods["w3"].ready
    source, text = ev.log(crashing)
    assert "previous" in source and "Failed to check br_netfilter" in text
    assert "Failed to check br_netfilter" in ev.logs[(FL, crashing.name, "kube-flannel", False)]
    assert any(e.reason == "BackOff" and e.involved_name == crashing.name for e in ev.events)
    missing = ev.probe("w2", "bridge-nf-call-iptables")
    assert missing is not None and missing.exit_code != 0 and "No such file" in missing.stderr
    for healthy in ("w1", "w3"):
        probe = ev.probe(healthy, "bridge-nf-call-iptables")
        assert probe is not None and probe.ok and probe.stdout.strip() == "1"
    assert ev.net_conf() is not None and ev.rbac.readable
    assert ("default", "kubernetes") in ev.services


def test_the_example_bundle_diagnoses_as_br_netfilter_missing_on_w2() -> None:
    findings = rank(diagnose(evidence_from_bundle(EXAMPLE)))
    assert (findings[0].id, findings[0].nodes) == ("br-netfilter-missing", ("w2",))
    crashloop = next(f for f in findings if f.id == "flannel-crashloop")
    assert "br-netfilter-missing" in crashloop.explained_by


def test_the_example_bundle_is_small_and_holds_no_lab_paths_or_keys() -> None:
    files = [p for p in EXAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 1_000_000
    for path in files:
        text = path.read_text()
        for leak in ("/run/flannel-bot", "PRIVATE KEY", "/tmp/", "/work/", "/root/"):
            assert leak not in text, (path, leak)


def test_the_layout_is_documented_in_the_module_and_the_readme() -> None:
    readme = (EXAMPLE / "README.md").read_text()
    doc = bundle_module.__doc__ or ""
    names = [
        "nodes.json",
        "<ns>/pods.json",
        "<ns>/events.json",
        "<ns>/daemonsets.json",
        "<ns>/services.json",
        "<ns>/deployments.json",
        "<ns>/replicasets.json",
        "<ns>/replication-controllers.json",
        "<ns>/<pod>/logs.txt",
        "<ns>/configmaps.json",
        "rbac.json",
        "<ns>/<pod>/logs-<c>-previous.txt",
        "probes/<node>/<id>.txt",
        "probes/<node>/<id>.err",
        "probes/<node>/<id>.exit",
        "probes/<node>/UNREACHABLE",
        "probes/<node>/peer-tables.json",
        "errors.txt",
    ]
    for name in names:
        assert name in doc, name
        assert f"`{name}`" in readme, name
    # the by-hand probe script runs exactly the probe set
    for probe in PROBES:
        assert f"probe {probe.id} {shlex.join(probe.argv)}\n" in readme, probe.id


# -- write_bundle against the lab's API server (HTTP, no root) -----------------------------------

SPEC = LabSpec(name="bt", nodes=3)
LIMITED = "no-rbac-token"


class Nodes:
    """A NodeExecutor fake: w2 lacks the bridge sysctls, w3 does not answer."""

    def run(
        self, node: str, argv: Sequence[str], timeout: float, sudo: bool = False
    ) -> CommandResult:
        if node == "w3":
            raise NodeUnreachable("node w3 (172.31.0.13:22) did not answer within 1s", node=node)
        missing = node == "w2" and "/proc/sys/net/bridge/" in " ".join(argv)
        return CommandResult(
            node,
            tuple(argv),
            1 if missing else 0,
            "" if missing else f"{node} ran {shlex.join(argv)}\n",
            "cat: No such file or directory\n" if missing else "",
        )

    def run_many(
        self, commands: Mapping[str, Sequence[Sequence[str]]], timeout: float | None = None
    ) -> dict[str, list[CommandResult] | Exception]:
        out: dict[str, list[CommandResult] | Exception] = {}
        for n, argvs in commands.items():
            try:
                out[n] = [self.run(n, a, 1) for a in argvs]
            except NodeUnreachable as exc:
                out[n] = exc
        return out


@pytest.fixture(scope="module")
def server() -> Iterator[ApiServer]:
    everything = [{"verbs": ["*"], "apiGroups": ["", "apps"], "resources": ["*"]}]
    with ApiServer(rules={LIMITED: everything}, users={LIMITED: "limited"}) as srv:
        srv.create(objects.namespace(FL))
        for n in SPEC.all_nodes():
            name = f"kube-flannel-ds-{n.name}"
            crashing = n.name == "w2"
            srv.create(objects.node(n))
            srv.create(
                objects.flannel_pod(SPEC, n, name, ready=not crashing, restarts=5 * crashing)
            )
            srv.set_log(FL, name, "kube-flannel", objects.flanneld_log(SPEC, n, name))
            if crashing:
                srv.set_log(FL, name, "kube-flannel", BR_ERROR, previous=True)
            srv.create(objects.workload_pod(n, 1))
        srv.create(objects.flannel_daemonset(SPEC.nodes))
        srv.create(objects.flannel_configmap())
        for obj in (
            objects.kube_proxy_objects(SPEC)
            + objects.kubernetes_service(SPEC)
            + objects.rbac_objects()
        ):
            srv.create(obj)
        srv.create(objects.event(FL, "Pod", "kube-flannel-ds-w2", "BackOff", "Back-off", host="w2"))
        srv.create(objects.event("default", "Pod", "web-w1-1", "FailedCreatePodSandBox", "no IP"))
        yield srv


def client(server: ApiServer, tmp_path: Path, token: str | None = None) -> KubeClient:
    config = server.write_kubeconfig(tmp_path / f"kubeconfig-{token}", token=token)
    return KubeClient.from_settings(KubeSettings(kubeconfig=config))


def assert_equivalent(live: Evidence, read: Evidence) -> None:
    assert sorted(live.nodes, key=lambda n: n.name) == sorted(read.nodes, key=lambda n: n.name)
    for name in ("pods", "daemonsets", "events"):
        key = lambda x: (x.namespace, x.name)  # noqa: E731
        assert sorted(getattr(live, name), key=key) == sorted(getattr(read, name), key=key), name
    for name in ("configmaps", "services", "logs", "rbac", "probes", "unreachable"):
        assert getattr(live, name) == getattr(read, name), name


def test_write_bundle_round_trip(server: ApiServer, tmp_path: Path) -> None:
    with client(server, tmp_path) as kube:
        live = collect(kube, Nodes())
        path = write_bundle(kube, Nodes(), tmp_path / "bundle")
    read = evidence_from_bundle(path)
    assert_equivalent(live, read)
    assert live.gaps == [] and read.gaps == []
    assert (FL, "kube-flannel-ds-w2", "kube-flannel", True) in read.logs
    assert read.unreachable == {"w3": "node w3 (172.31.0.13:22) did not answer within 1s"}
    assert any(p.name == "web-w1-1" for p in read.pods)  # every namespace's lists
    assert any(e.reason == "FailedCreatePodSandBox" for e in read.events)
    # kubectl's layout: raw lists, START/END blocks, init containers first
    pods = json.loads((path / FL / "pods.json").read_text())
    assert pods["kind"] == "PodList" and len(pods["items"]) == 3
    logs = (path / FL / "kube-flannel-ds-w1" / "logs.txt").read_text()
    assert logs.startswith(
        f"==== START logs for container install-cni-plugin of pod {FL}/kube-flannel-ds-w1 ====\n"
    )
    assert logs.endswith(
        f"==== END logs for container kube-flannel of pod {FL}/kube-flannel-ds-w1 ====\n"
    )
    assert (path / FL / "kube-flannel-ds-w2" / "logs-kube-flannel-previous.txt").read_text() == (
        BR_ERROR
    )
    assert (path / "probes/w2/bridge-nf-call-iptables.exit").read_text() == "1\n"
    assert not (path / "probes/w1/bridge-nf-call-iptables.exit").exists()  # exit 0 is the default
    rbac = json.loads((path / "rbac.json").read_text())
    assert {i["kind"] for i in rbac["items"]} == {"ClusterRole", "ClusterRoleBinding"}


def test_write_bundle_records_what_it_could_not_read(server: ApiServer, tmp_path: Path) -> None:
    with client(server, tmp_path, LIMITED) as kube:
        path = write_bundle(kube, None, tmp_path / "bundle", timeout=5)
    assert not (path / "rbac.json").exists() and not (path / "probes").exists()
    errors = (path / "errors.txt").read_text()
    assert "could not list clusterroles" in errors and "403" not in errors.split(":")[0]
    ev = evidence_from_bundle(path)
    assert not ev.rbac.readable
    assert any(
        g.startswith("when the bundle was written: could not list clusterroles") for g in ev.gaps
    )
    assert any(g.startswith("probes/ is missing") for g in ev.gaps)
    assert ev.flannel_pods() and ev.configmaps


def test_write_bundle_wants_a_new_directory(server: ApiServer, tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "nodes.json").write_text("{}")
    with client(server, tmp_path) as kube, pytest.raises(UserError, match="not an empty directory"):
        write_bundle(kube, None, tmp_path / "old")


def test_a_long_lived_reader_keeps_probe_output_only_up_to_its_cap(bundle: Path) -> None:
    """`diagnose --dump` of a 5,000-node bundle through the caching reader held every table
    (3.1 GB): past the cap, output is read again when asked again instead of kept."""
    argv = next(p.argv for p in PROBES if p.id == "ip-route")
    keeps, capped = BundleReader(bundle), BundleReader(bundle, probe_cache_chars=10)
    first = keeps.run("w1", argv, 5).stdout
    assert capped.run("w1", argv, 5).stdout == first and len(first) > 10
    (bundle / "probes" / "w1" / "ip-route.txt").write_text("[]\n")
    assert keeps.run("w1", argv, 5).stdout == first  # kept from the first read
    assert capped.run("w1", argv, 5).stdout == "[]\n"  # not kept: read again
