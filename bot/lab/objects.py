"""The Kubernetes objects a real kubeadm + Flannel cluster would show for the lab, as plain dicts.

Shapes follow what `kubectl get -o json` prints for a kubeadm cluster running the current
kube-flannel manifest (namespace `kube-flannel`, DaemonSet `kube-flannel-ds`, label `app=flannel`),
so the bot's Kubernetes executor sees nothing it would not see in production.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from flannel_bot.lab.flannel import CNI_CONF, NET_CONF
from flannel_bot.lab.k3s import DATA_HASH, default_args
from flannel_bot.lab.topology import API_SERVICE_IP, K3S_VERSION, LabSpec, NodeSpec

FLANNEL_NS = "kube-flannel"
FLANNEL_DS = "kube-flannel-ds"
FLANNEL_IMAGE = "ghcr.io/flannel-io/flannel:v0.26.1"
CNI_PLUGIN_IMAGE = "ghcr.io/flannel-io/flannel-cni-plugin:v1.5.1-flannel2"
KUBE_PROXY_IMAGE = "registry.k8s.io/kube-proxy:v1.30.6"
KUBE_PROXY_CONFIG = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
iptables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
kind: KubeProxyConfiguration
mode: ""
nodePortAddresses: null
"""


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def suffix(*parts: object, length: int = 5) -> str:
    """Stable pseudo-random pod name suffixes, like the ReplicaSet/DaemonSet controllers make."""
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def meta(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"name": name, "creationTimestamp": now(), **extra}
    if namespace:
        m["namespace"] = namespace
    return m


def namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": meta(name, labels={"kubernetes.io/metadata.name": name}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node(n: NodeSpec, ready: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta(
            n.name,
            labels={
                "kubernetes.io/hostname": n.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
            },
            annotations={
                "flannel.alpha.coreos.com/backend-data": json.dumps(
                    {"VNI": 1, "VtepMAC": n.vtep_mac}, separators=(",", ":")
                ),
                "flannel.alpha.coreos.com/backend-type": "vxlan",
                "flannel.alpha.coreos.com/kube-subnet-manager": "true",
                "flannel.alpha.coreos.com/public-ip": n.underlay_ip,
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
            },
        ),
        "spec": {"podCIDR": n.pod_cidr, "podCIDRs": [n.pod_cidr]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": n.underlay_ip},
                {"type": "Hostname", "address": n.name},
            ],
            "conditions": node_conditions(ready, network_ok=ready),
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": suffix(n.name, "boot", length=12),
                "containerRuntimeVersion": "containerd://1.7.22",
                "kernelVersion": "6.1.0-26-amd64",
                "kubeProxyVersion": "v1.30.6",
                "kubeletVersion": "v1.30.6",
                "machineID": suffix(n.name, "machine", length=16),
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": suffix(n.name, "uuid", length=16),
            },
        },
    }


K3S_DATA_DIR = f"/var/lib/rancher/k3s/data/{DATA_HASH}"


def k3s_node(spec: LabSpec, n: NodeSpec, args: list[str] | None = None) -> dict[str, Any]:
    """A Node as a k3s v1.30 server or agent registers it: k3s's versions, labels and
    annotations, and flannel's annotations written by k3s's embedded flannel."""
    obj = node(n)
    m = obj["metadata"]
    m["labels"].update(
        {
            "beta.kubernetes.io/arch": "amd64",
            "beta.kubernetes.io/instance-type": "k3s",
            "node.kubernetes.io/instance-type": "k3s",
        }
    )
    if n.index == 1:
        m["labels"]["node-role.kubernetes.io/control-plane"] = "true"
        m["labels"]["node-role.kubernetes.io/master"] = "true"
    env: dict[str, str] = {"K3S_DATA_DIR": K3S_DATA_DIR}
    if n.index != 1:
        env |= {"K3S_TOKEN": "********", "K3S_URL": f"https://{spec.node(1).underlay_ip}:6443"}
    annotations = m["annotations"]
    del annotations["kubeadm.alpha.kubernetes.io/cri-socket"]
    annotations.update(
        {
            "alpha.kubernetes.io/provided-node-ip": n.underlay_ip,
            "k3s.io/hostname": n.name,
            "k3s.io/internal-ip": n.underlay_ip,
            "k3s.io/node-args": compact(args if args is not None else default_args(n)),
            "k3s.io/node-config-hash": suffix(n.name, "config", length=52).upper(),
            "k3s.io/node-env": compact(env),
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
        }
    )
    info = obj["status"]["nodeInfo"]
    info.update(
        {
            "containerRuntimeVersion": "containerd://1.7.20-k3s1",
            "kubeProxyVersion": K3S_VERSION,
            "kubeletVersion": K3S_VERSION,
        }
    )
    return obj


def compact(value: object) -> str:
    """JSON as Go's encoding/json writes it (k3s's annotations): no spaces."""
    return json.dumps(value, separators=(",", ":"))


def node_conditions(ready: bool, network_ok: bool) -> list[dict[str, Any]]:
    t = now()
    return [
        {
            "type": "NetworkUnavailable",
            "status": "False" if network_ok else "True",
            "reason": "FlannelIsUp" if network_ok else "NoRouteCreated",
            "message": "Flannel is running on this node"
            if network_ok
            else "Node created without a route",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        },
        {
            "type": "Ready",
            "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status"
            if ready
            else "container runtime network not ready: NetworkReady=false "
            "reason:NetworkPluginNotReady "
            "message:Network plugin returns error: cni plugin not initialized",
            "lastHeartbeatTime": t,
            "lastTransitionTime": t,
        },
    ]


def flannel_configmap() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(
            "kube-flannel-cfg",
            FLANNEL_NS,
            labels={"app": "flannel", "k8s-app": "flannel", "tier": "node"},
        ),
        "data": {
            "cni-conf.json": json.dumps(CNI_CONF, indent=2) + "\n",
            "net-conf.json": json.dumps(NET_CONF, indent=2) + "\n",
        },
    }


def _flannel_pod_spec(node_name: str | None) -> dict[str, Any]:
    mounts = [
        {"name": "run", "mountPath": "/run/flannel"},
        {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
        {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
    ]
    spec: dict[str, Any] = {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "serviceAccountName": "flannel",
        "serviceAccount": "flannel",
        "tolerations": [{"effect": "NoSchedule", "operator": "Exists"}],
        "initContainers": [
            {
                "name": "install-cni-plugin",
                "image": CNI_PLUGIN_IMAGE,
                "command": ["cp"],
                "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}],
            },
            {
                "name": "install-cni",
                "image": FLANNEL_IMAGE,
                "command": ["cp"],
                "args": [
                    "-f",
                    "/etc/kube-flannel/cni-conf.json",
                    "/etc/cni/net.d/10-flannel.conflist",
                ],
                "volumeMounts": [
                    {"name": "cni", "mountPath": "/etc/cni/net.d"},
                    {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                ],
            },
        ],
        "containers": [
            {
                "name": "kube-flannel",
                "image": FLANNEL_IMAGE,
                "command": ["/opt/bin/flanneld"],
                "args": ["--ip-masq", "--kube-subnet-mgr"],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {
                        "name": "POD_NAMESPACE",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                    },
                    {"name": "EVENT_QUEUE_DEPTH", "value": "5000"},
                ],
                "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                "securityContext": {
                    "privileged": False,
                    "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]},
                },
                "volumeMounts": mounts,
            }
        ],
        "volumes": [
            {"name": "run", "hostPath": {"path": "/run/flannel", "type": ""}},
            {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin", "type": ""}},
            {"name": "cni", "hostPath": {"path": "/etc/cni/net.d", "type": ""}},
            {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg", "defaultMode": 420}},
            {
                "name": "xtables-lock",
                "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"},
            },
        ],
    }
    if node_name:
        spec["nodeName"] = node_name
    return spec


def flannel_daemonset(nodes: int) -> dict[str, Any]:
    labels = {"app": "flannel", "k8s-app": "flannel", "tier": "node"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": meta(FLANNEL_DS, FLANNEL_NS, labels=labels, generation=1),
        "spec": {
            "selector": {"matchLabels": {"app": "flannel", "k8s-app": "flannel"}},
            "template": {"metadata": {"labels": labels}, "spec": _flannel_pod_spec(None)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "revisionHistoryLimit": 10,
        },
        "status": daemonset_status(nodes, nodes),
    }


def daemonset_status(desired: int, ready: int) -> dict[str, Any]:
    return {
        "currentNumberScheduled": desired,
        "desiredNumberScheduled": desired,
        "numberAvailable": ready,
        "numberMisscheduled": 0,
        "numberReady": ready,
        "numberUnavailable": desired - ready or None,
        "observedGeneration": 1,
        "updatedNumberScheduled": desired,
    }


def container_status(
    name: str,
    image: str,
    ready: bool,
    restarts: int,
    waiting: str | None = None,
    last_exit: int | None = None,
) -> dict[str, Any]:
    state: dict[str, Any]
    if waiting:
        state = {
            "waiting": {
                "reason": waiting,
                "message": f"back-off 5m0s restarting failed container={name}",
            }
        }
    else:
        state = {"running": {"startedAt": now()}}
    status: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": f"{image}@sha256:" + hashlib.sha256(image.encode()).hexdigest(),
        "containerID": "containerd://" + suffix(name, now(), length=32),
        "ready": ready,
        "restartCount": restarts,
        "started": ready,
        "state": state,
    }
    if last_exit is not None:
        status["lastState"] = {
            "terminated": {
                "exitCode": last_exit,
                "reason": "Error",
                "startedAt": now(),
                "finishedAt": now(),
            }
        }
    return status


def flannel_pod(
    spec: LabSpec,
    n: NodeSpec,
    name: str,
    ready: bool = True,
    restarts: int = 0,
    generation: int = 1,
) -> dict[str, Any]:
    labels = {
        "app": "flannel",
        "k8s-app": "flannel",
        "tier": "node",
        "controller-revision-hash": "7c8fdd4bd8",
        "pod-template-generation": str(generation),
    }
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(
            name,
            FLANNEL_NS,
            labels=labels,
            ownerReferences=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": FLANNEL_DS,
                    "uid": suffix(spec.name, FLANNEL_DS, length=16),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        ),
        "spec": _flannel_pod_spec(n.name),
        "status": pod_status(n, ready, restarts, host_network=True),
    }
    pod["status"]["initContainerStatuses"] = [
        {
            **container_status(c, FLANNEL_IMAGE, False, 0),
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": now(),
                    "finishedAt": now(),
                }
            },
        }
        for c in ("install-cni-plugin", "install-cni")
    ]
    pod["status"]["containerStatuses"] = [
        container_status(
            "kube-flannel",
            FLANNEL_IMAGE,
            ready,
            restarts,
            waiting=None if ready else "CrashLoopBackOff",
            last_exit=None if ready else 1,
        )
    ]
    return pod


def pod_status(
    n: NodeSpec,
    ready: bool,
    restarts: int,
    host_network: bool,
    pod_ip: str | None = None,
    phase: str = "Running",
) -> dict[str, Any]:
    t = now()
    ip = n.underlay_ip if host_network else (pod_ip or "")
    conds = [
        {
            "type": t_,
            "status": "True" if (ready or t_ in ("Initialized", "PodScheduled")) else "False",
            "lastProbeTime": None,
            "lastTransitionTime": t,
        }
        for t_ in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
    ]
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": conds,
        "hostIP": n.underlay_ip,
        "hostIPs": [{"ip": n.underlay_ip}],
        "startTime": t,
        "qosClass": "Burstable",
    }
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return status


def kube_proxy_objects(spec: LabSpec) -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-proxy"}
    pod_spec = {
        "hostNetwork": True,
        "priorityClassName": "system-node-critical",
        "serviceAccountName": "kube-proxy",
        "containers": [
            {
                "name": "kube-proxy",
                "image": KUBE_PROXY_IMAGE,
                "command": [
                    "/usr/local/bin/kube-proxy",
                    "--config=/var/lib/kube-proxy/config.conf",
                    "--hostname-override=$(NODE_NAME)",
                ],
                "securityContext": {"privileged": True},
                "volumeMounts": [{"name": "kube-proxy", "mountPath": "/var/lib/kube-proxy"}],
            }
        ],
        "volumes": [
            {"name": "kube-proxy", "configMap": {"name": "kube-proxy", "defaultMode": 420}}
        ],
    }
    objs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("kube-proxy", "kube-system", labels={"app": "kube-proxy"}),
            "data": {
                "config.conf": KUBE_PROXY_CONFIG,
                "kubeconfig.conf": "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n"
                "    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n"
                f"    server: https://{spec.svc_ip}:6443\n  name: default\n",
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": meta("kube-proxy", "kube-system", labels=labels, generation=1),
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
            "status": daemonset_status(spec.nodes, spec.nodes),
        },
    ]
    for n in spec.all_nodes():
        objs.append(kube_proxy_pod(spec, n, f"kube-proxy-{suffix(spec.name, n.name, 'kp')}"))
    return objs


def kube_proxy_pod(
    spec: LabSpec, n: NodeSpec, name: str, ready: bool = True, restarts: int = 0
) -> dict[str, Any]:
    labels = {
        "k8s-app": "kube-proxy",
        "controller-revision-hash": "6d5c8f7b9",
        "pod-template-generation": "1",
    }
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(
            name,
            "kube-system",
            labels=labels,
            ownerReferences=[
                {
                    "apiVersion": "apps/v1",
                    "kind": "DaemonSet",
                    "name": "kube-proxy",
                    "uid": suffix(spec.name, "kube-proxy", length=16),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        ),
        "spec": {
            "nodeName": n.name,
            "hostNetwork": True,
            "serviceAccountName": "kube-proxy",
            "containers": [{"name": "kube-proxy", "image": KUBE_PROXY_IMAGE}],
        },
        "status": pod_status(n, ready, restarts, host_network=True),
    }
    pod["status"]["containerStatuses"] = [
        container_status(
            "kube-proxy",
            KUBE_PROXY_IMAGE,
            ready,
            restarts,
            waiting=None if ready else "CrashLoopBackOff",
            last_exit=None if ready else 1,
        )
    ]
    return pod


def workload_pod(n: NodeSpec, index: int) -> dict[str, Any]:
    name = f"web-{n.name}-{index}"
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(name, "default", labels={"app": "web"}),
        "spec": {
            "nodeName": n.name,
            "containers": [{"name": "web", "image": "registry.k8s.io/pause:3.9"}],
        },
        "status": pod_status(n, True, 0, host_network=False, pod_ip=n.pod_ip(index)),
    }
    pod["status"]["containerStatuses"] = [
        container_status("web", "registry.k8s.io/pause:3.9", True, 0)
    ]
    return pod


def rbac_objects() -> list[dict[str, Any]]:
    labels = {"k8s-app": "flannel"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": meta("flannel", FLANNEL_NS, labels=labels),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta("flannel", labels=labels),
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta("flannel", labels=labels),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "flannel",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": FLANNEL_NS}],
        },
    ]


def kubernetes_service(spec: LabSpec) -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(
                "kubernetes", "default", labels={"component": "apiserver", "provider": "kubernetes"}
            ),
            "spec": {
                "clusterIP": API_SERVICE_IP,
                "clusterIPs": [API_SERVICE_IP],
                "type": "ClusterIP",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": meta(
                "kubernetes", "default", labels={"endpointslice.kubernetes.io/skip-mirror": "true"}
            ),
            "subsets": [
                {
                    "addresses": [{"ip": spec.svc_ip}],
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                }
            ],
        },
    ]


def event(
    namespace: str,
    kind: str,
    name: str,
    reason: str,
    message: str,
    type_: str = "Warning",
    component: str = "kubelet",
    host: str = "",
    count: int = 1,
) -> dict[str, Any]:
    t = now()
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": meta(f"{name}.{suffix(reason, message, time.time_ns(), length=16)}", namespace),
        "involvedObject": {
            "apiVersion": "v1",
            "kind": kind,
            "name": name,
            "namespace": namespace if kind != "Node" else None,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "firstTimestamp": t,
        "lastTimestamp": t,
        "source": {"component": component, "host": host} if host else {"component": component},
        "reportingComponent": component,
        "reportingInstance": host,
    }


def flanneld_log(spec: LabSpec, n: NodeSpec, pod: str) -> str:
    """The first lines a healthy flanneld v0.26 prints with the kube subnet manager."""
    t = datetime.now(UTC).strftime("%m%d %H:%M:%S.%f")
    peers = [p for p in spec.all_nodes() if p.index != n.index]
    lines = [
        f"I{t}       1 main.go:212] CLI flags config: {{etcdEndpoints:http://127.0.0.1:4001,"
        "http://127.0.0.1:2379 etcdPrefix:/coreos.com/network etcdKeyfile: etcdCertfile: "
        "etcdCAFile: etcdUsername: etcdPassword: version:false kubeSubnetMgr:true "
        "kubeApiUrl: kubeAnnotationPrefix:flannel.alpha.coreos.com kubeConfigFile: iface:[] "
        "ifaceRegex:[] ipMasq:true ifaceCanReach: subnetFile:/run/flannel/subnet.env "
        "publicIP: publicIPv6: subnetLeaseRenewMargin:60 healthzIP:0.0.0.0 healthzPort:0 "
        "iptablesResyncSeconds:5 iptablesForwardRules:true netConfPath:/etc/kube-flannel/"
        "net-conf.json setNodeNetworkUnavailable:true}",
        f"W{t}       1 client_config.go:618] Neither --kubeconfig nor --master was specified.  "
        "Using the inClusterConfig.  This might not work.",
        f"I{t}       1 kube.go:139] Waiting 10m0s for node controller to sync",
        f"I{t}       1 kube.go:469] Starting kube subnet manager",
        f"I{t}       1 kube.go:146] Node controller sync successful",
        f"I{t}       1 main.go:232] Created subnet manager: Kubernetes Subnet Manager - {n.name}",
        f"I{t}       1 main.go:235] Installing signal handlers",
        f"I{t}       1 main.go:469] Found network config - Backend type: vxlan",
        f"I{t}       1 match.go:211] Determining IP address of default interface",
        f"I{t}       1 match.go:264] Using interface with name eth0 and address {n.underlay_ip}",
        f"I{t}       1 match.go:286] Defaulting external address to interface address "
        f"({n.underlay_ip})",
        f"I{t}       1 vxlan.go:141] VXLAN config: VNI=1 Port=0 GBP=false Learning=false "
        "DirectRouting=false",
        f"I{t}       1 kube.go:490] Creating the node lease for IPv4. This is the n.Spec.PodCIDRs: "
        f"[{n.pod_cidr}]",
        f"I{t}       1 subnet.go:152] Batch elem [0] is {{ lease.Event{{Type:0, Lease:lease.Lease"
        f"{{EnableIPv4:true, Subnet:{n.pod_cidr}}}}}}}",
        f"I{t}       1 main.go:355] Setting up masking rules",
        f"I{t}       1 main.go:406] Changing default FORWARD chain policy to ACCEPT",
        f"I{t}       1 iptables.go:290] generated 7 rules",
        f"I{t}       1 main.go:434] Wrote subnet file to /run/flannel/subnet.env",
        f"I{t}       1 main.go:438] Running backend.",
        f"I{t}       1 vxlan_network.go:65] watching for new subnet leases",
        *(
            f"I{t}       1 subnet.go:160] Batch elem [0] is {{ lease.Event{{Type:0, "
            f"Lease:lease.Lease{{EnableIPv4:true, Subnet:{p.pod_cidr}, Attrs:lease.LeaseAttrs"
            f"{{PublicIP:{p.underlay_ip}, BackendType:vxlan}}}}}}}}"
            for p in peers
        ),
        f"I{t}       1 main.go:459] Waiting for all goroutines to exit",
        f"I{t}       1 iptables.go:283] bootstrap done",
    ]
    del pod
    return "\n".join(lines) + "\n"
