"""A support bundle from what a public incident thread quotes, placed as a person would place it.

Each incident (`cases/<slug>.json`) holds the thread's address, the quoted evidence verbatim, and
the root cause the thread establishes. This module is the by-hand procedure of
`examples/dump/README.md` written down: a flannel log goes into its pod's `logs.txt`, an event
into `events.json`, `ip addr` output into the node's `ip-addr` probe, a journal into its probe,
and so on. Nothing is invented beyond what the quotes imply: a quoted flannel log implies a
flannel pod on that node, a sandbox event implies a pod still waiting for its sandbox, and the
rest of the cluster is taken as it normally is (nodes Ready with a podCIDR, kubelets of the
distribution the thread is about). Output that maps to no bundle file (tcpdump, curl, a unit
file) stays in the case for people to read and is not given to the bot.

Run `python -m tests.incidents.assemble` to rewrite `bundles/` after editing a case; the tests
hold the committed bundles to what this writes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
BUNDLES = HERE / "bundles"
Json = dict[str, Any]

KUBELET = {"k3s": "v1.28.5+k3s1", "rke2": "v1.28.5+rke2r1"}
FLANNEL_NS = {"kube-system", "kube-flannel"}
# `command output` the bundle has a place for: probe id by the command that printed it
COMMAND_PROBES = (
    (re.compile(r"^(ip (-\w+ )*(a|addr|address)\b|ip -d link|ifconfig)"), "ip-addr"),
    (re.compile(r"^ip (-\w+ )*(r|ro|route)\b(?!.*table local)"), "ip-route"),
    (re.compile(r"^ip (-\w+ )*route show table local"), "ip-route-local"),
    (re.compile(r"^(ip (-\w+ )*neigh|arp )"), "ip-neigh"),
    (re.compile(r"^bridge (-\w+ )*fdb"), "fdb"),
    (re.compile(r"^(sudo )?iptables-save"), "iptables-filter"),
    (re.compile(r"^(sudo )?iptables (-\w+ )*-L|^(sudo )?iptables -nvL"), "iptables-filter"),
    (re.compile(r"^(sudo )?iptables-legacy (-\w+ )*-L"), "iptables-legacy"),
    (re.compile(r"^(sudo )?iptables (--version|-V)"), "iptables-version"),
    (re.compile(r"^(kubectl exec .* -- )?cat /run/flannel/subnet\.env"), "subnet-env"),
    (
        re.compile(r"^(sudo )?journalctl (-\S+ )*-u (k3s|k3s-agent|rke2-server|rke2-agent)\b"),
        "k3s-journal",
    ),
    (
        re.compile(r"^(sudo )?journalctl (-\S+ )*-u (kubelet|containerd|crio|docker)\b"),
        "kubelet-journal",
    ),
    (re.compile(r"^(ls|ls -\w+) /opt/cni/bin"), "cni-bin"),
    (re.compile(r"^(dmesg|journalctl -k)"), "kernel-log"),
    (re.compile(r"^ethtool -k"), "offload"),
    (re.compile(r"^(cat|sysctl) .*bridge-nf-call-iptables"), "bridge-nf-call-iptables"),
)
CRI_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d) (stdout|stderr) [FP] ")
PROMPT = re.compile(r"^(\[[^\]]*\][#$]|\S+@\S+[#$:]|[$#]) ")


def slug_of(case: Path) -> str:
    return case.stem


def assemble(case: Json, root: Path) -> Path:
    """Write the bundle of one incident into `root` (a new directory)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    cluster = _Cluster(case)
    for item in case["evidence"]:
        cluster.take(item)
    cluster.write(root)
    return root


class _Cluster:
    def __init__(self, case: Json) -> None:
        self.distribution = case.get("distribution", "unknown")
        self.nodes: dict[str, Json] = {}
        self.pods: dict[tuple[str, str], Json] = {}
        self.logs: dict[tuple[str, str], dict[str, str]] = {}
        self.previous: dict[tuple[str, str], dict[str, str]] = {}
        self.events: list[Json] = []
        self.probes: dict[str, dict[str, str]] = {}
        self.configmaps: list[Json] = []
        self.pod_table = False  # the thread listed the pods: they are the pods there are
        self.workloads: list[tuple[str, str, str, str, str]] = []  # ns, name, node, IP, status
        self.failed: dict[tuple[str, str], str] = {}  # (node, probe) -> stderr of a failed probe

    # -- taking the quotes ----------------------------------------------------------------------

    def take(self, item: Json) -> None:
        kind, text = item["kind"], _unprompted(item["text"])
        node = item.get("node") or _prompt_host(item["text"])
        if kind == "flannel log":
            if self.distribution == "k3s":
                self.probe(node, "k3s-journal", text)
            else:
                command = item.get("command") or ""
                pod = self.flannel_pod(node, item.get("pod"), command)
                self.log(pod, _container(command, "kube-flannel"), text, _previous(command))
        elif kind == "kube-proxy log":
            pod = self.pod(
                "kube-system",
                item.get("pod") or f"kube-proxy-{_suffix(self.node(node))}",
                node,
                {"k8s-app": "kube-proxy"},
                "kube-proxy",
            )
            self.log(pod, "kube-proxy", text)
        elif kind in ("k3s journal", "rke2 journal"):
            self.probe(node, "k3s-journal", text)
        elif kind == "kubelet journal":
            self.probe(node, "kubelet-journal", text)
        elif kind == "kernel log":
            self.probe(node, "kernel-log", text)
        elif kind == "event":
            self.event(node, item.get("pod"), text)
        elif kind == "node condition":
            self.condition(node, text)
        elif kind == "pod state":  # a state the thread states in prose, read into fields
            key = self.flannel_pod(node, item.get("pod"), item.get("command") or "")
            self.pod_state(key, item.get("last_state", ""), int(item.get("restarts", 0)))
        elif kind == "describe pod":
            self.describe(node, text)
        elif kind == "command output":
            self.command(node, item.get("command") or "", text)

    def node(self, name: str) -> str:
        if not name and self.nodes:
            return next(iter(self.nodes))  # unnamed: the node the thread was about
        name = _node_name(name) or "node1"
        if name not in self.nodes:
            index = len(self.nodes) + 1
            cidr = f"10.{42 if self.distribution in ('k3s', 'rke2') else 244}.{index}.0/24"
            self.nodes[name] = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {"kubernetes.io/hostname": name},
                    "annotations": {},
                },
                "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                "status": {
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "KubeletReady",
                            "message": "kubelet is posting ready status",
                        }
                    ],
                    "nodeInfo": {
                        "kubeletVersion": KUBELET.get(self.distribution, "v1.28.5"),
                        "containerRuntimeVersion": "containerd://1.7.13",
                    },
                },
            }
        return name

    def pod(
        self,
        ns: str,
        name: str,
        node: str,
        labels: Json,
        container: str,
        phase: str = "Running",
        ready: bool = True,
        restarts: int = 0,
    ) -> tuple[str, str]:
        key = (ns, name)
        if key not in self.pods:
            self.pods[key] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {
                    "nodeName": self.node(node),
                    "containers": [{"name": container, "image": ""}],
                },
                "status": {
                    "phase": phase,
                    "containerStatuses": [
                        {
                            "name": container,
                            "ready": ready,
                            "restartCount": restarts,
                            "state": {"running": {}}
                            if phase == "Running"
                            else {"waiting": {"reason": "ContainerCreating"}},
                        }
                    ],
                },
            }
        return key

    def flannel_pod(self, node: str, name: str | None, command: str) -> tuple[str, str]:
        hint = f"{command} {name or ''}"
        name = _pod_name(name) or None
        ns = (
            "kube-system"
            if "kube-system" in hint or (name or "").startswith("kube-flannel-ds-amd64")
            else "kube-flannel"
        )
        if name and "canal" in name:
            return self.pod("kube-system", name, node, {"k8s-app": "canal"}, "kube-flannel")
        return self.pod(
            ns,
            name or f"kube-flannel-ds-{_suffix(self.node(node))}",
            node,
            {"app": "flannel", "tier": "node"},
            "kube-flannel",
        )

    def log(self, pod: tuple[str, str], container: str, text: str, previous: bool = False) -> None:
        spec = self.pods[pod]["spec"]
        if container not in [c["name"] for c in spec["containers"]]:
            spec.setdefault("initContainers", []).append({"name": container, "image": ""})
            self.pods[pod]["status"].setdefault("initContainerStatuses", []).append(
                {
                    "name": container,
                    "ready": False,
                    "restartCount": 1,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                }
            )
        logs = self.previous if previous else self.logs
        if previous:  # a previous container means the container restarted
            for status in self.pods[pod]["status"]["containerStatuses"]:
                status["restartCount"] = max(1, status.get("restartCount", 0))
        logs.setdefault(pod, {})[container] = logs.get(pod, {}).get(container, "") + text + "\n"

    def probe(self, node: str, probe: str, text: str) -> None:
        outputs = self.probes.setdefault(self.node(node), {})
        outputs[probe] = outputs.get(probe, "") + text + "\n"

    def event(self, node: str, pod: str | None, text: str) -> None:
        name = _pod_name(pod) or "app-pod"
        key = ("default", name)
        if key not in self.pods:
            self.pod(
                "default", name, node, {"app": "workload"}, "app", phase="Pending", ready=False
            )
        message = _event_message(text)
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{name}.{len(self.events):04x}", "namespace": "default"},
                "involvedObject": {"kind": "Pod", "name": name, "namespace": "default"},
                "reason": _reason(text),
                "message": message,
                "type": "Warning",
                "count": 1,
                "source": {"component": "kubelet", "host": self.pods[key]["spec"]["nodeName"]},
            }
        )

    def condition(self, node: str, text: str) -> None:
        name = self.node(node)
        message = (
            text.split("KubeletNotReady", 1)[-1].strip()
            if "KubeletNotReady" in text
            else text.strip()
        )
        self.nodes[name]["status"]["conditions"] = [
            {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": message}
        ]

    def describe(self, node: str, text: str) -> None:
        name = re.search(r"^Name:\s+(\S+)", text, re.M)
        ns = re.search(r"^Namespace:\s+(\S+)", text, re.M)
        reason = re.search(r"Reason:\s+(ImagePullBackOff|ErrImagePull|CrashLoopBackOff)", text)
        image = re.search(r"Image:\s+(\S+)", text)
        if name and ns and ns.group(1) in FLANNEL_NS and "flannel" in name.group(1):
            key = self.flannel_pod(node, name.group(1), f"-n {ns.group(1)}")
            pod = self.pods[key]
            if reason:
                pod["status"]["phase"] = "Pending"
                pod["status"]["containerStatuses"] = [
                    {
                        "name": "kube-flannel",
                        "ready": False,
                        "restartCount": 0,
                        "image": image.group(1) if image else "",
                        "state": {"waiting": {"reason": reason.group(1)}},
                    }
                ]
                pod["spec"]["containers"][0]["image"] = image.group(1) if image else ""
            last = re.search(r"Last State:\s+Terminated\s+Reason:\s+(\w+)", text)
            restarts = re.search(r"Restart Count:\s+(\d+)", text)
            if last or restarts:
                self.pod_state(
                    key,
                    last.group(1) if last else "",
                    int(restarts.group(1)) if restarts else 0,
                )
        for line in text.splitlines():
            if re.match(r"^\s+Warning\s+\S+", line):
                self.event(node, name.group(1) if name else None, line)

    def pod_state(self, key: tuple[str, str], last_reason: str, restarts: int) -> None:
        """A flannel pod's restarts and why its container last ended, as the thread states."""
        status = self.pods[key]["status"]["containerStatuses"][0]
        status["restartCount"] = max(restarts, status.get("restartCount", 0))
        if last_reason:
            ended: Json = {"reason": last_reason}
            if last_reason == "OOMKilled":
                ended["exitCode"] = 137  # SIGKILL, what the OOM killer sends
            status["lastState"] = {"terminated": ended}

    def command(self, node: str, command: str, text: str) -> None:
        plain = command.strip()
        if (
            plain.startswith("kubeadm")
            and "bridge-nf-call-iptables" in text
            and "does not exist" in text
        ):
            # kubeadm's preflight read the same file the probe reads, and found it absent
            path = "/proc/sys/net/bridge/bridge-nf-call-iptables"
            self.probe(node, "bridge-nf-call-iptables", "")
            self.failed[(self.node(node), "bridge-nf-call-iptables")] = (
                f"cat: {path}: No such file or directory"
            )
            return
        for pattern, probe in COMMAND_PROBES:
            if pattern.search(plain):
                self.probe(node, probe, text)
                return
        release = re.search(r"^(k3s|rke2) version (v[\w.+-]+)", text, re.M)
        if re.match(r"^(sudo )?(k3s|rke2) (-v|--version)\b", plain) and release:
            # the binary's version is the kubelet's: the node reports it as kubeletVersion
            self.nodes[self.node(node)]["status"]["nodeInfo"]["kubeletVersion"] = release.group(2)
            return
        if re.match(r"^kubectl (-n \S+ )?logs", plain) and "flannel" in plain:
            pod = re.search(r"(kube-flannel-ds-\S+|canal-\S+|rke2-canal-\S+)", plain)
            key = self.flannel_pod(node, pod.group(1) if pod else None, plain)
            self.log(key, _container(plain, "kube-flannel"), text)
        elif re.match(r"^kubectl .*logs", plain) and "coredns" in plain:
            self.system_log(plain, node, "coredns", "kube-dns", text)
        elif re.match(r"^kubectl (-n \S+ )?logs", plain) and "kube-proxy" in plain:
            self.system_log(plain, node, "kube-proxy", "kube-proxy", text)
        elif re.search(r"kubectl .*get (node|no)\S* .*-o yaml", plain):
            self.node_yaml(node, text)
        elif re.search(r"kubectl .*get (nodes|node|no)\b", plain):
            self.node_table(text)
        elif re.search(r"kubectl .*get (pods|pod|po)\b", plain):
            self.pod_rows(text)
        elif re.search(r"kubectl .*get (cm|configmap)s? ", plain):
            self.configmap(plain, text)

    def system_log(self, command: str, node: str, name: str, app: str, text: str) -> None:
        """The log of a kube-system pod (CoreDNS, kube-proxy) `kubectl logs` printed."""
        pod = re.search(rf"({name}-\S+)", command)
        key = self.pod(
            "kube-system", pod.group(1) if pod else f"{name}-node1", node, {"k8s-app": app}, name
        )
        self.log(key, name, text)

    def node_yaml(self, node: str, text: str) -> None:
        name = self.node(node or _yaml_value(text, "name") or "")
        meta = self.nodes[name]["metadata"]
        for key, value in re.findall(
            r"^\s*((?:flannel\.alpha\.coreos\.com|k3s\.io|rke2\.io)/[\w.-]+):\s*(.+)$", text, re.M
        ):
            meta["annotations"][key] = (
                value.strip().strip("'\"")
                if not value.strip().startswith("'{")
                else value.strip()[1:-1]
            )
        cidr = _yaml_value(text, "podCIDR")
        if cidr:
            self.nodes[name]["spec"] = {"podCIDR": cidr, "podCIDRs": [cidr]}

    def node_table(self, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        header = next(
            (i for i, line in enumerate(lines) if line.split()[:2] == ["NAME", "STATUS"]), None
        )
        if header is None:
            return
        columns = _columns(lines[header])
        for line in lines[header + 1 :]:
            words = line.split()
            if len(words) < 2 or words[0] == "NAME":
                continue
            name = self.node(words[0])
            status = self.nodes[name]["status"]
            if "NotReady" in words[1]:
                status["conditions"] = [
                    {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": ""}
                ]
            if "VERSION" in columns and len(words) > columns.index("VERSION"):
                status["nodeInfo"]["kubeletVersion"] = words[columns.index("VERSION")]
            if "INTERNAL-IP" in columns and len(words) > columns.index("INTERNAL-IP"):
                status["addresses"] = [
                    {"type": "InternalIP", "address": words[columns.index("INTERNAL-IP")]}
                ]

    def pod_rows(self, text: str) -> None:
        """`kubectl get pods [-A] [-o wide]`: each flannel, canal and kube-proxy pod as listed."""
        lines = [line for line in text.splitlines() if line.strip()]
        header = next(
            (
                i
                for i, line in enumerate(lines)
                if "NAME" in line.split() and "STATUS" in line.split()
            ),
            None,
        )
        if header is None:
            return
        columns = _columns(lines[header])
        for line in lines[header + 1 :]:
            words = line.split()
            if len(words) < len(columns) - 2:
                continue
            row = dict(zip(columns, words, strict=False))
            name, ns = row.get("NAME", ""), row.get("NAMESPACE", "kube-system")
            status, restarts = row.get("STATUS", ""), row.get("RESTARTS", "0")
            node = row.get("NODE", "")
            if "flannel" in name or name.startswith(("canal-", "rke2-canal-")):
                self.pod_table = True
                key = self.flannel_pod(node, name, f"-n {ns}")
            elif name.startswith("kube-proxy-"):
                key = self.pod(ns, name, node, {"k8s-app": "kube-proxy"}, "kube-proxy")
            elif re.fullmatch(r"\d+\.\d+\.\d+\.\d+", row.get("IP", "")) and node:
                self.workloads.append((ns, name, node, row["IP"], status))
                continue
            else:
                continue
            ready = row.get("READY", "1/1").split("/")
            state = self.pods[key]["status"]
            if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", row.get("IP", "")):
                state["podIP"] = row["IP"]
                self.pods[key]["spec"]["hostNetwork"] = True
            state["containerStatuses"][0].update(
                ready=len(ready) == 2 and ready[0] == ready[1],
                restartCount=int(restarts) if restarts.isdigit() else 0,
            )
            if status not in ("Running", "Completed"):
                waiting = {"waiting": {"reason": status}}
                state["containerStatuses"][0]["state"] = waiting
                if status.startswith("Init:") or status in ("Pending", "ContainerCreating"):
                    state["phase"] = "Pending"

    def configmap(self, command: str, text: str) -> None:
        name = re.search(r"get (?:cm|configmaps?) (\S+)", command)
        ns = re.search(r"-n (\S+)", command)
        data = {}
        for key in ("net-conf.json", "config.conf", "cni-conf.json"):
            block = re.search(rf"^\s*{re.escape(key)}: \|-?\n((?:\s{{4,}}.*\n?)+)", text, re.M)
            if block:
                data[key] = "\n".join(line[4:] for line in block.group(1).splitlines())
        if name and data:
            self.configmaps.append(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": name.group(1),
                        "namespace": ns.group(1) if ns else "kube-system",
                    },
                    "data": data,
                }
            )

    # -- writing the bundle ---------------------------------------------------------------------

    def write(self, root: Path) -> None:
        if not self.nodes:
            self.node("")
        for node, outputs in self.probes.items():
            subnet = _quoted_subnet(outputs)
            if subnet:  # the node's own subnet, as its flannel.1, cni0 or subnet.env show it
                self.nodes[node]["spec"] = {"podCIDR": subnet, "podCIDRs": [subnet]}
        network = _quoted_network(self.probes)
        for ns, name, node, ip, status in self.workloads:
            key = self.pod(ns, name, node, {"app": "workload"}, name.split("-")[0])
            pod = self.pods[key]
            pod["status"]["podIP"] = ip
            pod["spec"]["hostNetwork"] = ipaddress.ip_address(ip) not in network
            if status != "Running":
                pod["status"]["phase"] = "Pending"
        daemonsets: list[Json] = []
        if self.distribution != "k3s":
            # a thread about flannel implies flannel runs: on every node, unless it listed pods
            flannel = [p for p in self.pods.values() if _is_flannel(p)]
            ns = flannel[0]["metadata"]["namespace"] if flannel else "kube-flannel"
            if not self.pod_table:
                have = {p["spec"]["nodeName"] for p in flannel}
                for node in list(self.nodes):
                    if node not in have:
                        self.flannel_pod(node, None, f"-n {ns}")
            daemonsets.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "metadata": {
                        "name": "kube-flannel-ds",
                        "namespace": ns,
                        "labels": {"app": "flannel"},
                    },
                    "spec": {"selector": {"matchLabels": {"app": "flannel"}}},
                    "status": {
                        "desiredNumberScheduled": len(self.nodes),
                        "currentNumberScheduled": len(flannel) or len(self.nodes),
                        "numberReady": len(flannel) or len(self.nodes),
                    },
                }
            )
        _json(root / "nodes.json", _list(self.nodes.values()))
        namespaces = (
            {ns for ns, _ in self.pods}
            | {"kube-system", "default"}
            | {d["metadata"]["namespace"] for d in daemonsets}
        )
        if any(ns == "kube-flannel" for ns, _ in self.pods):
            namespaces.add("kube-flannel")
        for ns in sorted(namespaces):
            _json(root / ns / "pods.json", _list(p for (n, _), p in self.pods.items() if n == ns))
            _json(
                root / ns / "events.json",
                _list(e for e in self.events if e["metadata"]["namespace"] == ns),
            )
            _json(
                root / ns / "daemonsets.json",
                _list(d for d in daemonsets if d["metadata"]["namespace"] == ns),
            )
            _json(root / ns / "services.json", _list([]))
            cms = [c for c in self.configmaps if c["metadata"]["namespace"] == ns]
            if cms:
                _json(root / ns / "configmaps.json", _list(cms))
        for (ns, name), containers in sorted(self.logs.items()):
            blocks = "".join(
                f"==== START logs for container {c} of pod {ns}/{name} ====\n{text}"
                f"==== END logs for container {c} of pod {ns}/{name} ====\n"
                for c, text in containers.items()
            )
            (root / ns / name).mkdir(parents=True, exist_ok=True)
            (root / ns / name / "logs.txt").write_text(blocks)
        for (ns, name), containers in sorted(self.previous.items()):
            (root / ns / name).mkdir(parents=True, exist_ok=True)
            for c, text in containers.items():
                (root / ns / name / f"logs-{c}-previous.txt").write_text(text)
        for node, outputs in sorted(self.probes.items()):
            for probe, text in sorted(outputs.items()):
                target = root / "probes" / node / f"{probe}.txt"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                if (node, probe) in self.failed:
                    target.with_suffix(".err").write_text(self.failed[(node, probe)] + "\n")
                    target.with_suffix(".exit").write_text("1\n")


def _quoted_subnet(outputs: dict[str, str]) -> str:
    env = re.search(r"FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.\d+/(\d+)", outputs.get("subnet-env", ""))
    if env:
        return f"{env.group(1)}.0/{env.group(2)}"
    addr = outputs.get("ip-addr", "")
    cni0 = re.search(r"cni0.*?inet (\d+\.\d+\.\d+)\.\d+/(\d+)", addr, re.S)
    if cni0:
        return f"{cni0.group(1)}.0/{cni0.group(2)}"
    vtep = re.search(r"flannel\.\d+.*?inet (\d+\.\d+\.\d+)\.0/32", addr, re.S)
    return f"{vtep.group(1)}.0/24" if vtep else ""


def _columns(header: str) -> list[str]:
    """A kubectl table's column names; the two-word ones (-o wide) kept whole."""
    return (
        header.replace("NOMINATED NODE", "NOMINATED-NODE")
        .replace("READINESS GATES", "READINESS-GATES")
        .split()
    )


def _quoted_network(probes: dict[str, dict[str, str]]) -> ipaddress.IPv4Network:
    """The pod network a quoted subnet.env names; flannel's default when none is quoted."""
    for outputs in probes.values():
        env = re.search(r"FLANNEL_NETWORK=(\S+)", outputs.get("subnet-env", ""))
        if env:
            return ipaddress.IPv4Network(env.group(1), strict=False)
    return ipaddress.IPv4Network("10.244.0.0/16")


def _is_flannel(pod: Json) -> bool:
    labels = pod["metadata"]["labels"]
    return labels.get("app") == "flannel" or labels.get("k8s-app") == "canal"


def _list(items: Any) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": list(items),
        "metadata": {"resourceVersion": ""},
    }


def _json(path: Path, value: Json) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _unprompted(text: str) -> str:
    """The output as `kubectl logs` or the command prints it: without the shell prompt lines
    people paste with it, and without the container runtime's log wrapping (docker's JSON
    lines, CRI's `<time> stderr F ` prefix) when copied from /var/log/pods."""
    lines = []
    for line in text.splitlines():
        if PROMPT.match(line):
            continue
        if line.startswith('{"log":'):
            with contextlib.suppress(ValueError, KeyError):
                line = str(json.loads(line)["log"]).rstrip("\n")
        line = CRI_PREFIX.sub("", line)
        lines.append(line)
    return "\n".join(lines).strip("\n")


def _suffix(node: str) -> str:
    """Five letters or digits from a node's name, for the name of a pod on it."""
    return re.sub(r"[^a-z0-9]", "", node.lower())[-5:] or "node1"


def _previous(command: str) -> bool:
    return bool(re.search(r"\s(-p|--previous)\b", command))


def _prompt_host(text: str) -> str:
    """The host of a pasted shell prompt (`user@host:~$`, `[root@host ~]#`): where it ran."""
    found = re.search(r"^\[?[\w.-]+@([\w.-]+)[\s:~\]]", text, re.M)
    return found.group(1) if found else ""


def _container(command: str, default: str) -> str:
    found = re.search(r"-c\s+(\S+)", command)
    return found.group(1) if found else default


def _pod_name(text: str | None) -> str:
    """A Kubernetes name from a thread's mention (`pod/x`, `x (kube-system)`); masked names
    (`flannel-*****`) keep their readable part."""
    word = (text or "").split(" ")[0].removeprefix("pod/").replace("*", "x")
    found = re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", word)
    return found.group(0) if found else ""


def _node_name(text: str) -> str:
    word = text.strip().split(" ")[0].lower().replace("*", "x").replace("_", "-")
    return word if re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", word) else ""


def _reason(text: str) -> str:
    for reason in (
        "FailedCreatePodSandBox",
        "FailedKillPod",
        "Failed",
        "BackOff",
        "NetworkNotReady",
    ):
        if reason in text:
            return reason
    if "Failed to pull image" in text:
        return "Failed"
    return "FailedCreatePodSandBox" if "sandbox" in text else "Warning"


def _event_message(text: str) -> str:
    """The message column of a `kubectl describe`/`get events` line, or the text as it is."""
    for marker in (
        "Failed to create pod sandbox",
        "Failed create pod sandbox",
        "Failed to pull image",
        "NetworkPlugin cni",
        "MountVolume",
    ):
        at = text.find(marker)
        if at >= 0:
            return text[at:].strip()
    return text.strip()


def _yaml_value(text: str, key: str) -> str:
    found = re.search(rf"^\s*{key}:\s*(\S+)", text, re.M)
    return found.group(1).strip("'\"") if found else ""


def cases() -> Iterator[Path]:
    return iter(sorted(CASES.glob("*.json")))


def main() -> int:
    for case in cases():
        assemble(json.loads(case.read_text()), BUNDLES / slug_of(case))
    print(f"assembled {len(list(cases()))} bundles in {BUNDLES}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
