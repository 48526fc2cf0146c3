#!/usr/bin/env bash
# Upload throughput and memory: a 500 MB body POSTed to a release media-edge on the embedded
# default (SQLite, uploads folder under the data dir), streamed by curl (`-T`, never loaded
# whole), against the floor of the same work on the same disk: `sha256sum` of the file then
# `cp` of it (two passes where the server makes one; the file is in the page cache for both).
# Reports MB/s for each, their ratio, and the server's peak RSS (VmHWM) before and after.
# Each run deletes its record (so the next one stores again instead of deduplicating).
#
# Usage: scripts/bench/upload.sh [-h]
# Environment:
#   SIZE_MB=500   body size
#   REPS=3        runs per side (best kept)
#   KEEP_TMP=1    keep the temp dir
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,15p' "$0"; exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SIZE_MB="${SIZE_MB:-500}"
REPS="${REPS:-3}"
TMP="$(mktemp -d /tmp/upload-bench.XXXXXX)"
PID=""
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [[ "${KEEP_TMP:-}" == 1 ]] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

echo "== building media-edge (release)"
(cd "$ROOT" && cargo build --release -p media-edge --bin media-edge >/dev/null 2>&1)
BIN="$ROOT/target/release/media-edge"

echo "== making a ${SIZE_MB} MB body (an MP4 header on random bytes)"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i testsrc2=size=64x64:duration=1 \
  -c:v libx264 -preset ultrafast "$TMP/head.mp4"
head -c 64 "$TMP/head.mp4" >"$TMP/body.bin"
head -c "$((SIZE_MB * 1000 * 1000 - 64))" /dev/urandom >>"$TMP/body.bin"
BYTES=$(stat -c %s "$TMP/body.bin")

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$TMP/bench.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
data_dir = "$TMP/data"
[store]
max_upload_bytes = "2GiB"
[jobs]
workers = 1
[filters.ratelimit]
enabled = false
[security]
tokens = [{ token_env = "BENCH_TOKEN", tenant = "bench", scopes = ["upload"] }]
TOML
BENCH_TOKEN=bench-token "$BIN" run --config "$TMP/bench.toml" >"$TMP/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 0.1
done
hwm() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$PID/status"; }
RSS0=$(hwm)

best_ours=""
for i in $(seq "$REPS"); do
  out=$(curl -sS -X POST -T "$TMP/body.bin" -H "Authorization: Bearer bench-token" \
    -H "Content-Type: application/octet-stream" -w '\n%{time_total}' "http://127.0.0.1:$PORT/upload")
  t=$(tail -1 <<<"$out")
  id=$(head -1 <<<"$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer bench-token" "http://127.0.0.1:$PORT/media/$id"
  if [[ -z "$best_ours" ]] || awk "BEGIN{exit !($t < $best_ours)}"; then best_ours=$t; fi
done
RSS1=$(hwm)

best_ref=""
for i in $(seq "$REPS"); do
  s=$(date +%s.%N)
  sha256sum "$TMP/body.bin" >/dev/null
  cp "$TMP/body.bin" "$TMP/copy.bin"
  sync -f "$TMP/copy.bin" 2>/dev/null || true
  e=$(date +%s.%N)
  rm -f "$TMP/copy.bin"
  t=$(awk "BEGIN{print $e - $s}")
  if [[ -z "$best_ref" ]] || awk "BEGIN{exit !($t < $best_ref)}"; then best_ref=$t; fi
done

mbs() { awk "BEGIN{printf \"%.0f\", $BYTES / 1e6 / $1}"; }
printf '\n%-28s %10s %10s\n' "" "seconds" "MB/s"
printf '%-28s %10.2f %10s\n' "media-edge POST /upload" "$best_ours" "$(mbs "$best_ours")"
printf '%-28s %10.2f %10s\n' "sha256sum + cp (floor)" "$best_ref" "$(mbs "$best_ref")"
printf 'ratio (ours / floor, MB/s): %s\n' "$(awk "BEGIN{printf \"%.2f\", $best_ref / $best_ours}")"
printf 'server peak RSS: %s MB before the uploads, %s MB after %s uploads of %s MB\n' \
  "$RSS0" "$RSS1" "$REPS" "$SIZE_MB"
