"""The lab as one object: nodes, the API server, and the controllers the lab has to play.

No kubelet, flanneld, kube-proxy or DaemonSet controller runs here, so `Lab` plays them. Deleting
a flannel pod through the API creates its replacement and "starts flanneld" on that node: the start
runs the checks the real flanneld runs, against the node's real state (API reachable from the node
over 10.96.0.1:443? RBAC? podCIDR? `/proc/sys/net/bridge`? flannel.1's addresses?) and either
programs the node as flanneld would, or leaves the pod crash-looping with the log line flanneld
prints for that failure.

A k3s lab (`LabSpec(distribution="k3s")`) has no flannel pods to delete: `restart_k3s` plays
`systemctl restart k3s` on a node instead, with k3s's own checks (the interface --flannel-iface
names) and its lines in the node's k3s journal.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flannel_bot.lab import flannel, k3s, objects
from flannel_bot.lab.apiserver import ApiServer, StatusError
from flannel_bot.lab.kubelet import Kubelet, NodeRuntime
from flannel_bot.lab.network import (
    LabError,
    in_netns,
    ip_batch,
    node_exec,
    run,
    sshd_pid,
    teardown,
)
from flannel_bot.lab.nodes import ClientFiles, build_nodes, pod_ping, sandbox_id
from flannel_bot.lab.objects import FLANNEL_DS, FLANNEL_NS
from flannel_bot.lab.topology import API_SERVICE_IP, LabSpec, NodeSpec

FLANNEL_SA_USER = "system:serviceaccount:kube-flannel:flannel"
BOT_NAMESPACE = "flannel-bot"  # where deploy/base puts the bot, and its node-exec pods


@dataclass(frozen=True)
class StartResult:
    ok: bool
    log: str


def klog(level: str, where: str, message: str) -> str:
    """A line as flanneld (klog) prints it."""
    t = datetime.now(UTC).strftime("%m%d %H:%M:%S.%f")
    return f"{level}{t}       1 {where}] {message}"


class Lab:
    """Build with `up()`, remove with `down()`; `break_` and `restore` inject the seed faults."""

    def __init__(self, spec: LabSpec, api_port: int = 0) -> None:
        self.spec = spec
        self.api = ApiServer("127.0.0.1", api_port)
        self.files: ClientFiles | None = None
        self._lock = threading.RLock()
        self._ipam_lock = threading.Lock()  # a sandbox's start and its CNI DEL, one at a time
        self._workers: list[threading.Thread] = []
        self.worker_errors: list[str] = []  # what killed a controller thread, for tests to see
        self.faults: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._kubelet = threading.Thread(target=self._kubelet_loop, daemon=True)
        self.kubelet_stopped: set[str] = set()  # k3s nodes whose k3s (and kubelet) is not up
        self.pods = Kubelet(self.api, self.node_runtime)  # runs the bot's node-exec pods

    # -- lifecycle ------------------------------------------------------------------------------

    def up(self) -> Lab:
        self.files = build_nodes(self.spec)
        try:
            self.api.start()
            self._populate()
            self.api.on_delete(self._on_delete)
            self.api.on_change(self._on_change)
            self._kubelet.start()
            self.pods.start()
            self.api.write_kubeconfig(self.kubeconfig, context=f"flannel-lab-{self.spec.name}")
            self.bot_config.write_text(self._bot_config())
            self._write_state()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        self._stop.set()
        if self._kubelet.is_alive():
            self._kubelet.join(timeout=10)
        self.pods.stop()
        self.api.stop()
        for worker in self._workers:
            worker.join(timeout=10)
        teardown(self.spec)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def kubeconfig(self) -> Path:
        return self.spec.dir / "kubeconfig"

    @property
    def bot_config(self) -> Path:
        return self.spec.dir / "flannel-bot.toml"

    def _bot_config(self) -> str:
        """Settings that point flannel-bot at this lab (demo roles: alice asks, bob approves)."""
        assert self.files is not None
        return (
            "# written by `flannel-bot lab up`; points the bot at the lab\n"
            f'db = "{self.spec.dir / "flannel-bot.db"}"\n'
            f'kubeconfig = "{self.kubeconfig}"\n'
            "check_interval = 0.5\n\n"
            "[ssh]\n"
            'user = "root"\n'
            f'private_key = "{self.files.key}"\n'
            f'known_hosts = "{self.files.known_hosts}"\n'
            "connect_timeout = 5\n"
            "command_timeout = 20\n\n"
            "[policy.groups]\n"
            'operators = ["alice"]\n'
            'approvers = ["bob", "carol"]\n\n'
            "# one login plays alice, bob and carol on a lab: believe --user for approvals\n"
            "# (never in production: there, approvals at the terminal count as the OS login)\n"
            "[terminal]\n"
            'approver = "asserted"\n'
        )

    def _write_state(self) -> None:
        assert self.files is not None
        state = {
            "name": self.spec.name,
            "distribution": self.spec.distribution,
            "nodes": self.spec.nodes,
            "underlay": self.spec.underlay,
            "api": self.api.url,
            "kubeconfig": str(self.kubeconfig),
            "ssh_config": str(self.files.ssh_config),
            "ssh_key": str(self.files.key),
            "known_hosts": str(self.files.known_hosts),
            "bot_config": str(self.bot_config),
            "addresses": {n.name: n.underlay_ip for n in self.spec.all_nodes()},
        }
        (self.spec.dir / "state.json").write_text(json.dumps(state, indent=2) + "\n")

    @property
    def is_k3s(self) -> bool:
        return self.spec.distribution == "k3s"

    def _populate(self) -> None:
        if self.is_k3s:
            self._populate_k3s()
            return
        spec, api = self.spec, self.api
        for ns in (FLANNEL_NS, BOT_NAMESPACE):
            api.create(objects.namespace(ns))
        for node in spec.all_nodes():
            api.create(objects.node(node))
        for obj in (
            *objects.rbac_objects(),
            objects.flannel_configmap(),
            objects.flannel_daemonset(spec.nodes),
            *objects.kube_proxy_objects(spec),
            *objects.kubernetes_service(spec),
        ):
            api.create(obj)
        for node in spec.all_nodes():
            name = f"{FLANNEL_DS}-{objects.suffix(spec.name, node.name)}"
            api.create(objects.flannel_pod(spec, node, name))
            api.set_log(FLANNEL_NS, name, "kube-flannel", objects.flanneld_log(spec, node, name))
            for pod in range(1, spec.pods_per_node + 1):
                api.create(objects.workload_pod(node, pod))

    def _populate_k3s(self) -> None:
        """k3s registers its nodes and runs flannel and kube-proxy in its own process: no
        kube-flannel namespace, DaemonSet, ConfigMap or RBAC, no kube-proxy pods or ConfigMap
        (the nodes still carry kube-proxy's Service rules); each node's journal holds its k3s
        and flannel start."""
        spec, api = self.spec, self.api
        api.create(objects.namespace(BOT_NAMESPACE))
        for node in spec.all_nodes():
            api.create(objects.k3s_node(spec, node))
        for obj in objects.kubernetes_service(spec):
            api.create(obj)
        for node in spec.all_nodes():
            process = k3s.pid()
            k3s.starting(spec, node, process)
            k3s.flannel_started(spec, node, "eth0", node.underlay_ip, process)
            for pod in range(1, spec.pods_per_node + 1):
                api.create(objects.workload_pod(node, pod))

    # -- what the lab plays: DaemonSet controller, flanneld, kube-proxy --------------------------

    def _on_delete(self, verb: str, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Pod":
            return
        self._release_ip(obj)
        owners = obj["metadata"].get("ownerReferences") or []
        owner = next((o["name"] for o in owners if o.get("kind") == "DaemonSet"), None)
        node_name = obj["spec"].get("nodeName")
        if owner is None or node_name is None:
            return
        namespace = obj["metadata"]["namespace"]
        try:
            self.api.get("daemonsets", owner, namespace)
        except StatusError:  # the DaemonSet is gone: nothing recreates the pod
            return
        node = self.spec.by_name(node_name)
        generation = int(obj["metadata"]["labels"].get("pod-template-generation", "1"))
        new_name = f"{owner}-{objects.suffix(obj['metadata']['name'], time.time_ns())}"
        if owner == FLANNEL_DS:
            pod = objects.flannel_pod(self.spec, node, new_name, ready=False, generation=generation)
            pod["status"]["phase"] = "Pending"
            pod["status"]["containerStatuses"][0]["state"] = {
                "waiting": {"reason": "PodInitializing"}
            }
            self.api.create(pod)
            self._spawn(lambda: self.start_flannel(node, new_name))
        elif owner == "kube-proxy":
            self.api.create(objects.kube_proxy_pod(self.spec, node, new_name))
            self._spawn(lambda: self.start_kube_proxy(node, new_name))

    def _on_change(self, verb: str, obj: dict[str, Any]) -> None:
        """The DaemonSet controller's other half: a new flannel DaemonSet gets a pod per node."""
        if verb != "create" or obj.get("kind") != "DaemonSet":
            return
        if obj["metadata"]["name"] != FLANNEL_DS or obj["metadata"].get("namespace") != FLANNEL_NS:
            return
        for node in self.spec.all_nodes():
            if self.flannel_pod_on(node) is not None:
                continue
            name = f"{FLANNEL_DS}-{objects.suffix(self.spec.name, node.name, time.time_ns())}"
            pod = objects.flannel_pod(self.spec, node, name, ready=False)
            pod["status"]["phase"] = "Pending"
            self.api.create(pod)
            self._spawn(functools.partial(self.start_flannel, node, name))

    def node_runtime(self, name: str) -> NodeRuntime | None:
        """A lab node as the pod kubelet sees it: the process holding its namespaces (its sshd,
        started in the node's network and mount namespaces), None while the node is down."""
        try:
            node = self.spec.by_name(name)
        except KeyError:
            return None
        up = name not in self.kubelet_stopped and not self._stop.is_set()
        return NodeRuntime(sshd_pid(node) if up else None, node.underlay_ip)

    def settle(self) -> None:
        """Wait for the flannel and kube-proxy starts the lab's controllers have spawned."""
        for worker in list(self._workers):
            worker.join(timeout=30)

    def _kubelet_loop(self) -> None:
        """The kubelet's network readiness: a node NotReady for want of a CNI config turns Ready
        within a second of a valid flannel config appearing in /etc/cni/net.d."""
        while not self._stop.wait(1.0):
            for node in self.spec.all_nodes():
                try:
                    self._kubelet_sync(node)
                except (StatusError, OSError, ValueError):
                    continue

    def _kubelet_sync(self, node: NodeSpec) -> None:
        self._retry_sandboxes(node)
        api_node = self.api.get("nodes", node.name)
        ready = next(
            (c for c in api_node["status"].get("conditions", []) if c["type"] == "Ready"), None
        )
        if ready is None or ready["status"] == "True":
            return
        if "NetworkPluginNotReady" not in ready.get("message", ""):
            return
        conf = node.cni_conf
        text = conf.read_text() if conf.is_file() else ""
        if not text.strip():
            return
        plugins = json.loads(text).get("plugins", [])
        if not any(p.get("type") == "flannel" for p in plugins):
            return
        self.api.patch(
            "nodes",
            node.name,
            {"status": {"conditions": objects.node_conditions(True, True)}},
            patch_type="merge",
            subresource="status",
        )

    def _retry_sandboxes(self, node: NodeSpec) -> None:
        """The kubelet retrying a stuck pod's sandbox: it starts once the node's networking
        would let the CNI plugin through (subnet.env, cni0 and flannel.1 addresses, a free IP)."""
        if node.name in self.kubelet_stopped:
            return
        stuck = [
            pod
            for pod in self.api.list(
                "pods", "default", field_selector=f"spec.nodeName={node.name},status.phase=Pending"
            )
            if not pod["spec"].get("hostNetwork")  # no sandbox network to wait for
        ]
        if not stuck:
            return
        if node.k3s:
            self._bridge_force_address(node)
        if not self._sandbox_would_start(node):
            return
        for pod in stuck:
            ip = node.pod_ip(99)
            ipam = node.dir / "var-lib-cni" / "networks" / "cbr0"
            status = objects.pod_status(node, True, 0, host_network=False, pod_ip=ip)
            status["containerStatuses"] = [
                objects.container_status("web", "registry.k8s.io/pause:3.9", True, 0)
            ]
            name = pod["metadata"]["name"]
            # the pod shows its IP before the reservation appears, and a delete meanwhile
            # (CNI DEL) waits: the lab has no crictl, so a reservation seen without its pod
            # would read as leaked (a real node's runtime knows the sandbox meanwhile)
            with self._ipam_lock:
                try:
                    self.api.patch("pods", name, {"status": status}, "default", "merge", "status")
                except StatusError as exc:
                    if exc.code == 404:
                        continue  # deleted meanwhile: no sandbox to start
                    raise
                (ipam / ip).write_text(f"{sandbox_id(node, 99)}\neth0")

    def _bridge_force_address(self, node: NodeSpec) -> None:
        """The bridge plugin with forceAddress (k3s's CNI config sets it) replaces a cni0
        address that is not the node's gateway instead of failing the pod."""
        conflist = node.cni_conf.read_text() if node.cni_conf.is_file() else ""
        wrong = self._addresses(node, "cni0") not in ([], [f"{node.gateway}/24"])
        if wrong and k3s.force_address(conflist):
            ip_batch(["addr flush dev cni0", f"addr add {node.gateway}/24 dev cni0"], node.netns)

    def _sandbox_would_start(self, node: NodeSpec) -> bool:
        if not (node.dir / "run-flannel" / "subnet.env").is_file():
            return False
        if node.k3s:
            conflist = node.cni_conf.read_text() if node.cni_conf.is_file() else ""
            if not conflist or k3s.plugins_missing(node, conflist):
                return False
        if self._addresses(node, "cni0") != [f"{node.gateway}/24"]:
            return False
        if self._addresses(node, "flannel.1") != [f"{node.vtep_ip}/32"]:
            return False
        ipam = node.dir / "var-lib-cni" / "networks" / "cbr0"
        return sum(1 for _ in ipam.glob("10.*")) < 253

    def _release_ip(self, pod: dict[str, Any]) -> None:
        """CNI DEL: a deleted pod's host-local reservation goes with it."""
        ip = (pod.get("status") or {}).get("podIP")
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not ip or not node_name or (pod.get("spec") or {}).get("hostNetwork"):
            return
        node = self.spec.by_name(node_name)
        with self._ipam_lock:
            (node.dir / "var-lib-cni" / "networks" / "cbr0" / ip).unlink(missing_ok=True)

    def _spawn(self, work: Callable[[], object]) -> None:
        def guarded() -> None:
            try:
                work()
            except Exception as exc:  # a controller thread's death must not go unseen
                self.worker_errors.append(f"{type(exc).__name__}: {exc}")
                raise

        worker = threading.Thread(target=guarded, daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def flannel_pod_on(self, node: NodeSpec) -> dict[str, Any] | None:
        pods = self.api.list("pods", FLANNEL_NS, "app=flannel", f"spec.nodeName={node.name}")
        return pods[0] if pods else None

    def restart_flannel(self, node: NodeSpec) -> StartResult:
        """What `kubectl delete pod` of that node's flannel pod leads to, synchronously (on k3s:
        restarting k3s, which restarts its flannel)."""
        if self.is_k3s:
            return self.restart_k3s(node)
        pod = self.flannel_pod_on(node)
        if pod is None:
            raise LabError(f"no flannel pod on {node.name}")
        self.api.delete("pods", pod["metadata"]["name"], FLANNEL_NS)
        for worker in list(self._workers):
            worker.join(timeout=30)
        new = self.flannel_pod_on(node)
        assert new is not None
        return StartResult(
            bool(new["status"]["containerStatuses"][0]["ready"]), self._log(new["metadata"]["name"])
        )

    def _log(self, pod: str) -> str:
        try:
            return self.api.pod_log(FLANNEL_NS, pod, {"container": "kube-flannel"})
        except StatusError:
            return ""

    def flanneld_failure(self, node: NodeSpec, pod: str) -> str | None:
        """The error flanneld would exit with on this node now, or None if it would come up."""
        where = "main.go:251"
        reach = node_exec(
            node,
            ["timeout", "2", "bash", "-c", f"exec 3<>/dev/tcp/{API_SERVICE_IP}/443 && echo ok"],
            check=False,
        ).strip()
        url = f"https://{API_SERVICE_IP}:443/api/v1/namespaces/{FLANNEL_NS}/pods/{pod}"
        prefix = (
            f"Failed to create SubnetManager: error retrieving pod spec for '{FLANNEL_NS}/{pod}': "
        )
        if reach != "ok":
            refused = self._connect_refused(node)
            why = "connect: connection refused" if refused else "i/o timeout"
            return klog("E", where, f'{prefix}Get "{url}": dial tcp {API_SERVICE_IP}:443: {why}')
        if not self._flannel_rbac_ok():
            return klog(
                "E",
                where,
                f'{prefix}pods "{pod}" is forbidden: User "{FLANNEL_SA_USER}" '
                f'cannot get resource "pods" in API group "" in the namespace '
                f'"{FLANNEL_NS}"',
            )
        api_node = self.api.get("nodes", node.name)
        if not api_node["spec"].get("podCIDR"):
            return klog(
                "E",
                "main.go:332",
                "Error registering network: failed to acquire lease: "
                f'node "{node.name}" pod cidr not assigned',
            )
        bridge = node_exec(
            node, ["test", "-e", "/proc/sys/net/bridge/bridge-nf-call-iptables"], check=False
        )
        del bridge
        if not self._bridge_nf_present(node):
            return klog(
                "E",
                "main.go:278",
                "Failed to check br_netfilter: stat "
                "/proc/sys/net/bridge/bridge-nf-call-iptables: no such file or directory",
            )
        addrs = self._addresses(node, "flannel.1")
        if addrs and addrs != [f"{node.vtep_ip}/32"]:
            return klog(
                "E",
                "main.go:345",
                "Error registering network: failed to configure "
                "interface flannel.1: failed to ensure address of interface flannel.1: "
                "link has incompatible addresses. Remove additional addresses and try "
                "again. &netlink.Vxlan{...}",
            )
        return None

    def _connect_refused(self, node: NodeSpec) -> bool:
        out = node_exec(
            node,
            [
                "timeout",
                "2",
                "bash",
                "-c",
                f"exec 3<>/dev/tcp/{API_SERVICE_IP}/443 2>&1; echo rc=$?",
            ],
            check=False,
        )
        return "refused" in out

    def _flannel_rbac_ok(self) -> bool:
        try:
            role = self.api.get("clusterroles", "flannel")
            binding = self.api.get("clusterrolebindings", "flannel")
        except StatusError:
            return False
        bound = any(
            s.get("name") == "flannel" and s.get("namespace") == FLANNEL_NS
            for s in binding.get("subjects") or []
        )
        can_get_pods = any(
            "pods" in r.get("resources", []) and "get" in r.get("verbs", [])
            for r in role.get("rules") or []
        )
        return bound and can_get_pods and binding["roleRef"]["name"] == "flannel"

    @staticmethod
    def _bridge_nf_present(node: NodeSpec) -> bool:
        out = node_exec(
            node,
            ["sh", "-c", "test -e /proc/sys/net/bridge/bridge-nf-call-iptables && echo yes"],
            check=False,
        )
        return out.strip() == "yes"

    @staticmethod
    def _addresses(node: NodeSpec, dev: str) -> list[str]:
        out = in_netns(node.netns, ["ip", "-j", "addr", "show", "dev", dev], check=False)
        if not out.strip():
            return []
        return [
            f"{a['local']}/{a['prefixlen']}"
            for link in json.loads(out)
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        ]

    def chosen_interface(self, node: NodeSpec) -> tuple[str, str]:
        """flanneld's interface choice: `--iface` if given, else the default-route interface.

        A lab node has no default route; a second NIC `eth1` stands for the NAT interface that
        carries the default route on a VirtualBox/Vagrant node, so without `--iface` it wins.
        """
        ds = self.api.get("daemonsets", FLANNEL_DS, FLANNEL_NS)
        args = ds["spec"]["template"]["spec"]["containers"][0].get("args") or []
        wanted = next((a.split("=", 1)[1] for a in args if a.startswith("--iface=")), None)
        candidates = [wanted] if wanted else ["eth1", "eth0"]
        for dev in candidates:
            addrs = self._addresses(node, dev)
            if addrs:
                return dev, addrs[0].split("/")[0]
        return "eth0", node.underlay_ip

    def start_flannel(self, node: NodeSpec, pod: str) -> StartResult:
        """Play flanneld starting in `pod` on `node`; update the pod, its log and events."""
        with self._lock:
            failure = self.flanneld_failure(node, pod)
            previous = self.api.get("pods", pod, FLANNEL_NS)
            dev, address = self.chosen_interface(node)
            if failure is None:
                failure = self._program_with_restarts(node, address)
            if failure is not None:
                log = objects.flanneld_log(self.spec, node, pod).splitlines()[:4]
                text = "\n".join([*log, failure]) + "\n"
                self._set_flannel_pod(pod, node, ready=False, restarts=5)
                self.api.set_log(FLANNEL_NS, pod, "kube-flannel", text)
                self.api.set_log(FLANNEL_NS, pod, "kube-flannel", text, previous=True)
                self.api.create(
                    objects.event(
                        FLANNEL_NS,
                        "Pod",
                        pod,
                        "BackOff",
                        "Back-off restarting failed container kube-flannel in pod "
                        f"{pod}_{FLANNEL_NS}"
                        f"({previous['metadata'].get('uid', '')})",
                        host=node.name,
                    )
                )
                return StartResult(False, text)
            text = objects.flanneld_log(self.spec, node, pod)
            if dev != "eth0":
                text = text.replace(
                    f"name eth0 and address {node.underlay_ip}", f"name {dev} and address {address}"
                ).replace(
                    f"interface address ({node.underlay_ip})", f"interface address ({address})"
                )
            self._set_flannel_pod(pod, node, ready=True, restarts=0)
            self.api.set_log(FLANNEL_NS, pod, "kube-flannel", text)
            return StartResult(True, text)

    def _program_with_restarts(self, node: NodeSpec, address: str, tries: int = 3) -> str | None:
        """flanneld exits when a netlink call fails under it (flannel.1 deleted while it starts)
        and the kubelet restarts it; the error it last exited with, or None once it came up."""
        for attempt in range(tries):
            try:
                self.program_node(node, address)
                return None
            except LabError as exc:
                if attempt == tries - 1:
                    why = (exc.stderr.strip() or str(exc)).splitlines()[0]
                    return klog("E", "main.go:332", f"Error registering network: {why}")
                time.sleep(1.0)
        return None

    def _set_flannel_pod(self, pod: str, node: NodeSpec, ready: bool, restarts: int) -> None:
        fresh = objects.flannel_pod(self.spec, node, pod, ready=ready, restarts=restarts)
        self.api.patch(
            "pods", pod, {"status": fresh["status"]}, FLANNEL_NS, "merge", subresource="status"
        )

    def program_node(self, node: NodeSpec, public_ip: str) -> None:
        """What a successful flanneld start leaves on the node and in the API."""
        flannel.write_subnet_env(node)
        cfg = self.api.list(
            "configmaps", FLANNEL_NS, field_selector="metadata.name=kube-flannel-cfg"
        )
        if cfg:  # the install-cni init container copies cni-conf.json into place
            flannel.write_cni_conf(node, cfg[0]["data"]["cni-conf.json"])
        flannel.ensure_interfaces(node, self.spec.pods_per_node)
        self.api.patch(
            "nodes",
            node.name,
            {"metadata": {"annotations": {"flannel.alpha.coreos.com/public-ip": public_ip}}},
            patch_type="merge",
        )
        self.api.patch(
            "nodes",
            node.name,
            {"status": {"conditions": objects.node_conditions(True, True)}},
            patch_type="merge",
            subresource="status",
        )
        peers = self.peer_addresses()
        flannel.program_peers(node, self.spec.all_nodes(), peers)
        for other in self.spec.all_nodes():
            if other.index == node.index or sshd_pid(other) is None:
                continue
            # the peer's own flanneld adds this lease; one whose flannel.1 is gone (a runbook
            # deleting it, a reboot) cannot, until its own restart re-programs every peer
            try:
                flannel.program_peers(other, self.spec.all_nodes(), peers)
            except LabError:
                if flannel.has_vxlan(other):
                    raise
        flannel.ensure_flannel_iptables(node)

    def peer_addresses(self) -> dict[str, str]:
        """Each node's VTEP endpoint as its flannel annotation announces it."""
        out = {}
        for node in self.api.list("nodes"):
            ann = node["metadata"].get("annotations") or {}
            if "flannel.alpha.coreos.com/public-ip" in ann:
                out[node["metadata"]["name"]] = ann["flannel.alpha.coreos.com/public-ip"]
        return out

    def start_kube_proxy(self, node: NodeSpec, pod: str) -> StartResult:
        """Play kube-proxy: strict config decoding, then the `kubernetes` Service DNAT."""
        with self._lock:
            config = self.api.get("configmaps", "kube-proxy", "kube-system")["data"]["config.conf"]
            unknown = flannel.unknown_kube_proxy_fields(config)
            if unknown:
                msg = klog(
                    "E",
                    "server.go:558",
                    '"Error running ProxyServer" err="failed '
                    f'complete: strict decoding error: unknown field \\"{unknown[0]}\\""',
                )
                fresh = objects.kube_proxy_pod(self.spec, node, pod, ready=False, restarts=3)
                self.api.patch(
                    "pods",
                    pod,
                    {"status": fresh["status"]},
                    "kube-system",
                    "merge",
                    subresource="status",
                )
                self.api.set_log("kube-system", pod, "kube-proxy", msg + "\n")
                self.api.set_log("kube-system", pod, "kube-proxy", msg + "\n", previous=True)
                flannel.remove_service_dnat(node)
                return StartResult(False, msg)
            flannel.ensure_service_dnat(self.spec, node)
            self.api.set_log(
                "kube-system",
                pod,
                "kube-proxy",
                klog(
                    "I",
                    "service.go:421",
                    'Adding new service port "default/kubernetes:https" at '
                    f"{API_SERVICE_IP}:443/TCP",
                )
                + "\n",
            )
            return StartResult(True, "")

    def restart_kube_proxy(self, node: NodeSpec) -> StartResult:
        pods = self.api.list(
            "pods", "kube-system", "k8s-app=kube-proxy", f"spec.nodeName={node.name}"
        )
        for pod in pods:
            self.api.delete("pods", pod["metadata"]["name"], "kube-system")
        for worker in list(self._workers):
            worker.join(timeout=30)
        new = self.api.list(
            "pods", "kube-system", "k8s-app=kube-proxy", f"spec.nodeName={node.name}"
        )
        ok = bool(new and new[0]["status"]["containerStatuses"][0]["ready"])
        return StartResult(ok, "")

    # -- k3s ------------------------------------------------------------------------------------

    def k3s_args(self, node: NodeSpec) -> list[str]:
        """The node's k3s command line, as its `k3s.io/node-args` annotation records it."""
        ann = self.api.get("nodes", node.name)["metadata"].get("annotations") or {}
        args = json.loads(ann.get("k3s.io/node-args") or "[]")
        return [str(a) for a in args] if isinstance(args, list) else []

    def set_k3s_args(self, node: NodeSpec, args: list[str]) -> None:
        """k3s records its command line on the Node when it starts (with the changed flags)."""
        self.api.patch(
            "nodes",
            node.name,
            {"metadata": {"annotations": {"k3s.io/node-args": objects.compact(args)}}},
            patch_type="merge",
        )

    def restart_k3s(self, node: NodeSpec) -> StartResult:
        """What `systemctl restart k3s` (k3s-agent on agents) leads to on the node: k3s reads
        its flags (config.yaml), looks up the interface --flannel-iface names, writes its CNI
        config (--flannel-cni-conf's copy, or its own) and net-conf.json, starts its kubelet
        and flannel and records its flags on the Node. The node's journal says how far it
        got."""
        with self._lock:
            args = k3s.read_args(node)
            process = k3s.pid()
            text = k3s.starting(self.spec, node, process)
            iface = flag(args, "--flannel-iface")
            if iface and not self._link_exists(node, iface):
                text += k3s.iface_missing(node, iface, process)
                self.kubelet_stopped.add(node.name)
                self._kubelet_gone(node)
                return StartResult(False, text)
            self.kubelet_stopped.discard(node.name)
            if args != self.k3s_args(node):
                self.set_k3s_args(node, args)
            custom = flag(args, "--flannel-cni-conf")
            conflist = node.private(custom).read_text() if custom else k3s.CNI_CONF
            k3s.write_flannel_files(node, conflist)
            addresses = self._addresses(node, iface or "eth0")
            address = addresses[0].split("/")[0] if addresses else node.underlay_ip
            self.program_node(node, address)
            text += k3s.flannel_started(self.spec, node, iface or "eth0", address, process)
            return StartResult(True, text)

    def _link_exists(self, node: NodeSpec, dev: str) -> bool:
        out = in_netns(node.netns, ["ip", "-o", "link", "show", "dev", dev], check=False)
        return bool(out.strip())

    def _kubelet_gone(self, node: NodeSpec) -> None:
        """The node lifecycle controller's view of a node whose kubelet stopped posting."""
        conds = objects.node_conditions(True, True)
        conds[1].update(
            status="Unknown",
            reason="NodeStatusUnknown",
            message="Kubelet stopped posting node status.",
        )
        self.api.patch(
            "nodes",
            node.name,
            {"status": {"conditions": conds}},
            patch_type="merge",
            subresource="status",
        )

    def age_journals(self, seconds: float) -> None:
        """Let `seconds` pass for the nodes' journals (k3s labs): their lines move into the past,
        so a `journalctl --since` window no longer holds the older ones."""
        for node in self.spec.all_nodes():
            k3s.age(node, seconds)

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        nodes = self.spec.all_nodes()
        reach = {a.name: {b.name: pod_ping(a, b) for b in nodes if b is not a} for a in nodes}
        return {
            "name": self.spec.name,
            "api": self.api.url,
            "kubeconfig": str(self.kubeconfig),
            "nodes": [
                {
                    "name": n.name,
                    "address": n.underlay_ip,
                    "pod_cidr": n.pod_cidr,
                    "sshd": sshd_pid(n) is not None,
                }
                for n in nodes
            ],
            "pod_reachability": reach,
            "faults": {k: sorted(v) for k, v in self.faults.items()},
        }


def flag(args: list[str], name: str) -> str:
    """A flag's value in a k3s command line (`--flag value` or `--flag=value`), or ""."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return ""


def flush_pod_route_cache(lab: Lab) -> None:
    """Pods keep a learned path MTU for 10 minutes; forget it after an MTU change."""
    for node in lab.spec.all_nodes():
        for pod in range(1, lab.spec.pods_per_node + 1):
            run(
                ["ip", "netns", "exec", node.pod_netns(pod), "ip", "route", "flush", "cache"],
                check=False,
            )


__all__ = ["Lab", "LabError", "StartResult", "flush_pod_route_cache", "ip_batch"]
