#!/usr/bin/env bash
# Normal requests while slow clients attack (issue #15, item 3): a release node on its
# shipped connection defaults (`head_timeout` 10 s, `max_connections_per_ip` 256, a global
# cap at three quarters of the open-files limit), a 10 KB object cached in memory, and wrk
# (-t1 -c8, --latency) asking for it from 127.0.0.1: first alone (baseline), then while
# COUNT slow clients (scripts/bench/slowloris.py) trickle request heads one byte every
# INTERVAL s from IPS other loopback addresses, reconnecting whenever the node ends them.
# Prints req/s and p50/p99 of both runs, what the slow clients got, the node's most open
# descriptors and peak RSS, and its front-door counters.
#
#   scripts/bench/slowloris.sh                    # 20,000 slow clients over 100 addresses
#   IPS=1 scripts/bench/slowloris.sh              # all from one address (the per-IP cap)
#   COUNT=5000 SECS=20 scripts/bench/slowloris.sh
#   EXTRA='read_buffer = "0"' scripts/bench/slowloris.sh   # lines added to [server]
#   MEDIA_EDGE_BIN=path/to/media-edge             # default: target/release/media-edge
#
# Needs: wrk, python3, curl, a release build; root or a hard open-files limit ≥ 2×COUNT.
set -euo pipefail
cd "$(dirname "$0")/../.."

COUNT=${COUNT:-20000}
IPS=${IPS:-100}
SECS=${SECS:-30}
INTERVAL=${INTERVAL:-5}
BIN=${MEDIA_EDGE_BIN:-target/release/media-edge}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk python3 curl)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build -q --release -p media-edge --bin media-edge
# The slow clients' descriptors (and the node's: it raises its own soft limit to the hard).
ulimit -n $((COUNT * 2 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
mkdir -p "$WORK/media"
head -c 10240 /dev/urandom >"$WORK/media/10k.bin"
cat >"$WORK/node.toml" <<EOF
[server]
listen = ["127.0.0.1:$PORT"]
${EXTRA:-}
[filters.ratelimit]
enabled = false
[[origins]]
name = "bench"
matcher = "^/b/(.+)$"
[[origins.sources]]
kind = "local"
root = "$WORK/media"
path = "\$1"
EOF
MEDIA_EDGE_LOG=warn "$BIN" run --config "$WORK/node.toml" --data-dir "$WORK/data" >"$WORK/node.log" 2>&1 &
NODE=$!
PIDS+=("$NODE")
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/b/10k.bin"
curl -fs -o /dev/null "$URL"; curl -fs -o /dev/null "$URL"
echo "node: pid $NODE, open-files limit $(awk '/Max open files/ {print $4}' /proc/$NODE/limits); $COUNT slow clients from $IPS addresses, a byte every ${INTERVAL}s; wrk -t1 -c8 ${SECS}s"

# run_wrk NAME → "req/s p50 p99 errors"
run_wrk() {
  wrk -t1 -c8 -d"${SECS}s" --timeout 10s --latency "$URL" >"$WORK/$1.wrk"
  awk '
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=$2}
    /^ +99%/ {p99=$2}
    /Socket errors/ {err=$0}
    /Non-2xx/ {non2xx=$NF}
    END {printf "%s %s %s %s\n", rps, p50, p99, (err!="" || non2xx!="") ? err " non2xx=" non2xx : "none"}
  ' "$WORK/$1.wrk"
}

BASE=$(run_wrk baseline)

python3 scripts/bench/slowloris.py "$PORT" "$COUNT" "$IPS" "$INTERVAL" $((SECS + 15)) >"$WORK/slow.json" &
SLOW=$!
PIDS+=("$SLOW")
# Let the slow clients connect (they open 500 every 50 ms) before measuring.
sleep 5
# The node's descriptors, sampled through the attack.
( while kill -0 "$SLOW" 2>/dev/null; do ls "/proc/$NODE/fd" 2>/dev/null | wc -l; sleep 1; done ) >"$WORK/fds.txt" &
UNDER=$(run_wrk attack)
wait "$SLOW"

echo
printf '%-22s %10s %8s %8s  %s\n' run "req/s" p50 p99 errors
read -r r p50 p99 err <<<"$BASE"; printf '%-22s %10s %8s %8s  %s\n' "alone" "$r" "$p50" "$p99" "$err"
read -r r p50 p99 err <<<"$UNDER"; printf '%-22s %10s %8s %8s  %s\n' "under slow clients" "$r" "$p50" "$p99" "$err"
echo
echo "slow clients: $(cat "$WORK/slow.json")"
echo "node: most open descriptors $(sort -g "$WORK/fds.txt" | tail -1), peak RSS $(( $(awk '/VmHWM/ {print $2}' /proc/$NODE/status) / 1024 )) MB"
curl -fs "http://127.0.0.1:$PORT/metrics" | grep '^media_edge_front_door_connection_events_total' || true
