#!/usr/bin/env bash
# Image engine throughput: a ≥3000 px JPEG → 800 px wide WebP q75, JPEG q75 and AVIF, in
# images/second on 2 cores, in-process (criterion bench binary, --throughput mode) side by
# side with libvips' vipsthumbnail (Debian libvips-tools) in the same run, with output sizes.
#
#   scripts/bench/image.sh            # in-process vs vipsthumbnail
#   SECS=20 scripts/bench/image.sh    # longer runs
#   NO_SERVER=1 scripts/bench/image.sh   # skip the through-the-server section
#   ONLY_SERVER=1 scripts/bench/image.sh # skip the in-process section
#   MEDIA_EDGE_BIN=path/to/media-edge    # binary for that section (default: release build)
#
# Needs: libvips-tools (vips, vipsthumbnail), cmake + nasm (libjpeg-turbo build), a release
# build (this script runs `cargo bench`, which builds one).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${SECS:-10}
THREADS=${THREADS:-2}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for tool in vips vipsthumbnail; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y libvips-tools" >&2; exit 1; }
done

# 1. Input: photo.jpg (1800x1200 displayed) upright and doubled → 3600x2400, q90.
vips autorot conf/samples/photo.jpg "$WORK/upright.v"
vips resize "$WORK/upright.v" "$WORK/big.jpg[Q=90,strip]" 2
read -r W H < <(vipsheader -f width "$WORK/big.jpg" | tr '\n' ' '; vipsheader -f height "$WORK/big.jpg")
echo "input: ${W}x${H} $(stat -c %s "$WORK/big.jpg") bytes; ${THREADS} workers, ${SECS}s per output"

# 2. In-process (skipped with ONLY_SERVER=1).
: >"$WORK/ours.txt"
if [ -z "${ONLY_SERVER:-}" ]; then
echo "== media-edge in-process (release) =="
MEDIA_EDGE_BENCH_INPUT="$WORK/big.jpg" MEDIA_EDGE_BENCH_THREADS=$THREADS MEDIA_EDGE_BENCH_SECS=$SECS \
  cargo bench -q -p media-edge --features image-engine --bench image -- --throughput \
  2>"$WORK/bench.err" | tee "$WORK/ours.txt" || { cat "$WORK/bench.err" >&2; exit 1; }
fi

# 3. vipsthumbnail: $THREADS processes in parallel, each with one libvips thread, looping
#    until the deadline (process start-up included: that is how vipsthumbnail is used).
vips_rate() { # $1 = output suffix with options, e.g. .webp[Q=75,strip]
  local suffix=$1 end=$((SECONDS + SECS)) i
  for i in $(seq "$THREADS"); do
    (
      n=0
      while [ $SECONDS -lt $end ]; do
        VIPS_CONCURRENCY=1 vipsthumbnail "$WORK/big.jpg" -s 800x -o "$WORK/v$i$suffix"
        n=$((n + 1))
      done
      echo $n >"$WORK/count$i"
    ) &
  done
  local t0=$SECONDS
  wait
  local total=0 elapsed=$((SECONDS - t0))
  for i in $(seq "$THREADS"); do total=$((total + $(cat "$WORK/count$i"))); done
  local out=${suffix%%[*}
  echo "$(awk -v n=$total -v s=$elapsed 'BEGIN{printf "%.2f", n/(s>0?s:1)}') $(stat -c %s "$WORK/v1$out")"
}

echo "== vipsthumbnail $(vips --version) =="
: >"$WORK/vips.txt"
for f in webp:.webp[Q=75,strip] jpeg:.jpg[Q=75,strip,interlace] avif:.avif[Q=75,strip]; do
  name=${f%%:*}
  if res=$(vips_rate "${f#*:}" 2>/dev/null); then
    echo "throughput $name $res" | tee -a "$WORK/vips.txt"
  else
    echo "throughput $name n/a 0" | tee -a "$WORK/vips.txt"
  fi
done

# 4. Side by side.
echo
printf '%-16s %14s %12s %14s %12s %8s\n' output "media-edge/s" bytes "vips/s" bytes ratio
while read -r _ name rate size; do
  vline=$(awk -v n="${name%-no-shrink}" '$2==n' "$WORK/vips.txt")
  vrate=$(echo "$vline" | awk '{print $3}'); vsize=$(echo "$vline" | awk '{print $4}')
  ratio=$(awk -v a="$rate" -v b="${vrate:-0}" 'BEGIN{ if (b+0>0) printf "%.2fx", a/b; else print "-" }')
  printf '%-16s %14s %12s %14s %12s %8s\n' "$name" "$rate" "$size" "${vrate:--}" "${vsize:--}" "$ratio"
done <"$WORK/ours.txt"

# 5. Through the server: the release binary with the cache off (every request transforms),
#    a local origin serving the same input, $THREADS transform workers, and wrk with
#    $THREADS connections for $SECS s per output. Skip with NO_SERVER=1.
if [ -z "${NO_SERVER:-}" ]; then
  BIN=${MEDIA_EDGE_BIN:-target/release/media-edge}
  [ -x "$BIN" ] || cargo build -q --release -p media-edge --bin media-edge
  command -v wrk >/dev/null || { echo "missing wrk: apt-get install -y wrk" >&2; exit 1; }
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  {
    echo '[server]'
    echo "listen = [\"127.0.0.1:$PORT\"]"
    echo "threads = $THREADS"
    echo '[cache]'
    echo 'enabled = false'
    echo '[transform]'
    echo "workers = $THREADS"
    # wrk is one client: let it use every worker (the default keeps one for other clients).
    echo "max_per_client = $THREADS"
    echo 'avif_background = false'
    echo '[store]'
    echo 'transforms = false'
    echo '[filters.ratelimit]'
    echo 'enabled = false'
    echo '[[origins]]'
    echo 'name = "bench"'
    echo 'matcher = "^/img/(.+)$"'
    echo '[[origins.sources]]'
    echo 'kind = "local"'
    echo "root = \"$WORK\""
    echo 'path = "$1"'
  } >"$WORK/me.toml"
  MEDIA_EDGE_LOG=warn "$BIN" run --config "$WORK/me.toml" --data-dir "$WORK/data" >"$WORK/me.log" 2>&1 &
  ME_PID=$!
  trap 'kill $ME_PID 2>/dev/null; rm -rf "$WORK"' EXIT
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
  echo
  echo "== through the server (cache off, $THREADS workers, wrk -c$THREADS) vs vipsthumbnail =="
  printf '%-16s %14s %12s %14s %12s %8s %10s\n' output "server/s" bytes "vips/s" bytes ratio "RSS MB"
  for name in webp jpeg avif; do
    url="http://127.0.0.1:$PORT/img/big.jpg?width=800&format=$name&quality=75"
    size=$(curl -fs "$url" | wc -c)
    wrk -t1 -c"$THREADS" -d"${SECS}s" --timeout 60s "$url" >"$WORK/wrk-$name.txt"
    if grep -q "Non-2xx" "$WORK/wrk-$name.txt"; then
      echo "non-2xx answers for $url:" >&2; cat "$WORK/wrk-$name.txt" >&2; exit 1
    fi
    rate=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk-$name.txt")
    rss=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$ME_PID/status")
    vline=$(awk -v n="$name" '$2==n' "$WORK/vips.txt")
    vrate=$(echo "$vline" | awk '{print $3}'); vsize=$(echo "$vline" | awk '{print $4}')
    ratio=$(awk -v a="$rate" -v b="${vrate:-0}" 'BEGIN{ if (b+0>0) printf "%.2fx", a/b; else print "-" }')
    printf '%-16s %14s %12s %14s %12s %8s %10s\n' "$name" "$rate" "$size" "${vrate:--}" "${vsize:--}" "$ratio" "$rss"
  done
fi
