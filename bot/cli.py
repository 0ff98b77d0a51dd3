"""`flannel-bot`: the terminal adapter.

`flannel-bot shell --user alice` is a local `/flannel` prompt that behaves as the Slack bot does;
`flannel-bot <command> ...` runs one `/flannel` command for scripts and tests (`--json` prints the
structured reply). Both go through the same service as Slack. Approvals and denials here count as
the OS login running flannel-bot, not as `--user` (bot.terminal says why).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from flannel_bot import __version__
from flannel_bot.diagnosis.collector import few_collections
from flannel_bot.errors import BotError, IdentityRefused, UserError
from flannel_bot.process.output import redacted_output
from flannel_bot.service import commands as c
from flannel_bot.service.commands import SUMMARY, USAGE, split_words

# Start-up time: `--help` needs only the text below; the rest is imported by the commands that
# use it (the templates, the audit log, the runbooks; the Kubernetes and SSH clients only by
# commands that reach a cluster). bench/startup.py measures it.
if TYPE_CHECKING:
    from flannel_bot.ports.store import Event
    from flannel_bot.process.leader import LeaderElector
    from flannel_bot.service.handler import Reply
    from flannel_bot.settings import Settings
    from flannel_bot.terminal import Terminal
    from flannel_bot.wiring import App, ClusterUse

GLOBAL_HELP = """\
usage: flannel-bot [--user NAME] [--json] [--config F] [--db F] [--recording F] COMMAND ...

  doctor                     check config, audit log, cluster access, RBAC, SSH to every node, Slack
  serve                      the Slack app: Socket Mode with SLACK_APP_TOKEN + SLACK_BOT_TOKEN, or
                             [slack] mode = "http" with SLACK_SIGNING_SECRET (POST /slack/events)
  shell                      a local /flannel prompt (as Slack would behave), progress printed live
  help | diagnose | runbooks | plan | run | approve | deny | cancel | status | audit
                             one /flannel command: `flannel-bot run flannel.restart-pods nodes=w2`
                             (`--cluster NAME` picks one of the [clusters.*] in the config)
  diagnose --dump DIR        diagnose a support bundle (kubectl cluster-info dump layout)
  collect DIR [node...]      write a support bundle from a live cluster (API + node probes)
  audit verify               check the audit chain, opening the file read-only (nothing is
                             recorded); exits 1 and names the first bad event
  audit report [...]         the incident report: --since 24h, run=N, node=w2, format=html ...
  audit prune                drop events older than [audit] retention_days (chain stays checked)
  runbooks lock              record new runbook versions in runbooks/runbooks.lock (developers)
  lab up|down|status|break   a Flannel lab cluster on this machine (Linux, root): `lab --help`
  version | --version        print flannel-bot's version (needs no config or cluster)
  node --commands JSON ...   inside a node-exec pod: run argv lists in the host's namespaces

  --user NAME     who you are for policy and the audit log (default: $USER); approve and deny
                  count as your OS login instead (mapped by [terminal] users)
  --json          print the reply as JSON
  --config FILE   TOML settings (also FLANNEL_BOT_CONFIG)
  --db FILE       the SQLite audit/state file (also FLANNEL_BOT_DB)
  --recording F   work on a recorded cluster: a JSON snapshot or a support bundle directory
                  (also FLANNEL_BOT_RECORDING)
  --kubeconfig F  a live cluster (also KUBECONFIG; default ~/.kube/config), --context NAME
"""
_VALUED = {"--user", "--config", "--db", "--recording", "--kubeconfig", "--context"}


@dataclass
class Invocation:
    words: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)
    as_json: bool = False


def split_argv(argv: Sequence[str]) -> Invocation:
    """Global options may appear anywhere before `--`; everything else is command words."""
    inv = Invocation()
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--":
            inv.words.extend(args)
            break
        name, eq, value = arg.partition("=")
        if name in _VALUED:
            if not eq:
                if not args:
                    raise UserError(f"{name} needs a value")
                value = args.pop(0)
            inv.options[name[2:]] = value
        elif arg == "--json":
            inv.as_json = True
        elif arg in ("-h", "--help") and not inv.words:
            inv.words = ["--help"]
            return inv
        else:
            inv.words.append(arg)
    return inv


def _emit(reply: Reply, app: App, as_json: bool, out: TextIO) -> None:
    from flannel_bot.render import Renderer

    renderer = Renderer(app.settings.templates_dir)
    if as_json:
        data = {k: v for k, v in reply.data.items() if k != "export"}  # the events stream below
        out.write(json.dumps({"ok": reply.ok, "kind": reply.kind, **data}, indent=2, default=str))
        out.write("\n")
    elif "export" in reply.data:  # a JSON Lines or CSV export: written as it is read
        renderer.write_export(reply.data["export"], reply.data["format"], out.write)
        out.write("\n")
    else:
        out.write(renderer.reply(reply) + "\n")


def _progress_printer(app: App, out: TextIO) -> Callable[[Event], None]:
    from flannel_bot.render import Renderer

    renderer = Renderer(app.settings.templates_dir)

    def show(event: Event) -> None:
        line = renderer.event(event)
        if line:
            out.write(line + "\n")
            out.flush()

    return show


def _take_option(words: list[str], flag: str, what: str = "a directory") -> str:
    at = words.index(flag)
    if at + 1 >= len(words):
        raise UserError(f"{flag} needs {what}")
    value = words[at + 1]
    del words[at : at + 2]
    return value


def collect_bundle(settings: Settings, args: Sequence[str]) -> int:
    """`flannel-bot collect DIR [node...] [--cluster NAME]`: a support bundle from a live
    cluster."""
    args = list(args)
    name = _take_option(args, "--cluster", "a cluster name") if "--cluster" in args else None
    if not args:
        raise UserError("usage: flannel-bot collect DIR [node...] [--cluster NAME]")
    target, only = Path(args[0]), list(args[1:])
    cluster = settings.cluster(name)
    if cluster.recording is not None:
        raise UserError(
            f"collect reads a live cluster, and {cluster.name} is a recording: drop "
            "--recording (or FLANNEL_BOT_RECORDING), or name a live cluster with --cluster"
        )
    from flannel_bot.executors.bundle import write_bundle
    from flannel_bot.executors.kube import KubeClient
    from flannel_bot.ports.clock import SystemClock
    from flannel_bot.wiring import build_executors, write_peer_facts

    kube, nodes = build_executors(cluster, SystemClock())
    if not isinstance(kube, KubeClient):
        raise UserError("collect needs a live cluster (kubeconfig or in-cluster)")
    path = write_bundle(kube, nodes, target, only=only)
    reduced = write_peer_facts(path) if nodes is not None else 0
    print(f"wrote a support bundle to {path}; read it with: flannel-bot diagnose --dump {path}")
    if reduced:
        print(f"with the VXLAN peer tables of {reduced} node(s) reduced (peer-tables.json)")
    return 0


def lock_runbooks() -> int:
    from flannel_bot.runs.registry import Registry, lock_path, read_lock, write_lock

    path = lock_path()
    lock = Registry.from_package().updated_lock(read_lock(path))
    write_lock(path, lock)
    print(f"{path}: {len(lock)} runbook versions locked")
    return 0


def shell(app: App, terminal: Terminal, stdin: TextIO, out: TextIO) -> int:
    """An interactive `/flannel` prompt.

    Progress of this process's runs is printed as each event commits; a watcher thread also follows
    the database, so an approval given elsewhere (another terminal, Slack) and the steps it runs
    show up here too, as they would in a Slack thread.
    """
    from flannel_bot.render import Renderer

    user = terminal.as_claimed().user
    renderer = Renderer(app.settings.templates_dir)
    seen = {"last": app.store.last_event_id()}
    lock = threading.Lock()
    stop = threading.Event()

    def show(event: Event) -> None:
        with lock:
            if event.id <= seen["last"]:
                return
            seen["last"] = event.id
            line = renderer.event(event) if event.run_id is not None else ""
            if line:
                out.write(line + "\n")
                out.flush()

    def follow() -> None:
        while not stop.wait(0.3):
            for event in app.store.events(after=seen["last"]):
                show(event)

    app.store.subscribe(show)
    watcher = threading.Thread(target=follow, daemon=True)
    watcher.start()
    out.write(f"flannel-bot shell as @{user}. Type `help`; Ctrl-D quits.\n")
    try:
        while True:
            out.write("/flannel> ")
            out.flush()
            line = stdin.readline()
            if not line or line.strip() in ("quit", "exit"):
                break
            if line.strip():
                reply = handle(app, terminal, line)
                with lock:
                    out.write(renderer.reply(reply) + "\n")
    finally:
        stop.set()
        watcher.join(timeout=2)
    out.write("\n")
    return 0


def handle(app: App, terminal: Terminal, command: str | list[str]) -> Reply:
    """One command from the terminal, as the person the terminal can vouch for: an approval or
    denial in a name it cannot check is refused, and that refusal is audited too."""
    try:
        words = split_words(command) if isinstance(command, str) else command
    except UserError:
        words = []  # the service says what is wrong with it
    try:
        who = terminal.requester(words)
    except IdentityRefused as exc:
        return app.service.refuse(command, terminal.as_claimed(), exc)
    return app.service.handle(command, who)


def kill_after(spec: str) -> Callable[[Event], None]:
    """Fault injection for the reliability suite: `kind:n` SIGKILLs this process right after
    the n-th committed event of that kind, as a power cut would."""
    kind, _, count = spec.partition(":")
    seen = {"n": 0}

    def listener(event: Event) -> None:
        if event.kind == kind:
            seen["n"] += 1
            if seen["n"] == int(count or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    return listener


def leader_elector(app: App, settings: Settings) -> LeaderElector | None:
    """With `[leader] lease`, this replica serves only while it holds that Lease."""
    leader = settings.leader
    if not leader.lease:
        return None
    from flannel_bot.executors.kube import KubeClient
    from flannel_bot.process.leader import LeaderElector
    from flannel_bot.settings import ConfigError

    if not isinstance(app.engine.kube, KubeClient):
        raise ConfigError("[leader] needs a live cluster (a kubeconfig or in_cluster)")
    namespace, name = leader.lease.split("/")
    return LeaderElector(
        app.engine.kube,
        namespace,
        name,
        settings.identity,
        app.engine.clock,
        duration=leader.duration_seconds,
        renew_deadline=leader.renew_deadline_seconds,
        retry=leader.retry_seconds,
    )


def prune(app: App, days: int) -> int:
    """Drop audit events older than the retention; the chain stays verifiable."""
    if days <= 0:
        print("flannel-bot: [audit] retention_days is 0 (keep forever): nothing to prune")
        return 0
    result = app.store.prune(app.engine.clock.now() - timedelta(days=days))
    if not result["events"]:
        print(f"nothing older than {days} days")
        return 0
    print(
        f"pruned {result['events']} events through event {result['pruned_through']} (older than "
        f"{result['before']}); checkpoint hash {result['last_hash']}"
    )
    print(app.store.verify().describe())
    return 0


def verify_audit_log(settings: Settings, as_json: bool) -> int:
    """`audit verify`: the chain checked on the file opened read-only, recording nothing, so a
    copy kept as evidence (chmod 0444, a read-only mount) is checked as it is; exit 1 if broken."""
    from flannel_bot.wiring import open_audit_log_read_only

    report = open_audit_log_read_only(settings).verify()
    if as_json:
        data = {"ok": report.ok, "kind": "audit_verify", **dataclasses.asdict(report)}
        print(json.dumps({**data, "summary": report.describe()}, indent=2))
    else:
        print(report.describe())
    return 0 if report.ok else 1


def _help_entries() -> dict[str, tuple[str, str]]:
    """GLOBAL_HELP's command entries: their first words -> (usage, what it does)."""
    entries: dict[str, tuple[str, str]] = {}
    head = ""
    for line in GLOBAL_HELP.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and not line.startswith("  -"):
            usage, _, what = line.strip().partition("   ")  # an entry, not its continuation
            words = usage.split()  # `audit prune`, `diagnose --dump DIR`, `collect DIR`
            sub = len(words) > 1 and (
                (words[1].isalpha() and words[1].islower()) or words[1] == "--dump"
            )
            head = " ".join(words[:2] if sub else words[:1])
            entries[head] = (usage, what.strip())
        elif line.startswith("   ") and head:
            usage, what = entries[head]
            entries[head] = (usage, f"{what} {line.strip()}".strip())
        else:
            head = ""
    return entries


def command_help(words: Sequence[str]) -> int:
    """`flannel-bot COMMAND [SUBCOMMAND] --help`: the command's usage and what it does, from
    the same tables the /flannel parser and the global help use."""
    entries = _help_entries()
    verb = words[0]
    sub = f"{verb} {words[1]}" if len(words) > 1 else ""
    if sub in entries:
        usage, what = entries[sub]
    elif verb in USAGE:
        usage, what = USAGE[verb], SUMMARY[verb]
    elif verb in entries:
        usage, what = entries[verb]
    else:
        print(f"error: unknown command `{verb}`; `flannel-bot --help` lists them", file=sys.stderr)
        return 2
    print(f"usage: flannel-bot {usage}\n\n{what}")
    return 0


# what these do reads only the runbooks and the audit log: they work with no cluster configured
_NO_CLUSTER = (c.Help, c.ListRunbooks, c.Status, c.Audit, c.AuditReport)


def clusters_built(words: Sequence[str]) -> ClusterUse:
    """When a command's cluster is built: before it runs if it needs one (so a missing one is
    said before anything is recorded); never if it reads only the runbooks and the audit log,
    or is malformed (answered, and audited, without one); `doctor` when it checks it, to name
    what is missing as one of its findings."""
    if words[0] == "doctor":
        return "when asked"
    if words[0] in ("serve", "shell"):
        return "at start"
    try:
        command = c.parse(list(words))
    except UserError:
        return "none"
    return "none" if isinstance(command, _NO_CLUSTER) else "at start"


@redacted_output  # every reply, progress line, error and log record, secrets redacted
def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["node"]:  # inside a node-exec pod: its own flags, no config, no cluster
        from flannel_bot.executors.nodeside import main as node_main

        return node_main(raw[1:], os.environ if env is None else env)
    try:
        inv = split_argv(raw)
        if not inv.words or inv.words == ["--help"]:
            print(GLOBAL_HELP, end="")
            return 0
        if inv.words in (["--version"], ["version"]):
            print(f"flannel-bot {__version__}")
            return 0
        if inv.words == ["runbooks", "lock"]:
            return lock_runbooks()
        if inv.words[0] == "lab":
            from flannel_bot.lab.command import main as lab_main

            return lab_main(inv.words[1:])
        if {"-h", "--help"} & set(inv.words[1:]):
            words = [w for w in inv.words if w not in ("-h", "--help")]
            return command_help(words)  # needs no config, cluster or audit log
        if inv.words[0] == "diagnose" and "--dump" in inv.words:
            inv.options["recording"] = _take_option(inv.words, "--dump")
        from flannel_bot.settings import load_settings
        from flannel_bot.terminal import Terminal, os_login
        from flannel_bot.wiring import build_app

        settings = load_settings(
            Path(inv.options["config"]) if "config" in inv.options else None,
            env,
            overrides={
                k: inv.options[k]
                for k in ("db", "recording", "kubeconfig", "context")
                if k in inv.options
            },
        )
        if inv.words[0] == "collect":
            return collect_bundle(settings, inv.words[1:])
        if inv.words == ["audit", "verify"]:  # before build_app: no cluster, nothing written
            return verify_audit_log(settings, inv.as_json)
        app = build_app(settings, clusters_built=clusters_built(inv.words))
        crash_after = os.environ.get("FLANNEL_BOT_KILL_AFTER")
        if crash_after:
            app.store.subscribe(kill_after(crash_after))
        if inv.words == ["doctor"]:
            from flannel_bot.doctor import doctor

            return doctor(app, settings)
        if inv.words == ["audit", "prune"]:
            return prune(app, settings.retention_days)
        terminal = Terminal(
            "shell" if inv.words[0] == "shell" else "cli",
            os_login(),
            claimed=inv.options.get("user") or settings.terminal.env_user,
            default=settings.default_user,
            approver=settings.terminal.approver,
            users=settings.terminal.users,
        )
        if inv.words == ["serve"]:
            from flannel_bot.process.logs import configure as configure_logs
            from flannel_bot.slack.serve import serve

            configure_logs(os.environ.get("FLANNEL_BOT_LOG_FORMAT", "text"))
            return serve(
                app,
                settings.slack,
                retention_days=settings.retention_days,
                elector=leader_elector(app, settings),
            )
        if inv.words[0] == "shell":
            app.engine.recover()
            return shell(app, terminal, sys.stdin, sys.stdout)
        if not inv.as_json:
            app.store.subscribe(_progress_printer(app, sys.stderr))
        with few_collections():
            reply = handle(app, terminal, inv.words)
            _emit(reply, app, inv.as_json, sys.stdout)
        if argv is None:  # the process ends with this command (tests pass `argv`)
            # the app's objects are in cycles with its engine: the collection at exit would
            # walk and free them one by one (0.3 s after a diagnosis of 150,000 pods); frozen,
            # they go with the process, as mypy's main ends without freeing. atexit handlers
            # and weakref.finalize callbacks still run; the audit log commits each event
            gc.freeze()
        if reply.kind == "error" and reply.data.get("usage"):
            return 2
        return 0 if reply.ok else 1
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BotError as exc:
        print(f"flannel-bot: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
