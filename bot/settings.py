"""Settings: one frozen object built from a TOML file and environment variables.

Nothing else in flannel-bot reads `os.environ`. Precedence: command-line flags (passed in as
overrides) > environment > config file > defaults.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sysconfig
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from flannel_bot.errors import UnknownCluster, UserError
from flannel_bot.executors.node_settings import DEFAULT_NAMESPACE, SELF_IMAGE, NodeSettings
from flannel_bot.executors.ssh_settings import SshSettings
from flannel_bot.runs.policy import Policy, RunbookRule

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_templates() -> Path:
    """The checkout's templates/, else where an installed wheel put them: share/flannel-bot/
    templates under the environment's (or the user's) data directory."""
    checkout = REPO_ROOT / "templates"
    if (checkout / "shell").is_dir():
        return checkout
    for scheme in (sysconfig.get_default_scheme(), f"{os.name}_user"):
        installed = Path(sysconfig.get_path("data", scheme)) / "share" / "flannel-bot" / "templates"
        if installed.is_dir():
            return installed
    return checkout


class ConfigError(UserError):
    """The configuration file or an environment variable is wrong; the message says where."""


@dataclass(frozen=True)
class SlackSettings:
    """`[slack]` plus the tokens, which come from the environment only (never a file)."""

    mode: str = "socket"  # or "http"
    bot_token: str = ""
    app_token: str = ""
    signing_secret: str = ""
    api_url: str = "https://slack.com/api/"
    host: str = "0.0.0.0"  # noqa: S104 - HTTP mode serves Slack's requests from anywhere
    port: int = 3000
    users: Mapping[str, str] = field(default_factory=dict)  # Slack user id -> policy user
    usergroups: Mapping[str, str] = field(default_factory=dict)  # usergroup id -> policy group
    progress_interval: float = 1.0
    usergroup_ttl: float = 300.0
    audit_channel: str = ""  # where the audit chain's head is posted after each run
    audit_head_every_minutes: int = 0  # and on this schedule (0: only after runs)
    # HTTP mode's server (bot.slack.server): what one client may hold of it
    max_body_bytes: int = 1_048_576  # a larger body is refused (413) before it is read
    read_timeout_seconds: float = 10.0  # silent this long, or a request not whole: closed
    http_threads: int = 16  # requests served at once; slow clients hold none of them
    max_connections: int = 10_000  # open connections; beyond, new ones wait to be accepted

    def problems(self) -> list[str]:
        """What is missing for `serve` in this mode, each as a sentence naming the fix."""
        out = []
        if not self.bot_token.startswith("xoxb-"):
            out.append("SLACK_BOT_TOKEN is not set to the app's bot token (xoxb-...)")
        if self.mode == "socket" and not self.app_token.startswith("xapp-"):
            out.append(
                "SLACK_APP_TOKEN is not set to an app-level token (xapp-...) with "
                'connections:write; Socket Mode needs it (or set [slack] mode = "http")'
            )
        if self.mode == "http" and not self.signing_secret:
            out.append("SLACK_SIGNING_SECRET is not set; HTTP mode verifies every request with it")
        return out


@dataclass(frozen=True)
class LeaderSettings:
    """`[leader]`: the Lease that picks the one active replica, and client-go's timings."""

    lease: str = ""  # "namespace/name"; "" runs alone
    duration_seconds: float = 15.0  # a standby takes over a Lease not renewed for this long
    renew_deadline_seconds: float = 10.0  # a leader that cannot renew this long stops leading
    retry_seconds: float = 2.0  # between attempts to acquire or renew


@dataclass(frozen=True)
class TerminalSettings:
    """`[terminal]`: whose approvals the terminal adapters count (bot.terminal says why)."""

    approver: str = "os-user"  # or "asserted": believe --user (a lab or demo only)
    users: Mapping[str, str] = field(default_factory=dict)  # OS login -> policy name
    env_user: str = ""  # FLANNEL_BOT_USER: a name claimed, as --user claims one


@dataclass(frozen=True)
class ServeSettings:
    """`[serve]`: where `serve` runs its heavy commands (bot.slack.workers says why)."""

    workers: int = 2  # worker processes, so heavy commands at once; 0 runs them in serve itself
    queue: int = 20  # heavy commands that may wait for a worker; beyond, one is refused


# a report is built in memory, about 7 KB per event: 50,000 fit the Deployment's 512 MiB
MAX_REPORT_EVENTS = 50_000
DEFAULT_CLUSTER = "default"
CLUSTER_NAME = re.compile(r"\A[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class ClusterSettings:
    """One cluster the bot works on: a live API (kubeconfig context, or in-cluster) reached with
    SSH to its nodes, or a recording (a JSON snapshot or a support-bundle directory)."""

    name: str = DEFAULT_CLUSTER
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    recording: Path | None = None
    # `api_server`: the API server's real endpoint (https://10.0.0.10:6443), used instead of the
    # in-cluster Service IP or the kubeconfig's server, so the bot still reaches the API when
    # kube-proxy (which carries the Service IP) is what is broken
    api_server: str | None = None
    ssh: SshSettings = field(default_factory=SshSettings)
    nodes: NodeSettings = field(default_factory=NodeSettings)  # `[nodes]`: ssh or pod


@dataclass(frozen=True)
class Settings:
    db_path: Path
    templates_dir: Path
    clusters: tuple[ClusterSettings, ...] = (ClusterSettings(),)
    default_cluster: str = DEFAULT_CLUSTER
    policy: Policy = field(default_factory=Policy)
    check_interval: float = 1.0
    default_user: str = "unknown"
    slack: SlackSettings = field(default_factory=SlackSettings)
    retention_days: int = 0  # [audit] retention_days: 0 keeps every event forever
    max_report_events: int = 0  # [audit] max_report_events: 0 builds any report
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    identity: str = ""  # this replica, for the Lease: $POD_NAME, else host:pid
    terminal: TerminalSettings = field(default_factory=TerminalSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)

    def cluster(self, name: str | None = None) -> ClusterSettings:
        """A configured cluster by name (the default one when None)."""
        wanted = name or self.default_cluster
        for cluster in self.clusters:
            if cluster.name == wanted:
                return cluster
        raise UnknownCluster(
            f"there is no cluster `{wanted}`; configured: "
            f"{', '.join(c.name for c in self.clusters)}"
        )


def _default_db(env: Mapping[str, str]) -> Path:
    home = Path(env.get("HOME") or Path.home())
    state = env.get("XDG_STATE_HOME") or str(home / ".local" / "state")
    return Path(state) / "flannel-bot" / "flannel-bot.db"


def _principals(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of group names, "user:<name>" or "*"')
    return tuple(value)


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a whole number of at least 1")
    return value


def parse_policy(raw: Mapping[str, Any]) -> Policy:
    known = {
        "groups",
        "run_read",
        "run_change",
        "approve",
        "approvals",
        "approval_ttl_minutes",
        "change_needs_approval",
        "runbooks",
        "audit_all_channels",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[policy] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    groups = raw.get("groups", {})
    if not isinstance(groups, dict):
        raise ConfigError("[policy.groups] must map group names to lists of users")
    rules = {}
    for rid, rule in raw.get("runbooks", {}).items():
        where = f'[policy.runbooks."{rid}"]'
        if not isinstance(rule, dict) or set(rule) - {"run", "approve", "approvals"}:
            raise ConfigError(f"{where} takes only run, approve and approvals")
        rules[rid] = RunbookRule(
            run=_principals(rule["run"], f"{where}.run") if "run" in rule else None,
            approve=_principals(rule["approve"], f"{where}.approve") if "approve" in rule else None,
            approvals=_positive_int(rule["approvals"], f"{where}.approvals")
            if "approvals" in rule
            else None,
        )
    default = Policy()
    return Policy(
        groups={g: frozenset(_principals(m, f"[policy.groups].{g}")) for g, m in groups.items()},
        run_read=_principals(raw.get("run_read", list(default.run_read)), "policy.run_read"),
        run_change=_principals(
            raw.get("run_change", list(default.run_change)), "policy.run_change"
        ),
        approve=_principals(raw.get("approve", list(default.approve)), "policy.approve"),
        approvals=_positive_int(raw.get("approvals", default.approvals), "policy.approvals"),
        approval_ttl=timedelta(
            minutes=_positive_int(
                raw.get("approval_ttl_minutes", 30), "policy.approval_ttl_minutes"
            )
        ),
        change_needs_approval=bool(raw.get("change_needs_approval", False)),
        rules=rules,
        audit_all_channels=_principals(
            raw.get("audit_all_channels", []), "policy.audit_all_channels"
        ),
    )


def parse_slack(raw: Mapping[str, Any], env: Mapping[str, str]) -> SlackSettings:
    known = {
        "mode",
        "api_url",
        "host",
        "port",
        "users",
        "usergroups",
        "progress_interval",
        "audit_channel",
        "audit_head_every_minutes",
        *_HTTP_LIMITS,
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        hint = " (tokens come from SLACK_* environment variables)" if "token" in unknown[0] else ""
        raise ConfigError(
            f"[slack] has no setting `{unknown[0]}`{hint}; known: {', '.join(sorted(known))}"
        )
    mode = env.get("FLANNEL_BOT_SLACK_MODE") or str(raw.get("mode", "socket"))
    if mode not in ("socket", "http"):
        raise ConfigError(f'[slack] mode must be "socket" or "http", not "{mode}"')
    tables = {}
    for key in ("users", "usergroups"):
        table = raw.get(key, {})
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in table.items()
        ):
            raise ConfigError(f"[slack.{key}] must map Slack ids to names")
        tables[key] = dict(table)
    api_url = env.get("SLACK_API_URL") or str(raw.get("api_url", SlackSettings.api_url))
    return SlackSettings(
        mode=mode,
        bot_token=env.get("SLACK_BOT_TOKEN", ""),
        app_token=env.get("SLACK_APP_TOKEN", ""),
        signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
        api_url=api_url if api_url.endswith("/") else api_url + "/",
        host=str(raw.get("host", SlackSettings.host)),
        port=int(env.get("PORT") or raw.get("port", 3000)),
        users=tables["users"],
        usergroups=tables["usergroups"],
        progress_interval=float(raw.get("progress_interval", 1.0)),
        audit_channel=str(raw.get("audit_channel", "")),
        audit_head_every_minutes=int(raw.get("audit_head_every_minutes", 0)),
        **_http_limits(raw),
    )


_HTTP_LIMITS = ("max_body_bytes", "read_timeout_seconds", "http_threads", "max_connections")


def _http_limits(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`[slack]`'s limits of the HTTP server, each a positive number (whole, but the timeout)."""
    limits: dict[str, Any] = {}
    for key in _HTTP_LIMITS:
        value = raw.get(key, getattr(SlackSettings, key))
        whole = key != "read_timeout_seconds"
        kinds = int if whole else int | float
        if not isinstance(value, kinds) or isinstance(value, bool) or value <= 0:
            kind = "a whole number" if whole else "a number of seconds"
            raise ConfigError(f"[slack] {key} must be {kind} above 0, not {value!r}")
        limits[key] = value
    return limits


def parse_leader(raw: Mapping[str, Any]) -> LeaderSettings:
    known = set(LeaderSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[leader] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    lease = str(raw.get("lease", ""))
    if lease and lease.count("/") != 1:
        raise ConfigError(f'[leader] lease must be "namespace/name", not "{lease}"')
    times = {}
    for key in ("duration_seconds", "renew_deadline_seconds", "retry_seconds"):
        value = raw.get(key, getattr(LeaderSettings, key))
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"[leader] {key} must be a positive number of seconds")
        times[key] = float(value)
    if not times["retry_seconds"] < times["renew_deadline_seconds"] < times["duration_seconds"]:
        raise ConfigError(
            "[leader] needs retry_seconds < renew_deadline_seconds < duration_seconds, so a "
            "leader that cannot renew stops before a standby may take over"
        )
    return LeaderSettings(lease, **times)


def parse_audit(raw: Mapping[str, Any]) -> tuple[int, int]:
    """`[audit]`: retention_days (0 keeps every event) and max_report_events (0: no limit)."""
    known = {"retention_days", "max_report_events"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[audit] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    days = raw.get("retention_days", 0)
    if not isinstance(days, int) or isinstance(days, bool) or days < 0:
        raise ConfigError("[audit] retention_days must be a whole number of days (0: forever)")
    cap = raw.get("max_report_events", MAX_REPORT_EVENTS)
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
        raise ConfigError("[audit] max_report_events must be a whole number (0: no limit)")
    return days, cap


def parse_serve(raw: Mapping[str, Any]) -> ServeSettings:
    known = set(ServeSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[serve] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    counts = {}
    for key in sorted(known):
        value = raw.get(key, getattr(ServeSettings, key))
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"[serve] {key} must be a whole number (0 or more), not {value!r}")
        counts[key] = value
    return ServeSettings(**counts)


def parse_terminal(raw: Mapping[str, Any], env: Mapping[str, str]) -> TerminalSettings:
    known = {"approver", "users"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[terminal] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    approver = raw.get("approver", TerminalSettings.approver)
    if approver not in ("os-user", "asserted"):
        raise ConfigError(
            f'[terminal] approver must be "os-user" (the login running flannel-bot) or '
            f'"asserted" (believe --user: a lab or demo only), not {approver!r}'
        )
    users = raw.get("users", {})
    if not isinstance(users, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in users.items()
    ):
        raise ConfigError("[terminal.users] must map OS logins to policy names")
    return TerminalSettings(approver, dict(users), env.get("FLANNEL_BOT_USER", ""))


_SSH_PATHS = ("private_key", "known_hosts", "ssh_config")


def parse_ssh(raw: Mapping[str, Any], base: Path) -> SshSettings:
    """`[ssh]`: the SshSettings fields; paths relative to the config file; `hosts` a table."""
    known = {f for f in SshSettings.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"[ssh] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = dict(raw)
    for key in _SSH_PATHS:
        if key in values:
            p = Path(str(values[key])).expanduser()
            values[key] = p if p.is_absolute() else base / p
    try:
        return SshSettings(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[ssh]: {exc}") from None


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_nodes(
    raw: Mapping[str, Any], in_cluster: bool, sa_namespace: Path = SERVICE_ACCOUNT_NAMESPACE
) -> NodeSettings:
    """`[nodes]`: access "ssh" or "pod" (default "pod" in-cluster, else "ssh"), namespace
    (default the in-cluster ServiceAccount's, else flannel-bot), image (default in-cluster
    "self", the bot's own pod's), parallel, start_timeout."""
    known = set(NodeSettings.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"[nodes] has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = dict(raw)
    values.setdefault("access", "pod" if in_cluster else "ssh")
    if in_cluster:
        values.setdefault("image", SELF_IMAGE)
    if "namespace" not in values:
        namespace = DEFAULT_NAMESPACE
        if in_cluster:
            with contextlib.suppress(OSError):
                namespace = sa_namespace.read_text().strip() or DEFAULT_NAMESPACE
        values["namespace"] = namespace
    try:
        return NodeSettings(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[nodes]: {exc}") from None


def _api_server(value: Any, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+/?", value):
        raise ConfigError(
            f"{where}: api_server must be the API server's URL, like https://10.0.0.10:6443"
        )
    return value.rstrip("/")


def _file(table: Mapping[str, Any], key: str, base: Path) -> Path | None:
    """A path setting, relative to the config file's directory."""
    if not table.get(key):
        return None
    p = Path(str(table[key])).expanduser()
    return p if p.is_absolute() else base / p


_CLUSTER_KEYS = {"kubeconfig", "context", "in_cluster", "recording", "ssh", "nodes", "api_server"}


def parse_clusters(
    raw: Mapping[str, Any],
    base: Path,
    top: ClusterSettings,
    top_ssh: Mapping[str, Any],
    top_nodes: Mapping[str, Any] | None = None,
) -> tuple[ClusterSettings, ...]:
    """`[clusters.<name>]` tables. Each inherits the top-level kubeconfig, `[ssh]` and
    `[nodes]`; a table's own `[clusters.<name>.ssh]` (`.nodes`) overrides them setting by
    setting."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[clusters] must hold one table per cluster: [clusters.prod-eu] ...")
    out = []
    for name, table in raw.items():
        where = f"[clusters.{name}]"
        if not CLUSTER_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: a cluster name is lowercase letters, digits and dashes (DNS-1123 "
                "label), such as prod-eu"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table of settings")
        unknown = sorted(set(table) - _CLUSTER_KEYS)
        if unknown:
            raise ConfigError(
                f"{where} has no setting `{unknown[0]}`; known: {', '.join(sorted(_CLUSTER_KEYS))}"
            )
        ssh_raw = table.get("ssh", {})
        if not isinstance(ssh_raw, dict):
            raise ConfigError(f"{where}.ssh must be a table like [ssh]")
        try:
            ssh = parse_ssh({**top_ssh, **ssh_raw}, base)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        nodes_raw = table.get("nodes", {})
        if not isinstance(nodes_raw, dict):
            raise ConfigError(f"{where}.nodes must be a table like [nodes]")
        try:
            nodes = parse_nodes(
                {**(top_nodes or {}), **nodes_raw}, bool(table.get("in_cluster", False))
            )
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

        if table.get("recording") and (table.get("in_cluster") or table.get("kubeconfig")):
            raise ConfigError(
                f"{where}: a recording is read instead of a live API; give recording, or "
                "kubeconfig/context/in_cluster"
            )
        out.append(
            ClusterSettings(
                name=name,
                kubeconfig=_file(table, "kubeconfig", base) or top.kubeconfig,
                context=str(table["context"]) if table.get("context") else None,
                in_cluster=bool(table.get("in_cluster", False)),
                recording=_file(table, "recording", base),
                api_server=_api_server(table.get("api_server"), where) or top.api_server,
                ssh=ssh,
                nodes=nodes,
            )
        )
    return tuple(out)


def load_settings(
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    env = os.environ if env is None else env
    config = config or (Path(env["FLANNEL_BOT_CONFIG"]) if env.get("FLANNEL_BOT_CONFIG") else None)
    raw: dict[str, Any] = {}
    if config is not None:
        try:
            raw = tomllib.loads(config.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read config {config}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config {config} is not valid TOML: {exc}") from None
    base = config.parent if config else Path.cwd()

    def path(key: str, env_key: str) -> Path | None:
        """Flags and environment are relative to the working directory, the file to itself."""
        given = (overrides or {}).get(key) or env.get(env_key)
        if given:
            return Path(str(given)).expanduser()
        if raw.get(key):
            p = Path(str(raw[key])).expanduser()
            return p if p.is_absolute() else base / p
        return None

    known = {
        "db",
        "recording",
        "kubeconfig",
        "context",
        "in_cluster",
        "api_server",
        "clusters",
        "default_cluster",
        "templates",
        "check_interval",
        "policy",
        "ssh",
        "nodes",
        "slack",
        "audit",
        "leader",
        "terminal",
        "serve",
    }
    if "cluster" in raw:
        raise ConfigError(
            f"config {config}: `cluster` (a recorded cluster file) is now called `recording`; "
            "clusters by name are [clusters.<name>] tables"
        )
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"config {config} has no setting `{unknown[0]}`; known: {', '.join(sorted(known))}"
        )
    given = overrides or {}
    in_cluster_env = env.get("FLANNEL_BOT_IN_CLUSTER", "") in ("1", "true")
    in_cluster = bool(raw.get("in_cluster", False)) or in_cluster_env
    nodes_raw = raw.get("nodes", {})
    if not isinstance(nodes_raw, dict):
        raise ConfigError('[nodes] must be a table: [nodes] access = "pod"')
    top = ClusterSettings(
        kubeconfig=path("kubeconfig", "KUBECONFIG"),
        context=given.get("context") or raw.get("context"),
        in_cluster=in_cluster,
        recording=path("recording", "FLANNEL_BOT_RECORDING"),
        api_server=_api_server(raw.get("api_server"), "api_server"),
        ssh=parse_ssh(raw.get("ssh", {}), base),
        nodes=parse_nodes(nodes_raw, in_cluster),
    )
    # A cluster named on the command line (--recording, --dump, --context) is the only one
    explicit = any(given.get(k) for k in ("recording", "context")) or env.get(
        "FLANNEL_BOT_RECORDING"
    )
    if "clusters" in raw and not explicit:
        clusters = parse_clusters(raw["clusters"], base, top, raw.get("ssh", {}), nodes_raw)
        default = str(raw.get("default_cluster") or clusters[0].name)
    else:
        clusters, default = (top,), DEFAULT_CLUSTER
    if default not in {c.name for c in clusters}:
        raise ConfigError(
            f'default_cluster = "{default}" is not one of [clusters.*]: '
            f"{', '.join(c.name for c in clusters)}"
        )
    audit = parse_audit(raw.get("audit", {}))
    return Settings(
        db_path=path("db", "FLANNEL_BOT_DB") or _default_db(env),
        templates_dir=path("templates", "FLANNEL_BOT_TEMPLATES") or default_templates(),
        clusters=clusters,
        default_cluster=default,
        policy=parse_policy(raw.get("policy", {})),
        check_interval=float(raw.get("check_interval", 1.0)),
        default_user=env.get("FLANNEL_BOT_USER") or env.get("USER") or "unknown",
        slack=parse_slack(raw.get("slack", {}), env),
        retention_days=audit[0],
        max_report_events=audit[1],
        leader=parse_leader(raw.get("leader", {})),
        identity=env.get("POD_NAME") or f"{socket.gethostname()}:{os.getpid()}",
        terminal=parse_terminal(raw.get("terminal", {}), env),
        serve=parse_serve(raw.get("serve", {})),
    )
