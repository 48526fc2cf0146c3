#!/usr/bin/env bash
# The request log's cost to cache hits: two media-edge nodes, one with `[analytics]` on and
# one with it off, take turns (off, on, off, on, …; one runs at a time) serving the same warm
# 10 KB object to wrk. Each turn reports requests/s and the node's CPU time a request
# (user + system from /proc/PID/stat over the wrk run): throughput on a shared machine moves
# with its neighbours, CPU a request much less. Medians over the rounds, and on ÷ off.
#
# Usage: scripts/bench/request_log.sh
# Environment:
#   MEDIA_EDGE_BIN  the binary (default target/release/media-edge)
#   ROUNDS          turns of each (default 5)
#   WRK_DURATION    each turn's wrk run (default 8s)
#   WRK_THREADS / WRK_CONNS  (default 2 / 32)
#   SIZE            the object's bytes (default 10240)
#   SAMPLE          analytics.sample of the "on" node (default 0.01)
#   ON_ENABLED      analytics.enabled of the "on" node (default true; false checks the
#                   harness itself: two identical nodes should come out at 1.0)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="${MEDIA_EDGE_BIN:-$ROOT/target/release/media-edge}"
ROUNDS="${ROUNDS:-5}"
DUR="${WRK_DURATION:-8s}"
THREADS="${WRK_THREADS:-2}"
CONNS="${WRK_CONNS:-32}"
SIZE="${SIZE:-10240}"
SAMPLE="${SAMPLE:-0.01}"
ON_ENABLED="${ON_ENABLED:-true}"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no binary at $BIN (cargo build --release -p media-edge)" >&2; exit 1; }

TMP="$(mktemp -d /tmp/me-reqlog.XXXXXX)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/objects"
head -c "$SIZE" /dev/urandom >"$TMP/objects/obj.bin"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
clk_tck="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # name enabled -> sets PORT_<name>, PID_<name>
    local name="$1" enabled="$2" port
    port="$(free_port)"
    cat >"$TMP/$name.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
threads = 2
[cache]
memory_bytes = "256MiB"
disk_bytes = "1GiB"
[[origins]]
name = "bench"
matcher = "^/bench/(.*)\$"
[[origins.sources]]
kind = "local"
root = "$TMP/objects"
path = "\$1"
[analytics]
enabled = $enabled
sample = $SAMPLE
EOF
    MEDIA_EDGE_LOG=warn "$BIN" run --config "$TMP/$name.toml" --data-dir "$TMP/$name-data" \
        >"$TMP/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local i
    for ((i = 0; i < 150; i++)); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/bench/obj.bin" && break
        kill -0 "$pid" 2>/dev/null || { tail -20 "$TMP/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    # Warm: the object is a memory-tier hit from here on.
    for ((i = 0; i < 20; i++)); do curl -s -o /dev/null "http://127.0.0.1:$port/bench/obj.bin"; done
    eval "PORT_$name=$port PID_$name=$pid"
}

start off false
start on "$ON_ENABLED"
# Pause both; each turn wakes one, so they never share the CPU.
kill -STOP "$PID_off" "$PID_on"

turn() { # name -> "req/s cpu_us_per_req"
    local name="$1" port pid t0 t1 out reqs
    port="PORT_$name"; pid="PID_$name"
    kill -CONT "${!pid}"
    sleep 0.5
    t0="$(cpu_ticks "${!pid}")"
    out="$(wrk -t"$THREADS" -c"$CONNS" -d"$DUR" --timeout 5s "http://127.0.0.1:${!port}/bench/obj.bin")"
    t1="$(cpu_ticks "${!pid}")"
    kill -STOP "${!pid}"
    reqs="$(awk '/requests in/ {print $1}' <<<"$out")"
    awk -v o="$out" -v r="$reqs" -v a="$t0" -v b="$t1" -v hz="$clk_tck" 'BEGIN {
        match(o, /Requests\/sec: *[0-9.]+/); rps = substr(o, RSTART + 13, RLENGTH - 13) + 0;
        printf "%.0f %.2f\n", rps, (b - a) / hz * 1e6 / r }'
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

: >"$TMP/off.txt"; : >"$TMP/on.txt"
printf '%-6s %-4s %12s %14s\n' round log "req/s" "CPU µs/req"
for ((r = 1; r <= ROUNDS; r++)); do
    for name in off on; do
        read -r rps us < <(turn "$name")
        printf '%-6s %-4s %12s %14s\n' "$r" "$name" "$rps" "$us"
        echo "$rps $us" >>"$TMP/$name.txt"
    done
done
off_rps="$(cut -d' ' -f1 "$TMP/off.txt" | median)"; on_rps="$(cut -d' ' -f1 "$TMP/on.txt" | median)"
off_us="$(cut -d' ' -f2 "$TMP/off.txt" | median)"; on_us="$(cut -d' ' -f2 "$TMP/on.txt" | median)"
kill -CONT "$PID_on"
sleep 1.5
dropped="$(curl -s "http://127.0.0.1:$PORT_on/metrics" | awk '/^media_edge_request_log_dropped_total/ {print $2}')"
echo
echo "median req/s:       off $off_rps   on $on_rps   on/off $(awk -v a="$on_rps" -v b="$off_rps" 'BEGIN {printf "%.3f", a / b}')"
echo "median CPU µs/req:  off $off_us   on $on_us   on/off $(awk -v a="$on_us" -v b="$off_us" 'BEGIN {printf "%.3f", a / b}')"
echo "rows dropped by the on node: ${dropped:-0}"
