//! End-to-end: the video engine reading S3 objects by ranges, streamed outputs, and HLS
//! packages served part by part through the edge.

use e2e::*;
use std::path::Path;
use std::process::Command;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A `secs`-second 640×360 h264/aac MP4 made with the ffmpeg CLI (high bitrate, so the
/// object is several MB and reading all of it is visible).
fn make_video(path: &Path, secs: u32, faststart: bool) {
    let mut c = Command::new("ffmpeg");
    c.args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("testsrc2=size=640x360:rate=25:duration={secs}"))
        .args(["-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={secs}"))
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "3M",
            "-g",
            "50",
            "-c:a",
            "aac",
            "-shortest",
        ]);
    if faststart {
        c.args(["-movflags", "+faststart"]);
    }
    let st = c.arg(path).status().expect("ffmpeg CLI");
    assert!(st.success(), "ffmpeg failed");
}

fn ffprobe(path: &Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            entries,
        ])
        .args(["-of", "default=nw=1:nk=1"])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn tmp_files(edge: &Edge) -> Vec<String> {
    std::fs::read_dir(edge.dir.path().join("data/tmp"))
        .expect("the scratch directory exists")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_video_is_read_by_ranges() {
    let work = tempfile::tempdir().unwrap();
    let tail = work.path().join("tail.mp4");
    let fast = work.path().join("fast.mp4");
    make_video(&tail, 40, false);
    make_video(&fast, 40, true);
    let s3 = S3Server::start("media").await;
    for (key, p) in [("v/tail.mp4", &tail), ("v/fast.mp4", &fast)] {
        s3.put("media", key, &std::fs::read(p).unwrap());
    }
    let size = std::fs::metadata(&tail).unwrap().len();
    assert!(size > 8_000_000, "test video is {size} bytes");
    let edge = Edge::start_with_env(&samples_config(&s3.origin("media", "")), S3_ENV).await;

    // A frame from the middle reads a small part of the object, moov at the end or first.
    for key in ["tail", "fast"] {
        let (s, h, body) = get(
            &edge,
            &format!("/s3/v/{key}.mp4?mode=frame&time=20s&width=320"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "content-type"), "image/jpeg");
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (320, 180));
        let read: u64 = hv(&h, "x-source-bytes-read").parse().unwrap();
        assert!(read > 0 && read < size / 4, "{key}: read {read} of {size}");
        eprintln!("{key}.mp4: frame at 20 s read {read} of {size} bytes");
    }
    // Probe reads the header only.
    let (s, h, body) = get(&edge, "/s3/v/fast.mp4?format=json", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["width"], 640);
    assert!((v["duration"].as_f64().unwrap() - 40.0).abs() < 0.5, "{v}");
    assert_eq!(hv(&h, "content-type"), "application/json");

    // A spritesheet seeks instead of decoding everything.
    let (s, h, body) = get(&edge, "/s3/v/tail.mp4?mode=spritesheet&imageCount=4", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "x-sprite-grid"), "2x2");
    let read: u64 = hv(&h, "x-source-bytes-read").parse().unwrap();
    assert!(read < size / 2, "spritesheet read {read} of {size}");

    // A 2 s clip from 30 s: streamed out with a length, fast start, only the clip read.
    let (s, h, body) = get(
        &edge,
        "/s3/v/tail.mp4?mode=video&time=30s&duration=2s&width=320",
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "video/mp4");
    assert_eq!(hv(&h, "content-length"), body.len().to_string());
    let moov = body.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = body.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "fast start");
    let read: u64 = hv(&h, "x-source-bytes-read").parse().unwrap();
    assert!(read < size / 2, "clip read {read} of {size}");
    let out = work.path().join("clip.mp4");
    std::fs::write(&out, &body).unwrap();
    let dur: f64 = ffprobe(&out, "format=duration").trim().parse().unwrap();
    assert!((dur - 2.0).abs() < 0.3, "clip is {dur}s");
    assert_eq!(ffprobe(&out, "stream=width").lines().next(), Some("320"));

    // Bad objects: not a video, empty, truncated; then the node still serves.
    s3.put(
        "media",
        "v/not.mp4",
        b"this is not a video at all, just some text bytes",
    );
    s3.put("media", "v/empty.mp4", b"");
    let bytes = std::fs::read(&fast).unwrap();
    s3.put("media", "v/cut.mp4", &bytes[..bytes.len() / 50]);
    for (key, want) in [("not", 415), ("empty", 415), ("cut", 422)] {
        let (s, h, body) = get(&edge, &format!("/s3/v/{key}.mp4?mode=frame&time=5s"), &[]).await;
        assert_eq!(s, want, "{key}: {}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "content-type"), "application/json");
        assert!(hv(&h, "cache-control").contains("no-store"), "{key}");
    }
    let (s, _, _) = get(&edge, "/s3/v/fast.mp4?mode=frame&time=3s&width=200", &[]).await;
    assert_eq!(s, 200);
    // Scratch files are gone once the responses are done.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !tmp_files(&edge).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(tmp_files(&edge).is_empty(), "{:?}", tmp_files(&edge));
}

#[tokio::test(flavor = "multi_thread")]
async fn hls_package_is_served_and_cached() {
    // The 12 s sample is packaged while the client waits (longer sources become jobs).
    let edge = Edge::start(&samples_config(
        "[jobs]\nsync_slow_codec_max_duration = \"30s\"",
    ))
    .await;
    let (s, h, body) = get(&edge, "/samples/clip.mp4?mode=hls", &[]).await;
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(s, 200, "{text}");
    assert_eq!(hv(&h, "content-type"), "application/vnd.apple.mpegurl");
    assert!(text.starts_with("#EXTM3U"), "{text}");
    assert!(text.contains("#EXT-X-ENDLIST"), "{text}");
    let segs: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(segs.len(), 2, "12 s in 6 s segments: {text}");
    let durations: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| {
            l.trim_end_matches(',')
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!((durations[0] - 6.0).abs() < 0.2, "{durations:?}");
    let work = tempfile::tempdir().unwrap();
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(*seg, format!("clip.mp4?mode=hls&segment={i}.ts"));
        let (s, h, body) = get(&edge, &format!("/samples/{seg}"), &[]).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "content-type"), "video/mp2t");
        assert_eq!(body[0], 0x47, "TS sync byte");
        assert_eq!(hv(&h, "content-length"), body.len().to_string());
        let p = work.path().join(format!("s{i}.ts"));
        std::fs::write(&p, &body).unwrap();
        let dur: f64 = ffprobe(&p, "format=duration").trim().parse().unwrap();
        assert!((dur - 6.0).abs() < 0.5, "segment {i} is {dur}s");
        assert_eq!(ffprobe(&p, "stream=height").lines().next(), Some("720"));
    }
    let (s, h, body) = get(&edge, "/samples/clip.mp4?mode=hls&segment=poster", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "image/jpeg");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!(img.height(), 720);
    // Every part is an ordinary cached object.
    let (_, h, again) = get(&edge, "/samples/clip.mp4?mode=hls", &[]).await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(String::from_utf8_lossy(&again), text);
    let (s, _, body) = get(&edge, "/samples/clip.mp4?mode=hls&segment=7", &[]).await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&body));
    let (s, _, _) = get(&edge, "/samples/clip.mp4?mode=hls&segment=x", &[]).await;
    assert_eq!(s, 400);
    // One package on disk, no scratch left behind.
    let pkgs: Vec<_> = std::fs::read_dir(edge.dir.path().join("data/hls"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(pkgs.len(), 1, "{pkgs:?}");
    assert!(!pkgs[0].starts_with('.'));
}

/// An origin serving objects named by their SHA-256 from `bucket` at `/content/<sha256>`.
fn content_origin(s3: &S3Server, bucket: &str) -> String {
    format!(
        "[content]\nprefix = \"/content/\"\n{}",
        s3.origin(bucket, "")
            .replace("name = \"s3\"", "name = \"content\"")
            .replace("^/s3/(.+)$", "^/content/([0-9a-f]{64})$")
    )
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn content_hash_routes() {
    let samples = workspace().join("conf/samples");
    let clip = std::fs::read(samples.join("clip.mp4")).unwrap();
    let photo = std::fs::read(samples.join("photo.jpg")).unwrap();
    let (vh, ph) = (sha256_hex(&clip), sha256_hex(&photo));
    let s3 = S3Server::start("content").await;
    s3.put("content", &vh, &clip);
    s3.put("content", &ph, &photo);
    let edge = Edge::start_with_env(&samples_config(&content_origin(&s3, "content")), S3_ENV).await;

    // Metadata: the kind is told from the bytes (no extension, no useful Content-Type).
    let (s, h, body) = get(&edge, &format!("/proxy/metadata/{vh}"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720)),
        "{v}"
    );
    assert!(v["duration"].as_f64().unwrap() >= 10.0, "{v}");
    let (s, _, body) = get(&edge, &format!("/proxy/metadata/{ph}"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["format"], "jpeg", "{v}");
    assert!(v["exif"]["latitude"].is_number(), "{v}");
    assert!(v["placeholder"].is_string(), "{v}");

    // Thumbnail of a video: a frame at the timestamp; two timestamps give two pictures.
    let mut frames = Vec::new();
    for t in [1, 5] {
        let (s, h, body) = get(
            &edge,
            &format!("/proxy/thumbnail/{vh}?width=320&timestamp={t}"),
            &[],
        )
        .await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "content-type"), "image/jpeg");
        assert_eq!(hv(&h, "x-transform-source"), "video");
        let img = image::load_from_memory(&body).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (320, 180));
        frames.push(img);
    }
    let diff: u64 = frames[0]
        .as_raw()
        .iter()
        .zip(frames[1].as_raw())
        .map(|(a, b)| a.abs_diff(*b) as u64)
        .sum();
    assert!(diff > 320 * 180, "frames at 1 s and 5 s differ ({diff})");
    // Thumbnail of a still image: the image itself, resized.
    let (s, h, body) = get(
        &edge,
        &format!("/proxy/thumbnail/{ph}?width=200&format=webp"),
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "image/webp");
    assert_eq!(hv(&h, "x-transform-source"), "image");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!(img.width(), 200);
    // With no size, a still image is held to the thumbnail box (never upscaled).
    let (s, _, body) = get(&edge, &format!("/proxy/thumbnail/{ph}"), &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let img = image::load_from_memory(&body).unwrap();
    let src = image::load_from_memory(&photo).unwrap();
    assert!(
        img.width() <= 1920 && img.height() <= 1080,
        "{}x{}",
        img.width(),
        img.height()
    );
    assert!(img.width().max(img.height()) <= src.width().max(src.height()));

    // Image: a transform shared with the plain content path (one cache key).
    let path = format!("/proxy/image/{ph}?width=300&format=png");
    let (s, h, body) = get(&edge, &path, &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "x-cache"), "MISS");
    assert_eq!(hv(&h, "content-type"), "image/png");
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 300);
    let (_, h, _) = get(&edge, &path, &[]).await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    let (_, h, again) = get(&edge, &format!("/content/{ph}?width=300&format=png"), &[]).await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(again, body);
    // No parameters: the original bytes.
    let (s, _, body) = get(&edge, &format!("/proxy/image/{ph}"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(body, photo);

    // Bad requests: JSON errors with the right status.
    let missing = "0".repeat(64);
    for (path, want) in [
        (format!("/proxy/thumbnail/{vh}?width=1921"), 400),
        (format!("/proxy/thumbnail/{vh}?height=1081"), 400),
        (format!("/proxy/thumbnail/{vh}?mode=video"), 400),
        (format!("/proxy/metadata/{vh}?width=10"), 400),
        (format!("/proxy/image/{vh}?mode=video"), 400),
        (format!("/proxy/image/{ph}?format=json"), 400),
        (format!("/proxy/image/{vh}?width=300"), 400),
        ("/proxy/image/abc123".to_string(), 400),
        (format!("/proxy/image/{}", "z".repeat(64)), 400),
        (format!("/proxy/metadata/{missing}"), 404),
        (format!("/proxy/thumbnail/{missing}?width=100"), 404),
    ] {
        let (s, h, body) = get(&edge, &path, &[]).await;
        assert_eq!(s, want, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "content-type"), "application/json", "{path}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Fluxer's shape on its routes: flat.
        assert!(
            v["code"].is_string() && v.get("error").is_none(),
            "{path}: {v}"
        );
    }

    // A node with no origin for the content prefix says so.
    let plain = Edge::start(&samples_config("")).await;
    let (s, _, body) = get(&plain, &format!("/proxy/metadata/{ph}"), &[]).await;
    assert_eq!(s, 404);
    assert!(
        String::from_utf8_lossy(&body).contains("content-hash"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
