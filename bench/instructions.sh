#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the median of a few
# runs repeats to about 1 %, where wall-clock benchmarks on a shared machine
# move by ±30 %. Method and results: docs/performance.md.
#
#   bench/instructions.sh                   # memory store
#   NO_BUILD=1 bench/instructions.sh        # the binaries already built
#   STORES="memory sqlite" ROUNDS=5 bench/instructions.sh
#   N1=500 N2=2000 KEEP=/tmp/cg bench/instructions.sh   # keep the last run's callgrind dumps
#   GATEWAY=bench_floor bench/instructions.sh  # the in-place floor instead of the gateway
#
# Builds the release examples `bench_upstream` and `bench_gateway`, runs the
# gateway under `valgrind --tool=callgrind` with one serving worker
# (BENCH_WORKERS=1), and sends it authenticated GETs over one keep-alive
# connection from a small Python client (outside valgrind). After WARMUP
# requests (upstream connection, allocator, caches) the counters are zeroed;
# a batch of N1 requests is dumped, then a batch of N2. Instructions per
# request = (Ir(N2) - Ir(N1)) / (N2 - N1), which removes what a batch costs
# besides its requests (the dump itself, idle wake-ups). All threads count;
# the table shows the median of ROUNDS such runs (each a fresh gateway).
# Loopback only; everything started here is stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
STORES=${STORES:-memory}
GATEWAY=${GATEWAY:-bench_gateway}
WARMUP=${WARMUP:-200}
N1=${N1:-2000}
N2=${N2:-8000}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp "$WORK"/cg.* "$KEEP"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --locked -p portcullis --example bench_upstream --example "$GATEWAY"
fi
BIN=${CARGO_TARGET_DIR:-target}/release/examples

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # port pid: poll until it listens (valgrind starts slowly), or the process died
    for _ in $(seq 1 1200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || { echo "process $2 exited before listening on $1" >&2; return 1; }
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

UP=$(free_port)
"$BIN/bench_upstream" "127.0.0.1:$UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP" "$!"

# One keep-alive connection; between batches the counters are zeroed or
# dumped with callgrind_control (vgdb), which waits for the dump to be written.
cat >"$WORK/client.py" <<'PY'
import http.client, subprocess, sys
port, cookie, pid, warmup, n1, n2 = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
conn = http.client.HTTPConnection("127.0.0.1", int(port), timeout=120)
sock = None
def batch(n):
    global sock
    for _ in range(n):
        conn.request("GET", "/api/items", headers={"Cookie": cookie})
        r = conn.getresponse()
        body = r.read()
        if r.status != 200 or not body.startswith(b'{"data":"'):
            sys.exit("unexpected answer: %d, %r" % (r.status, body[:80]))
        # The same connection throughout: a reconnect would be counted.
        if sock is None:
            sock = conn.sock
        elif conn.sock is not sock:
            sys.exit("connection was not kept alive")
def ctl(*args):
    subprocess.run(["callgrind_control", *args, pid], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
batch(warmup)
ctl("-z")
batch(n1)
ctl("-d", "n1")
batch(n2)
ctl("-d", "n2")
conn.close()
PY

total_ir() { # dump file -> total Ir
    awk '/^(summary|totals):/ {print $2; exit}' "$1"
}

measure() { # store url -> "per-request Ir(N1) Ir(N2)" of one gateway run
    local port gw cookie ir1 ir2
    port=$(free_port)
    BENCH_WORKERS=1 valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$WORK/cg.$1" \
        "$BIN/$GATEWAY" "127.0.0.1:$port" "http://127.0.0.1:$UP" "$2" \
        >"$WORK/gw-$1.log" 2>"$WORK/gw-$1.err" &
    gw=$!
    PIDS+=($gw)
    wait_port "$port" "$gw" || { cat "$WORK/gw-$1.err" >&2; exit 1; }
    # The gateway prints its cookie after it binds: the port can answer first.
    cookie=
    for _ in $(seq 1 600); do
        cookie=$(sed -n 's/^COOKIE=//p' "$WORK/gw-$1.log" | head -1)
        [ -n "$cookie" ] && break
        kill -0 "$gw" 2>/dev/null || { cat "$WORK/gw-$1.err" >&2; exit 1; }
        sleep 0.1
    done
    [ -n "$cookie" ] || { echo "no COOKIE= line from $GATEWAY" >&2; exit 1; }
    python3 "$WORK/client.py" "$port" "$cookie" "$gw" "$WARMUP" "$N1" "$N2"
    kill "$gw" && wait "$gw" 2>/dev/null || true
    # The two client-requested dumps are the first ones: .1 (N1), .2 (N2).
    ir1=$(total_ir "$WORK/cg.$1.1")
    ir2=$(total_ir "$WORK/cg.$1.2")
    awk -v a="$ir1" -v b="$ir2" -v n1="$N1" -v n2="$N2" 'BEGIN {printf "%.0f %d %d\n", (b - a) / (n2 - n1), a, b}'
}

# Whether the worker parks in epoll between two requests (timers, clock
# reads) depends on how the client and the gateway interleave, so one run
# moves by up to 1 % on a busy machine: the median of ROUNDS runs is shown.
# "First batch alone" is Ir(N1) / N1, startup excluded but the batch's fixed
# costs included; it moves far less (about 0.05 %) and serves as a cross-check.
echo "| store | Ir per request, median | range | first batch alone, median | runs |"
echo "|---|---:|---:|---:|---:|"
for store in $STORES; do
    case $store in
        memory) url=memory ;;
        sqlite) url="sqlite://$WORK/sessions-$$.db" ;;
        *) echo "unknown store $store (memory, sqlite)" >&2; exit 1 ;;
    esac
    runs=()
    firsts=()
    for round in $(seq 1 "$ROUNDS"); do
        # Not in a subshell: the gateway's pid must reach the cleanup.
        measure "$store" "$url" >"$WORK/run"
        read -r per ir1 ir2 <"$WORK/run"
        echo "$store run $round: $per Ir per request (Ir $ir1 for $N1, $ir2 for $N2)" >&2
        runs+=("$per")
        firsts+=("$(awk -v a="$ir1" -v n="$N1" 'BEGIN {printf "%.0f", a / n}')")
    done
    sorted=$(printf '%s\n' "${runs[@]}" | sort -n)
    median=$(echo "$sorted" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    first=$(printf '%s\n' "${firsts[@]}" | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    echo "| $store | $median | $(echo "$sorted" | head -1)–$(echo "$sorted" | tail -1) | $first | $ROUNDS |"
done
