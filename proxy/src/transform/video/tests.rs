//! Specification tests for the video engine on media generated at test time with the
//! `ffmpeg` CLI's lavfi sources (each test makes only what it needs in its own temp dir);
//! outputs are checked with `ffprobe` and by decoding them back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use filters::{Codec, Fit, Format, Mode, Quality, TransformSpec};

use super::*;

fn ff(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg CLI runs");
    assert!(st.success(), "ffmpeg {args:?} failed");
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// 10 s 640x360 h264 + AAC, keyframe every 2 s.
#[rustfmt::skip]
fn mp4(d: &Path) -> PathBuf {
    let p = d.join("src.mp4");
    ff(&[
        "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=10",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=10:sample_rate=44100",
        "-c:v", "libx264", "-preset", "ultrafast", "-g", "50", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "96k", "-shortest", p.to_str().unwrap_or_default(),
    ]);
    p
}

#[rustfmt::skip]
fn webm(d: &Path) -> PathBuf {
    let p = d.join("src.webm");
    ff(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=4",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
        "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k",
        "-c:a", "libopus", "-shortest", p.to_str().unwrap_or_default(),
    ]);
    p
}

#[rustfmt::skip]
fn no_audio(d: &Path) -> PathBuf {
    let p = d.join("silent.mp4");
    ff(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
        "-c:v", "libx264", "-preset", "ultrafast", "-an", p.to_str().unwrap_or_default(),
    ]);
    p
}

/// A phone-style clip: 320x180 coded, display matrix rotating it to portrait.
#[rustfmt::skip]
fn rotated(d: &Path) -> PathBuf {
    let raw = d.join("raw.mp4");
    ff(&[
        "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=3",
        "-c:v", "libx264", "-preset", "ultrafast", raw.to_str().unwrap_or_default(),
    ]);
    let p = d.join("phone.mp4");
    // FFmpeg 5.1 writes the display matrix from the `rotate` tag on stream copy.
    ff(&[
        "-i", raw.to_str().unwrap_or_default(), "-c", "copy", "-metadata:s:v", "rotate=90",
        p.to_str().unwrap_or_default(),
    ]);
    p
}

fn ffprobe(p: &Path, entries: &str, select: &str) -> String {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            select,
            "-show_entries",
            entries,
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(p)
        .output()
        .expect("ffprobe runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(s: &str, key: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_default()
        .to_string()
}

fn opts() -> VideoOptions {
    VideoOptions::default()
}

fn spec(mode: Mode) -> TransformSpec {
    TransformSpec::new(mode)
}

/// Decodes an image with ffmpeg into raw gray pixels.
fn gray_pixels(img: &[u8], d: &Path, name: &str) -> Vec<u8> {
    let p = d.join(name);
    std::fs::write(&p, img).unwrap_or_default();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(&p)
        .args(["-f", "rawvideo", "-pix_fmt", "gray", "-"])
        .output()
        .expect("ffmpeg decodes");
    out.stdout
}

fn no_progress(_: f32) {}

#[test]
fn probe_reports_streams_duration_and_size() {
    let d = dir();
    let p = probe(&mp4(d.path())).expect("probe");
    assert_eq!((p.width, p.height), (640, 360));
    assert!((p.duration - 10.0).abs() < 0.2, "duration {}", p.duration);
    assert_eq!(p.video_codec.as_deref(), Some("h264"));
    assert_eq!(p.audio_codec.as_deref(), Some("aac"));
    assert!(p.has_audio && p.has_video);
    assert!((p.fps - 25.0).abs() < 0.01);
    assert!(p.bitrate > 0);
    assert!(p.container.contains("mp4"));
    let json = serde_json::to_value(&p).expect("json");
    assert_eq!(json["width"], 640);

    let w = probe(&webm(d.path())).expect("probe webm");
    assert_eq!(w.video_codec.as_deref(), Some("vp9"));
    assert_eq!(w.audio_codec.as_deref(), Some("opus"));

    let s = probe(&no_audio(d.path())).expect("probe silent");
    assert!(!s.has_audio && s.audio_codec.is_none());
}

#[test]
fn probe_sees_phone_rotation() {
    let d = dir();
    let p = probe(&rotated(d.path())).expect("probe");
    assert_eq!((p.width, p.height), (320, 180));
    assert!(
        p.rotation == 90 || p.rotation == 270,
        "rotation {}",
        p.rotation
    );
    assert_eq!((p.display_width, p.display_height), (180, 320));
}

#[test]
fn frame_is_scaled_and_changes_with_time() {
    let d = dir();
    let src = mp4(d.path());
    let mut s = spec(Mode::Frame);
    s.width = Some(320);
    s.time_ms = Some(1000);
    let a = frame(&src, &s, &opts()).expect("frame at 1s");
    assert_eq!(a.content_type, "image/jpeg");
    assert_eq!((a.width, a.height), (320, 180));
    assert_eq!(&a.body[..2], &[0xff, 0xd8]);
    s.time_ms = Some(5000);
    let b = frame(&src, &s, &opts()).expect("frame at 5s");
    let (pa, pb) = (
        gray_pixels(&a.body, d.path(), "a.jpg"),
        gray_pixels(&b.body, d.path(), "b.jpg"),
    );
    assert_eq!(pa.len(), 320 * 180);
    let diff: u64 = pa
        .iter()
        .zip(&pb)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    assert!(
        diff / (pa.len() as u64) > 2,
        "frames at 1s and 5s look the same"
    );
    // Exactness: the frame at 5.0s equals the CLI's accurate seek to 5.0s.
    let cli = d.path().join("cli.png");
    ff(&[
        "-ss",
        "5",
        "-i",
        src.to_str().unwrap_or_default(),
        "-frames:v",
        "1",
        "-vf",
        "scale=320:180",
        cli.to_str().unwrap_or_default(),
    ]);
    s.format = Some(Format::Png);
    let png = frame(&src, &s, &opts()).expect("png frame");
    assert_eq!(png.content_type, "image/png");
    let ours = gray_pixels(&png.body, d.path(), "ours.png");
    let theirs = gray_pixels(
        &std::fs::read(&cli).unwrap_or_default(),
        d.path(),
        "theirs.png",
    );
    let diff: u64 = ours
        .iter()
        .zip(&theirs)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    assert!(
        diff / (ours.len().max(1) as u64) < 3,
        "frame at 5s differs from the CLI's"
    );
}

#[test]
fn frame_fit_modes_and_webp() {
    let d = dir();
    let src = mp4(d.path());
    for (fit, out) in [
        (Fit::Cover, (200, 200)),
        (Fit::Pad, (200, 200)),
        (Fit::Contain, (200, 113)),
        (Fit::Fill, (200, 200)),
    ] {
        let mut s = spec(Mode::Frame);
        (s.width, s.height, s.fit) = (Some(200), Some(200), Some(fit));
        let o = frame(&src, &s, &opts()).expect("frame");
        assert_eq!((o.width, o.height), out, "{fit:?}");
    }
    let mut s = spec(Mode::Frame);
    s.format = Some(Format::Webp);
    s.width = Some(160);
    let o = frame(&src, &s, &opts()).expect("webp");
    assert_eq!(o.content_type, "image/webp");
    assert_eq!(&o.body[8..12], b"WEBP");
    // No width: the source size, within the thumbnail limit.
    let o = frame(&src, &spec(Mode::Frame), &opts()).expect("full size");
    assert_eq!((o.width, o.height), (640, 360));
    s.format = Some(Format::Gif);
    assert!(matches!(
        frame(&src, &s, &opts()),
        Err(TransformError::Unsupported(_))
    ));
    s.format = None;
    s.time_ms = Some(60_000);
    assert!(matches!(
        frame(&src, &s, &opts()),
        Err(TransformError::BadRequest(_))
    ));
}

#[test]
fn frame_applies_rotation_metadata() {
    let d = dir();
    let o = frame(&rotated(d.path()), &spec(Mode::Frame), &opts()).expect("frame");
    assert_eq!((o.width, o.height), (180, 320));
}

#[test]
fn frame_from_vp9_webm() {
    let d = dir();
    let mut s = spec(Mode::Frame);
    s.time_ms = Some(2000);
    let o = frame(&webm(d.path()), &s, &opts()).expect("frame");
    assert_eq!((o.width, o.height), (320, 180));
}

#[test]
fn spritesheet_grid() {
    let d = dir();
    let src = mp4(d.path());
    let o = spritesheet(&src, &spec(Mode::Spritesheet), &opts()).expect("sheet");
    // 20 frames → 5 columns x 4 rows of 160x90.
    assert_eq!((o.width, o.height), (800, 360));
    assert_eq!(o.content_type, "image/jpeg");
    let mut s = spec(Mode::Spritesheet);
    s.image_count = Some(9);
    s.width = Some(100);
    s.time_ms = Some(2000);
    s.duration_ms = Some(4000);
    let o = spritesheet(&src, &s, &opts()).expect("sheet 9");
    assert_eq!((o.width, o.height), (300, 168));
    // Tiles differ from one another (frames are spread over time).
    let px = gray_pixels(&o.body, d.path(), "s.jpg");
    let tile = |i: usize| -> Vec<u8> {
        let (tx, ty) = ((i % 3) * 100, (i / 3) * 56);
        (0..56)
            .flat_map(|r| px[(ty + r) * 300 + tx..(ty + r) * 300 + tx + 100].to_vec())
            .collect()
    };
    let (t0, t8) = (tile(0), tile(8));
    let diff: u64 = t0
        .iter()
        .zip(&t8)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    assert!(diff / t0.len() as u64 > 2);
}

#[test]
fn audio_copies_aac_with_clip() {
    let d = dir();
    let src = mp4(d.path());
    let out = d.path().join("a.m4a");
    let mut s = spec(Mode::Audio);
    s.time_ms = Some(2000);
    s.duration_ms = Some(3000);
    let seen = Mutex::new(Vec::new());
    let r = audio(&src, &s, &opts(), &out, &|p| {
        seen.lock().map(|mut v| v.push(p)).unwrap_or(())
    })
    .expect("audio");
    assert_eq!(r.content_type, "audio/mp4");
    let info = ffprobe(&out, "stream=codec_name,codec_type:format=duration", "a");
    assert_eq!(field(&info, "codec_name"), "aac");
    let dur: f64 = field(&info, "duration").parse().unwrap_or(0.0);
    assert!((dur - 3.0).abs() < 0.15, "duration {dur}");
    assert!(!ffprobe(&out, "stream=codec_type", "v").contains("video"));
    let seen = seen.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(seen.last().copied(), Some(100.0));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn audio_encodes_opus_to_aac() {
    let d = dir();
    let out = d.path().join("a.m4a");
    let r = audio(
        &webm(d.path()),
        &spec(Mode::Audio),
        &opts(),
        &out,
        &no_progress,
    )
    .expect("audio");
    let info = ffprobe(&out, "stream=codec_name:format=duration", "a");
    assert_eq!(field(&info, "codec_name"), "aac");
    let dur: f64 = field(&info, "duration").parse().unwrap_or(0.0);
    assert!((dur - 4.0).abs() < 0.2, "duration {dur}");
    assert!((r.duration_secs - 4.0).abs() < 0.2);
    // A file without audio: 415.
    let out2 = d.path().join("b.m4a");
    let e = audio(
        &no_audio(d.path()),
        &spec(Mode::Audio),
        &opts(),
        &out2,
        &no_progress,
    );
    assert!(matches!(e, Err(TransformError::Unsupported(_))), "{e:?}");
    assert!(!out2.exists());
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn transcode_h264_resize_clip_faststart() {
    let d = dir();
    let src = mp4(d.path());
    let out = d.path().join("o.mp4");
    let mut s = spec(Mode::Video);
    s.width = Some(320);
    s.time_ms = Some(2000);
    s.duration_ms = Some(4000);
    s.quality = Some(Quality::Low);
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |p: f32| seen.borrow_mut().push(p);
    let r = transcode(&src, &s, &opts(), &out, &record).expect("transcode");
    assert_eq!((r.width, r.height), (320, 180));
    assert_eq!(r.content_type, "video/mp4");
    // Progress comes from output timestamps: rising, several steps, ending at 100.
    let seen = seen.into_inner();
    assert!(seen.len() >= 10, "progress reports {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen[0] < 50.0 && seen[seen.len() - 2] >= 75.0, "{seen:?}");
    assert_eq!(seen.last(), Some(&100.0));
    let v = ffprobe(&out, "stream=codec_name,width,height", "v");
    assert_eq!(field(&v, "codec_name"), "h264");
    assert_eq!(
        (field(&v, "width"), field(&v, "height")),
        ("320".into(), "180".into())
    );
    assert_eq!(
        field(&ffprobe(&out, "stream=codec_name", "a"), "codec_name"),
        "aac"
    );
    let dur: f64 = field(&ffprobe(&out, "format=duration", "v"), "duration")
        .parse()
        .unwrap_or(0.0);
    assert!((dur - 4.0).abs() < 0.2, "duration {dur}");
    let bytes = std::fs::read(&out).unwrap_or_default();
    let (moov, mdat) = (find(&bytes, b"moov"), find(&bytes, b"mdat"));
    assert!(
        moov.is_some() && mdat.is_some() && moov < mdat,
        "moov {moov:?} mdat {mdat:?}"
    );
    // The clip starts at 2 s of the source: its first frame matches the source's frame at 2 s.
    let mut fs = spec(Mode::Frame);
    fs.width = Some(320);
    let first = frame(&out, &fs, &opts()).expect("first frame");
    fs.time_ms = Some(2000);
    let at2 = frame(&src, &fs, &opts()).expect("source frame");
    let (a, b) = (
        gray_pixels(&first.body, d.path(), "f.jpg"),
        gray_pixels(&at2.body, d.path(), "g.jpg"),
    );
    let diff: u64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    assert!(
        diff / a.len().max(1) as u64 <= 6,
        "clip does not start at 2s"
    );
}

#[test]
fn transcode_options_fps_rotate_crop_noaudio_h265() {
    let d = dir();
    let src = mp4(d.path());
    let out = d.path().join("o.mp4");
    let mut s = spec(Mode::Video);
    s.codec = Some(Codec::H265);
    s.audio = Some(false);
    s.fps = Some(10);
    s.rotate = Some(90);
    s.crop = Some(filters::params::Crop {
        w: 320,
        h: 200,
        x: 10,
        y: 10,
    });
    s.duration_ms = Some(2000);
    s.compression = Some(filters::Compression::Fast);
    let r = transcode(&src, &s, &opts(), &out, &no_progress).expect("transcode");
    assert_eq!((r.width, r.height), (200, 320));
    let v = ffprobe(
        &out,
        "stream=codec_name,codec_tag_string,avg_frame_rate",
        "v",
    );
    assert_eq!(field(&v, "codec_name"), "hevc");
    assert_eq!(field(&v, "codec_tag_string"), "hvc1");
    assert_eq!(field(&v, "avg_frame_rate"), "10/1");
    assert!(ffprobe(&out, "stream=codec_type", "a").is_empty());
    // Crop outside the picture → 400, nothing left behind.
    s.crop = Some(filters::params::Crop {
        w: 640,
        h: 360,
        x: 10,
        y: 0,
    });
    let out2 = d.path().join("bad.mp4");
    let e = transcode(&src, &s, &opts(), &out2, &no_progress);
    assert!(matches!(e, Err(TransformError::BadRequest(_))), "{e:?}");
    assert!(!out2.exists());
}

#[test]
fn transcode_vp9_webm_and_av1() {
    let d = dir();
    let src = webm(d.path());
    let out = d.path().join("o.webm");
    let mut s = spec(Mode::Video);
    s.codec = Some(Codec::Vp9);
    s.width = Some(160);
    s.duration_ms = Some(1000);
    let r = transcode(&src, &s, &opts(), &out, &no_progress).expect("vp9");
    assert_eq!(r.content_type, "video/webm");
    let v = ffprobe(&out, "stream=codec_name,width", "v");
    assert_eq!(field(&v, "codec_name"), "vp9");
    assert_eq!(field(&v, "width"), "160");
    assert_eq!(
        field(&ffprobe(&out, "stream=codec_name", "a"), "codec_name"),
        "opus"
    );
    // h264 in webm is refused.
    s.codec = Some(Codec::H264);
    s.format = Some(Format::Webm);
    assert!(matches!(
        transcode(&src, &s, &opts(), &out, &no_progress),
        Err(TransformError::BadRequest(_))
    ));
    // AV1: whichever encoder exists, never silently another codec.
    s.codec = Some(Codec::Av1);
    s.format = Some(Format::Mp4);
    let out = d.path().join("o_av1.mp4");
    match transcode(&src, &s, &opts(), &out, &no_progress) {
        Ok(_) => {
            let v = ffprobe(&out, "stream=codec_name", "v");
            assert_eq!(field(&v, "codec_name"), "av1");
        }
        Err(TransformError::Unsupported(m)) => assert!(m.contains("av1"), "{m}"),
        Err(e) => panic!("av1: {e:?}"),
    }
}

#[test]
fn hls_package() {
    let d = dir();
    // 14 s so there are three segments.
    let src = d.path().join("long.mp4");
    ff(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=25:duration=14",
        "-f",
        "lavfi",
        "-i",
        "sine=duration=14",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        "-shortest",
        src.to_str().unwrap_or_default(),
    ]);
    let out = d.path().join("hls");
    let h = hls(&src, &opts(), &out, &no_progress).expect("hls");
    assert_eq!((h.width, h.height), (1280, 720));
    let text = std::fs::read_to_string(&h.playlist).unwrap_or_default();
    assert!(text.starts_with("#EXTM3U"));
    assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
    assert!(text.contains("#EXT-X-ENDLIST"));
    let durs: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .filter_map(|l| l.trim_end_matches(',').parse().ok())
        .collect();
    assert_eq!(durs.len(), 3, "{text}");
    assert!(
        (durs[0] - 6.0).abs() < 0.1 && (durs[1] - 6.0).abs() < 0.1,
        "{durs:?}"
    );
    assert_eq!(h.segments.len(), 3);
    assert!(h.segments.iter().all(|s| s.exists()));
    let poster = std::fs::read(&h.poster).unwrap_or_default();
    assert_eq!(&poster[..2], &[0xff, 0xd8]);
    // The rendition and segment length are configurable.
    let small = VideoOptions {
        hls_height: 360,
        hls_segment_secs: 4,
        ..opts()
    };
    let out = d.path().join("hls360");
    let h = hls(&src, &small, &out, &no_progress).expect("hls 360");
    assert_eq!((h.width, h.height), (640, 360));
    assert_eq!(h.segments.len(), 4, "14 s in 4 s segments");
}

#[test]
fn bad_inputs_are_415_or_422_never_a_panic() {
    let d = dir();
    let text = d.path().join("notes.txt");
    std::fs::write(&text, "this is not a video\n".repeat(50)).unwrap_or_default();
    assert!(matches!(probe(&text), Err(TransformError::Unsupported(_))));
    assert!(matches!(
        frame(&text, &spec(Mode::Frame), &opts()),
        Err(TransformError::Unsupported(_))
    ));
    let empty = d.path().join("empty.mp4");
    std::fs::write(&empty, b"").unwrap_or_default();
    assert!(matches!(probe(&empty), Err(TransformError::Unsupported(_))));

    // Truncated: moov at the end, cut in half → a recognisable MP4 we cannot read.
    let src = mp4(d.path());
    let bytes = std::fs::read(&src).unwrap_or_default();
    let cut = d.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap_or_default();
    assert!(matches!(probe(&cut), Err(TransformError::Invalid(_))));
    let out = d.path().join("cut_out.mp4");
    let e = transcode(&cut, &spec(Mode::Video), &opts(), &out, &no_progress);
    assert!(matches!(e, Err(TransformError::Invalid(_))), "{e:?}");
    assert!(!out.exists());

    // Absurd dimensions.
    let huge = d.path().join("huge.y4m");
    std::fs::write(
        &huge,
        b"YUV4MPEG2 W8000 H8000 F25:1 Ip A1:1 C420jpeg\nFRAME\nabc",
    )
    .unwrap_or_default();
    assert!(matches!(probe(&huge), Err(TransformError::Unsupported(_))));

    // Video modes on an audio-only file: 415.
    let m4a = d.path().join("a.m4a");
    ff(&[
        "-f",
        "lavfi",
        "-i",
        "sine=duration=2",
        "-c:a",
        "aac",
        m4a.to_str().unwrap_or_default(),
    ]);
    assert!(matches!(
        frame(&m4a, &spec(Mode::Frame), &opts()),
        Err(TransformError::Unsupported(_))
    ));
    assert!(probe(&m4a).is_ok_and(|p| p.has_audio && !p.has_video));
}

#[test]
fn timeout_is_enforced_and_cleans_up() {
    let d = dir();
    let src = mp4(d.path());
    let out = d.path().join("o.mp4");
    let o = VideoOptions {
        timeout: Duration::from_millis(1),
        ..VideoOptions::default()
    };
    std::thread::sleep(Duration::from_millis(5));
    let e = transcode(&src, &spec(Mode::Video), &o, &out, &no_progress);
    assert!(matches!(e, Err(TransformError::Timeout(_))), "{e:?}");
    assert!(!out.exists());
    assert_eq!(e.err().map(|e| e.to_api().status), Some(504));
}

#[test]
fn sample_clip_from_the_repo() {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/samples/clip.mp4");
    if !clip.exists() {
        return;
    }
    let p = probe(&clip).expect("probe");
    assert_eq!((p.width, p.height), (1280, 720));
    let mut s = spec(Mode::Frame);
    s.width = Some(640);
    s.time_ms = Some(6000);
    let o = frame(&clip, &s, &opts()).expect("frame");
    assert_eq!((o.width, o.height), (640, 360));
}

#[test]
fn crf_presets() {
    assert_eq!(crf_preset(Some(Quality::Low), None), (28, "fast"));
    assert_eq!(crf_preset(Some(Quality::Medium), None), (23, "medium"));
    assert_eq!(crf_preset(Some(Quality::High), None), (18, "medium"));
    assert_eq!(crf_preset(None, None), (23, "medium"));
    assert_eq!(
        crf_preset(None, Some(filters::Compression::Fast)),
        (23, "veryfast")
    );
}

#[test]
fn tolerant_frames_stay_inside_their_window() {
    // 10 s at 25 fps with a keyframe every 2 s: windows with and without a keyframe, in
    // spritesheet order; each answer must be a frame whose time lies in its window.
    let d = dir();
    let src = mp4(d.path());
    let media = Media::File(src);
    let mut cur = super::still::Cursor::open(&media, input::Deadline::new(Duration::from_secs(30)))
        .expect("open");
    let (tb, start) = (cur.vs.time_base, cur.vs.start_pts);
    for i in 0..10 {
        let mid = f64::from(i) + 0.5;
        let f = cur.frame_at(mid, 0.5).expect("frame");
        let t = input::ts_to_secs(f.timestamp().expect("pts") - start, tb);
        assert!(
            (mid - 0.5 - 1e-6..mid + 0.5 + 0.05).contains(&t),
            "window {i}: frame at {t:.3}s"
        );
    }
    // Going back in time still works (a new seek).
    let f = cur.frame_at(4.2, 0.1).expect("frame");
    let t = input::ts_to_secs(f.timestamp().expect("pts") - start, tb);
    assert!((4.1 - 1e-6..4.35).contains(&t), "frame at {t:.3}s");
}
