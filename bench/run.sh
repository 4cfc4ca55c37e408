#!/usr/bin/env bash
# Throughput and latency of portcullis against a direct upstream and nginx.
#
#   bench/run.sh            # 3 rounds, 10 s per row, 2 wrk threads, 32 connections
#   ROUNDS=5 DURATION=30s CONNECTIONS=64 bench/run.sh
#   ONLY="memory redis_cache" bench/run.sh   # just these rows (and nginx)
#
# Builds the release examples `bench_upstream` (fixed 1 KiB JSON) and
# `bench_gateway` (portcullis with one authenticated session put straight into
# the store), installs wrk and nginx from Debian if missing, and prints one
# row per target: requests/s, p50, p99 and throughput relative to nginx.
# Not a test: numbers depend on the machine (and on anything else running).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
    apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null
fi

cargo build --release -p portcullis --example bench_upstream --example bench_gateway
BIN=${CARGO_TARGET_DIR:-target}/release/examples

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

UP=$(free_port)
"$BIN/bench_upstream" "127.0.0.1:$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP"

# nginx: plain proxy_pass with upstream keep-alive, the usual production setup.
NGX=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon off;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    upstream app { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NGX;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
        }
    }
}
NGINX
nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
wait_port "$NGX"

start_gateway() { # store -> sets GW_PORT and GW_COOKIE
    GW_PORT=$(free_port)
    "$BIN/bench_gateway" "127.0.0.1:$GW_PORT" "http://127.0.0.1:$UP" "$1" >"$WORK/gw-$GW_PORT.log" 2>&1 &
    PIDS+=($!)
    wait_port "$GW_PORT"
    GW_COOKIE=$(sed -n 's/^COOKIE=//p' "$WORK/gw-$GW_PORT.log" | head -1)
}

# wrk output -> "req/s p50_ms p99_ms"
measure() { # url [cookie]
    local out
    if [ -n "${2:-}" ]; then
        out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Cookie: $2" "$1")
    else
        out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
    fi
    if echo "$out" | grep -q "Non-2xx"; then
        echo "non-2xx answers from $1:" >&2
        echo "$out" >&2
        exit 1
    fi
    local rps p50 p99
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    echo "$rps $(to_ms "$p50") $(to_ms "$p99")"
}
to_ms() { # wrk latency like 412.00us / 1.20ms / 1.01s -> ms
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else print v }'
}

# Every target is started first; then ROUNDS rounds each measure every row
# back to back, nginx included, and the table shows per row the median
# req/s and the median (and range) of its ratio to nginx in the same round.
# Rounds make the ratio robust against a shared machine's drift.
declare -A URL COOKIE SAMPLES RATIOS
URL[direct]="http://127.0.0.1:$UP/api/items"
URL[nginx]="http://127.0.0.1:$NGX/api/items"
add_gateway() { # row store
    start_gateway "$2"
    URL[$1]="http://127.0.0.1:$GW_PORT/api/items"
    COOKIE[$1]=$GW_COOKIE
}
add_gateway memory memory
add_gateway sqlite "sqlite://$WORK/sessions.db"
ROWS=(direct nginx memory sqlite)

# Remote stores (records sealed, as in production), with and without the local cache.
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_SCHEMA=pcbench_$$
if [ -z "${SKIP_REMOTE:-}" ]; then
    psql "$DATABASE_URL" -qc "CREATE SCHEMA IF NOT EXISTS $PG_SCHEMA" >/dev/null
    PG_STORE="$DATABASE_URL?options[search_path]=$PG_SCHEMA"
    add_gateway redis_cache "$REDIS_URL"
    BENCH_CACHE=0 add_gateway redis "$REDIS_URL"
    add_gateway postgres_cache "$PG_STORE"
    BENCH_CACHE=0 add_gateway postgres "$PG_STORE"
    # Two replicas sharing Redis (with cache), half the connections each, at once.
    add_gateway replica1 "$REDIS_URL"
    add_gateway replica2 "$REDIS_URL"
    ROWS+=(redis_cache redis postgres_cache postgres replicas)
fi
if [ -n "${ONLY:-}" ]; then
    # nginx stays: every ratio is taken against it in the same round.
    KEEP=(nginx)
    for row in "${ROWS[@]}"; do
        [[ " $ONLY " == *" $row "* ]] && [ "$row" != nginx ] && KEEP+=("$row")
    done
    ROWS=("${KEEP[@]}")
fi

measure_row() { # row -> "req/s p50_ms p99_ms"
    if [ "$1" = replicas ]; then
        local half=$((CONNECTIONS / 2))
        CONNECTIONS=$half measure "${URL[replica1]}" "${COOKIE[replica1]}" >"$WORK/r1" &
        local w1=$!
        CONNECTIONS=$half measure "${URL[replica2]}" "${COOKIE[replica2]}" >"$WORK/r2"
        wait "$w1"
        cat "$WORK/r1" "$WORK/r2" | awk '{rps += $1; if ($2 > p50) p50 = $2; if ($3 > p99) p99 = $3}
            END {printf "%.2f %.3f %.3f", rps, p50, p99}'
    else
        measure "${URL[$1]}" "${COOKIE[$1]:-}"
    fi
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

ROUNDS=${ROUNDS:-3}
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    declare -A NOW=()
    for row in "${ROWS[@]}"; do
        NOW[$row]=$(measure_row "$row")
        SAMPLES[$row]="${SAMPLES[$row]:-}|${NOW[$row]}"
    done
    nginx_rps=$(echo "${NOW[nginx]}" | awk '{print $1}')
    for row in "${ROWS[@]}"; do
        RATIOS[$row]="${RATIOS[$row]:-} $(echo "${NOW[$row]}" | awk -v n="$nginx_rps" '{printf "%.3f", $1 / n}')"
    done
done
[ -n "${SKIP_REMOTE:-}" ] || psql "$DATABASE_URL" -qc "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null

# row -> "req/s p50 p99" medians over the rounds
declare -A RESULT
for row in "${ROWS[@]}"; do
    samples=$(echo "${SAMPLES[$row]}" | tr '|' '\n' | grep .)
    RESULT[$row]="$(echo "$samples" | awk '{print $1}' | median) $(echo "$samples" | awk '{print $2}' | median) $(echo "$samples" | awk '{print $3}' | median)"
done

echo
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 1 KiB JSON upstream, $(nproc) cores, median of $ROUNDS rounds"
echo
echo "| target | req/s | p50 ms | p99 ms | vs nginx (median, range) |"
echo "|---|---:|---:|---:|---:|"
for row in "${ROWS[@]}"; do
    read -r rps p50 p99 <<<"${RESULT[$row]}"
    label=$row
    case $row in
        memory) label="portcullis (memory store)" ;;
        sqlite) label="portcullis (SQLite store)" ;;
        redis_cache) label="portcullis (Redis + local cache)" ;;
        redis) label="portcullis (Redis, no cache)" ;;
        postgres_cache) label="portcullis (PostgreSQL + local cache)" ;;
        postgres) label="portcullis (PostgreSQL, no cache)" ;;
        replicas) label="2 replicas sharing Redis + cache (sum)" ;;
        nginx) label="nginx proxy_pass" ;;
        direct) label="direct to upstream" ;;
    esac
    ratios=$(echo "${RATIOS[$row]}" | tr ' ' '\n' | grep . | sort -g)
    ratio=$(printf '%.2f× (%.2f–%.2f)' "$(echo "$ratios" | median)" "$(echo "$ratios" | head -1)" "$(echo "$ratios" | tail -1)")
    echo "| $label | $rps | $p50 | $p99 | $ratio |"
done

# ---------------------------------------------------------------------------
# Added latency at half load: a fixed request rate (half of the memory row's
# maximum) against the upstream directly, through nginx and through portcullis. wrk cannot
# hold a rate, oha (-q, with latency correction) can; `cargo install oha`
# when it is missing. SKIP_HALF_LOAD=1 leaves this part out.
if [ -z "${SKIP_HALF_LOAD:-}" ]; then
    if ! need oha; then
        cargo install oha --locked >/dev/null 2>&1 || true
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if need oha; then
        RATE=$(echo "${RESULT[memory]}" | awk '{printf "%d", $1 / 2}')
        fixed_rate() { # url [cookie] -> "req/s p50_ms p99_ms"
            local args=(-z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction
                --no-tui --output-format json)
            [ -n "${2:-}" ] && args+=(-H "Cookie: $2")
            oha "${args[@]}" "$1" | python3 -c '
import json, sys
r = json.load(sys.stdin)
codes = r.get("statusCodeDistribution", {})
if set(codes) - {"200"}:
    sys.exit("non-200 answers: %s" % codes)
p = r["latencyPercentiles"]
print("%.0f %.3f %.3f" % (r["summary"]["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000))'
        }
        HALF_DIRECT=$(fixed_rate "${URL[direct]}")
        HALF_NGINX=$(fixed_rate "${URL[nginx]}")
        HALF_GW=$(fixed_rate "${URL[memory]}" "${COOKIE[memory]}")
        echo
        echo "Half load: oha -q $RATE (half the memory row), -c$CONNECTIONS -z$DURATION, latency-corrected"
        echo
        echo "| target | req/s | p50 ms | p99 ms |"
        echo "|---|---:|---:|---:|"
        read -r rps p50 p99 <<<"$HALF_DIRECT"
        echo "| direct to upstream | $rps | $p50 | $p99 |"
        read -r rps1 p50a p99a <<<"$HALF_NGINX"
        echo "| nginx proxy_pass | $rps1 | $p50a | $p99a |"
        read -r rps2 p50b p99b <<<"$HALF_GW"
        echo "| portcullis (memory store) | $rps2 | $p50b | $p99b |"
        awk -v a="$p99b" -v b="$p99" -v c="$p50b" -v d="$p50" -v e="$p50a" -v f="$p99a" \
            'BEGIN { printf "\nadded over direct at half load: portcullis p50 %+.3f ms, p99 %+.3f ms; nginx p50 %+.3f ms, p99 %+.3f ms\n", c - d, a - b, e - d, f - b }'
    else
        echo "oha not available: half-load latency skipped" >&2
    fi
fi
