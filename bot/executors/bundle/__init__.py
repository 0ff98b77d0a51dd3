"""Support bundles: diagnose a cluster from files, and write those files from a live cluster.

Why: the person who can see a broken cluster is often not the one who can explain it, and a
cluster in a customer's network cannot be reached from chat. A bundle is the directory that
`kubectl cluster-info dump --output-directory DIR` writes, plus a few files kubectl does not write
(ConfigMaps, RBAC, previous logs, node probe outputs), each of which can also be made by hand.
`BundleReader` answers the calls of the live executors (`ClusterReader` and `NodeExecutor`) from
those files, so `collect` and every rule run unchanged on it; `write_bundle` writes the same layout
from a live cluster (for `flannel-bot collect DIR`), and reading it back gives the evidence a live
`collect` gives.

A missing, unreadable or corrupt file never stops a diagnosis: the reader answers as if that part
were empty and records in `gaps` what could not be checked, which lowers what can be concluded.
A probe the bundle does not hold is left out of the evidence, never reported as a failed command.
Both reach `collect` as data: the reader is a `bot.ports.cluster.Recording`.

A bundle is someone else's directory, so nothing in it may reach outside it or hold the reader:
only regular files inside it are read (a symbolic link, FIFO, device or socket is refused without
being opened), each up to a size (a log larger than that: its last part, and a gap says it was
cut), JSON up to a depth, lists up to a number of pods, events, ... each, and all of it up to
a total and a time (`Limits`). Each refusal is a gap naming the file and why; a list not read
whole is in the reader's `unread`, so "no flannel in it" is "not checked", never "flannel is not
deployed".

Modules: read.py (`BundleReader`), write.py (`write_bundle`), layout.py (the names and texts
both share), files.py (opening files without following links), limits.py (`Limits`, `Budget`),
listjson.py (bounded decoding of list files). `bot.wiring.evidence_from_bundle` puts a reader
and `collect` together.

Layout (`<ns>` is a namespace, `<pod>` a pod, `<c>` a container, `<node>` a node, `<id>` a probe
id from `bot.ports.probes.PROBES`):

    nodes.json                    NodeList. kubectl cluster-info dump.
                                  Lost: node readiness, conditions, podCIDRs and flannel
                                  annotations; and no node is probed (names come from here).
    <ns>/pods.json                PodList. kubectl cluster-info dump.
                                  Lost: flannel / kube-proxy pod states and restarts; their logs.
    <ns>/events.json              EventList. kubectl cluster-info dump.
                                  Lost: BackOff, FailedCreatePodSandBox and other events of <ns>.
    <ns>/daemonsets.json          DaemonSetList. kubectl cluster-info dump.
                                  Lost: flannel's DaemonSet (desired/ready counts, image, args).
    <ns>/services.json            ServiceList. kubectl cluster-info dump.
                                  Lost: the Services of <ns>; `default/services.json` holds the
                                  `kubernetes` Service (dump `default` too).
    <ns>/deployments.json         kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/replicasets.json         kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/replication-controllers.json
                                  kubectl cluster-info dump. Not read by flannel-bot (for people).
    <ns>/<pod>/logs.txt           kubectl cluster-info dump: per container, between
                                  `==== START logs for container <c> of pod <ns>/<pod> ====` and
                                  `==== END logs for container <c> of pod <ns>/<pod> ====`; a line
                                  `Request log error: ...` inside a block is a failed request.
                                  Lost: the pod's current logs (flanneld's last error).
  Optional extras:
    <ns>/configmaps.json          kubectl get configmaps -n <ns> -o json (for kube-flannel and
                                  kube-system).
                                  Lost: kube-flannel-cfg (net-conf.json) and kube-proxy's config.
    rbac.json                     kubectl get clusterroles,clusterrolebindings -o json (a List).
                                  Lost: flannel's RBAC is not checked (Rbac(readable=False)).
    <ns>/<pod>/logs-<c>-previous.txt
                                  kubectl logs -n <ns> <pod> -c <c> --previous
                                  Lost: why a container that restarted ended its last run.
    probes/<node>/<id>.txt        the probe's argv run on the node as root: its stdout;
    probes/<node>/<id>.err        its stderr (default empty);
    probes/<node>/<id>.exit       its exit code (default 0).
                                  Lost: that node-side check (sysctls, subnet.env, CNI config,
                                  routes, iptables, ...); a missing `probes/` loses all of them.
    probes/<node>/UNREACHABLE     the node did not answer; the text says why.
    probes/<node>/peer-tables.json
                                  written by `flannel-bot collect` (`wiring.write_peer_facts`)
                                  on a VXLAN cluster: the node's ip-route, ip-neigh and fdb tables
                                  reduced against the peers of nodes.json (`peer_tables`). Used
                                  instead of those tables, which are then not read, only when
                                  reduced against the same peers and each table beside it is
                                  absent or still the size it records.
                                  Lost: nothing (the tables are read).
    errors.txt                    written by `write_bundle`: what it could not collect and why,
                                  one line each; every line becomes a gap.

kubectl writes the namespaced lists for every namespace it dumps (even when empty), logs.txt for
every pod, and only current logs; `examples/dump/README.md` has the commands that add the extras by
hand and the per-node probe script. `write_bundle` writes the lists for every namespace that has
any object (plus kube-system, kube-flannel and default), logs for the pods of kube-system and
kube-flannel (their last `log_lines` lines), previous logs of containers that restarted, and the
probe outputs of every node (or of `only`).
"""

from flannel_bot.executors.bundle.layout import LOG_LINES, NAMESPACED_LISTS
from flannel_bot.executors.bundle.limits import Limits
from flannel_bot.executors.bundle.read import BundleReader
from flannel_bot.executors.bundle.write import write_bundle, write_peer_facts

__all__ = [
    "LOG_LINES",
    "NAMESPACED_LISTS",
    "BundleReader",
    "Limits",
    "write_bundle",
    "write_peer_facts",
]
