"""`flannel-bot doctor`: is this installation able to do its job, and if not, what to fix.

Each check says OK, WARN (works, but something is off) or FAIL, with the next step. Exit 1 on
any FAIL. It only reads: node access is proven with `true`, permissions with access reviews.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flannel_bot.errors import BotError
from flannel_bot.executors.kube import KubeClient
from flannel_bot.executors.node_settings import NodeSettings
from flannel_bot.settings import ClusterSettings, Settings
from flannel_bot.slack.health import WebClient, slack_health
from flannel_bot.wiring import App

# (verb, resource, namespace, API group, name): what diagnose and the runbooks call
NEEDED: tuple[tuple[str, str, str | None, str, str | None], ...] = (
    ("list", "nodes", None, "", None),
    ("list", "pods", None, "", None),
    ("get", "pods/log", "kube-flannel", "", None),
    ("list", "events", None, "", None),
    ("list", "daemonsets", "kube-flannel", "apps", None),
    ("get", "configmaps", "kube-flannel", "", "kube-flannel-cfg"),
    ("delete", "pods", "kube-flannel", "", None),
    ("patch", "configmaps", "kube-system", "", "kube-proxy"),
)


def node_pod_rights(nodes: NodeSettings) -> tuple[tuple[str, str, str | None, str, None], ...]:
    """What [nodes] access = "pod" needs beyond NEEDED, in its own namespace."""
    if nodes.access != "pod":
        return ()
    ns = nodes.namespace
    return (
        ("create", "pods", ns, "", None),
        ("get", "pods", ns, "", None),
        ("delete", "pods", ns, "", None),
        ("get", "pods/log", ns, "", None),
    )


def settings_of(app: App, cluster: str) -> ClusterSettings:
    return app.settings.cluster(cluster)


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # OK, WARN, FAIL
    detail: str

    def line(self) -> str:
        return f"{self.state:<4} {self.name}: {self.detail}"


def _guard(name: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except BotError as exc:
        return Check(name, "FAIL", str(exc))


def checks(app: App, settings: Settings, slack_client: WebClient | None = None) -> list[Check]:
    out = [
        Check(
            "config",
            "OK",
            f"audit log {settings.db_path}, templates {settings.templates_dir}",
        )
    ]
    report = app.store.verify()
    out.append(
        Check("audit log", "OK", report.describe())
        if report.ok
        else Check(
            "audit log",
            "FAIL",
            f"{report.describe()}; compare with the last head posted to Slack and restore "
            "the database from a backup",
        )
    )
    for name in app.clusters.names:
        label = f" {name}" if app.clusters.many else ""
        out += _cluster_checks(app, name, label)
    out.append(_slack(settings, slack_client))
    return out


def _cluster_checks(app: App, name: str, label: str) -> list[Check]:
    """Access, permissions and SSH for one cluster; `label` names it when there are several."""
    nodes: list[str] = []
    out: list[Check] = []
    try:
        cluster = app.clusters.get(name)
    except BotError as exc:
        return [Check(f"cluster{label}", "FAIL", str(exc))]
    kube = cluster.engine.kube

    def reachable() -> Check:
        found = kube.list_nodes()
        nodes.extend(n.name for n in found)
        where = kube.server if isinstance(kube, KubeClient) else "recorded"
        return Check(f"cluster{label}", "OK", f"{len(found)} nodes via {where}")

    out.append(_guard(f"cluster{label}", reachable))
    if isinstance(kube, KubeClient) and nodes:

        def rights() -> Check:
            needed = NEEDED + node_pod_rights(settings_of(app, name).nodes)
            missing = [
                f"{verb} {resource}" + (f"/{what}" if what else "") + (f" in {ns}" if ns else "")
                for verb, resource, ns, group, what in needed
                if not kube.can_i(verb, resource, ns, group, what)
            ]
            if missing:
                return Check(
                    f"permissions{label}",
                    "FAIL",
                    f"the bot may not {', '.join(missing)}; apply deploy/base/rbac.yaml to its "
                    "ServiceAccount",
                )
            return Check(f"permissions{label}", "OK", f"{len(needed)} API permissions checked")

        out.append(_guard(f"permissions{label}", rights))
    prober = cluster.prober
    if nodes and prober is not None:
        via = settings_of(app, name).nodes.access  # "ssh", or "pod": a node-exec pod each
        ran = "reachable, host key known" if via == "ssh" else "a node-exec pod ran on it"

        def reach(node: str) -> Check:
            result = prober.run(node, ["true"], 10)
            if result.exit_code != 0:
                return Check(f"{via}{label} {node}", "FAIL", f"`true` exited {result.exit_code}")
            return Check(f"{via}{label} {node}", "OK", ran)

        with ThreadPoolExecutor(8) as pool:
            out += list(pool.map(lambda n: _guard(f"{via}{label} {n}", lambda: reach(n)), nodes))
    return out


def _slack(settings: Settings, client: WebClient | None) -> Check:
    state, detail = slack_health(settings.slack, client)
    return Check("slack", state, detail)


def doctor(app: App, settings: Settings) -> int:
    results = checks(app, settings)
    for check in results:
        print(check.line())
    failed = [c for c in results if c.state == "FAIL"]
    print(f"{len(failed)} problem(s)" if failed else "everything needed is in place")
    return 1 if failed else 0
