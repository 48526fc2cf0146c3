#!/usr/bin/env bash
# Hostile transforms against a release media-edge on its default limits (issue #15):
#  1. Peak RSS under the bomb set: decompression bombs (a 16-bit RGBA PNG of 16000², a 1-bit
#     PNG of 16383², a 43-byte GIF with a 16383² canvas, a 64-byte RLE8 BMP of 16383²) and
#     legitimate heavy work (a 6000×4000 JPEG and a 5000×5000 PNG asked at 4000 px wide),
#     CONC requests at once, each from its own client address. Reported: the status counts, the node's idle RSS, its peak (VmHWM) after the set,
#     and peak − idle against `transform.memory_budget` (default 512 MiB; target: below it).
#  2. A normal client's cold transform (a 1200×800 JPEG to a fresh width, WebP) alone, and
#     while another client keeps two amplification requests running (4096² AVIF of a 2048²
#     source at q100, fresh keys each time). Reported: medians and their ratio (target ≤ 2×).
# The node runs with `trusted_proxies = 127.0.0.1`, so X-Forwarded-For names the clients.
#
# Usage: scripts/bench/bombs.sh [-h]
# Environment:
#   CONC=60       concurrent requests of the bomb set
#   ROUNDS=9      cold transforms per side in part 2
#   BUDGET=512MiB transform.memory_budget
#   KEEP_TMP=1    keep the temp dir
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,20p' "$0"; exit 0
fi

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CONC="${CONC:-60}"
ROUNDS="${ROUNDS:-9}"
BUDGET="${BUDGET:-512MiB}"
TMP="$(mktemp -d /tmp/bombs-bench.XXXXXX)"
PID=""
cleanup() {
  [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [[ "${KEEP_TMP:-}" == 1 ]] && echo "kept $TMP" || rm -rf "$TMP"
}
trap cleanup EXIT

echo "== building media-edge (release)"
(cd "$ROOT" && cargo build --release -p media-edge --bin media-edge >/dev/null 2>&1)
BIN="$ROOT/target/release/media-edge"

echo "== making the inputs"
mkdir -p "$TMP/media"
python3 - "$TMP/media" <<'PY'
import struct, sys, zlib
d = sys.argv[1]
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xffffffff)
def png(path, w, h, depth, color, row_bytes):
    z = zlib.compressobj(9)
    out = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))]
    row = b"\x00" * (1 + row_bytes)
    data = bytearray()
    for _ in range(h):
        data += z.compress(row)
    data += z.flush()
    out += [chunk(b"IDAT", bytes(data)), chunk(b"IEND", b"")]
    open(path, "wb").write(b"".join(out))
png(f"{d}/bomb16.png", 16000, 16000, 16, 6, 16000 * 8)
png(f"{d}/bomb1.png", 16383, 16383, 1, 0, (16383 + 7) // 8)
g = b"GIF89a" + struct.pack("<HH", 16383, 16383) + bytes([0, 0, 0])
g += bytes([0x2c, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 2, 0x44, 0x01, 0, 0x3b])
open(f"{d}/bomb.gif", "wb").write(g)
# BMP, 8-bit RLE8 (compression 1), 16383², one "end of bitmap" escape.
pix = bytes([0, 1])
hdr = struct.pack("<IiiHHIIiiII", 40, 16383, 16383, 1, 8, 1, len(pix), 2835, 2835, 2, 0)
pal = bytes([0, 0, 0, 0, 255, 255, 255, 0])
off = 14 + len(hdr) + len(pal)
bmp = b"BM" + struct.pack("<IHHI", off + len(pix), 0, 0, off) + hdr + pal + pix
open(f"{d}/bomb.bmp", "wb").write(bmp)
PY
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=6000x4000,noise=alls=30" \
  -frames:v 1 -q:v 3 "$TMP/media/big.jpg"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=5000x5000" \
  -frames:v 1 -pix_fmt rgb24 "$TMP/media/big.png"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=1200x800" \
  -frames:v 1 -q:v 3 "$TMP/media/photo.jpg"
ffmpeg -hide_banner -loglevel error -y -f lavfi -i "testsrc2=size=2048x2048" \
  -frames:v 1 -pix_fmt rgb24 "$TMP/media/square.png"
ls -l "$TMP/media" | tail -n +2

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat >"$TMP/bench.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
data_dir = "$TMP/data"
[transform]
memory_budget = "$BUDGET"
max_upscale_area = 16.0
[store]
transforms = false
[filters.ratelimit]
enabled = false
[security]
trusted_proxies = ["127.0.0.1/32"]
[[origins]]
name = "bench"
matcher = "^/b/(.+)\$"
[[origins.sources]]
kind = "local"
root = "$TMP/media"
TOML
"$BIN" run --config "$TMP/bench.toml" >"$TMP/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$PORT/health" && break
  sleep 0.1
done
rss() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$PID/status"; }
# Warm up: one of each ordinary transform, so "idle" includes the codecs' own state.
curl -s -o /dev/null "http://127.0.0.1:$PORT/b/photo.jpg?width=300&format=webp"
curl -s -o /dev/null "http://127.0.0.1:$PORT/b/photo.jpg?width=301&format=avif"
IDLE_KB=$(rss VmRSS)

echo "== part 1: $CONC requests of the bomb set at once"
python3 - "$PORT" "$CONC" <<'PY'
import collections, sys, threading, urllib.request, urllib.error
port, conc = int(sys.argv[1]), int(sys.argv[2])
paths = [
    "/b/bomb16.png?width=800&format=webp",
    "/b/bomb1.png?width=800&format=webp",
    "/b/bomb.gif?width=800&format=webp",
    "/b/bomb.bmp?width=800&format=webp",
    "/b/big.jpg?width=4000&format=webp&n={i}",
    "/b/big.png?width=4000&format=png&n={i}",
]
codes = collections.Counter()
lock = threading.Lock()
def one(i):
    p = paths[i % len(paths)].format(i=i)
    try:
        # Each request from its own client (many attacking addresses: no per-client cap helps).
        req = urllib.request.Request(f"http://127.0.0.1:{port}{p}", headers={"X-Forwarded-For": f"198.18.{i // 250}.{i % 250 + 1}"})
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read(); c = r.status
    except urllib.error.HTTPError as e:
        c = e.code
    except Exception as e:
        c = type(e).__name__
    with lock:
        codes[(p.split("?")[0], c)] += 1
ts = [threading.Thread(target=one, args=(i,)) for i in range(conc)]
[t.start() for t in ts]; [t.join() for t in ts]
for (p, c), n in sorted(codes.items(), key=str):
    print(f"   {p:<14} {c}: {n}")
PY
PEAK_KB=$(rss VmHWM)
BUDGET_MB=$(python3 -c "import re,sys; v='$BUDGET'; n=float(re.match(r'[0-9.]+',v).group()); print(int(n*1024 if v.endswith('GiB') else n))")
echo "   idle RSS $((IDLE_KB / 1024)) MB, peak $((PEAK_KB / 1024)) MB, peak - idle $(((PEAK_KB - IDLE_KB) / 1024)) MB (budget $BUDGET_MB MiB)"

echo "== part 2: a normal cold transform alone and beside two amplification requests"
python3 - "$PORT" "$ROUNDS" <<'PY'
import statistics, sys, threading, time, urllib.request, urllib.error
port, rounds = int(sys.argv[1]), int(sys.argv[2])
def get(path, who):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-Forwarded-For": who})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            r.read(); code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    return time.perf_counter() - t0, code
n = [0]
def normal():
    n[0] += 1
    return get(f"/b/photo.jpg?width={400 + n[0]}&format=webp", "198.51.100.7")
alone = [normal()[0] for _ in range(rounds)]
stop = threading.Event()
amp = []
def attacker(k):
    i = 0
    while not stop.is_set():
        i += 1
        t, c = get(f"/b/square.png?width={4096 - k * 1000 - i}&height=4096&fit=fill&format=avif&quality=100", "203.0.113.9")
        amp.append((t, c))
threads = [threading.Thread(target=attacker, args=(k,), daemon=True) for k in range(2)]
[t.start() for t in threads]
# Until the amplification work holds a worker.
deadline = time.time() + 30
while time.time() < deadline:
    m = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    if any(l.startswith("media_edge_transforms_running ") and float(l.split()[1]) >= 1 for l in m.splitlines()):
        break
    time.sleep(0.05)
beside = [normal()[0] for _ in range(rounds)]
stop.set()
a, b = statistics.median(alone), statistics.median(beside)
print(f"   alone median {a*1000:.0f} ms, beside two amplification requests {b*1000:.0f} ms: {b/a:.2f}x")
[t.join(timeout=300) for t in threads]
print("   amplification requests (s, status): " + ", ".join(f"{t:.1f} {c}" for t, c in amp))
PY
