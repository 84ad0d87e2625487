# Shared helpers for the local scripts: make sure PostgreSQL, Redis and the
# pinned tools are there, installing or starting what is missing.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="$ROOT/.bin"
TEMPORAL_CLI_VERSION="v1.5.1"   # Temporal server 1.29.1 with the web UI
MAILPIT_VERSION="v1.27.11"
# The production-shaped Temporal server (SQL persistence) and its schema tool
# for the smoke test; the version the CLI's dev server embeds.
TEMPORAL_SERVER_VERSION="v1.29.1"
# The linter test.sh runs with the repository's .golangci.yml.
GOLANGCI_LINT_VERSION="v2.15.0"
export PATH="$BIN:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else die "need root for: $*"; fi
}

apt_install() {
  command -v apt-get >/dev/null || die "$* missing and apt-get not found: install $* yourself (see README)"
  log "installing $* with apt"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}

need_go() {
  command -v go >/dev/null || die "Go 1.26 or newer is required (https://go.dev/doc/install)"
}

# PostgreSQL on 127.0.0.1:5432. A cluster we install ourselves gets the password
# "postgres" so that the same URL works with trust and password authentication.
ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
    fresh=1
  fi
  log "starting PostgreSQL"
  local v; v="$(ls /etc/postgresql | sort -V | tail -1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || as_root pg_ctlcluster "$v" main start
  for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not come up on 127.0.0.1:5432"
  if [ "${fresh:-}" = 1 ]; then
    as_root su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'postgres'\""
  fi
}

# Redis on 127.0.0.1:6379 (a session back end; nothing is kept on disk).
ensure_redis() {
  if command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  log "starting Redis"
  mkdir -p /tmp/setflow-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/setflow-redis --logfile /tmp/setflow-redis/redis.log
  for _ in $(seq 20); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && return; sleep 0.5; done
  die "Redis did not come up on 127.0.0.1:6379"
}

# The Temporal CLI (dev server + UI), Mailpit and golangci-lint, built from source at pinned
# versions into .bin: prebuilt downloads are not assumed to be reachable.
# built_at BINARY MODULE VERSION: was BINARY built from MODULE at VERSION?
built_at() {
  [ -x "$1" ] && go version -m "$1" 2>/dev/null | grep -Eq "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3[[:space:]]"
}

# ensure_tools [--with-temporal-server]: the CLI, Mailpit and golangci-lint, built now; with
# the flag also the Temporal server and temporal-sql-tool, built in the
# background (several minutes on a busy machine) while the caller goes on:
# call wait_temporal_server before anything needs them.
ensure_tools() {
  need_go
  mkdir -p "$BIN"
  if [ "${1:-}" = --with-temporal-server ]; then
    start_temporal_server_build
  fi
  if ! built_at "$BIN/temporal" github.com/temporalio/cli "$TEMPORAL_CLI_VERSION"; then
    log "building Temporal CLI $TEMPORAL_CLI_VERSION from source (a few minutes the first time)"
    GOBIN="$BIN" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
  fi
  if ! built_at "$BIN/mailpit" github.com/axllent/mailpit "$MAILPIT_VERSION"; then
    log "building Mailpit $MAILPIT_VERSION from source"
    GOBIN="$BIN" go install "github.com/axllent/mailpit@$MAILPIT_VERSION"
  fi
  if ! built_at "$BIN/golangci-lint" github.com/golangci/golangci-lint/v2 "$GOLANGCI_LINT_VERSION"; then
    log "building golangci-lint $GOLANGCI_LINT_VERSION from source"
    GOBIN="$BIN" go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
  fi
}

temporal_server_built() {
  built_at "$BIN/temporal-server" go.temporal.io/server "$TEMPORAL_SERVER_VERSION" &&
    built_at "$BIN/temporal-sql-tool" go.temporal.io/server "$TEMPORAL_SERVER_VERSION"
}

# build_temporal_server builds both binaries into a private directory, then
# moves them into place, so that an interrupted build never leaves a
# half-written binary that looks cached.
build_temporal_server() {
  local tmp
  tmp="$(mktemp -d "$BIN/.temporal-server-build.XXXXXX")"
  GOBIN="$tmp" go install "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" \
    "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION" || { rm -rf "$tmp"; return 1; }
  mv -f "$tmp/server" "$BIN/temporal-server"
  mv -f "$tmp/sql" "$BIN/temporal-sql-tool"
  rm -rf "$tmp"
}

TEMPORAL_SERVER_BUILD_PID=""
TEMPORAL_SERVER_BUILD_LOG="$BIN/temporal-server-build.log"

start_temporal_server_build() {
  if temporal_server_built; then return; fi
  log "building Temporal server $TEMPORAL_SERVER_VERSION and temporal-sql-tool from source in the background (log: $TEMPORAL_SERVER_BUILD_LOG)"
  mkdir -p "$BIN"
  build_temporal_server >"$TEMPORAL_SERVER_BUILD_LOG" 2>&1 &
  TEMPORAL_SERVER_BUILD_PID=$!
}

# wait_temporal_server waits for a build start_temporal_server_build began.
wait_temporal_server() {
  if [ -n "$TEMPORAL_SERVER_BUILD_PID" ]; then
    log "waiting for the Temporal server build"
    if ! wait "$TEMPORAL_SERVER_BUILD_PID"; then
      tail -50 "$TEMPORAL_SERVER_BUILD_LOG" >&2
      die "building the Temporal server $TEMPORAL_SERVER_VERSION failed"
    fi
    TEMPORAL_SERVER_BUILD_PID=""
  fi
  temporal_server_built || die "Temporal server $TEMPORAL_SERVER_VERSION missing from $BIN"
}

ensure_database() { # name
  local url="postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"
  if ! psql "$url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$1'" | grep -q 1; then
    log "creating database $1"
    psql "$url" -qc "CREATE DATABASE $1"
  fi
}

# Debian's chromium for the example shop's browser test (examples/shop),
# driven headless through chromedp.
ensure_chromium() {
  if command -v chromium >/dev/null || [ -x "${SETFLOW_CHROMIUM:-/nonexistent}" ]; then return; fi
  apt_install chromium
}
