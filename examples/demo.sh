#!/usr/bin/env bash
# The main job on the bundled example cluster: an SRE diagnoses, asks for the fix, a colleague
# approves, the fix is applied and proven, the audit chain verifies. No Slack token needed.
set -euo pipefail
cd "$(dirname "$0")"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
export FLANNEL_BOT_CONFIG="$PWD/flannel-bot.toml" FLANNEL_BOT_DB="$state/flannel-bot.db"

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
as() { local user=$1; shift; say "@$user: /flannel $*"; flannel-bot --user "$user" "$@" 2>&1 || true; }

as alice diagnose
as alice plan flannel.restart-pods nodes=w2
as alice run flannel.restart-pods nodes=w2
as alice approve 1
as bob approve 1
as alice status
as alice audit verify
say "Try it yourself: flannel-bot --config examples/flannel-bot.toml shell --user alice"
