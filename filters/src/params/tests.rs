use super::*;

#[test]
fn time_table() {
    for (s, ms) in [
        ("0s", Some(0)),
        ("0", Some(0)),
        ("5s", Some(5_000)),
        ("90", Some(90_000)),
        ("90.5s", Some(90_500)),
        ("1m30s", Some(90_000)),
        ("1m30", Some(90_000)),
        ("1m", Some(60_000)),
        ("10m", Some(600_000)),
        ("1.5m", Some(90_000)),
        ("500ms", Some(500)),
        ("-1s", None),
        ("abc", None),
        ("", None),
        ("1h", None),
        ("inf", None),
        ("NaN", None),
        ("1e3", None),
    ] {
        assert_eq!(parse_time(s), ms, "{s}");
    }
    assert_eq!(format_time(90_500), "90.5s");
    assert_eq!(format_time(0), "0s");
    assert_eq!(format_time(5_000), "5s");
    assert_eq!(format_time(1_250), "1.25s");
}

#[test]
fn bitrate_table() {
    for (s, b) in [
        ("2M", Some(2_000_000)),
        ("800k", Some(800_000)),
        ("2.5M", Some(2_500_000)),
        ("800000", Some(800_000)),
        ("1.5m", Some(1_500_000)),
        ("k", None),
        ("fast", None),
    ] {
        assert_eq!(parse_bitrate(s), b, "{s}");
    }
    assert_eq!(format_bitrate(2_000_000), "2M");
    assert_eq!(format_bitrate(800_000), "800k");
    assert_eq!(format_bitrate(2_500_000), "2500k");
    assert_eq!(format_bitrate(12_345), "12345");
}

#[test]
fn color_table() {
    for (s, c) in [
        ("#fff", Some("#ffffff")),
        ("#FF0000", Some("#ff0000")),
        ("ff0000", Some("#ff0000")),
        ("#ff000080", Some("#ff000080")),
        ("#ff0000ff", Some("#ff0000")),
        ("#f008", Some("#ff000088")),
        ("white", Some("#ffffff")),
        ("transparent", Some("#00000000")),
        ("#ggg", None),
        ("#12345", None),
        ("chartreuse", None),
    ] {
        assert_eq!(parse_color(s).as_deref(), c, "{s}");
    }
}

#[test]
fn gravity_table() {
    for (s, g) in [
        ("auto", Some(Gravity::Auto)),
        ("center", Some(Gravity::Center)),
        ("top", Some(Gravity::Top)),
        ("bottom", Some(Gravity::Bottom)),
        ("left", Some(Gravity::Left)),
        ("right", Some(Gravity::Right)),
        ("0.5x0.25", Some(Gravity::Focal { x: 500, y: 250 })),
        ("0x1", Some(Gravity::Focal { x: 0, y: 1000 })),
        ("1.5x0.5", None),
        ("0.5", None),
        ("-0.1x0.5", None),
        ("northwest", None),
    ] {
        assert_eq!(Gravity::parse_str(s), g, "{s}");
    }
    assert_eq!(Gravity::Focal { x: 500, y: 250 }.to_string(), "0.5x0.25");
    assert_eq!(Gravity::Focal { x: 0, y: 1000 }.to_string(), "0x1");
}

#[test]
fn quality_and_keywords() {
    assert_eq!(Quality::parse_str("80"), Some(Quality::Value(80)));
    assert_eq!(Quality::parse_str("0"), None);
    assert_eq!(Quality::parse_str("101"), None);
    assert_eq!(Quality::parse_str("LOW"), Some(Quality::Low));
    assert_eq!(Quality::Medium.level(), Some(75));
    assert_eq!(Format::parse_str("jpg"), Some(Format::Jpeg));
    assert_eq!(Format::parse_str("JPEG"), Some(Format::Jpeg));
    assert_eq!(Format::parse_str("tiff"), None);
    assert_eq!(Fit::parse_str("scale-down"), Some(Fit::ScaleDown));
    assert_eq!(Codec::parse_str("hevc"), Some(Codec::H265));
    assert_eq!(Compression::parse_str("fast"), Some(Compression::Fast));
    assert_eq!(Compression::parse_str("10"), None);
    assert_eq!(
        Crop::parse_str("100:50:10:20"),
        Some(Crop {
            w: 100,
            h: 50,
            x: 10,
            y: 20
        })
    );
    assert_eq!(Crop::parse_str("100:50:10"), None);
    assert_eq!(Crop::parse_str("0:50:10:2"), None);
    assert_eq!(Crop::parse_str("1:2:3:4:5"), None);
}

fn set_err(p: Param, v: &str) -> String {
    let mut s = TransformSpec::new(Mode::Image);
    s.set(p, p.name(), v).unwrap_err().to_string()
}

#[test]
fn every_param_rejects_bad_values_naming_param_and_range() {
    for (p, v, msg) in [
        (Param::Width, "5000", "width 5000 out of range 10..=4096"),
        (Param::Width, "9", "width 9 out of range 10..=4096"),
        (
            Param::Width,
            "abc",
            "width \"abc\" is invalid: expected a whole number",
        ),
        (Param::Width, "-5", "width \"-5\" is invalid"),
        (Param::Height, "4097", "height 4097 out of range 10..=4096"),
        (
            Param::Fit,
            "stretch",
            "fit \"stretch\" is invalid: expected contain, cover",
        ),
        (Param::Gravity, "north", "gravity \"north\" is invalid"),
        (
            Param::Format,
            "tiff",
            "format \"tiff\" is invalid: expected auto, webp",
        ),
        (
            Param::Quality,
            "0",
            "quality \"0\" is invalid: expected low, medium",
        ),
        (Param::Quality, "101", "quality \"101\" is invalid"),
        (Param::Compression, "11", "compression \"11\" is invalid"),
        (Param::Time, "11m", "time 11m out of range 0s..=10m"),
        (Param::Time, "soon", "time \"soon\" is invalid"),
        (
            Param::Duration,
            "0.5s",
            "duration 0.5s out of range 1s..=60s",
        ),
        (Param::Duration, "11m", "duration 11m out of range"),
        (
            Param::Audio,
            "maybe",
            "audio \"maybe\" is invalid: expected true or false",
        ),
        (Param::Derivative, "a b", "derivative \"a b\" is invalid"),
        (Param::ImageCount, "0", "imageCount 0 out of range 1..=100"),
        (Param::Fps, "61", "fps 61 out of range 1..=60"),
        (Param::Speed, "5", "speed 5 out of range 0.25..=4"),
        (Param::Speed, "NaN", "speed \"NaN\" is invalid"),
        (Param::Rotate, "400", "rotate 400 out of range -360..=360"),
        (
            Param::Crop,
            "1:2",
            "crop \"1:2\" is invalid: expected w:h:x:y",
        ),
        (Param::Bitrate, "5k", "bitrate 5k out of range 10k..=100M"),
        (Param::Bitrate, "lots", "bitrate \"lots\" is invalid"),
        (Param::Blur, "251", "blur 251 out of range 1..=250"),
        (Param::Sharpen, "11", "sharpen 11 out of range 0..=10"),
        (Param::Background, "#zzz", "background \"#zzz\" is invalid"),
        (Param::Animated, "x", "animated \"x\" is invalid"),
        (
            Param::Codec,
            "mpeg2",
            "codec \"mpeg2\" is invalid: expected h264, h265, vp9, av1",
        ),
        (Param::Metadata, "all", "metadata \"all\" is invalid"),
        (Param::OnError, "ignore", "onerror \"ignore\" is invalid"),
        (Param::Filename, "a.b", "filename \"a.b\" is invalid"),
        (Param::Loop, "x", "loop \"x\" is invalid"),
        (Param::Autoplay, "x", "autoplay \"x\" is invalid"),
        (Param::Muted, "x", "muted \"x\" is invalid"),
        (Param::Preload, "all", "preload \"all\" is invalid"),
    ] {
        let got = set_err(p, v);
        assert!(
            got.starts_with(msg),
            "{p:?}={v}: got {got:?}, want prefix {msg:?}"
        );
    }
    let long = "a".repeat(121);
    assert!(set_err(Param::Filename, &long).contains("1..=120"));
}

#[test]
fn rotate_normalises() {
    for (v, r) in [
        ("90", 90),
        ("-90", 270),
        ("360", 0),
        ("45", 45),
        ("-360", 0),
    ] {
        let mut s = TransformSpec::new(Mode::Video);
        s.set(Param::Rotate, "rotate", v).unwrap();
        assert_eq!(s.rotate, Some(r), "{v}");
    }
}

#[test]
fn mode_limits() {
    let mut s = TransformSpec::new(Mode::Video);
    s.width = Some(3000);
    assert_eq!(
        s.validate().unwrap_err().to_string(),
        "width 3000 out of range 10..=2000 for mode video"
    );
    let mut s = TransformSpec::new(Mode::Image);
    s.rotate = Some(45);
    assert!(s
        .validate()
        .unwrap_err()
        .to_string()
        .contains("90, 180 or 270"));
    s.mode = Mode::Video;
    assert!(s.validate().is_ok());
}

#[test]
fn canonical_round_trip_table() {
    for q in [
        "mode=image&width=100&height=200&fit=cover&gravity=0.5x0.25&format=webp&quality=80",
        "mode=video&width=640&time=1.5s&duration=10s&audio=false&codec=h264&bitrate=2M&fps=30&speed=1.5",
        "mode=frame&width=640&height=360&format=png&derivative=thumbnail",
        "mode=spritesheet&width=160&imageCount=20&time=5s&duration=30s",
        "mode=audio&format=m4a&time=1m&duration=20s",
        "mode=image&background=%23ff0000&crop=10:20:30:40&blur=5&sharpen=2.5&rotate=90&animated=false",
        "mode=orig&filename=clip&loop=true&autoplay=true&muted=true&preload=none",
    ] {
        let s = TransformSpec::from_canonical_query(q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let c = s.to_canonical_query();
        assert_eq!(TransformSpec::from_canonical_query(&c).unwrap(), s, "{q} -> {c}");
    }
    let s =
        TransformSpec::from_canonical_query("mode=image&quality=auto&fit=contain&time=5s").unwrap();
    assert_eq!(s.to_canonical_query(), "mode=image");
}

#[test]
fn canonical_query_is_strict() {
    for (q, msg) in [
        ("width=100", "canonical query is missing mode"),
        ("mode=image&w=100", "unknown canonical parameter \"w\""),
        (
            "mode=image&width=100&width=200",
            "parameter width given more than once",
        ),
        (
            "mode=orig&width=100",
            "width (set) not allowed for mode orig",
        ),
        ("mode=tv", "mode \"tv\" is invalid"),
        (
            "mode=video&width=3000",
            "width 3000 out of range 10..=2000 for mode video",
        ),
    ] {
        let e = TransformSpec::from_canonical_query(q)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(msg), "{q}: {e}");
    }
}

#[test]
fn hls_parts() {
    let s = TransformSpec::from_canonical_query("mode=hls&segment=003&width=100").unwrap();
    assert_eq!(s.to_canonical_query(), "mode=hls&segment=3");
    let s = TransformSpec::from_canonical_query("mode=hls&segment=poster").unwrap();
    assert_eq!(s.segment.as_deref(), Some("poster"));
    // The playlist's spelling (with the extension players check) is the same part.
    let s = TransformSpec::from_canonical_query("mode=hls&segment=7.ts").unwrap();
    assert_eq!(s.to_canonical_query(), "mode=hls&segment=7");
    let s = TransformSpec::from_canonical_query("mode=hls&segment=poster.jpg").unwrap();
    assert_eq!(s.segment.as_deref(), Some("poster"));
    assert_eq!(
        TransformSpec::from_canonical_query("mode=hls")
            .unwrap()
            .to_canonical_query(),
        "mode=hls"
    );
    for bad in [
        "mode=hls&segment=x",
        "mode=hls&segment=3.mp4",
        "mode=hls&segment=.ts",
        "mode=hls&segment=-1",
        "mode=hls&segment=100000",
    ] {
        let e = TransformSpec::from_canonical_query(bad).unwrap_err();
        assert_eq!(e.status(), 400, "{bad}");
    }
    // Only HLS has parts.
    let s = TransformSpec::from_canonical_query("mode=video&segment=2").unwrap();
    assert_eq!(s.segment, None);
}

#[test]
fn needs_async() {
    let mut s = TransformSpec::new(Mode::Video);
    assert!(!s.needs_async());
    s.duration_ms = Some(60_000);
    assert!(!s.needs_async());
    s.duration_ms = Some(61_000);
    assert!(s.needs_async());
    s.duration_ms = None;
    s.codec = Some(Codec::Vp9);
    assert!(s.needs_async());
    s.codec = Some(Codec::H264);
    assert!(!s.needs_async());
}

#[test]
fn serde_uses_canonical_spellings() {
    let s = TransformSpec::from_canonical_query(
        "mode=frame&width=640&fit=scale-down&format=jpeg&quality=high&gravity=0.5x0.5&time=2s",
    )
    .unwrap();
    let j = serde_json::to_string(&s).unwrap();
    assert_eq!(
        j,
        r#"{"mode":"frame","width":640,"fit":"scale-down","gravity":"0.5x0.5","format":"jpeg","quality":"high","time_ms":2000}"#
    );
    let back: TransformSpec = serde_json::from_str(&j).unwrap();
    assert_eq!(back, s);
}
