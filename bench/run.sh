#!/usr/bin/env bash
# Throughput and latency of portcullis against a direct upstream and nginx.
#
#   bench/run.sh            # 3 rounds, 10 s per row, 2 wrk threads, 32 connections
#   ROUNDS=5 DURATION=30s CONNECTIONS=64 bench/run.sh
#   ONLY="memory redis_cache" bench/run.sh   # just these rows (and nginx)
#   OUT=/tmp/bench bench/run.sh              # where the results go (default target/bench)
#   PIN=1 bench/run.sh       # proxy under test alone on CPU 0, one worker each
#   FLOOR=1 bench/run.sh     # adds the in-place floor (examples/bench_floor.rs), not a gateway
#
# Builds the release examples `bench_upstream` (fixed 1 KiB JSON) and
# `bench_gateway` (portcullis with one authenticated session put straight into
# the store), installs wrk and nginx from Debian if missing, and prints one
# row per target: requests/s, p50, p99, throughput relative to nginx, and the
# p99 it adds at half load. Writes OUT/results.tsv (the figures, with the
# date, machine, load and command), OUT/table.md and OUT/chart.svg (drawn by
# bench/chart.sh from results.tsv; docs/performance.md shows the latest).
# Not a test: numbers depend on the machine (and on anything else running).
set -euo pipefail

cd "$(dirname "$0")/.."
# The command as given, for the record: the settings taken from the environment.
COMMAND=bench/run.sh
for var in FLOOR PIN RATE SKIP_HALF_LOAD SKIP_REMOTE ONLY CONNECTIONS THREADS DURATION ROUNDS; do
    if [ -n "${!var:-}" ]; then COMMAND="$var=${!var// /\\ } $COMMAND"; fi
done
LOAD_START=$(uptime)
DURATION=${DURATION:-10s}
THREADS=${THREADS:-2}
CONNECTIONS=${CONNECTIONS:-32}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # The PostgreSQL rows' schema, once the half-load part is done with them.
    if [ -n "${PG_SCHEMA:-}" ] && [ -z "${SKIP_REMOTE:-}" ]; then
        psql "$DATABASE_URL" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null 2>&1; }

# PIN=1: the proxy under test (nginx, each gateway) runs alone on CPU 0 with
# one worker; wrk, oha and the upstream run on the other CPUs. Unpinned, on a
# small machine the proxy shares its cores with the load generator and the
# upstream, and its p99 at half load measures the scheduler more than the
# proxy. Redis and PostgreSQL are not moved: the rows without the local cache
# and the two replicas are left out.
# Every call site runs in a subshell (`&`, `$(...)`, a pipe): `exec` makes the
# pid in PIDS the program's own, so the cleanup stops it.
if [ -n "${PIN:-}" ]; then
    LOAD_CPUS=1-$(($(nproc) - 1))
    on_proxy() { exec taskset -c 0 "$@"; }
    on_load() { exec taskset -c "$LOAD_CPUS" "$@"; }
    NGINX_WORKERS=1
    export BENCH_WORKERS=1
else
    on_proxy() { exec "$@"; }
    on_load() { exec "$@"; }
    NGINX_WORKERS=2
fi
if ! need wrk || ! need nginx; then
    apt-get update -qq && apt-get install -y -qq wrk nginx >/dev/null
fi

cargo build --release -p portcullis --example bench_upstream --example bench_gateway ${FLOOR:+--example bench_floor}
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
on_load "$BIN/bench_upstream" "127.0.0.1:$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
UP_PID=$!
wait_port "$UP"

# nginx: plain proxy_pass with upstream keep-alive, the usual production setup.
NGX=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<NGINX
worker_processes $NGINX_WORKERS;
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
on_proxy nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
NGX_PID=$!
wait_port "$NGX"

start_gateway() { # store [example] -> sets GW_PORT, GW_PID and GW_COOKIE
    GW_PORT=$(free_port)
    on_proxy "$BIN/${2:-bench_gateway}" "127.0.0.1:$GW_PORT" "http://127.0.0.1:$UP" "$1" >"$WORK/gw-$GW_PORT.log" 2>&1 &
    PIDS+=($!)
    GW_PID=$!
    wait_port "$GW_PORT"
    GW_COOKIE=$(sed -n 's/^COOKIE=//p' "$WORK/gw-$GW_PORT.log" | head -1)
}

# wrk output -> "req/s p50_ms p99_ms"
measure() { # url [cookie]
    local out
    if [ -n "${2:-}" ]; then
        out=$(on_load wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -H "Cookie: $2" "$1")
    else
        out=$(on_load wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
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
declare -A URL COOKIE SAMPLES RATIOS PID_OF
URL[direct]="http://127.0.0.1:$UP/api/items"
URL[nginx]="http://127.0.0.1:$NGX/api/items"
PID_OF[direct]=$UP_PID
PID_OF[nginx]=$NGX_PID
add_gateway() { # row store [example]
    start_gateway "$2" "${3:-}"
    URL[$1]="http://127.0.0.1:$GW_PORT/api/items"
    PID_OF[$1]=$GW_PID
    COOKIE[$1]=$GW_COOKIE
}
add_gateway memory memory
add_gateway sqlite "sqlite://$WORK/sessions.db"
ROWS=(direct nginx memory sqlite)
# The floor of the in-place design, for docs/performance.md; not a gateway.
if [ -n "${FLOOR:-}" ]; then add_gateway floor memory bench_floor && ROWS+=(floor); fi

# Remote stores (records sealed, as in production), with and without the local cache.
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
PG_SCHEMA=pcbench_$$
if [ -z "${SKIP_REMOTE:-}" ]; then
    psql "$DATABASE_URL" -qc "CREATE SCHEMA IF NOT EXISTS $PG_SCHEMA" >/dev/null
    PG_STORE="$DATABASE_URL?options[search_path]=$PG_SCHEMA"
    # Pinned, the rows that reach Redis or PostgreSQL on every request would
    # share the proxy's core with those servers: left out.
    add_gateway redis_cache "$REDIS_URL"
    ROWS+=(redis_cache)
    if [ -z "${PIN:-}" ]; then BENCH_CACHE=0 add_gateway redis "$REDIS_URL" && ROWS+=(redis); fi
    add_gateway postgres_cache "$PG_STORE"
    ROWS+=(postgres_cache)
    if [ -z "${PIN:-}" ]; then
        BENCH_CACHE=0 add_gateway postgres "$PG_STORE"
        # Two replicas sharing Redis (with cache), half the connections each, at once.
        add_gateway replica1 "$REDIS_URL"
        add_gateway replica2 "$REDIS_URL"
        ROWS+=(postgres replicas)
    fi
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

# row -> "req/s p50 p99" medians over the rounds
declare -A RESULT
for row in "${ROWS[@]}"; do
    samples=$(echo "${SAMPLES[$row]}" | tr '|' '\n' | grep .)
    RESULT[$row]="$(echo "$samples" | awk '{print $1}' | median) $(echo "$samples" | awk '{print $2}' | median) $(echo "$samples" | awk '{print $3}' | median)"
done

# ---------------------------------------------------------------------------
# Added latency at half load: every row (and the upstream reached directly,
# the baseline) at one fixed request rate, half the memory row's maximum (or
# nginx's, when the memory row is not measured). wrk cannot hold a rate, oha
# (-q, with latency correction) can; `cargo install oha` when it is missing.
# RATE=N sets the rate. SKIP_HALF_LOAD=1 leaves this part out. The replicas
# row is not measured here (two gateways, one rate).
# Beside the latency, the CPU time the proxy's processes (nginx: master and
# workers) spent per request at that rate: unlike req/s at full load, it does
# not depend on which process the scheduler favours on a shared machine.
declare -A HALF
RATE=${RATE:-}
cpu_ticks() { # pid -> user+system clock ticks of the process and its children
    local p t=0
    for p in "$1" $(pgrep -P "$1" || true); do
        [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
if [ -z "${SKIP_HALF_LOAD:-}" ]; then
    if ! need oha; then
        cargo install oha --locked >/dev/null 2>&1 || true
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    if need oha; then
        base=${RESULT[memory]:-${RESULT[nginx]}}
        [ -n "$RATE" ] || RATE=$(echo "$base" | awk '{printf "%d", $1 / 2}')
        fixed_rate() { # url cookie pid -> "req/s p50_ms p99_ms cpu_us_per_request"
            local args=(-z "$DURATION" -c "$CONNECTIONS" -q "$RATE" --latency-correction
                --no-tui --output-format json)
            [ -n "$2" ] && args+=(-H "Cookie: $2")
            local before
            before=$(cpu_ticks "$3")
            (on_load oha "${args[@]}" "$1") >"$WORK/oha.json"
            TICKS=$(($(cpu_ticks "$3") - before)) HZ=$(getconf CLK_TCK) python3 -c '
import json, os, sys
r = json.load(sys.stdin)
codes = r.get("statusCodeDistribution", {})
if set(codes) - {"200"}:
    sys.exit("non-200 answers: %s" % codes)
p = r["latencyPercentiles"]
s = r["summary"]
cpu_us = int(os.environ["TICKS"]) / int(os.environ["HZ"]) * 1e6 / (s["requestsPerSec"] * s["total"])
print("%.0f %.3f %.3f %.1f" % (s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, cpu_us))' <"$WORK/oha.json"
        }
        echo "half load: $RATE req/s per row" >&2
        HALF[direct]=$(fixed_rate "${URL[direct]}" "" "${PID_OF[direct]}")
        for row in "${ROWS[@]}"; do
            [ "$row" = direct ] || [ "$row" = replicas ] && continue
            HALF[$row]=$(fixed_rate "${URL[$row]}" "${COOKIE[$row]:-}" "${PID_OF[$row]}")
        done
    else
        echo "oha not available: half-load latency skipped" >&2
    fi
fi
LOAD_END=$(uptime)

label_of() {
    case $1 in
        memory) echo "portcullis (memory store)" ;;
        sqlite) echo "portcullis (SQLite store)" ;;
        redis_cache) echo "portcullis (Redis + local cache)" ;;
        redis) echo "portcullis (Redis, no cache)" ;;
        postgres_cache) echo "portcullis (PostgreSQL + local cache)" ;;
        postgres) echo "portcullis (PostgreSQL, no cache)" ;;
        replicas) echo "2 replicas sharing Redis + cache (sum)" ;;
        nginx) echo "nginx proxy_pass" ;;
        floor) echo "in-place floor (not a gateway)" ;;
        direct) echo "direct to upstream" ;;
        *) echo "$1" ;;
    esac
}

# Results: a table (stdout and table.md), the figures (results.tsv) and the
# chart (chart.svg, drawn by bench/chart.sh from results.tsv) in OUT.
OUT=${OUT:-target/bench}
mkdir -p "$OUT"
DATE=$(date -u +%Y-%m-%dT%H:%MZ)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
MACHINE="$(nproc) cores ($CPU), Linux $(uname -r)"
SETUP="wrk -t$THREADS -c$CONNECTIONS -d$DURATION, 1 KiB JSON upstream, median of $ROUNDS rounds${PIN:+; pinned: each proxy alone on CPU 0 with one worker, wrk, oha and the upstream on CPUs $LOAD_CPUS}"
HALF_SETUP=${RATE:+"half load: oha -q $RATE -c$CONNECTIONS -z$DURATION, latency-corrected, added p99 over direct, CPU time of the proxy's processes per request"}
{
    echo "# portcullis bench/run.sh results"
    echo "# title: portcullis against nginx proxy_pass, $DATE"
    echo "# subtitle: wrk -c$CONNECTIONS, median of $ROUNDS rounds; half load ${RATE:-not run}${RATE:+ req/s}; $(nproc) cores${PIN:+, proxy pinned to CPU 0}, load ${LOAD_START##*: }"
    echo "# date: $DATE"
    echo "# machine: $MACHINE"
    echo "# command: $COMMAND"
    echo "# load at start: $LOAD_START"
    echo "# load at end: $LOAD_END"
    printf '# %s\n' "row	label	rps	p50_ms	p99_ms	ratio	ratio_min	ratio_max	half_rps	half_p99_ms	added_p99_ms	half_cpu_us	cpu_ratio"
    direct_p99=$(echo "${HALF[direct]:-- - -}" | awk '{print $3}')
    nginx_cpu=$(echo "${HALF[nginx]:-- - - -}" | awk '{print $4}')
    for row in "${ROWS[@]}"; do
        read -r rps p50 p99 <<<"${RESULT[$row]}"
        ratios=$(echo "${RATIOS[$row]}" | tr ' ' '\n' | grep . | sort -g)
        read -r hrps _ hp99 hcpu <<<"${HALF[$row]:-- - - -}"
        added=-
        if [ "$hp99" != - ] && [ "$direct_p99" != - ]; then
            added=$(awk -v a="$hp99" -v b="$direct_p99" 'BEGIN {printf "%.3f", a - b}')
        fi
        # nginx's CPU per request over the row's: like the req/s ratio, above 1 is faster.
        cpu_ratio=-
        if [ "$hcpu" != - ] && [ "${nginx_cpu:--}" != - ] && [ "$row" != direct ]; then
            cpu_ratio=$(awk -v n="$nginx_cpu" -v c="$hcpu" 'BEGIN {printf "%.3f", (c > 0 ? n / c : 0)}')
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$(label_of "$row")" \
            "$rps" "$p50" "$p99" "$(echo "$ratios" | median)" "$(echo "$ratios" | head -1)" \
            "$(echo "$ratios" | tail -1)" "$hrps" "$hp99" "$added" "$hcpu" "$cpu_ratio"
    done
} >"$OUT/results.tsv"

# The Markdown table, from results.tsv.
{
    echo "$SETUP; ${HALF_SETUP:-no half-load run}."
    echo "$MACHINE; \`$COMMAND\`, $DATE."
    echo "Load at start: ${LOAD_START#*load average: }; at end: ${LOAD_END#*load average: }."
    echo
    echo "| target | req/s | p50 ms | p99 ms | vs nginx, median (range) | p99 at half load, ms | added p99, ms | CPU µs per request at half load | vs nginx by CPU |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '!/^#/ {
        printf "| %s | %.0f | %s | %s | %.2f× (%.2f–%.2f) | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6, $7, $8, $10, ($11 == "-" ? "-" : sprintf("%+.2f", $11)), $12, ($13 == "-" ? "-" : sprintf("%.2f×", $13))
    }' "$OUT/results.tsv"
} >"$OUT/table.md"
echo
cat "$OUT/table.md"
bench/chart.sh "$OUT/results.tsv" "$OUT/chart.svg"
echo
echo "written: $OUT/results.tsv, $OUT/table.md, $OUT/chart.svg"
