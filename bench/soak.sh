#!/usr/bin/env bash
# Chaos soak: two gateway replicas on one Redis, the npm oidc-provider with
# rotating refresh tokens and 10 s access tokens, simulated browsers logging
# in, calling the API, refreshing and logging out; meanwhile Redis restarts,
# a replica is killed (SIGKILL) and restarted, the same replica is stopped
# gracefully (SIGTERM: it drains) and restarted, the IdP answers 5xx and then
# becomes unreachable. Prints the tables of docs/resilience.md.
#
#   bench/soak.sh                         # 10 minutes, 100 users (debug build)
#   DURATION=90 FAULT_SECS=10 bench/soak.sh
#   PROFILE=release USERS=200 SOAK_OUT=/tmp/soak.md bench/soak.sh
#
# Env: DURATION (s, 600), USERS (100), FAULT_SECS (IdP fault windows, 30),
# DOWN_SECS (Redis / replica down time, 5), ACCESS_TTL (s, 10), REPLICAS (2),
# PROFILE (debug|release), SOAK_OUT (report file), KEEP_WORK=1 (keep logs).
# Needs redis-server (Debian `redis-server`), Node.js >= 20.19 and
# `npm ci --prefix tests/oidc-provider`. Loopback only. Not a test: not in CI.
set -euo pipefail

cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-debug}
command -v redis-server >/dev/null || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 1; }
command -v node >/dev/null || { echo "node not found (Node.js >= 20.19)" >&2; exit 1; }
[ -f tests/oidc-provider/node_modules/oidc-provider/package.json ] ||
    npm ci --prefix tests/oidc-provider

if [ "$PROFILE" = release ]; then
    cargo build --release -p portcullis-cli
else
    cargo build -p portcullis-cli
fi
BIN=${CARGO_TARGET_DIR:-target}/$PROFILE/portcullis

# The driver kills what it started on exit; the trap covers the driver itself.
DRIVER=
cleanup() { [ -n "$DRIVER" ] && kill "$DRIVER" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
BIN=$BIN node bench/soak/soak.mjs &
DRIVER=$!
wait "$DRIVER"
