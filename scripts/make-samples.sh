#!/usr/bin/env bash
# Regenerate the committed media samples in conf/samples/:
#
#   photo.jpg  1800x1200 (as displayed) procedural landscape "photo", JPEG q85,
#              EXIF Make/Model/DateTimeOriginal/Orientation=6/GPS. Because
#              Orientation is 6 the pixels are STORED rotated 90° counter-
#              clockwise (stored raster 1200x1800); applying the orientation
#              (rotate 90° clockwise) yields the upright 1800x1200 landscape.
#   alpha.png  800x600 RGBA logo-like shapes with soft alpha edges.
#   anim.gif   320x240, 24 frames @ 80 ms, loops forever.
#   clip.mp4   12 s, 1280x720 30 fps h264 (High) + AAC stereo 48 kHz,
#              +faststart, from ffmpeg lavfi testsrc2 + sine.
#
# Deterministic: every RNG is seeded, and ffmpeg runs single-threaded with
# bitexact flags. Total must stay under 3 MB (checked at the end).
#
# Needs: ffmpeg (with libx264), a python3 with Pillow, numpy and piexif
#   (Debian: apt-get install -y ffmpeg python3-pil python3-numpy python3-piexif)
# Optional: exiftool (libimage-exiftool-perl) to print the EXIF tags.
#
# Usage: scripts/make-samples.sh [OUTDIR]   (default: conf/samples)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
out="${1:-$repo/conf/samples}"
mkdir -p "$out"

# Pick a python that has the modules we need ($PYTHON wins if set).
py=""
for cand in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
        "$cand" -c 'import PIL, numpy, piexif' >/dev/null 2>&1; then
        py="$cand"
        break
    fi
done
if [[ -z "$py" ]]; then
    echo "error: need python3 with Pillow, numpy and piexif" >&2
    echo "  apt-get install -y python3-pil python3-numpy python3-piexif" >&2
    echo "  (or: pip install pillow numpy piexif, and/or set PYTHON=...)" >&2
    exit 1
fi
command -v ffmpeg >/dev/null 2>&1 || { echo "error: ffmpeg not found" >&2; exit 1; }

echo "== images (python: $py)"
"$py" - "$out" <<'PY'
import math
import sys

import numpy as np
import piexif
from PIL import Image, ImageDraw, ImageFilter, ImageOps

OUT = sys.argv[1]

# ---------------------------------------------------------------- helpers
def fbm2(rng, h, w, base, octaves=5, persistence=0.5):
    """Fractal value noise in [0,1]-ish, shape (h, w). base = coarsest cell px."""
    acc = np.zeros((h, w), np.float32)
    amp, total, cell = 1.0, 0.0, float(base)
    for _ in range(octaves):
        gh = max(2, int(math.ceil(h / cell)) + 2)
        gw = max(2, int(math.ceil(w / cell)) + 2)
        grid = rng.random((gh, gw)).astype(np.float32)
        img = Image.fromarray(grid, mode="F").resize(
            (int(gw * cell), int(gh * cell)), Image.BICUBIC)
        acc += amp * np.asarray(img, np.float32)[:h, :w]
        total += amp
        amp *= persistence
        cell = max(1.0, cell / 2.0)
    return acc / total


def fbm1(rng, n, base, octaves=6, persistence=0.55):
    """1D fractal noise in ~[0,1], length n."""
    acc = np.zeros(n, np.float64)
    amp, total, cell = 1.0, 0.0, float(base)
    x = np.arange(n, dtype=np.float64)
    for _ in range(octaves):
        k = int(math.ceil(n / cell)) + 2
        pts = rng.random(k)
        xs = x / cell
        i = np.floor(xs).astype(int)
        t = xs - i
        t = t * t * (3 - 2 * t)  # smoothstep interpolation
        acc += amp * (pts[i] * (1 - t) + pts[i + 1] * t)
        total += amp
        amp *= persistence
        cell = max(1.0, cell / 2.0)
    return acc / total


def lerp(a, b, t):
    return a + (b - a) * t


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def blend(dst, color, mask):
    """dst (h,w,3) float, color (3,) or (h,w,3), mask (h,w) in [0,1]."""
    m = mask[..., None]
    return dst * (1 - m) + np.asarray(color, np.float32) * m


# ---------------------------------------------------------------- photo.jpg
def make_photo():
    rng = np.random.default_rng(20261101)
    W, H = 1800, 1200
    horizon = 770                       # waterline of the lake
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)

    # --- sky: late-afternoon gradient, deep blue -> pale -> warm at horizon
    t = np.clip(yy / horizon, 0, 1)
    top = np.array([38, 78, 150], np.float32)
    mid = np.array([120, 165, 215], np.float32)
    low = np.array([250, 200, 150], np.float32)
    sky = np.where((t < 0.6)[..., None],
                   lerp(top, mid, (t / 0.6)[..., None]),
                   lerp(mid, low, np.clip((t - 0.6) / 0.4, 0, 1)[..., None] ** 1.4))

    # sun + glow
    sx, sy = 1240.0, 560.0
    d = np.sqrt((xx - sx) ** 2 + (yy - sy) ** 2)
    glow = np.exp(-d / 260.0) * 0.55 + np.exp(-d / 70.0) * 0.35
    sky = sky + glow[..., None] * np.array([255, 210, 150], np.float32)
    sun = smoothstep(44.0, 38.0, d)
    sky = blend(sky, [255, 250, 232], sun)

    # clouds: horizontally stretched fractal noise, thicker in the upper sky
    cn = fbm2(rng, H, W // 3, base=120, octaves=6)
    cn = np.asarray(Image.fromarray(cn, "F").resize((W, H), Image.BICUBIC))
    cover = smoothstep(0.52, 0.75, cn) * smoothstep(horizon * 0.95, 60, yy)
    shade = 0.75 + 0.35 * fbm2(rng, H, W, base=60, octaves=4)
    cloud_col = np.stack([235 * shade, 228 * shade, 225 * shade], -1)
    # clouds near the sun are lit warm
    warm = np.exp(-d / 350.0)[..., None] * np.array([20, -5, -40], np.float32)
    sky = blend(sky, cloud_col + warm, cover * 0.85)

    img = sky.copy()

    # --- far mountains: hazy blue ridge
    ridge = 470 + 210 * (1 - fbm1(rng, W, base=420, octaves=7))
    m_far = (yy >= ridge[None, :]).astype(np.float32)
    m_far = np.asarray(Image.fromarray(m_far * 255).convert("L")
                       .filter(ImageFilter.GaussianBlur(1.2)), np.float32) / 255
    # rocky relief: smooth height noise lit from the sun side (slope along
    # x), mild detail on top, coarse light/shadow patches
    height = fbm2(rng, H, W, base=80, octaves=4, persistence=0.45)
    detail = fbm2(rng, H, W, base=12, octaves=3)
    coarse = fbm2(rng, H, W, base=220, octaves=3)
    relief = np.clip(0.5 + 22.0 * np.gradient(height, axis=1)
                     + 0.25 * (detail - 0.5) + 0.6 * (coarse - 0.5), 0, 1)
    haze = smoothstep(ridge[None, :] - 40, horizon, yy) ** 1.5  # mist at base
    far_col = np.stack([lerp(70, 160, haze), lerp(82, 168, haze),
                        lerp(112, 188, haze)], -1)
    far_col *= (0.7 + 0.6 * relief * (1 - 0.7 * haze))[..., None]
    img = blend(img, far_col, m_far)

    # --- near hills left and right, green with texture
    base_l = 560 + 120 * (1 - fbm1(rng, W, base=300, octaves=7))
    slope_l = np.clip((xx[0] - 80) / 700.0, 0, 1) ** 1.6 * 420
    ridge_l = base_l + slope_l                            # falls off to the right
    base_r = 600 + 100 * (1 - fbm1(rng, W, base=260, octaves=7))
    slope_r = np.clip((1750 - xx[0]) / 650.0, 0, 1) ** 1.7 * 420
    ridge_r = base_r + slope_r                            # falls off to the left
    near_ridge = np.minimum(ridge_l, ridge_r)
    m_near = (yy >= near_ridge[None, :]) & (yy < horizon + 4)
    m_near = np.asarray(Image.fromarray(m_near.astype(np.uint8) * 255)
                        .filter(ImageFilter.GaussianBlur(0.8)), np.float32) / 255
    veg = fbm2(rng, H, W, base=24, octaves=5)
    veg2 = fbm2(rng, H, W, base=6, octaves=3)
    lit = np.clip(0.55 + 0.9 * (veg - 0.5) + 0.5 * (veg2 - 0.5), 0.15, 1.2)
    depth = smoothstep(near_ridge[None, :], horizon, yy)  # darker near water
    hill_col = np.stack([lerp(70, 38, depth) * lit,
                         lerp(100, 66, depth) * lit,
                         lerp(60, 40, depth) * lit], -1)
    # sunlit flank towards the sun
    hill_col *= (1 + 0.12 * np.exp(-((xx - sx) / 500.0) ** 2))[..., None]
    img = blend(img, hill_col, m_near)

    # --- lake: reflection of everything above the waterline
    water_h = H - horizon
    rows = np.arange(horizon, H)
    dist = rows - horizon
    src_rows = np.clip(horizon - 1 - dist, 0, horizon - 1)
    # ripples: row-wise horizontal displacement grows with distance
    ripple_amp = 1.5 + dist * 0.045
    ph = rng.random(water_h) * 2 * np.pi
    shift = (np.sin(dist * 0.9 + ph) * ripple_amp
             + (fbm1(rng, water_h, base=5, octaves=3) - 0.5) * ripple_amp * 3)
    refl = np.empty((water_h, W, 3), np.float32)
    for i, (sr, s) in enumerate(zip(src_rows, shift)):
        refl[i] = np.roll(img[sr], int(round(s)), axis=0)
    refl_img = Image.fromarray(np.clip(refl, 0, 255).astype(np.uint8))
    refl = np.asarray(refl_img.filter(ImageFilter.GaussianBlur(1.6)), np.float32)
    fade = (dist / water_h)[:, None, None]
    water_tint = np.array([30, 58, 72], np.float32)
    refl = refl * (0.78 - 0.25 * fade) + water_tint * (0.22 + 0.25 * fade)
    # sun glitter on the water below the sun
    gl = fbm2(rng, water_h, W, base=3, octaves=2)
    glit = (np.exp(-((xx[horizon:] - sx) / (40 + dist[:, None] * 0.5)) ** 2)
            * smoothstep(0.62, 0.8, gl) * (1 - fade[..., 0]))
    refl = blend(refl, [255, 235, 200], glit * 0.8)
    # thin bright line at the waterline
    refl[:2] = refl[:2] * 0.6 + 255 * 0.4 * np.array([0.95, 0.9, 0.85])
    img[horizon:] = refl

    # --- foreground shore: dark grass/earth with irregular edge
    shore = 1010 + 80 * (fbm1(rng, W, base=360, octaves=7) - 0.5) \
        + 70 * np.clip((300 - xx[0]) / 300.0, 0, 1)
    m_shore = (yy >= shore[None, :]).astype(np.float32)
    grass = fbm2(rng, H, W, base=4, octaves=3)
    soil = fbm2(rng, H, W, base=50, octaves=5)
    patch = fbm2(rng, H, W, base=160, octaves=3)
    near = smoothstep(shore[None, :], H, yy)               # darker at bottom
    tone = (0.55 + 0.8 * grass) * (1.1 - 0.45 * near)
    shore_col = np.stack([lerp(34, 92, soil * patch * 1.6) * tone,
                          lerp(58, 78, soil) * tone,
                          lerp(24, 38, soil) * tone], -1)
    img = blend(img, shore_col, m_shore)
    # grass blades poking above the shore line
    im = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    dr = ImageDraw.Draw(im)
    for _ in range(2600):
        x = float(rng.uniform(0, W))
        y0 = float(shore[min(W - 1, int(x))]) + float(rng.uniform(0, 25))
        ln = float(rng.uniform(8, 34))
        lean = float(rng.normal(0, 6))
        g = int(rng.uniform(45, 95))
        dr.line([(x, y0), (x + lean, y0 - ln)], fill=(g // 2 + 10, g, g // 3 + 10),
                width=1)
    img = np.asarray(im, np.float32)

    # --- camera look: slight softness, vignette, warm grade, sensor grain
    img = np.asarray(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
                     .filter(ImageFilter.GaussianBlur(0.6)), np.float32)
    r = np.sqrt(((xx - W / 2) / (W / 2)) ** 2 + ((yy - H / 2) / (H / 2)) ** 2)
    img *= (1 - 0.28 * smoothstep(0.6, 1.45, r))[..., None]
    img *= np.array([1.03, 1.0, 0.96], np.float32)
    lum_grain = rng.normal(0, 4.0, (H, W, 1)).astype(np.float32)
    chroma_grain = rng.normal(0, 1.5, (H, W, 3)).astype(np.float32)
    img += lum_grain + chroma_grain
    upright = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    # Orientation 6 = "rotate 90° CW to display": store it rotated 90° CCW.
    stored = upright.transpose(Image.ROTATE_90)
    assert stored.size == (H, W)

    zeroth = {
        piexif.ImageIFD.Make: b"Canon",
        piexif.ImageIFD.Model: b"Canon EOS 5D Mark IV",
        piexif.ImageIFD.Orientation: 6,
        piexif.ImageIFD.XResolution: (300, 1),
        piexif.ImageIFD.YResolution: (300, 1),
        piexif.ImageIFD.ResolutionUnit: 2,
        piexif.ImageIFD.Software: b"media-edge make-samples.sh",
        piexif.ImageIFD.DateTime: b"2024:06:21 19:42:05",
        piexif.ImageIFD.Artist: b"Media Edge test suite",
        piexif.ImageIFD.Copyright: b"Public domain (synthetic test image)",
    }
    exif = {
        piexif.ExifIFD.DateTimeOriginal: b"2024:06:21 19:42:05",
        piexif.ExifIFD.DateTimeDigitized: b"2024:06:21 19:42:05",
        piexif.ExifIFD.ExposureTime: (1, 250),
        piexif.ExifIFD.FNumber: (80, 10),
        piexif.ExifIFD.ISOSpeedRatings: 100,
        piexif.ExifIFD.FocalLength: (35, 1),
        piexif.ExifIFD.LensModel: b"EF24-70mm f/2.8L II USM",
        piexif.ExifIFD.ColorSpace: 1,
        piexif.ExifIFD.PixelXDimension: stored.size[0],
        piexif.ExifIFD.PixelYDimension: stored.size[1],
    }

    def dms(v):
        v = abs(v)
        d = int(v)
        m = int((v - d) * 60)
        s = round(((v - d) * 60 - m) * 60 * 100)
        return ((d, 1), (m, 1), (s, 100))

    lat, lon = 48.8584, 2.2945  # Eiffel Tower
    gps = {
        piexif.GPSIFD.GPSVersionID: (2, 3, 0, 0),
        piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S",
        piexif.GPSIFD.GPSLatitude: dms(lat),
        piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W",
        piexif.GPSIFD.GPSLongitude: dms(lon),
        piexif.GPSIFD.GPSAltitudeRef: 0,
        piexif.GPSIFD.GPSAltitude: (35, 1),
        piexif.GPSIFD.GPSDateStamp: b"2024:06:21",
        piexif.GPSIFD.GPSTimeStamp: ((17, 1), (42, 1), (5, 1)),
    }
    exif_bytes = piexif.dump({"0th": zeroth, "Exif": exif, "GPS": gps,
                              "1st": {}, "thumbnail": None})
    path = f"{OUT}/photo.jpg"
    stored.save(path, "JPEG", quality=85, subsampling="4:2:0",
                optimize=True, exif=exif_bytes)

    # self-check: applying the orientation gives back the upright image
    chk = ImageOps.exif_transpose(Image.open(path))
    assert chk.size == (W, H), chk.size
    diff = np.abs(np.asarray(chk, np.int16) - np.asarray(upright, np.int16)).mean()
    assert diff < 6, diff
    print(f"photo.jpg: stored {stored.size[0]}x{stored.size[1]}, "
          f"displayed {W}x{H} (Orientation=6), mean abs err {diff:.2f}")


# ---------------------------------------------------------------- alpha.png
def make_alpha():
    W, H = 800, 600
    S = 2  # draw supersampled, downscale for antialiasing

    def mask(draw_fn, blur):
        m = Image.new("L", (W * S, H * S), 0)
        draw_fn(ImageDraw.Draw(m))
        m = m.resize((W, H), Image.LANCZOS)
        return m.filter(ImageFilter.GaussianBlur(blur)) if blur else m

    canvas = Image.new("RGBA", (W, H), (0, 0, 0, 0))

    def layer(color, m, opacity=1.0):
        nonlocal canvas
        a = m if opacity >= 1.0 else m.point(lambda v: int(v * opacity))
        solid = Image.new("RGBA", (W, H), color + (0,))
        solid.putalpha(a)
        canvas = Image.alpha_composite(canvas, solid)

    # soft drop shadow of the badge
    layer((0, 0, 0), mask(lambda d: d.ellipse(
        [S * 190, S * 110, S * 590, S * 510], fill=255), 18), 0.45)
    # badge: circle
    layer((32, 96, 200), mask(lambda d: d.ellipse(
        [S * 175, S * 90, S * 575, S * 490], fill=255), 1.5))
    # inner ring, semi transparent white
    layer((255, 255, 255), mask(lambda d: d.ellipse(
        [S * 205, S * 120, S * 545, S * 460], outline=255, width=S * 10), 1), 0.6)
    # play triangle
    layer((255, 255, 255), mask(lambda d: d.polygon(
        [(S * 320, S * 190), (S * 320, S * 390), (S * 480, S * 290)],
        fill=255), 1))
    # orange glowing orb overlapping the badge edge (very soft edge)
    layer((255, 140, 20), mask(lambda d: d.ellipse(
        [S * 520, S * 60, S * 720, S * 260], fill=255), 22), 0.9)
    layer((255, 200, 80), mask(lambda d: d.ellipse(
        [S * 570, S * 110, S * 670, S * 210], fill=255), 6))
    # translucent green bar along the bottom
    layer((40, 190, 110), mask(lambda d: d.rounded_rectangle(
        [S * 80, S * 500, S * 720, S * 560], radius=S * 30, fill=255), 2), 0.7)

    path = f"{OUT}/alpha.png"
    canvas.save(path, "PNG", optimize=True)
    a = np.asarray(canvas)[..., 3]
    print(f"alpha.png: {W}x{H} RGBA, alpha transparent={int((a == 0).mean() * 100)}% "
          f"partial={int(((a > 0) & (a < 255)).mean() * 100)}% "
          f"opaque={int((a == 255).mean() * 100)}%")


# ---------------------------------------------------------------- anim.gif
def make_gif():
    W, H, N = 320, 240, 24
    frames = []
    for i in range(N):
        ph = 2 * math.pi * i / N
        im = Image.new("RGB", (W, H), (18, 24, 40))
        d = ImageDraw.Draw(im)
        # static background stripes
        for k in range(0, W, 40):
            d.rectangle([k, 0, k + 19, H], fill=(24, 32, 54))
        d.rectangle([0, 200, W, H], fill=(40, 60, 90))
        # bouncing ball moving left->right->left
        x = 160 + 120 * math.sin(ph)
        y = 190 - 150 * abs(math.sin(2 * ph))
        d.ellipse([x - 16, 200 - 6, x + 16, 200 + 2], fill=(20, 30, 50))  # shadow
        d.ellipse([x - 20, y - 20, x + 20, y + 20], fill=(240, 90, 40))
        d.ellipse([x - 11, y - 13, x - 3, y - 5], fill=(255, 190, 150))
        # rotating square in the corner
        c, s = math.cos(ph), math.sin(ph)
        pts = [(40 + 18 * (c * px - s * py), 40 + 18 * (s * px + c * py))
               for px, py in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        d.polygon(pts, fill=(80, 200, 140))
        # frame counter bar
        d.rectangle([8, 228, 8 + (W - 16) * (i + 1) // N, 234], fill=(230, 230, 230))
        frames.append(im.quantize(colors=32, method=Image.MEDIANCUT, dither=0))
    path = f"{OUT}/anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=80,
                   loop=0, optimize=False, disposal=1)
    chk = Image.open(path)
    print(f"anim.gif: {chk.size[0]}x{chk.size[1]}, frames={chk.n_frames}, "
          f"loop={chk.info.get('loop')}, duration={chk.info.get('duration')}ms")


make_photo()
make_alpha()
make_gif()
PY

echo "== video"
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=12" \
    -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=12" \
    -map 0:v -map 1:a \
    -c:v libx264 -preset veryslow -crf 35 -maxrate 1200k -bufsize 2400k \
    -profile:v high -pix_fmt yuv420p -g 60 -keyint_min 60 -sc_threshold 0 \
    -threads 1 \
    -c:a aac -b:a 64k -ac 2 \
    -map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact \
    -movflags +faststart -t 12 \
    "$out/clip.mp4"
if command -v ffprobe >/dev/null 2>&1; then
    ffprobe -v error -show_entries format=duration:stream=codec_name,width,height \
        -of compact=p=0:nk=0 "$out/clip.mp4" | sed 's/^/clip.mp4: /'
fi

if command -v exiftool >/dev/null 2>&1; then
    echo "== EXIF (photo.jpg)"
    exiftool -s -Make -Model -DateTimeOriginal -Orientation -n \
        -GPSLatitude -GPSLatitudeRef -GPSLongitude -GPSLongitudeRef \
        "$out/photo.jpg"
fi

echo "== sizes"
files=(photo.jpg alpha.png anim.gif clip.mp4)
total=0
for f in "${files[@]}"; do
    sz=$(stat -c %s "$out/$f")
    total=$((total + sz))
    printf '%10d  %s\n' "$sz" "$f"
done
printf '%10d  total\n' "$total"
if ((total >= 3000000)); then
    echo "error: samples total $total bytes, must be < 3 MB" >&2
    exit 1
fi
