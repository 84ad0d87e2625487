#!/usr/bin/env bash
# Runs all of setflow locally: PostgreSQL, a Temporal dev server with its web UI,
# Mailpit, and `setflow dev` (migrations, ingress, relay, worker). Ctrl-C stops
# everything this script started. Send test events from another terminal with
#   go run ./cmd/setflow send account-disabled --user 1234 --field reason=hijacking
# With --shop it also runs the example shop (examples/shop) on
# http://localhost:8090, with setflow configured for it by
# examples/shop/setflow.env.
set -euo pipefail
SHOP=0
[ "${1:-}" = "--shop" ] && SHOP=1
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_postgres
ensure_redis
ensure_tools
ensure_database setflow

STATE="$ROOT/.setflow-dev"
mkdir -p "$STATE"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

# Temporal payloads are encrypted locally too (a development key kept in
# .setflow-dev); the UI decrypts them through setflow dev's /codec endpoint.
# `setflow dev` needs no other key (it uses a public development audit key);
# the separate ingress, relay, worker and codec-server commands refuse to start
# without SETFLOW_AUDIT_KEY, SETFLOW_CODEC_KEYS and SETFLOW_CODEC_AUTH_TOKEN
# unless given -insecure-dev-keys.
if [ ! -s "$STATE/codec-keys" ]; then
  printf 'dev1:%s\n' "$(head -c 32 /dev/urandom | base64 | tr -d '\n')" >"$STATE/codec-keys"
  chmod 600 "$STATE/codec-keys"
fi
export SETFLOW_CODEC_KEYS="${SETFLOW_CODEC_KEYS:-$(cat "$STATE/codec-keys")}"

if ! (exec 3<>/dev/tcp/127.0.0.1/7233) 2>/dev/null; then
  log "starting Temporal dev server (gRPC 127.0.0.1:7233, UI http://localhost:8233)"
  temporal server start-dev --ip 127.0.0.1 --port 7233 --ui-port 8233 \
    --db-filename "$STATE/temporal.db" --log-level warn \
    --ui-codec-endpoint http://localhost:8080/codec >"$STATE/temporal.log" 2>&1 &
  pids+=($!)
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/1025) 2>/dev/null; then
  log "starting Mailpit (SMTP 127.0.0.1:1025, web http://localhost:8025)"
  mailpit --smtp 127.0.0.1:1025 --listen 127.0.0.1:8025 --database "$STATE/mailpit.db" \
    >"$STATE/mailpit.log" 2>&1 &
  pids+=($!)
fi

export SETFLOW_DATABASE_URL="${SETFLOW_DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:5432/setflow?sslmode=disable}"
export TEMPORAL_ADDRESS="${TEMPORAL_ADDRESS:-127.0.0.1:7233}"
# Security notices go to Mailpit (http://localhost:8025).
export SETFLOW_SMTP_HOST="${SETFLOW_SMTP_HOST:-127.0.0.1}" SETFLOW_SMTP_PORT="${SETFLOW_SMTP_PORT:-1025}"
export SETFLOW_SMTP_TLS="${SETFLOW_SMTP_TLS:-none}" SETFLOW_MAIL_FROM="${SETFLOW_MAIL_FROM:-setflow dev <security@setflow.local>}"
log "building setflow"
go build -o "$BIN/setflow" ./cmd/setflow
if [ "$SHOP" = 1 ]; then
  # Configuration only: setflow is pointed at the shop's tables.
  set -a; source "$ROOT/examples/shop/setflow.env"; set +a
  go build -o "$BIN/shop" ./examples/shop
  # The shop creates its schema before setflow's worker looks at it.
  SHOP_DATABASE_URL="$SETFLOW_DATABASE_URL" SHOP_DEV_KEY="$STATE/signing-key.pem" "$BIN/shop" &
  pids+=($!)
  log "example shop on http://localhost:8090 (log in with Kakao user 1234, then send account-disabled)"
fi
log "starting setflow dev (Ctrl-C to stop everything)"
"$BIN/setflow" dev &
pids+=($!)
wait -n "${pids[@]}"
