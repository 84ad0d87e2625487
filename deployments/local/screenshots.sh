#!/usr/bin/env bash
# Looks at setflow the way an operator does: starts the local stack (up.sh)
# with a low blast-radius guard limit, sends a few events (some held, one
# parked-free run, one user-less), and saves headless-Chromium screenshots of
# the Temporal UI's workflow list, a search, and a held user's stream into
# ${SCREENSHOTS:-.setflow-dev/screenshots}. Needs chromium (apt install chromium).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
OUT="${SCREENSHOTS:-$ROOT/.setflow-dev/screenshots}"
mkdir -p "$OUT"
command -v chromium >/dev/null || apt_install chromium

started=""
if ! (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
  log "starting the local stack (guard limit 4 destructive steps a minute)"
  SETFLOW_GUARD_LIMIT=4 ./deployments/local/up.sh >"$ROOT/.setflow-dev/screenshots-up.log" 2>&1 &
  started=$!
  trap '[ -n "$started" ] && kill "$started" 2>/dev/null; wait 2>/dev/null || true' EXIT
  for _ in $(seq 180); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 1; done
fi
setflow() { "$BIN/setflow" "$@"; }
log "sending events"
for u in 1001 1002 1003 1004; do
  setflow send account-disabled --user "$u" --field reason=hijacking >/dev/null
done
setflow send user-linked --user 2001 >/dev/null
setflow send --webhook talk-share --field campaign=spring >/dev/null
sleep 5

shot() { # name url
  # --timeout, not a virtual time budget: the UI polls a running workflow,
  # so the page never goes idle.
  timeout 180 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1600,1000 \
    --timeout=20000 --screenshot="$OUT/$1.png" "$2" >/dev/null 2>&1 || true
  log "saved $OUT/$1.png"
}
ui="http://localhost:8233/namespaces/default/workflows"
shot list "$ui"
shot held "$ui?query=$(printf '%s' 'SetflowOutcome = "held"' | jq -sRr @uri 2>/dev/null || echo 'SetflowOutcome%20%3D%20%22held%22')"
# The first held stream: its id holds a slash, encoded in the UI's path.
held="$(temporal workflow list --address 127.0.0.1:7233 --query 'SetflowOutcome = "held"' --limit 1 -o json | tr -d '\n ')"
held_id="$(printf '%s' "$held" | sed -n 's/.*"workflowId":"\([^"]*\)".*/\1/p')"
held_run="$(printf '%s' "$held" | sed -n 's/.*"runId":"\([^"]*\)".*/\1/p')"
if [ -n "$held_id" ] && [ -n "$held_run" ]; then
  shot held-stream "$ui/${held_id//\//%2F}/$held_run/history"
else
  die "no held stream found"
fi
setflow holds list
log "screenshots in $OUT"
