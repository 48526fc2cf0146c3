#!/usr/bin/env bash
# What the decoder sandbox costs: the same release binary twice, `transform.isolate = true`
# (transforms in sandboxed worker processes) and `false` (in the node's process), taking
# turns on one port each (the other SIGSTOPped), ROUNDS interleaved rounds of wrk for SECS s
# (cache off: every request transforms). Prints the median req/s of each, the ratio, and
# peak RSS (node, and node + workers, read mid-round). WORKLOAD:
#   image      a ≥3000 px JPEG → 800 px WebP q75 (pooled image workers)
#   frame      a 10 s 1080p h264 clip → the frame at 3 s, 640 px JPEG (pooled workers; the
#              node answers the worker's reads of the source over the pipe)
#   transcode  the same clip → its first 4 s as 640 px h264 mp4 (a worker of its own per
#              request, with the source as a descriptor and a private output directory)
#
#   scripts/bench/sandbox.sh                    # 5 rounds of 10 s, image
#   ROUNDS=7 SECS=15 scripts/bench/sandbox.sh
#   FORMAT=avif scripts/bench/sandbox.sh        # another image output
#   WORKLOAD=transcode SECS=30 scripts/bench/sandbox.sh
#   MEDIA_EDGE_BIN=path/to/media-edge           # default: target/release/media-edge
#
# Needs: wrk, libvips-tools (to make the image input), ffmpeg (the clip), a release build.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
THREADS=${THREADS:-2}
FORMAT=${FORMAT:-webp}
WORKLOAD=${WORKLOAD:-image}
BIN=${MEDIA_EDGE_BIN:-target/release/media-edge}
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk vips curl ffmpeg; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk libvips-tools curl ffmpeg)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build -q --release -p media-edge --bin media-edge

case "$WORKLOAD" in
  image)
    vips autorot conf/samples/photo.jpg "$WORK/upright.v"
    vips resize "$WORK/upright.v" "$WORK/big.jpg[Q=90,strip]" 2
    PATHQ="big.jpg?width=800&format=$FORMAT&quality=75"
    echo "input: $(vipsheader -f width "$WORK/big.jpg")x$(vipsheader -f height "$WORK/big.jpg"), $(stat -c %s "$WORK/big.jpg") bytes; 800 px $FORMAT"
    ;;
  frame|transcode)
    ffmpeg -v error -y -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=10 \
      -f lavfi -i sine=frequency=440:duration=10 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
      -c:a aac -shortest "$WORK/clip.mp4"
    if [ "$WORKLOAD" = frame ]; then
      PATHQ="clip.mp4?mode=frame&time=3s&width=640"
    else
      PATHQ="clip.mp4?mode=video&width=640&duration=4s"
    fi
    echo "input: 10 s 1920x1080 h264 + AAC, $(stat -c %s "$WORK/clip.mp4") bytes; $PATHQ"
    ;;
  *) echo "WORKLOAD is image, frame or transcode" >&2; exit 2 ;;
esac
echo "$THREADS workers; $ROUNDS rounds of ${SECS}s"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME ISOLATE: a node on a free port; prints "pid port".
start() {
  local name=$1 isolate=$2 port
  port=$(free_port)
  cat >"$WORK/$name.toml" <<EOF
[server]
listen = ["127.0.0.1:$port"]
threads = $THREADS
[cache]
enabled = false
[transform]
workers = $THREADS
max_per_client = $THREADS
avif_background = false
isolate = $isolate
[store]
transforms = false
[filters.ratelimit]
enabled = false
[[origins]]
name = "bench"
matcher = "^/img/(.+)$"
[[origins.sources]]
kind = "local"
root = "$WORK"
path = "\$1"
EOF
  MEDIA_EDGE_LOG=warn "$BIN" run --config "$WORK/$name.toml" --data-dir "$WORK/data-$name" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
  echo "$pid $port"
}

read -r ON_PID ON_PORT < <(start isolated true)
PIDS+=("$ON_PID")
read -r OFF_PID OFF_PORT < <(start inprocess false)
PIDS+=("$OFF_PID")

url() { echo "http://127.0.0.1:$1/img/$PATHQ"; }
# Same output bytes from both (the engine is the same code).
curl -fs "$(url "$ON_PORT")" >"$WORK/on.out"
curl -fs "$(url "$OFF_PORT")" >"$WORK/off.out"
cmp -s "$WORK/on.out" "$WORK/off.out" || { echo "the two nodes answered different bytes" >&2; exit 1; }
echo "output: $(stat -c %s "$WORK/on.out") bytes from both"

kb() { awk -v k="$2" '$1==k":" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
# Peak RSS of a node plus its transform workers (kB).
tree_hwm() {
  local total; total=$(kb "$1" VmHWM)
  for c in $(pgrep -P "$1" -f transform-worker || true); do total=$((total + $(kb "$c" VmHWM))); done
  echo "$total"
}

run_round() { # pid port other_pid → req/s
  kill -STOP "$3"; kill -CONT "$1"
  wrk -t1 -c"$THREADS" -d"${SECS}s" --timeout 60s "$(url "$2")" >"$WORK/wrk.txt" &
  local w=$!
  # Mid-round, while the workers are busy (a transform cut off when wrk stops is cancelled
  # and its worker killed, so after a round there may be none to read).
  sleep $(( (SECS + 1) / 2 ))
  tree_hwm "$1" >>"$WORK/tree-$1.txt"
  wait "$w"
  if grep -q "Non-2xx" "$WORK/wrk.txt"; then cat "$WORK/wrk.txt" >&2; exit 1; fi
  kill -CONT "$3"
  awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt"
}

: >"$WORK/on.txt"; : >"$WORK/off.txt"
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    on=$(run_round "$ON_PID" "$ON_PORT" "$OFF_PID"); off=$(run_round "$OFF_PID" "$OFF_PORT" "$ON_PID")
  else
    off=$(run_round "$OFF_PID" "$OFF_PORT" "$ON_PID"); on=$(run_round "$ON_PID" "$ON_PORT" "$OFF_PID")
  fi
  echo "round $r: isolated $on req/s, in-process $off req/s"
  echo "$on" >>"$WORK/on.txt"; echo "$off" >>"$WORK/off.txt"
done

median() { sort -g "$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
ON=$(median "$WORK/on.txt"); OFF=$(median "$WORK/off.txt")
echo
printf '%-12s %10s %14s %20s\n' node "req/s" "node RSS MB" "node+workers RSS MB"
# The largest node + workers peak seen mid-round.
tree_max() { sort -g "$WORK/tree-$1.txt" | tail -1; }
printf '%-12s %10s %14s %20s\n' isolated "$ON" "$(( $(kb "$ON_PID" VmHWM) / 1024 ))" "$(( $(tree_max "$ON_PID") / 1024 ))"
printf '%-12s %10s %14s %20s\n' in-process "$OFF" "$(( $(kb "$OFF_PID" VmHWM) / 1024 ))" "$(( $(tree_max "$OFF_PID") / 1024 ))"
awk -v a="$ON" -v b="$OFF" 'BEGIN { printf "isolated / in-process: %.3fx (overhead %.1f %%)\n", a/b, (1 - a/b) * 100 }'
