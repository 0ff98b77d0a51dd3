#!/usr/bin/env bash
# The main job, no Slack token needed: `/flannel diagnose` names what is broken and why, then the
# fix is asked for, approved by someone else, applied and proven.
#  - as root on Linux with the lab's packages (`make demo` installs them): on the built-in lab, a
#    real Flannel cluster in network namespaces where an incident is injected for real (the VXLAN
#    FDB entries of node w2 are lost);
#  - otherwise, or with DEMO_LAB=0: on the bundled support bundle (examples/dump: flannel
#    crash-looping on a node without br_netfilter) and a recorded cluster for the approval flow,
#    after one line saying why.
# Every step must do what it shows: a command that fails, or a refusal that does not come, stops
# the demo with "demo failed" and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")"
state=$(mktemp -d)
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
fail() {
  printf 'demo failed: %s\n' "$*" >&2
  exit 1
}
# a /flannel command that must succeed
as() {
  local user=$1 status=0
  shift
  say "@$user: /flannel $*"
  flannel-bot --user "$user" "$@" 2>&1 || status=$?
  [ "$status" = 0 ] || fail "/flannel $* (as $user) exited $status"
}
# a /flannel command that must be refused (exit 1) with the reason given
refused() {
  local user=$1 why=$2 status=0 out
  shift 2
  say "@$user: /flannel $*"
  out=$(flannel-bot --user "$user" "$@" 2>&1) || status=$?
  printf '%s\n' "$out"
  [ "$status" = 1 ] && [[ $out == *"$why"* ]] ||
    fail "/flannel $* (as $user) should be refused with \"$why\"; it exited $status"
}

# why the lab cannot run here, or nothing when it can
lab_refused() {
  [ "${DEMO_LAB:-1}" = 1 ] || { echo "DEMO_LAB=${DEMO_LAB}"; return; }
  [ "$(uname -s)" = Linux ] || { echo "not Linux: the lab needs network namespaces"; return; }
  [ "$(id -u)" = 0 ] || { echo "not root: the lab needs root (\`sudo make demo\` runs it)"; return; }
  local missing
  if ! missing=$(../.ci/system-packages --check lab); then
    echo "the lab needs $missing (\`make demo\` as root installs them)"
    return
  fi
  if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 0 ]; then
    echo "net.ipv4.ip_forward=1: the lab refuses to run where its traffic could leave this machine"
  fi
}

why_not=$(lab_refused)
if [ -z "$why_not" ]; then
  lab=(flannel-bot lab --name demo --root "$state/lab")
  trap '"${lab[@]}" down >/dev/null 2>&1 || true; rm -rf "$state"' EXIT
  say "building the lab: 3 nodes, sshd, VXLAN, a Kubernetes API on 127.0.0.1"
  "${lab[@]}" up --nodes 3 --underlay 172.31.247.0/24 || fail "lab up exited $?"
  export FLANNEL_BOT_CONFIG="$state/lab/demo/flannel-bot.toml" FLANNEL_BOT_DB="$state/bot.db"
  say "incident: node w2 loses its VXLAN forwarding entries"
  "${lab[@]}" break fdb-missing --node w2 || fail "lab break exited $?"
  "${lab[@]}" status || fail "lab status exited $?"
  as alice diagnose
  as alice run flannel.restart-pods nodes=w2
  refused alice "cannot approve it" approve 1
  as bob approve 1
  as alice diagnose
  "${lab[@]}" status || fail "lab status exited $?"
else
  trap 'rm -rf "$state"' EXIT
  export FLANNEL_BOT_CONFIG="$PWD/flannel-bot.toml" FLANNEL_BOT_DB="$state/flannel-bot.db"
  say "($why_not: running the bundled example instead of the lab)"
  say "diagnosing the bundled support bundle examples/dump"
  as alice diagnose --dump dump
  say "the approval flow, on the recorded example cluster"
  as alice plan flannel.restart-pods nodes=w2
  as alice run flannel.restart-pods nodes=w2
  refused alice "cannot approve it" approve 1
  as bob approve 1
fi
as alice audit verify
