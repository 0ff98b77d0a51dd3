#!/usr/bin/env bash
# The main job, no Slack token needed: `/flannel diagnose` names what is broken and why, then the
# fix is asked for, approved by someone else, applied and proven.
#  - as root on Linux: on the built-in lab, a real Flannel cluster in network namespaces where an
#    incident is injected for real (the VXLAN FDB entries of node w2 are lost);
#  - otherwise: on the bundled support bundle (examples/dump: flannel crash-looping on a node
#    without br_netfilter) and a recorded cluster for the approval flow.
set -euo pipefail
cd "$(dirname "$0")"
state=$(mktemp -d)
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
as() { local user=$1; shift; say "@$user: /flannel $*"; flannel-bot --user "$user" "$@" 2>&1 || true; }

if [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ] && [ "${DEMO_LAB:-1}" = 1 ]; then
  lab=(flannel-bot lab --name demo --root "$state/lab")
  trap '"${lab[@]}" down >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
  say "building the lab: 3 nodes, sshd, VXLAN, a Kubernetes API on 127.0.0.1"
  "${lab[@]}" up --nodes 3 --underlay 172.31.247.0/24
  export FLANNEL_BOT_CONFIG="$state/lab/demo/flannel-bot.toml" FLANNEL_BOT_DB="$state/bot.db"
  say "incident: node w2 loses its VXLAN forwarding entries"
  "${lab[@]}" break fdb-missing --node w2
  "${lab[@]}" status
  as alice diagnose
  as alice run flannel.restart-pods nodes=w2
  as alice approve 1
  as bob approve 1
  as alice diagnose
  "${lab[@]}" status
else
  trap 'rm -rf "$state"' EXIT
  export FLANNEL_BOT_CONFIG="$PWD/flannel-bot.toml" FLANNEL_BOT_DB="$state/flannel-bot.db"
  say "(not root: diagnosing the bundled support bundle examples/dump)"
  as alice diagnose --dump dump
  say "the approval flow, on the recorded example cluster"
  as alice plan flannel.restart-pods nodes=w2
  as alice run flannel.restart-pods nodes=w2
  as alice approve 1
  as bob approve 1
fi
as alice audit verify
