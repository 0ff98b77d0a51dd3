"""Hostile support bundles: each is built in `tmp_path` from a copy of `examples/dump`, read the
way `diagnose --recording DIR` reads it, and must end in an answer whose gaps name the file
refused or cut and why; never a crash, a hang, a secret quoted or memory in proportion to the
file. The million-pod and multi-gigabyte cases run here with the limits lowered; at full size they
are in bench/bundle_hostile.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from flannel_bot.diagnosis.collect import collect
from flannel_bot.diagnosis.evidence import Evidence
from flannel_bot.diagnosis.rules import diagnose
from flannel_bot.errors import ApiForbidden, NotFound
from flannel_bot.executors.bundle import BundleReader, Limits
from flannel_bot.ports.cluster import DaemonSetInfo
from flannel_bot.wiring import evidence_from_bundle
from tests.fakes import FakeClock, FakeCluster

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dump"
FL = "kube-flannel"
POD = "kube-flannel-ds-7mlpb"  # one of the example's flannel pods
LOGS = f"{FL}/{POD}/logs.txt"
SECRET = "root:$6$not-for-the-bot$:19000:0:99999:7:::"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "dump"))


def read(path: Path, limits: Limits | None = None, within: float = 20.0) -> Evidence:
    """evidence_from_bundle in a thread that must end within `within` seconds: a reader that
    blocks (a FIFO) fails the test instead of hanging it."""
    out: list[Evidence] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            out.append(
                evidence_from_bundle(path, limits=limits) if limits else evidence_from_bundle(path)
            )
        except BaseException as exc:  # re-raised below, in the test's thread
            failed.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(within)
    assert not worker.is_alive(), f"reading {path} did not end within {within} s"
    if failed:
        raise failed[0]
    return out[0]


def gaps_with(ev: Evidence, text: str) -> list[str]:
    return [g for g in ev.gaps if text in g]


def replace(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()
    make(path)


# -- only regular files inside the bundle ---------------------------------------------------------


def test_a_link_to_a_file_outside_is_refused_and_never_quoted(bundle: Path) -> None:
    secret = bundle.parent / "shadow"
    secret.write_text(SECRET + "\n")
    for rel in ("probes/w1/cni-config.txt", LOGS, "rbac.json"):
        replace(bundle / rel, lambda p: p.symlink_to(secret))
    ev = read(bundle)
    findings = diagnose(ev)
    assert "not-for-the-bot" not in repr(ev) + repr(findings)
    for rel in ("probes/w1/cni-config.txt", LOGS, "rbac.json"):
        assert gaps_with(ev, f"{rel} was refused (it is a symbolic link; flannel-bot reads only")
    # a refused probe is unknown, not a failed command
    assert ev.probe("w1", "cni-config") is None and ev.probe("w1", "ip-forward") is not None
    assert (FL, POD, "kube-flannel", False) not in ev.logs


def test_a_link_inside_the_bundle_is_refused_too(bundle: Path) -> None:
    """kubectl and write_bundle write no links; following one would mean resolving, then
    opening, two steps a change in between defeats (files.py's docstring)."""
    replace(bundle / "probes/w1/ip-forward.txt", lambda p: p.symlink_to("ip-route.txt"))
    ev = read(bundle)
    assert gaps_with(ev, "probes/w1/ip-forward.txt was refused (it is a symbolic link")
    assert ev.probe("w1", "ip-forward") is None


def test_a_linked_directory_is_refused_with_what_is_under_it(bundle: Path) -> None:
    elsewhere = bundle.parent / "elsewhere"
    shutil.move(bundle / FL, elsewhere)
    (bundle / FL).symlink_to(elsewhere)
    ev = read(bundle)
    assert gaps_with(ev, "kube-flannel was refused (it is a symbolic link")
    assert ev.flannel_pods() == [] and ev.flannel_daemonsets() == []
    # flannel's own lists were not read: that is "not checked", not "flannel is not deployed"
    assert "flannel-not-deployed" not in {f.id for f in diagnose(ev)}
    assert gaps_with(ev, "whether flannel is deployed was not checked")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    cwd = Path.cwd()
    os.chdir(path.parent)  # a socket's path is limited to 108 bytes; bind the short name
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path.name)
        sock.close()
    finally:
        os.chdir(cwd)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_fifo, "it is a FIFO, not a regular file"),
        (_socket, "it is a socket, not a regular file"),
        (_dev_zero, "it is a symbolic link"),
    ],
    ids=["fifo", "socket", "link-to-dev-zero"],
)
@pytest.mark.parametrize("rel", [f"{FL}/pods.json", LOGS, "probes/w2/ip-forward.txt"])
def test_special_files_are_refused_without_being_read(
    bundle: Path, rel: str, make: Callable[[Path], None], why: str
) -> None:
    replace(bundle / rel, make)
    ev = read(bundle)
    assert gaps_with(ev, f"{rel} was refused ({why}"), ev.gaps
    assert diagnose(ev) is not None


# -- bounded sizes, depth, objects, total and time ------------------------------------------------


def test_a_sparse_2gb_log_is_read_from_its_end_in_bounded_memory(bundle: Path) -> None:
    path = bundle / LOGS
    real = path.read_bytes()
    hole = 2 << 30
    with path.open("r+b") as f:  # a 2 GiB hole, then the real log: no disk is used for it
        f.truncate(hole)
        f.seek(hole)
        f.write(real)
    limit = Limits().log_bytes
    tracemalloc.start()
    try:
        ev = read(bundle)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * limit, f"peak {peak >> 20} MiB for a log read up to {limit >> 20} MiB"
    assert gaps_with(ev, f"{LOGS} is 2.0 GiB, over the 16 MiB read from one log: only its last")
    # the end of the log is still read, and still quoted
    assert ev.logs[(FL, POD, "kube-flannel", False)].endswith("bootstrap done\n")


def test_a_log_over_its_limit_is_read_from_its_end(bundle: Path) -> None:
    def block(container: str, body: str) -> str:
        return (
            f"==== START logs for container {container} of pod {FL}/{POD} ====\n{body}"
            f"==== END logs for container {container} of pod {FL}/{POD} ====\n"
        )

    early = "".join(f"I1121 copied file {i:06d}\n" for i in range(10_000))
    (bundle / LOGS).write_text(block("install-cni", early) + block("kube-flannel", "late\n"))
    reader = BundleReader(bundle, Limits(log_bytes=4096))
    assert reader.read_pod_log(FL, POD, "kube-flannel") == "late\n"
    with pytest.raises(NotFound, match="has no logs of container install-cni"):
        reader.read_pod_log(FL, POD, "install-cni")  # its block began before the last 4 KiB
    said = "KiB, over the 4.0 KiB read from one log: only its last 4.0 KiB were read"
    assert any(g.startswith(f"{LOGS} is ") and said in g for g in reader.gaps), reader.gaps


def test_deep_json_is_refused_with_its_depth_never_a_recursion_error(bundle: Path) -> None:
    deep = 100_000
    (bundle / "kube-system/configmaps.json").write_text(
        '{"kind": "List", "items": [' + "[" * deep + "]" * deep + "]}"
    )
    pods = json.loads((bundle / FL / "pods.json").read_text())
    pods["items"][0]["metadata"]["labels"] = {"x": json.loads("[" * 150 + "]" * 150)}
    (bundle / FL / "pods.json").write_text(json.dumps(pods))
    ev = read(bundle)
    assert gaps_with(
        ev,
        "kube-system/configmaps.json was refused (its JSON nests 100,002 levels deep, over "
        "the 100 read (a Kubernetes list nests about 15)): the ConfigMaps of kube-system",
    )
    # a field the bot reads (labels) nested deep: the pods are read as JSON, so refused
    assert gaps_with(ev, f"{FL}/pods.json was refused (its JSON nests 155 levels deep")
    assert [f.id for f in diagnose(ev)] != []


def write_annotation(bundle: Path, deep: int) -> None:
    """A flannel pod's annotations (never read by the bot) nested `deep` levels."""
    pods = json.loads((bundle / FL / "pods.json").read_text())
    pods["items"][0]["metadata"]["annotations"] = {"x": "@"}
    text = json.dumps(pods).replace('"@"', "[" * deep + "]" * deep)
    (bundle / FL / "pods.json").write_text(text)


def test_deep_json_in_fields_never_read_is_skipped_not_built(bundle: Path) -> None:
    """The pods' typed decode builds nothing deeper than its own records and skips the rest
    under msgspec's recursion check: 150 levels of annotations cost no pod."""
    write_annotation(bundle, 150)
    ev = read(bundle)
    assert not gaps_with(ev, "nests"), ev.gaps
    assert len(ev.flannel_pods()) == 3


def test_deep_json_past_the_recursion_check_is_refused_with_its_depth(bundle: Path) -> None:
    """100,000 levels where the typed decode would skip them: msgspec stops at its recursion
    check (a RecursionError, never a crash), and the list is then measured and refused."""
    write_annotation(bundle, 100_000)
    ev = read(bundle)
    assert gaps_with(ev, f"{FL}/pods.json was refused (its JSON nests 100,005 levels deep")
    assert ev.flannel_pods() == []


def test_brackets_and_escapes_in_strings_do_not_count_as_depth(bundle: Path) -> None:
    pods = json.loads((bundle / FL / "pods.json").read_text())
    pods["items"][0]["metadata"]["annotations"] = {"x": "[" * 500 + '\\"[{' * 200}
    (bundle / FL / "pods.json").write_text(json.dumps(pods))
    ev = read(bundle)
    assert not gaps_with(ev, "nests"), ev.gaps
    assert len(ev.flannel_pods()) == 3


def test_a_list_over_its_size_is_refused(bundle: Path) -> None:
    size = (bundle / "default/events.json").stat().st_size
    ev = read(bundle, Limits(list_bytes=size - 1))
    assert gaps_with(ev, f"default/events.json was refused (it is {size} bytes, over the")
    assert gaps_with(ev, "read from one list file): the events of default")


def _pods(count: int, then: str = "") -> str:
    items = ",".join(
        json.dumps({"metadata": {"name": f"p{i}", "namespace": "default"}}) for i in range(count)
    )
    return '{"kind": "PodList", "items": [' + items + then + "]}"


def test_lists_stop_at_the_object_limit_and_flannel_is_read_first(bundle: Path) -> None:
    # past the limit the file is not even parsed: the corrupt tail is never reached
    (bundle / "default/pods.json").write_text(_pods(5_000, then=", {not json"))
    ev = read(bundle, Limits(objects=1_000))
    assert len(ev.flannel_pods()) == 3  # kube-flannel and kube-system are read first
    cut = gaps_with(ev, "default/pods.json was cut after its first ")
    assert cut and "(the bundle's limit is 1,000 pods in all): the rest were" in cut[0]
    assert not gaps_with(ev, "default/pods.json is not valid JSON")
    assert ("default", "pods") in ev.unread
    assert len(ev.pods) <= 1_000
    # the limit is per kind: flannel's DaemonSet, the events and the Services are still read
    assert ev.flannel_daemonsets() and ev.events and ("default", "kubernetes") in ev.services
    # and pods read after the limit: one line for them all
    (bundle / "zz").mkdir()
    (bundle / "zz/pods.json").write_text(_pods(10))
    ev = read(bundle, Limits(objects=1_000))
    assert gaps_with(
        ev, "zz/pods.json was refused (the lists read before it hold the bundle's 1,000 pods)"
    )


def test_a_million_small_pods_stay_within_the_object_limit_in_memory(bundle: Path) -> None:
    """At 1,000,000 pods json.loads built them all (89 s, 3.2 GB); 50,000 here, limit 2,000."""
    (bundle / "default/pods.json").write_text(_pods(50_000))
    tracemalloc.start()
    try:
        ev = read(bundle, Limits(objects=2_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    size = (bundle / "default/pods.json").stat().st_size
    # the file's bytes and text, but not 50,000 decoded pods (about 20 times the text)
    assert peak < 4 * size + (8 << 20), f"peak {peak >> 20} MiB for a {size >> 20} MiB file"
    assert len(ev.pods) <= 2_000


class Ticking:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_the_read_stops_at_its_time_limit_and_still_answers(bundle: Path) -> None:
    reader = BundleReader(bundle, Limits(seconds=30), clock=Ticking(1.0))
    ev = collect(reader, reader)
    summary = gaps_with(ev, "later files were refused (reading the bundle took more than its 30 s")
    assert len(summary) == 1, ev.gaps  # one line for all of them, not one per file
    assert "`diagnose NODE...` reads only those nodes' probes): what they hold" in summary[0]
    assert diagnose(ev) is not None


def test_the_total_bytes_limit_refuses_later_files_in_one_line(bundle: Path) -> None:
    ev = read(bundle, Limits(total_bytes=64 << 10))
    summary = gaps_with(ev, "later files were refused (the files read before it reach the bundle's")
    assert len(summary) == 1 and "64 KiB; `diagnose NODE...` reads only" in summary[0]


def test_a_long_lived_reader_reads_each_file_once(bundle: Path) -> None:
    """`--recording DIR` serves every diagnose from one reader: the totals are the bundle's,
    not the number of diagnoses."""
    reader = BundleReader(bundle, Limits(seconds=1_000), clock=Ticking(1.0))
    first = collect(reader, reader)
    for _ in range(5):
        again = collect(reader, reader)
    assert again.gaps == first.gaps == []
    assert again.probes == first.probes


def test_errors_txt_becomes_at_most_a_hundred_gaps(bundle: Path) -> None:
    (bundle / "errors.txt").write_text("".join(f"node w{i}: timed out\n" for i in range(5_000)))
    ev = read(bundle)
    written = gaps_with(ev, "when the bundle was written:")
    assert len(written) == 101 and written[-1].endswith("and 4900 more lines in errors.txt")


# -- flannel's files missing: not checked, never flannel-not-deployed -----------------------------


@pytest.mark.parametrize(
    "missing",
    [
        ["kube-flannel/daemonsets.json", "kube-flannel/pods.json"],
        ["kube-flannel/pods.json"],
        ["kube-flannel"],
        ["kube-flannel/daemonsets.json", "kube-flannel/pods.json", "kube-flannel/configmaps.json"],
    ],
    ids=["lists", "pods", "namespace", "lists-and-configmap"],
)
def test_missing_flannel_files_are_not_checked_not_flannel_not_deployed(
    bundle: Path, missing: list[str]
) -> None:
    for rel in missing:
        target = bundle / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if missing == ["kube-flannel/pods.json"]:  # no DaemonSet recorded either
        (bundle / FL / "daemonsets.json").write_text('{"kind": "DaemonSetList", "items": []}')
    ev = read(bundle)
    assert "flannel-not-deployed" not in {f.id for f in diagnose(ev)}
    assert gaps_with(ev, "whether flannel is deployed was not checked: kube-flannel/")


@pytest.mark.parametrize(
    "make", [Path.unlink, lambda p: replace(p, _fifo)], ids=["missing", "fifo"]
)
def test_unread_flannel_pods_are_not_flannel_not_scheduled(
    bundle: Path, make: Callable[[Path], None]
) -> None:
    make(bundle / FL / "pods.json")  # the DaemonSet is recorded, its pods are not
    ev = read(bundle)
    assert ev.flannel_daemonsets() and not ev.flannel_pods()
    assert not {"flannel-not-scheduled", "flannel-not-deployed"} & {f.id for f in diagnose(ev)}
    assert gaps_with(ev, "kube-flannel/pods.json ")
    assert gaps_with(ev, "the pods of kube-flannel (flannel and kube-proxy pod states")


class DaemonSetsForbidden(FakeCluster):
    """A live API that lists pods (none of them flannel's) but refuses DaemonSets."""

    def list_daemonsets(
        self, namespace: str | None = None, label_selector: str | None = None
    ) -> list[DaemonSetInfo]:
        raise ApiForbidden(f"list daemonsets in {namespace}: forbidden", verb="list")


def test_a_list_the_live_api_refused_is_not_checked_either() -> None:
    kube = DaemonSetsForbidden(FakeClock())
    kube.pods = []
    ev = collect(kube, None)
    assert ev.unread == {("kube-flannel", "daemonsets"), ("kube-system", "daemonsets")}
    assert "flannel-not-deployed" not in {f.id for f in diagnose(ev)}
    assert gaps_with(ev, "whether flannel is deployed was not checked: kube-flannel/daemonsets")
    # the same cluster whose API answers with no DaemonSet: flannel is not deployed
    answered = FakeCluster(FakeClock())
    answered.pods = []
    assert "flannel-not-deployed" in {f.id for f in diagnose(collect(answered, None))}


def test_flannel_files_present_without_flannel_are_still_flannel_not_deployed(
    bundle: Path,
) -> None:
    for rel in ("daemonsets.json", "pods.json"):
        kind = "DaemonSetList" if rel.startswith("d") else "PodList"
        (bundle / FL / rel).write_text(json.dumps({"kind": kind, "items": []}))
    ev = read(bundle)
    assert ev.unread == set()
    assert "flannel-not-deployed" in {f.id for f in diagnose(ev)}
    assert not gaps_with(ev, "whether flannel is deployed")
