#!/usr/bin/env bash
# Memory soak (edge issue, item 11): a release media-edge under mixed traffic for DURATION,
# its RSS sampled every INTERVAL, against the budgets it was given.
#
# Traffic (wrk -t1 -cCONNS with a Lua mix, at most RATE req/s, 127.0.0.1 only): 40 % hits on 50 objects of
# 10 KB, 20 % fills and hits of 300 objects of 1.1 MB (larger than a doubling buffer's
# power of two: the case that used to keep twice its size), 15 % 64 KiB ranges of those,
# 25 % transforms of a 1800×1200 JPEG at one of 150 widths (WebP; misses at first, then hits).
# The node: memory_bytes = MEM, disk_bytes = 2 GiB, transform.memory_budget = BUDGET.
#
# Reported: RSS (VmRSS) per sample (the node, and its transform workers together), its growth over the second half of the run (flat after
# warm-up means this is small), the peak (VmHWM), and the budgets it should follow.
#
# Usage: scripts/bench/soak.sh [-h]
# Environment:
#   DURATION=600   seconds of load         INTERVAL=30  seconds between samples
#   CONNS=8        wrk connections         MEM=256MiB   [cache] memory_bytes
#   RATE=300       requests per second at most (a per-connection delay in the Lua script)
#   BUDGET=512MiB  transform.memory_budget MEDIA_EDGE_BIN (target/release/media-edge)
#   KEEP_TMP=1     keep the temp dir
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,20p' "$0"
    exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DURATION="${DURATION:-600}"
INTERVAL="${INTERVAL:-30}"
CONNS="${CONNS:-8}"
RATE="${RATE:-300}"
MEM="${MEM:-256MiB}"
BUDGET="${BUDGET:-512MiB}"
BIN="${MEDIA_EDGE_BIN:-$ROOT/target/release/media-edge}"
TMP="$(mktemp -d /tmp/soak-bench.XXXXXX)"
PID=""
WRK=""

cleanup() {
    [[ -n "$WRK" ]] && kill "$WRK" 2>/dev/null || true
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    [[ "${KEEP_TMP:-0}" == 1 ]] && echo "kept $TMP" >&2 || rm -rf "$TMP"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk not found (apt-get install -y wrk)" >&2; exit 1; }
[[ -x "$BIN" ]] || { echo "no release binary at $BIN (cargo build --release -p media-edge)" >&2; exit 1; }

mkdir -p "$TMP/objects" "$TMP/data"
for i in $(seq 1 50); do head -c 10240 /dev/urandom >"$TMP/objects/s$i.bin"; done
for i in $(seq 1 300); do head -c 1153434 /dev/urandom >"$TMP/objects/b$i.bin"; done
cp "$ROOT/conf/samples/photo.jpg" "$TMP/objects/photo.jpg"

PORT=$((20000 + RANDOM % 20000))
cat >"$TMP/me.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
threads = 2
[cache]
memory_bytes = "$MEM"
disk_bytes = "2GiB"
[transform]
memory_budget = "$BUDGET"
max_per_client = 2
[store]
transforms = false
[filters.ratelimit]
enabled = false
[[origins]]
name = "soak"
matcher = "^/o/(.*)$"
[[origins.sources]]
kind = "local"
root = "$TMP/objects"
path = "\$1"
EOF
MEDIA_EDGE_LOG=warn "$BIN" run --config "$TMP/me.toml" --data-dir "$TMP/data" >"$TMP/me.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/o/s1.bin" && break
    sleep 0.1
done
curl -fs -o /dev/null "http://127.0.0.1:$PORT/o/s1.bin" || { tail "$TMP/me.log" >&2; exit 1; }

cat >"$TMP/mix.lua" <<EOF
local pause = $((1000 * CONNS / RATE))
delay = function() return pause end
EOF
cat >>"$TMP/mix.lua" <<'EOF'
math.randomseed(os.time())
request = function()
    local r = math.random(100)
    if r <= 40 then
        return wrk.format("GET", "/o/s" .. math.random(50) .. ".bin")
    elseif r <= 60 then
        return wrk.format("GET", "/o/b" .. math.random(300) .. ".bin")
    elseif r <= 75 then
        local at = math.random(0, 16) * 65536
        return wrk.format("GET", "/o/b" .. math.random(300) .. ".bin",
            {Range = "bytes=" .. at .. "-" .. (at + 65535)})
    else
        return wrk.format("GET", "/o/photo.jpg?format=webp&width=" .. (100 + 10 * math.random(0, 149)))
    end
end
EOF

rss() { awk '/^VmRSS:/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status"; }
# The transform workers' resident memory together (the sandbox, transform.isolate).
workers_rss() {
    local total=0 c
    for c in $(pgrep -P "$PID" -f transform-worker || true); do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$c/status" 2>/dev/null || echo 0)))
    done
    echo $((total / 1024))
}
idle="$(rss)"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 30s -s "$TMP/mix.lua" "http://127.0.0.1:$PORT" >"$TMP/wrk.txt" 2>&1 &
WRK=$!
samples=()
t=0
echo "t_s rss_mb workers_rss_mb"
echo "0 $idle $(workers_rss)"
while kill -0 "$WRK" 2>/dev/null && ((t < DURATION)); do
    sleep "$INTERVAL"
    t=$((t + INTERVAL))
    s="$(rss)"
    samples+=("$s")
    echo "$t $s $(workers_rss)"
done
wait "$WRK" || true
WRK=""
peak="$(awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$PID/status")"
n=${#samples[@]}
half=$((n / 2))
mid="${samples[$half]:-0}"
last="${samples[$((n - 1))]:-0}"
echo
grep -E "Requests/sec|requests in|Non-2xx|Socket errors" "$TMP/wrk.txt" || true
echo "idle RSS ${idle} MB; at half time ${mid} MB, at the end ${last} MB (second half: $((last - mid)) MB); peak ${peak} MB"
echo "budgets: memory tier $MEM, transform memory $BUDGET"
