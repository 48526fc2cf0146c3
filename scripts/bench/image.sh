#!/usr/bin/env bash
# Image engine throughput: a ≥3000 px JPEG → 800 px wide WebP q75, JPEG q75 and AVIF, in
# images/second on 2 cores, in-process (criterion bench binary, --throughput mode) side by
# side with libvips' vipsthumbnail (Debian libvips-tools) in the same run, with output sizes.
#
#   scripts/bench/image.sh            # in-process vs vipsthumbnail
#   SECS=20 scripts/bench/image.sh    # longer runs
#   MEDIA_EDGE_BIN=target/release/media-edge URL=http://127.0.0.1:8080/... scripts/bench/image.sh
#                                     # + the through-the-server section (to be finished)
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

# 2. In-process.
echo "== media-edge in-process (release) =="
MEDIA_EDGE_BENCH_INPUT="$WORK/big.jpg" MEDIA_EDGE_BENCH_THREADS=$THREADS MEDIA_EDGE_BENCH_SECS=$SECS \
  cargo bench -q -p media-edge --features image-engine --bench image -- --throughput \
  2>"$WORK/bench.err" | tee "$WORK/ours.txt" || { cat "$WORK/bench.err" >&2; exit 1; }

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

# 5. Through the server (to be finished by the origin wiring): needs a running binary and a
#    URL that serves the same input, e.g. http://127.0.0.1:8080/images/big.jpg?width=800&format=webp
if [ -n "${MEDIA_EDGE_BIN:-}" ] && [ -n "${URL:-}" ]; then
  echo
  echo "== through the server: $MEDIA_EDGE_BIN, $URL =="
  echo "TODO(lead): start \$MEDIA_EDGE_BIN with a config serving \$WORK/big.jpg, bypass the cache"
  echo "(e.g. a unique query per request), and time N requests with $THREADS concurrent clients."
fi
