#!/usr/bin/env bash
# Video engine benchmark: media-edge's in-process FFmpeg (ffmpeg-next) against the ffmpeg
# CLI doing the same work, side by side in one run, on a 60 s 1080p h264+aac source made
# with lavfi (testsrc2 + sine, x264 veryfast, 30 fps, keyframe every 8 s).
#
#   frame      frame at 30 s → 640 px wide JPEG      target: ours ≤ 0.8× CLI wall time
#   sprite     20-frame spritesheet (5x4, 160 px)    target: ours ≤ 0.5× CLI (fps=…,tile)
#   transcode  1080p → 640x360 h264 CRF 23 medium    target: ours ≥ 0.95× CLI fps
#   hls        HLS package: 720p h264 CRF 23 veryfast, AAC, 6 s segments (IDR at each),
#              VOD playlist + poster JPEG at 1 s   target: ours ≥ 0.95× CLI speed
#              (CLI: ffmpeg -f hls -hls_time 6 -force_key_frames, then one poster frame)
#
# Both sides are timed as whole processes with /usr/bin/time -v (wall clock and peak RSS),
# best of $REPS runs. The in-process side is the release example `video_bench`
# (proxy/examples/video_bench.rs), which also prints its own in-process time.
#
# Usage: scripts/bench/video.sh [-h]
# Environment:
#   REPS=3        runs per measurement (best is kept)
#   KEEP_TMP=1    keep the temp dir (source, outputs, raw time logs)
#   SRC=path      use this source instead of generating one (should be ~60 s 1080p h264)
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,20p' "$0"; exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
REPS="${REPS:-3}"
TMP="$(mktemp -d /tmp/video-bench.XXXXXX)"
cleanup() { [[ "${KEEP_TMP:-}" == 1 ]] && echo "kept $TMP" || rm -rf "$TMP"; }
trap cleanup EXIT

for tool in ffmpeg ffprobe /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

echo "== building video_bench (release)"
(cd "$ROOT" && cargo build --release -p media-edge --features video-engine --example video_bench >/dev/null)
BENCH="$ROOT/target/release/examples/video_bench"

SRC="${SRC:-}"
if [[ -z "$SRC" ]]; then
  SRC="$TMP/src.mp4"
  echo "== generating 60 s 1080p30 h264+aac source"
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=1920x1080:rate=30:duration=60 \
    -f lavfi -i sine=frequency=440:duration=60 \
    -c:v libx264 -preset veryfast -g 240 -pix_fmt yuv420p -c:a aac -shortest "$SRC"
fi

# run NAME CMD... → sets WALL (s) and RSS (MB) to the best of $REPS runs.
run() {
  local name="$1"; shift
  local best_wall="" best_rss=""
  for i in $(seq "$REPS"); do
    local log="$TMP/time-$name-$i.log"
    /usr/bin/time -v "$@" >"$TMP/out-$name-$i.log" 2>"$log" || {
      echo "$name failed:" >&2; tail -5 "$log" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,a,":"); s=0; for(i=1;i<=n;i++) s=s*60+a[i]; print s}' "$log")
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.1f", $2/1024}' "$log")
    if [[ -z "$best_wall" ]] || awk "BEGIN{exit !($wall < $best_wall)}"; then
      best_wall=$wall; best_rss=$rss
    fi
  done
  WALL=$best_wall; RSS=$best_rss
}

ratio() { awk "BEGIN{printf \"%.2f\", $1 / $2}"; }
FRAMES=$(ffprobe -v error -select_streams v -count_packets -show_entries stream=nb_read_packets -of csv=p=0 "$SRC")

printf '\n%-10s %12s %12s %10s %10s %8s  %s\n' op "cli s" "ours s" "cli MB" "ours MB" ratio target

run cli-frame ffmpeg -hide_banner -loglevel error -y -ss 30 -i "$SRC" -frames:v 1 -vf scale=640:-2 -q:v 5 "$TMP/cli-frame.jpg"
CW=$WALL CR=$RSS
run our-frame "$BENCH" frame "$SRC" "$TMP/our-frame.jpg"
R=$(ratio "$WALL" "$CW")
printf '%-10s %12s %12s %10s %10s %8s  %s\n' frame "$CW" "$WALL" "$CR" "$RSS" "$R" "≤ 0.80 (time)"

run cli-sprite ffmpeg -hide_banner -loglevel error -y -i "$SRC" -vf "fps=20/60,scale=160:-2,tile=5x4" -frames:v 1 -q:v 5 "$TMP/cli-sprite.jpg"
CW=$WALL CR=$RSS
run our-sprite "$BENCH" sprite "$SRC" "$TMP/our-sprite.jpg"
R=$(ratio "$WALL" "$CW")
printf '%-10s %12s %12s %10s %10s %8s  %s\n' sprite "$CW" "$WALL" "$CR" "$RSS" "$R" "≤ 0.50 (time)"

run cli-transcode ffmpeg -hide_banner -loglevel error -y -i "$SRC" -vf scale=640:360 -c:v libx264 -crf 23 -preset medium -c:a copy -movflags +faststart "$TMP/cli.mp4"
CW=$WALL CR=$RSS
run our-transcode "$BENCH" transcode "$SRC" "$TMP/our.mp4"
# fps ratio = ours fps / cli fps = cli time / ours time.
R=$(ratio "$CW" "$WALL")
printf '%-10s %12s %12s %10s %10s %8s  %s\n' transcode "$CW" "$WALL" "$CR" "$RSS" "$R" "≥ 0.95 (fps, $FRAMES frames)"

hls_cli() {
  rm -rf "$TMP/cli-hls"; mkdir -p "$TMP/cli-hls"
  ffmpeg -hide_banner -loglevel error -y -i "$SRC" -vf "scale=-2:720" \
    -c:v libx264 -crf 23 -preset veryfast -force_key_frames "expr:gte(t,n_forced*6)" \
    -c:a aac -f hls -hls_time 6 -hls_playlist_type vod \
    -hls_segment_filename "$TMP/cli-hls/segment_%03d.ts" "$TMP/cli-hls/index.m3u8"
  ffmpeg -hide_banner -loglevel error -y -ss 1 -i "$SRC" -frames:v 1 -vf "scale=-2:720" \
    -q:v 5 "$TMP/cli-hls/poster.jpg"
}
export -f hls_cli; export SRC TMP
run cli-hls bash -c hls_cli
CW=$WALL CR=$RSS
run our-hls bash -c 'rm -rf "$TMP/our-hls"; exec "$0" hls "$SRC" "$TMP/our-hls"' "$BENCH"
R=$(ratio "$CW" "$WALL")
printf '%-10s %12s %12s %10s %10s %8s  %s\n' hls "$CW" "$WALL" "$CR" "$RSS" "$R" "≥ 0.95 (speed)"

echo
echo "in-process times (from video_bench):"
for op in frame sprite transcode hls; do head -1 "$TMP/out-our-$op-1.log"; done
