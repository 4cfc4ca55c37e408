#!/usr/bin/env bash
# Scale figures of portcullis, beside a peer where one applies. Not CI.
#
#   bench/scale.sh                       # everything, defaults below
#   SESSIONS=100000 STARTS=10 LOGINS=3000 IDLE=10000 bench/scale.sh
#   SKIP_REMOTE=1 bench/scale.sh         # no Redis row
#   ONLY=sessions bench/scale.sh         # the sessions part alone
#   BENCH_SHAPE=opaque BENCH_ID_TOKEN=0 ONLY=sessions bench/scale.sh
#                                        # oidc-provider's token sizes, no ID token kept
#
# 1. Sessions: RSS of the gateway (memory store) holding SESSIONS sessions
#    shaped like a real login's, minus one holding a single session; again
#    once each session has served one proxied request (busy: what a request
#    leaves in a session); beside it Redis's used_memory for the same
#    sessions sealed in the Redis store.
# 2. Cold start: exec of `portcullis serve` to /readyz 200 against a local IdP
#    (bench_idp), memory and SQLite store, median of STARTS; readiness needs
#    discovery and JWKS, timed alone too; nginx from exec to its first 200.
# 3. Logins: the authorization code flow end to end (bench/scale_client.py,
#    LOGIN_CLIENTS processes) against the development IdP in its own
#    process: logins/s, CPU per login of gateway, IdP and clients.
# 4. Idle keep-alive connections: IDLE connections, one proxied request
#    each, left open; RSS growth of the gateway (connection caps and
#    keep-alive limits raised, measured 3 s after the last answer) and
#    of nginx (master and workers).
# Writes the Markdown table to stdout and OUT/scale.md (default target/bench).
set -euo pipefail

cd "$(dirname "$0")/.."
SESSIONS=${SESSIONS:-100000}
STARTS=${STARTS:-10}
LOGINS=${LOGINS:-3000}
LOGIN_CLIENTS=${LOGIN_CLIENTS:-4}
IDLE=${IDLE:-10000}
OUT=${OUT:-target/bench}
LOAD_START=$(uptime)
WORK=$(mktemp -d)
PIDS=()
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
KEY_PREFIX="pcscale:$$:"
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -z "${SKIP_REMOTE:-}" ]; then
        redis-cli -u "$REDIS_URL" --scan --pattern "$KEY_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "${ONLY:-}" = sessions ] || command -v nginx >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq nginx >/dev/null; }
if [ "${ONLY:-}" = sessions ]; then
    cargo build --release -p portcullis --example bench_upstream --example bench_gateway
else
    cargo build --release -p portcullis --example bench_upstream --example bench_gateway \
        --example bench_idp -p portcullis-cli --bin portcullis
fi
BIN=${CARGO_TARGET_DIR:-target}/release
# 10 000 connections need as many descriptors in the gateway, nginx and the client.
ulimit -Hn 65536 2>/dev/null || true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port [seconds]
    for _ in $(seq 1 $((${2:-10} * 10))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}
stop() { # pid: kill and wait until it is gone
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    kill -9 "$1" 2>/dev/null || true
}
client() { python3 bench/scale_client.py "$@"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p"; } # key -> value from a `key=value ...` line
median_range() { sort -g | awk '{v[NR] = $1} END {printf "%s (%s–%s)", v[int((NR + 1) / 2)], v[1], v[NR]}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

UP=$(free_port)
"$BIN/examples/bench_upstream" "127.0.0.1:$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"

start_gateway() { # store [env...] -> GW_PID GW_PORT GW_COOKIE
    local store=$1
    shift
    GW_PORT=$(free_port)
    env "$@" "$BIN/examples/bench_gateway" "127.0.0.1:$GW_PORT" "http://127.0.0.1:$UP" "$store" \
        >"$WORK/gw-$GW_PORT.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_port "$GW_PORT" 600
    GW_COOKIE=$(sed -n 's/^COOKIE=//p' "$WORK/gw-$GW_PORT.log" | head -1)
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); }
report() { # the table, to stdout and OUT/scale.md
    mkdir -p "$OUT"
    {
        CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
        echo "bench/scale.sh, $(date -u +%Y-%m-%dT%H:%MZ); $(nproc) cores ($CPU), Linux $(uname -r)."
        echo "Load at start: ${LOAD_START#*load average: }; at end: $(uptime | sed 's/.*load average: //')."
        echo
        echo "| figure | measured | goal |"
        echo "|---|---|---|"
        printf '%s\n' "${ROWS[@]}"
    } | tee "$OUT/scale.md"
}

# 1. Sessions ---------------------------------------------------------------
echo "sessions: $SESSIONS in the memory store" >&2
start_gateway memory BENCH_SESSIONS=1 BENCH_COOKIES="$WORK/cookies"
one=$(client rss "$GW_PID" | field rss_kib)
one_busy=$(client busy 127.0.0.1 "$GW_PORT" /api/items "$WORK/cookies" "$GW_PID" | field rss_kib)
stop "$GW_PID"
start_gateway memory BENCH_SESSIONS="$SESSIONS" BENCH_COOKIES="$WORK/cookies"
many=$(client rss "$GW_PID" | field rss_kib)
echo "sessions: one proxied request each" >&2
many_busy=$(client busy 127.0.0.1 "$GW_PORT" /api/items "$WORK/cookies" "$GW_PID" | field rss_kib)
stop "$GW_PID"
row "$SESSIONS sessions, memory store: gateway RSS (one session: $(mib "$one") MiB)" \
    "$(mib "$many") MiB, $(((many - one) * 1024 / (SESSIONS - 1))) bytes per session" "≤ 150 MB"
row "the same once each session has served one proxied request (one session: $(mib "$one_busy") MiB)" \
    "$(mib "$many_busy") MiB, $(((many_busy - one_busy) * 1024 / (SESSIONS - 1))) bytes per session" ""
if [ -z "${SKIP_REMOTE:-}" ]; then
    used() { redis-cli -u "$REDIS_URL" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
    before=$(used)
    start_gateway "$REDIS_URL" BENCH_SESSIONS="$SESSIONS" BENCH_KEY_PREFIX="$KEY_PREFIX"
    after=$(used)
    stop "$GW_PID"
    row "peer: the same sessions sealed in Redis (used_memory growth; Redis is shared)" \
        "$(awk -v b="$((after - before))" 'BEGIN {printf "%.1f MiB", b / 1048576}'), $(((after - before) / SESSIONS)) bytes per session" ""
    redis-cli -u "$REDIS_URL" --scan --pattern "$KEY_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink >/dev/null
fi
if [ "${ONLY:-}" = sessions ]; then
    report
    exit 0
fi

# 2. Cold start ---------------------------------------------------------------
LOGIN_PORT=$(free_port)
IDP_PORT=$(free_port)
SECRET=bench-secret-$$
"$BIN/examples/bench_idp" "127.0.0.1:$IDP_PORT" "http://127.0.0.1:$LOGIN_PORT/auth/callback" "$SECRET" \
    >"$WORK/idp.log" 2>&1 &
IDP_PID=$!
PIDS+=("$IDP_PID")
wait_port "$IDP_PORT"
KEY=$("$BIN/portcullis" keygen)
serve_config() { # file port admin_port store
    cat >"$1" <<TOML
[server]
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
profile = "dev"
log_level = "warn"
[admin]
listen = "127.0.0.1:$3"
[oidc]
issuer = "http://127.0.0.1:$IDP_PORT"
client_id = "bench"
client_secret = "$SECRET"
[session]
store = "$4"
encryption_keys = ["$KEY"]
[[routes]]
prefix = "/api/"
upstream = "http://127.0.0.1:$UP"
TOML
}
cold_start() { # store -> "median (min–max)" ms over STARTS
    local n out port admin
    for n in $(seq 1 "$STARTS"); do
        port=$(free_port)
        admin=$(free_port)
        rm -f "$WORK/cold.db"*
        serve_config "$WORK/cold.toml" "$port" "$admin" "$1"
        out=$(client ready "http://127.0.0.1:$admin/readyz" -- "$BIN/portcullis" serve --config "$WORK/cold.toml")
        stop "$(echo "$out" | field pid)"
        echo "$out" | field ready_ms
    done | median_range
}
echo "cold start: $STARTS starts per store" >&2
row "cold start to /readyz 200, memory store, ms (median, range of $STARTS)" "$(cold_start memory)" "< 100 ms + discovery"
row "cold start to /readyz 200, SQLite store (new file), ms" "$(cold_start "sqlite://$WORK/cold.db")" "< 100 ms + discovery"
discovery=$(for _ in $(seq 1 "$STARTS"); do
    python3 - "http://127.0.0.1:$IDP_PORT" <<'PY'
import sys, time, urllib.request
start = time.perf_counter()
for path in ("/.well-known/openid-configuration", "/jwks"):
    urllib.request.urlopen(sys.argv[1] + path).read()
print("%.1f" % ((time.perf_counter() - start) * 1000))
PY
done | median_range)
row "of which discovery + JWKS (two fetches from a fresh client), ms" "$discovery" ""
mkdir -p "$WORK/nginx"
nginx_config() { # port worker_connections
    cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
worker_rlimit_nofile 65536;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections $2; }
http {
    access_log off;
    keepalive_timeout 10m;
    keepalive_requests 100000;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    upstream app { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGINX
}
nginx_start=$(for _ in $(seq 1 "$STARTS"); do
    port=$(free_port)
    nginx_config "$port" 1024
    out=$(client ready "http://127.0.0.1:$port/api/items" -- nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx")
    stop "$(echo "$out" | field pid)"
    echo "$out" | field ready_ms
done | median_range)
row "peer: nginx from exec to its first proxied 200, ms" "$nginx_start" ""

# 3. Logins -------------------------------------------------------------------
ADMIN_PORT=$(free_port)
serve_config "$WORK/login.toml" "$LOGIN_PORT" "$ADMIN_PORT" memory
out=$(client ready "http://127.0.0.1:$ADMIN_PORT/readyz" -- "$BIN/portcullis" serve --config "$WORK/login.toml")
LOGIN_PID=$(echo "$out" | field pid)
PIDS+=("$LOGIN_PID")
echo "logins: $LOGINS with $LOGIN_CLIENTS clients" >&2
client logins "http://127.0.0.1:$LOGIN_PORT" 100 "$LOGIN_CLIENTS" "$LOGIN_PID" "$IDP_PID" >/dev/null # warm-up
out=$(client logins "http://127.0.0.1:$LOGIN_PORT" "$LOGINS" "$LOGIN_CLIENTS" "$LOGIN_PID" "$IDP_PID")
stop "$LOGIN_PID"
row "full logins (code flow + PKCE, memory store), $LOGIN_CLIENTS clients" \
    "$(echo "$out" | field logins_per_s) logins/s" ""
row "CPU per login: gateway / IdP / clients, µs; gateway's share of the CPU" \
    "$(echo "$out" | field gateway_cpu_us_per_login) / $(echo "$out" | field idp_cpu_us_per_login) / $(echo "$out" | field client_cpu_us_per_login); $(echo "$out" | field gateway_share)" ""
row "gateway RSS growth per session created by a login" "$(echo "$out" | field rss_growth_bytes_per_session) bytes" ""

# 4. Idle keep-alive connections ---------------------------------------------
echo "idle connections: $IDLE" >&2
start_gateway memory BENCH_SERVER=$'max_connections = 20000\nmax_connections_per_ip = 0\nidle_timeout = "10m"\nheader_read_timeout = "10m"'
curl -sf -o /dev/null -H "Cookie: $GW_COOKIE" "http://127.0.0.1:$GW_PORT/api/items"
out=$(client idle 127.0.0.1 "$GW_PORT" "$IDLE" /api/items "$GW_COOKIE" "$GW_PID")
stop "$GW_PID"
row "$IDLE idle keep-alive connections: gateway RSS (memory store, caps raised)" \
    "$(mib "$(echo "$out" | field rss_before_kib)") → $(mib "$(echo "$out" | field rss_after_kib)") MiB, $(echo "$out" | field bytes_per_connection) bytes per connection" ""
NGX=$(free_port)
nginx_config "$NGX" 20000
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGX_PID=$!
PIDS+=("$NGX_PID")
wait_port "$NGX"
curl -sf -o /dev/null "http://127.0.0.1:$NGX/api/items"
out=$(client idle 127.0.0.1 "$NGX" "$IDLE" /api/items "" "$NGX_PID")
stop "$NGX_PID"
row "peer: nginx, the same (master + 2 workers, RSS summed)" \
    "$(mib "$(echo "$out" | field rss_before_kib)") → $(mib "$(echo "$out" | field rss_after_kib)") MiB, $(echo "$out" | field bytes_per_connection) bytes per connection" ""

report
