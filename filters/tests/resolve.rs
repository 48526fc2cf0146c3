//! `resolve` as a specification: every request shape, every Akamai parameter, every cdn-cgi
//! option, every error, read as tables.

use filters::{
    resolve, Codec, FilterError, FiltersConfig, Fit, Format, Gravity, Mode, Quality, RequestForm,
    RequestParts, ResolveOptions, Resolved, Source, TransformSpec,
};

const NO_HEADERS: &[(&str, &str)] = &[];

fn run_with(
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    opts: &ResolveOptions,
) -> Result<Resolved, FilterError> {
    let cfg = FiltersConfig::default();
    let req = RequestParts {
        path,
        query: (!query.is_empty()).then_some(query),
        headers: &headers,
    };
    resolve(&req, &cfg, opts)
}

fn run(path: &str, query: &str) -> Resolved {
    run_with(path, query, NO_HEADERS, &ResolveOptions::default())
        .unwrap_or_else(|e| panic!("{path}?{query}: {e}"))
}

fn key(path: &str, query: &str) -> String {
    run(path, query).cache_key
}

fn err(path: &str, query: &str) -> String {
    match run_with(path, query, NO_HEADERS, &ResolveOptions::default()) {
        Ok(r) => panic!("{path}?{query} resolved to {r:?}"),
        Err(e) => {
            assert_eq!(e.status(), 400);
            assert_eq!(e.code(), "BAD_REQUEST");
            e.to_string()
        }
    }
}

#[test]
fn canonical_params_table() {
    type Check = fn(&TransformSpec) -> bool;
    let rows: &[(&str, &str, Check)] = &[
        ("/a.jpg", "width=300", |s| {
            s.width == Some(300) && s.mode == Mode::Image
        }),
        ("/a.jpg", "height=200", |s| s.height == Some(200)),
        ("/a.jpg", "width=4096", |s| s.width == Some(4096)),
        ("/a.jpg", "width=100&fit=cover", |s| {
            s.fit == Some(Fit::Cover)
        }),
        ("/a.jpg", "width=100&fit=scale-down", |s| {
            s.fit == Some(Fit::ScaleDown)
        }),
        ("/a.jpg", "width=100&fit=crop", |s| s.fit == Some(Fit::Crop)),
        ("/a.jpg", "width=100&fit=pad", |s| s.fit == Some(Fit::Pad)),
        ("/a.jpg", "width=100&fit=fill", |s| s.fit == Some(Fit::Fill)),
        ("/a.jpg", "width=100&fit=contain", |s| s.fit.is_none()),
        ("/a.jpg", "gravity=auto", |s| {
            s.gravity == Some(Gravity::Auto)
        }),
        ("/a.jpg", "gravity=top", |s| s.gravity == Some(Gravity::Top)),
        ("/a.jpg", "gravity=0.25x0.75", |s| {
            s.gravity == Some(Gravity::Focal { x: 250, y: 750 })
        }),
        ("/a.mp4", "mode=video", |s| s.mode == Mode::Video),
        ("/a.mp4", "mode=frame", |s| s.mode == Mode::Frame),
        ("/a.mp4", "mode=spritesheet&imageCount=12", |s| {
            s.mode == Mode::Spritesheet && s.image_count == Some(12)
        }),
        ("/a.mp4", "mode=audio", |s| s.mode == Mode::Audio),
        ("/a.jpg", "mode=image", |s| s.mode == Mode::Image),
        ("/a.mp4", "time=1m30s", |s| {
            s.mode == Mode::Video && s.time_ms == Some(90_000)
        }),
        ("/a.mp4", "time=90", |s| s.time_ms == Some(90_000)),
        ("/a.mp4", "time=90.5s", |s| s.time_ms == Some(90_500)),
        ("/a.mp4", "time=10m", |s| s.time_ms == Some(600_000)),
        ("/a.mp4", "time=0s", |s| {
            s.time_ms.is_none() && s.mode == Mode::Video
        }),
        ("/a.mp4", "duration=1s", |s| s.duration_ms == Some(1_000)),
        ("/a.mp4", "duration=60s", |s| s.duration_ms == Some(60_000)),
        ("/a.mp4", "audio=false", |s| s.audio == Some(false)),
        ("/a.mp4", "audio=true", |s| s.audio.is_none()),
        ("/a.jpg", "format=auto", |s| s.format == Some(Format::Auto)),
        ("/a.jpg", "format=webp", |s| s.format == Some(Format::Webp)),
        ("/a.jpg", "format=avif", |s| s.format == Some(Format::Avif)),
        ("/a.jpg", "format=jpg", |s| s.format == Some(Format::Jpeg)),
        ("/a.jpg", "format=jpeg", |s| s.format == Some(Format::Jpeg)),
        ("/a.jpg", "format=png", |s| s.format == Some(Format::Png)),
        ("/a.jpg", "format=gif", |s| s.format == Some(Format::Gif)),
        ("/a.mp4", "format=mp4", |s| s.format == Some(Format::Mp4)),
        ("/a.mp4", "format=webm", |s| s.format == Some(Format::Webm)),
        ("/a.jpg", "format=json", |s| s.format == Some(Format::Json)),
        ("/a.jpg", "quality=low", |s| s.quality == Some(Quality::Low)),
        ("/a.jpg", "quality=medium", |s| {
            s.quality == Some(Quality::Medium)
        }),
        ("/a.jpg", "quality=high", |s| {
            s.quality == Some(Quality::High)
        }),
        ("/a.jpg", "quality=lossless", |s| {
            s.quality == Some(Quality::Lossless)
        }),
        ("/a.jpg", "quality=1", |s| {
            s.quality == Some(Quality::Value(1))
        }),
        ("/a.jpg", "quality=100", |s| {
            s.quality == Some(Quality::Value(100))
        }),
        ("/a.jpg", "quality=auto&width=10", |s| s.quality.is_none()),
        ("/a.png", "compression=fast", |s| s.compression.is_some()),
        ("/a.jpg", "width=100&filename=my-file_1", |s| {
            s.filename.as_deref() == Some("my-file_1")
        }),
        ("/a.jpg", "derivative=mobile", |s| {
            s.derivative.as_deref() == Some("mobile")
        }),
        ("/a.jpg", "width=500&dpr=2", |s| s.width == Some(1000)),
        ("/a.mp4", "fps=24", |s| s.fps == Some(24)),
        ("/a.mp4", "speed=2", |s| s.speed == Some(2.0)),
        ("/a.jpg", "rotate=90", |s| s.rotate == Some(90)),
        ("/a.jpg", "rotate=270", |s| s.rotate == Some(270)),
        ("/a.mp4", "rotate=45", |s| s.rotate == Some(45)),
        ("/a.jpg", "crop=100:50:10:20", |s| {
            s.crop.is_some_and(|c| c.w == 100 && c.y == 20)
        }),
        ("/a.mp4", "bitrate=2M", |s| s.bitrate == Some(2_000_000)),
        ("/a.mp4", "bitrate=800k", |s| s.bitrate == Some(800_000)),
        ("/a.jpg", "blur=20", |s| s.blur == Some(20)),
        ("/a.jpg", "sharpen=3", |s| s.sharpen == Some(3.0)),
        ("/a.jpg", "background=%23ff0000", |s| {
            s.background.as_deref() == Some("#ff0000")
        }),
        ("/a.gif", "animated=false", |s| s.animated == Some(false)),
        ("/a.mp4", "codec=h264", |s| s.codec == Some(Codec::H264)),
        ("/a.mp4", "codec=h265", |s| s.codec == Some(Codec::H265)),
        ("/a.mp4", "codec=vp9", |s| s.codec == Some(Codec::Vp9)),
        ("/a.mp4", "codec=av1", |s| s.codec == Some(Codec::Av1)),
        (
            "/a.mp4",
            "width=100&loop=true&autoplay=true&muted=true&preload=auto",
            |s| {
                s.playback.loop_ == Some(true)
                    && s.playback.muted == Some(true)
                    && s.playback.preload.is_some()
            },
        ),
    ];
    for (path, q, check) in rows {
        let r = run(path, q);
        assert!(check(&r.spec), "{path}?{q} gave {:?}", r.spec);
        assert!(!r.spec.is_passthrough(), "{path}?{q}");
    }
}

#[test]
fn error_table() {
    for (path, q, msg) in [
        ("/a.jpg", "width=5000", "width 5000 out of range 10..=4096"),
        ("/a.jpg", "width=9", "width 9 out of range 10..=4096"),
        ("/a.jpg", "width=big", "width \"big\" is invalid"),
        (
            "/a.mp4",
            "width=3000",
            "width 3000 out of range 10..=2000 for mode video",
        ),
        (
            "/a.mp4",
            "mode=frame&height=2001",
            "height 2001 out of range 10..=2000 for mode frame",
        ),
        (
            "/a.mp4",
            "mode=spritesheet&width=2500",
            "width 2500 out of range 10..=2000 for mode spritesheet",
        ),
        (
            "/a.jpg",
            "fit=stretch",
            "fit \"stretch\" is invalid: expected contain, cover, scale-down, crop, pad, fill, squeeze",
        ),
        ("/a.jpg", "gravity=2x2", "gravity \"2x2\" is invalid"),
        (
            "/a.jpg",
            "mode=tv",
            "mode \"tv\" is invalid: expected image, video, frame, spritesheet, audio",
        ),
        ("/a.jpg", "mode=orig", "mode \"orig\" is invalid"),
        ("/a.mp4", "time=11m", "time 11m out of range 0s..=10m"),
        ("/a.mp4", "time=later", "time \"later\" is invalid"),
        ("/a.mp4", "duration=0s", "duration 0s out of range 1s..=60s"),
        ("/a.mp4", "duration=10m1s", "duration 10m1s out of range"),
        ("/a.mp4", "audio=perhaps", "audio \"perhaps\" is invalid"),
        ("/a.jpg", "format=bmp", "format \"bmp\" is invalid"),
        (
            "/a.jpg",
            "quality=0",
            "quality \"0\" is invalid: expected low, medium-low, medium, medium-high, high, lossless, auto, or 1..=100",
        ),
        (
            "/a.jpg",
            "quality=extreme",
            "quality \"extreme\" is invalid",
        ),
        (
            "/a.png",
            "compression=max",
            "compression \"max\" is invalid",
        ),
        ("/a.jpg", "filename=a%2Fb", "filename \"a/b\" is invalid"),
        (
            "/a.jpg",
            "derivative=huge",
            "unknown derivative \"huge\" (known: mobile, tablet, thumbnail)",
        ),
        (
            "/a.jpg",
            "dpr=0",
            "dpr 0 out of range greater than 0, at most 4",
        ),
        ("/a.jpg", "dpr=5", "dpr 5 out of range"),
        (
            "/a.mp4",
            "imageCount=500",
            "imageCount 500 out of range 1..=100",
        ),
        ("/a.mp4", "fps=0", "fps 0 out of range 1..=60"),
        ("/a.mp4", "speed=10", "speed 10 out of range 0.25..=4"),
        (
            "/a.jpg",
            "rotate=45",
            "rotate 45 not allowed for mode image",
        ),
        ("/a.jpg", "crop=1:2:3", "crop \"1:2:3\" is invalid"),
        ("/a.mp4", "bitrate=1G", "bitrate \"1G\" is invalid"),
        ("/a.jpg", "blur=0", "blur 0 out of range 1..=250"),
        ("/a.jpg", "sharpen=20", "sharpen 20 out of range 0..=10"),
        (
            "/a.jpg",
            "background=mauve",
            "background \"mauve\" is invalid",
        ),
        (
            "/a.gif",
            "animated=sometimes",
            "animated \"sometimes\" is invalid",
        ),
        ("/a.mp4", "codec=mpeg4", "codec \"mpeg4\" is invalid"),
        (
            "/a.mp4",
            "preload=everything",
            "preload \"everything\" is invalid",
        ),
        ("/a.mp4", "loop=twice", "loop \"twice\" is invalid"),
        (
            "/a.jpg",
            "debug=yes",
            "debug \"yes\" is invalid: expected view",
        ),
        (
            "/a.jpg",
            "width=100&width=200",
            "parameter width given more than once",
        ),
        ("/a.jpg", "imwidth=abc", "imwidth \"abc\" is invalid"),
        (
            "/a.jpg",
            "imheight=99999",
            "imheight 99999 out of range 10..=4096",
        ),
        ("/a.jpg", "derivative=poster", "unknown derivative \"poster\""),
        (
            "/a.mp4",
            "mode=audio&audio=false",
            "audio false not allowed for mode audio",
        ),
        (
            "/a.mp4",
            "mode=frame&imageCount=4",
            "imageCount 4 not allowed for mode frame",
        ),
        ("/a.jpg", "imdensity=9", "imdensity 9 out of range"),
        ("/a.jpg", "q=0", "q \"0\" is invalid"),
        ("/a.jpg", "f=bmp", "f \"bmp\" is invalid"),
        ("/a.jpg", "obj-fit=squash", "obj-fit \"squash\" is invalid"),
        ("/a.mp4", "start=11m", "start 11m out of range"),
        ("/a.mp4", "dur=0", "dur 0 out of range"),
        ("/a.mp4", "mute=loud", "mute \"loud\" is invalid"),
        (
            "/a/../../etc/passwd",
            "width=100",
            "must not contain a .. segment",
        ),
        ("a.jpg", "", "must start with /"),
        (
            "/cdn-cgi/image/border=2/a.jpg",
            "",
            "unknown cdn-cgi/image option \"border\"",
        ),
        (
            "/cdn-cgi/image/width=5000/a.jpg",
            "",
            "width 5000 out of range 10..=4096",
        ),
        ("/cdn-cgi/image/q=0/a.jpg", "", "q \"0\" is invalid"),
        (
            "/cdn-cgi/image/anim=maybe/a.gif",
            "",
            "anim \"maybe\" is invalid",
        ),
        (
            "/cdn-cgi/media/mode=image/v.mp4",
            "",
            "mode \"image\" is invalid: expected video, frame, spritesheet, audio",
        ),
        (
            "/cdn-cgi/media/mode=frame,width=3000/v.mp4",
            "",
            "width 3000 out of range 10..=2000 for mode frame",
        ),
        (
            "/cdn-cgi/media/blur=3/v.mp4",
            "",
            "unknown cdn-cgi/media option \"blur\"",
        ),
        ("/cdn-cgi/media/width=100", "", "malformed cdn-cgi URL"),
    ] {
        let e = err(path, q);
        assert!(e.contains(msg), "{path}?{q}: got {e:?}, want {msg:?}");
    }
}

#[test]
fn foreign_params_are_ignored() {
    let base = key("/a.jpg", "width=300");
    for q in [
        "width=300&utm_source=news",
        "utm_campaign=x&width=300&signature=abc&expires=123&kid=k1",
        "width=300&fbclid=zzz&v=2",
    ] {
        assert_eq!(key("/a.jpg", q), base, "{q}");
    }
}

#[test]
fn passthrough() {
    for (q, want_debug) in [
        ("", false),
        ("utm_source=x", false),
        ("debug=view", true),
        ("signature=a&expires=1", false),
    ] {
        let r = run("/videos/clip.mp4", q);
        assert!(r.spec.is_passthrough(), "{q}");
        assert_eq!(r.spec.mode, Mode::Original);
        assert_eq!(r.cache_key, "orig:/videos/clip.mp4", "{q}");
        assert!(r.vary.is_empty() && !r.accept_ch, "{q}");
        assert_eq!(r.debug, want_debug);
        assert_eq!(r.diagnostics.is_some(), want_debug);
    }
    // Hints never turn a plain request into a transform.
    let headers = [
        ("Sec-CH-Viewport-Width", "400"),
        ("CF-Device-Type", "mobile"),
    ];
    let r = run_with("/a.jpg", "", &headers, &ResolveOptions::default()).unwrap();
    assert_eq!(r.cache_key, "orig:/a.jpg");
    assert!(r.vary.is_empty());
    // Akamai's viewport parameter sizes the image on its own (Image & Video Manager).
    let r = run_with(
        "/a.jpg",
        "im-viewwidth=400",
        &headers,
        &ResolveOptions::default(),
    )
    .unwrap();
    assert_eq!((r.spec.mode, r.spec.width), (Mode::Image, Some(640)));
    // Header-only params keep the original but carry their headers.
    let r = run("/v.mp4", "filename=clip&loop=true&muted=true");
    assert_eq!(r.cache_key, "orig:/v.mp4");
    assert_eq!(r.spec.filename.as_deref(), Some("clip"));
    assert_eq!(r.spec.playback.loop_, Some(true));
    assert_eq!(
        filters::response_headers(&r.spec),
        vec![
            (
                "Content-Disposition",
                "inline; filename=\"clip\"".to_string()
            ),
            ("X-Playback-Loop", "true".to_string()),
            ("X-Playback-Muted", "true".to_string()),
        ]
    );
}

#[test]
fn mode_inference() {
    for (path, q, mode) in [
        ("/a.jpg", "width=100", Mode::Image),
        ("/a", "width=100", Mode::Image),
        ("/v.mp4", "width=100", Mode::Video),
        ("/v.webm", "width=100", Mode::Video),
        ("/v.MOV", "width=100", Mode::Video),
        ("/v.mkv", "width=100", Mode::Video),
        ("/v.m4v", "width=100", Mode::Video),
        ("/v.avi", "width=100", Mode::Video),
        ("/v.ts", "width=100", Mode::Video),
        ("/v.mp4", "format=jpg&time=5s", Mode::Frame),
        ("/v.mp4", "format=png&time=5s", Mode::Frame),
        ("/v.mp4", "format=jpg", Mode::Frame),
        ("/v.mp4", "format=webm", Mode::Video),
        ("/v.mp4", "format=m4a", Mode::Audio),
        ("/a.jpg", "format=m4a", Mode::Audio),
        ("/s.mp3", "duration=5s", Mode::Audio),
        ("/v.mp4", "mode=spritesheet", Mode::Spritesheet),
        ("/a.jpg", "format=jpg&time=5s", Mode::Image),
    ] {
        assert_eq!(run(path, q).spec.mode, mode, "{path}?{q}");
    }
    // format=m4a clears width/height/fit.
    let r = run("/v.mp4", "format=m4a&width=640&height=360&fit=cover");
    assert_eq!(
        (r.spec.width, r.spec.height, r.spec.fit),
        (None, None, None)
    );
    assert_eq!(r.cache_key, "audio:/v.mp4:f=m4a");
    // An explicit mode wins over inference.
    assert_eq!(
        run("/v.mp4", "mode=video&format=gif").spec.mode,
        Mode::Video
    );
}

#[test]
fn derivatives() {
    let r = run("/v.mp4", "derivative=tablet");
    assert_eq!((r.spec.width, r.spec.height), (Some(1280), Some(720)));
    assert_eq!(r.derivative.as_deref(), Some("tablet"));
    // Derivative dimensions replace explicit ones.
    let r = run("/v.mp4", "derivative=mobile&width=100&height=100");
    assert_eq!((r.spec.width, r.spec.height), (Some(854), Some(640)));
    // The thumbnail derivative is a png frame at 0s.
    let r = run("/v.mp4", "derivative=thumbnail");
    assert_eq!(r.spec.mode, Mode::Frame);
    assert_eq!(r.spec.format, Some(Format::Png));
    assert_eq!(r.cache_key, "frame:/v.mp4:w=640:h=360:f=png:der=thumbnail");
    // Explicit non-dimension params override the derivative's.
    let r = run("/v.mp4", "derivative=thumbnail&format=jpg&time=3s");
    assert_eq!(
        (r.spec.format, r.spec.time_ms),
        (Some(Format::Jpeg), Some(3_000))
    );
    let headers = filters::response_headers(&run("/v.mp4", "derivative=tablet").spec);
    assert_eq!(headers[0], ("X-Derivative", "tablet".to_string()));
    // The output's real size is the transform's to say, not the request's.
    assert!(!headers.iter().any(|(k, _)| k.starts_with("X-Resolved")));
}

/// Image & Video Manager's documented fallbacks: an unknown `impolicy` is the default
/// policy, an unknown `imformat` the default format choice; the viewport and density
/// parameters size an image on their own.
#[test]
fn akamai_fallbacks() {
    // No default policy configured: served as if no policy were named.
    let r = run("/a.jpg", "impolicy=poster&imwidth=500");
    assert_eq!(r.cache_key, key("/a.jpg", "imwidth=500"));
    assert_eq!(run("/a.jpg", "impolicy=poster").cache_key, "image:/a.jpg");
    // A configured default policy.
    let mut cfg = FiltersConfig::default();
    cfg.akamai.default_policy = Some("mobile".into());
    cfg.validate().unwrap();
    let req = RequestParts {
        path: "/v.mp4",
        query: Some("impolicy=poster"),
        headers: &NO_HEADERS,
    };
    let r = resolve(&req, &cfg, &ResolveOptions::default()).unwrap();
    assert_eq!(r.spec.derivative.as_deref(), Some("mobile"));
    cfg.akamai.default_policy = Some("nope".into());
    assert!(cfg.validate().unwrap_err()[0].contains("akamai.default_policy"));
    // An unknown imformat: the format is negotiated as without one.
    let r = run("/a.jpg", "imformat=tiff&imwidth=300");
    assert_eq!(r.spec.format, None);
    assert_eq!(r.cache_key, key("/a.jpg", "imwidth=300"));
    assert_eq!(run("/a.jpg", "imformat=tiff").spec.mode, Mode::Original);
    // Viewport and density alone.
    let r = run("/a.jpg", "im-viewwidth=300");
    assert_eq!((r.spec.mode, r.spec.width), (Mode::Image, Some(320)));
    let r = run("/a.jpg", "im-viewwidth=300&im-density=2");
    assert_eq!(r.spec.width, Some(640));
    let r = run("/a.jpg", "im-viewheight=400");
    assert_eq!((r.spec.width, r.spec.height), (None, Some(400)));
    // Off for client hints, an origin still takes Akamai's own parameters.
    let opts = ResolveOptions {
        responsive: false,
        ..ResolveOptions::default()
    };
    let r = run_with("/a.jpg", "im-viewwidth=300", NO_HEADERS, &opts).unwrap();
    assert_eq!(r.spec.width, Some(320));
}

#[test]
fn derivative_spellings_share_one_key() {
    let want = key("/v.mp4", "derivative=tablet");
    assert_eq!(want, "video:/v.mp4:w=1280:h=720:der=tablet");
    for q in [
        "impolicy=tablet",
        "imwidth=1280",
        "imwidth=1000",
        "imref=policy%3Dtablet",
        "impolicy=tablet&imwidth=320",
    ] {
        assert_eq!(key("/v.mp4", q), want, "{q}");
    }
    // imwidth is selection only: never the transform width.
    assert_eq!(run("/v.mp4", "imwidth=340").spec.width, Some(854));
    assert_eq!(
        run("/v.mp4", "imwidth=340").derivative.as_deref(),
        Some("mobile")
    );
    // An explicit derivative beats imwidth.
    assert_eq!(
        key("/v.mp4", "derivative=mobile&imwidth=1280"),
        key("/v.mp4", "derivative=mobile")
    );
    // imwidth with an explicit width is ignored.
    assert_eq!(
        key("/v.mp4", "width=500&imwidth=1280"),
        "video:/v.mp4:w=500"
    );
}

#[test]
fn akamai_translation_table() {
    type Check = fn(&TransformSpec) -> bool;
    let rows: &[(&str, &str, Check)] = &[
        ("/a.jpg", "imheight=300", |s| {
            s.height == Some(300) && s.width.is_none()
        }),
        ("/a.jpg", "h=300", |s| s.height == Some(300)),
        ("/a.jpg", "impolicy=mobile", |s| {
            s.derivative.as_deref() == Some("mobile")
        }),
        ("/v.mp4", "imformat=h264", |s| {
            s.format == Some(Format::Mp4) && s.mode == Mode::Video
        }),
        ("/v.mp4", "imformat=h265", |s| s.codec == Some(Codec::H265)),
        ("/v.mp4", "imformat=vp9", |s| s.codec == Some(Codec::Vp9)),
        ("/v.mp4", "imformat=av1", |s| s.codec == Some(Codec::Av1)),
        ("/a.jpg", "imformat=webp", |s| {
            s.format == Some(Format::Webp)
        }),
        ("/a.jpg", "impolicy=mobile&imdensity=2", |s| {
            s.width == Some(1708) && s.height == Some(1280)
        }),
        ("/a.jpg", "q=70", |s| s.quality == Some(Quality::Value(70))),
        ("/a.jpg", "f=avif", |s| s.format == Some(Format::Avif)),
        ("/a.jpg", "w=300&obj-fit=crop", |s| {
            s.fit == Some(Fit::Cover)
        }),
        ("/a.jpg", "w=300&obj-fit=fill", |s| s.fit.is_none()),
        ("/v.mp4", "start=5s&dur=10s", |s| {
            s.time_ms == Some(5_000) && s.duration_ms == Some(10_000)
        }),
        ("/v.mp4", "mute=true", |s| s.audio == Some(false)),
        ("/v.mp4", "mute=false&width=100", |s| s.audio.is_none()),
    ];
    for (path, q, check) in rows {
        let r = run(path, q);
        assert!(check(&r.spec), "{path}?{q} gave {:?}", r.spec);
        assert!(r.akamai, "{q}");
    }
}

#[test]
fn explicit_canonical_params_beat_akamai() {
    for (q, check) in [
        ("imheight=300&height=200", "h=200"),
        ("height=200&imheight=300", "h=200"),
        ("f=png&format=webp", "f=webp"),
        ("q=10&quality=90", "q=90"),
        ("mute=true&audio=true", ""),
        ("obj-fit=crop&fit=pad", "fit=pad"),
        ("start=5s&time=7s", "t=7s"),
        ("impolicy=mobile&derivative=tablet", "der=tablet"),
        ("w=300&width=500", "w=500"),
        ("imformat=h264&format=webm", "f=webm"),
    ] {
        let k = key("/v.mp4", q);
        assert!(k.contains(check), "{q}: {k}");
    }
    assert_eq!(key("/v.mp4", "mute=true&audio=true"), "video:/v.mp4");
}

#[test]
fn akamai_width_snapping() {
    let on = ResolveOptions::default();
    let no_match = ResolveOptions {
        derivative_matching: false,
        ..ResolveOptions::default()
    };
    let off = ResolveOptions {
        akamai_snapping: false,
        derivative_matching: false,
        ..ResolveOptions::default()
    };
    for (q, opts, want) in [
        ("w=340", &on, 640),
        ("w=320", &on, 320),
        ("w=1025", &on, 2048),
        ("w=3000", &on, 4096), // snaps to 5000, clamped to the image maximum
        ("imwidth=340", &no_match, 640),
        ("imwidth=340", &off, 340),
        ("w=340", &off, 340),
        ("width=340", &on, 340), // canonical widths never snap
    ] {
        let r = run_with("/a.jpg", q, NO_HEADERS, opts).unwrap();
        assert_eq!(r.spec.width, Some(want), "{q} {opts:?}");
    }
    // On video, the snapped width is clamped to the video maximum.
    let r = run_with("/v.mp4", "w=1500", NO_HEADERS, &on).unwrap();
    assert_eq!(r.spec.width, Some(2000));
}

#[test]
fn akamai_hints_and_imref() {
    let r = run_with(
        "/a.jpg",
        "f=webp&im-viewwidth=400&im-density=2&debug=view",
        NO_HEADERS,
        &ResolveOptions::default(),
    )
    .unwrap();
    assert_eq!(r.spec.width, Some(1024));
    assert!(r.accept_ch);
    let d = r.diagnostics.unwrap();
    assert_eq!(d.hints.unwrap().viewport_width, Some(400));
    let r = run("/a.jpg", "imref=policy%3Dmobile%2Cref%3Dhome&debug=view");
    assert_eq!(r.derivative.as_deref(), Some("mobile"));
    let d = r.diagnostics.unwrap();
    assert_eq!(d.derivative_reason.as_deref(), Some("imref"));
    assert_eq!(d.imref[1], ("ref".to_string(), "home".to_string()));
}

#[test]
fn cdn_cgi_image() {
    let r = run(
        "/cdn-cgi/image/width=80,quality=75,format=auto/images/a.jpg",
        "",
    );
    assert_eq!(r.source, Source::Path("/images/a.jpg".into()));
    assert_eq!(r.form, RequestForm::CdnCgiImage);
    assert_eq!(r.spec.format, Some(Format::Auto));
    assert_eq!(r.cache_key, "image:/images/a.jpg:w=80:f=auto:q=75");
    // Same key as the query form and as the short option names.
    assert_eq!(
        key("/images/a.jpg", "format=auto&quality=75&width=80"),
        r.cache_key
    );
    assert_eq!(
        key("/cdn-cgi/image/f=auto,q=75,w=80/images/a.jpg", ""),
        r.cache_key
    );
    let r = run(
        "/cdn-cgi/image/w=100,h=50,fit=cover,g=left,dpr=2,anim=false,background=%23fff,blur=5,rotate=180,sharpen=1,metadata=none,onerror=redirect/a.gif",
        "",
    );
    let s = &r.spec;
    assert_eq!(
        (s.width, s.height, s.fit, s.gravity),
        (Some(200), Some(100), Some(Fit::Cover), Some(Gravity::Left))
    );
    assert_eq!(
        (s.animated, s.blur, s.rotate, s.sharpen),
        (Some(false), Some(5), Some(180), Some(1.0))
    );
    assert_eq!(s.background.as_deref(), Some("#ffffff"));
    assert!(s.metadata.is_some() && s.onerror.is_some());
    // The image form is always image mode, even with no size.
    let r = run("/cdn-cgi/image/format=webp/v/poster.png", "");
    assert_eq!(r.spec.mode, Mode::Image);
    assert!(!r.spec.is_passthrough());
}

#[test]
fn cdn_cgi_media() {
    let r = run(
        "/cdn-cgi/media/mode=frame,time=3s,width=640/videos/a.mp4",
        "",
    );
    assert_eq!(r.form, RequestForm::CdnCgiMedia);
    assert_eq!(r.cache_key, "frame:/videos/a.mp4:w=640:t=3s");
    let r = run(
        "/cdn-cgi/media/mode=spritesheet,width=160,height=90,fit=cover,time=0s,duration=30s,imageCount=20,format=jpg/v.mp4",
        "",
    );
    assert_eq!(r.spec.image_count, Some(20));
    assert_eq!(r.spec.mode, Mode::Spritesheet);
    let r = run(
        "/cdn-cgi/media/mode=video,duration=5s,audio=false/v.mp4",
        "",
    );
    assert_eq!(r.cache_key, "video:/v.mp4:d=5s:a=false");
    let r = run("/cdn-cgi/media/mode=audio,format=m4a/v.mp4", "");
    assert_eq!(r.spec.mode, Mode::Audio);
    // Inference when mode is left out.
    assert_eq!(
        run("/cdn-cgi/media/width=320/v.mp4", "").spec.mode,
        Mode::Video
    );
    assert_eq!(
        run("/cdn-cgi/media/time=2s,format=jpg/v.mp4", "").spec.mode,
        Mode::Frame
    );
    // Query params still apply and win over options.
    assert_eq!(
        run("/cdn-cgi/media/width=320/v.mp4", "width=480")
            .spec
            .width,
        Some(480)
    );
}

#[test]
fn cdn_cgi_external_source() {
    let r = run("/cdn-cgi/image/w=80/https://img.example.test/a.jpg", "");
    assert_eq!(
        r.source,
        Source::External("https://img.example.test/a.jpg".into())
    );
    assert_eq!(r.cache_key, "image:https%3A//img.example.test/a.jpg:w=80");
    assert_eq!(
        filters::ratelimit::classify_resolved(
            "/cdn-cgi/image/w=80/https://img.example.test/a.jpg",
            &r
        ),
        filters::OperationClass::External
    );
    // Query params that are not ours belong to the source URL; signing params do not.
    let r = run(
        "/cdn-cgi/media/mode=frame/https:/v.example.test/v.mp4",
        "token=abc&width=320&signature=s&expires=1",
    );
    assert_eq!(
        r.source,
        Source::External("https://v.example.test/v.mp4?token=abc".into())
    );
    assert_eq!(r.spec.width, Some(320));
}

#[test]
fn dpr_multiplies_and_clamps() {
    for (path, q, w, h) in [
        ("/a.jpg", "width=500&dpr=2", Some(1000), None),
        (
            "/a.jpg",
            "width=500&height=300&dpr=1.5",
            Some(750),
            Some(450),
        ),
        ("/a.jpg", "width=3000&dpr=2", Some(4096), None),
        ("/v.mp4", "width=1500&dpr=2", Some(2000), None),
        ("/a.jpg", "width=10&dpr=0.5", Some(10), None),
        ("/a.jpg", "derivative=tablet&dpr=2", Some(2560), Some(1440)),
    ] {
        let r = run(path, q);
        assert_eq!((r.spec.width, r.spec.height), (w, h), "{path}?{q}");
    }
    // dpr itself never appears in the key.
    assert_eq!(
        key("/a.jpg", "width=1000"),
        key("/a.jpg", "width=500&dpr=2")
    );
}

#[test]
fn responsive_sizing() {
    let opts = ResolveOptions::default();
    let hinted = [("Sec-CH-Viewport-Width", "400"), ("Sec-CH-DPR", "2")];
    let r = run_with("/a.jpg", "format=webp", &hinted, &opts).unwrap();
    assert_eq!(r.spec.width, Some(1024));
    assert!(r.accept_ch);
    assert!(r.vary.contains(&"Sec-CH-Viewport-Width") && r.vary.contains(&"CF-Device-Type"));
    for (headers, want) in [
        (&[("Width", "500")][..], Some(640)),
        (&[("Viewport-Width", "300")][..], Some(320)),
        (&[("CF-Device-Type", "mobile")][..], Some(854)),
        (&[("CF-Device-Type", "tablet")][..], Some(1280)),
        (&[("CF-Device-Type", "desktop")][..], Some(1920)),
        (&[][..], None),
    ] {
        let r = run_with("/a.jpg", "format=webp", headers, &opts).unwrap();
        assert_eq!(r.spec.width, want, "{headers:?}");
        assert!(r.accept_ch && !r.vary.is_empty(), "{headers:?}");
    }
    // Video maximum applies to hinted widths too.
    let r = run_with("/v.mp4", "format=mp4", &[("Sec-CH-Width", "3000")], &opts).unwrap();
    assert_eq!(r.spec.width, Some(1920));
    let r = run_with(
        "/v.mp4",
        "format=mp4",
        &[("CF-Device-Type", "desktop")],
        &opts,
    )
    .unwrap();
    assert_eq!(r.spec.width, Some(1920));
    // Explicit sizes, derivatives and audio skip hints (and Vary).
    for q in ["width=300", "height=300", "derivative=tablet", "format=m4a"] {
        let r = run_with("/v.mp4", q, &hinted, &opts).unwrap();
        assert!(r.vary.is_empty() && !r.accept_ch, "{q}");
    }
    // Switched off per origin.
    let off = ResolveOptions {
        responsive: false,
        ..opts.clone()
    };
    let r = run_with("/a.jpg", "format=webp", &hinted, &off).unwrap();
    assert_eq!(r.spec.width, None);
    assert!(r.vary.is_empty());
    // cdn-cgi width=auto uses hints.
    let r = run_with("/cdn-cgi/image/width=auto,f=webp/a.jpg", "", &hinted, &off).unwrap();
    assert_eq!(r.spec.width, Some(1024));
}

#[test]
fn headers_from_http_header_map() {
    let mut map = http::HeaderMap::new();
    map.insert(
        "sec-ch-viewport-width",
        http::HeaderValue::from_static("400"),
    );
    map.insert("Sec-CH-DPR", http::HeaderValue::from_static("2"));
    let req = RequestParts {
        path: "/a.jpg",
        query: Some("format=webp"),
        headers: &map,
    };
    let r = resolve(&req, &FiltersConfig::default(), &ResolveOptions::default()).unwrap();
    assert_eq!(r.spec.width, Some(1024));
}

#[test]
fn key_ignores_order_spelling_defaults_and_hints() {
    let groups: &[&[&str]] = &[
        &[
            "width=640&height=360&fit=cover&format=jpeg",
            "format=jpg&fit=cover&height=360&width=640",
            "utm_medium=jpg&width=640&height=360&fit=cover&format=jpg",
        ],
        &[
            "mode=video&width=640&time=90&quality=auto",
            "time=1m30s&width=640",
            "width=640&time=90s&fit=contain&gravity=center&audio=true&speed=1&rotate=0",
            "width=640&start=1m30&loop=true&autoplay=true&muted=true&preload=none&filename=x",
            "width=640&time=90000ms&debug=view",
        ],
        &[
            "width=640&bitrate=2M",
            "width=640&bitrate=2000k",
            "width=640&bitrate=2000000",
        ],
        &["mute=true", "audio=false", "audio=0", "audio=no"],
        &["imformat=h264", "format=mp4", "f=mp4", "format=MP4"],
        &["width=640&dpr=2", "width=1280", "width=1280&dpr=1"],
    ];
    for g in groups {
        let first = key("/v.mp4", g[0]);
        for q in &g[1..] {
            assert_eq!(key("/v.mp4", q), first, "{q} vs {}", g[0]);
        }
    }
}

#[test]
fn diagnostics_for_debug_view() {
    let r = run(
        "/v.mp4",
        "imwidth=400&imformat=h264&utm_source=x&debug=view",
    );
    assert!(r.debug);
    let d = r.diagnostics.as_ref().unwrap();
    assert_eq!(d.derivative.as_deref(), Some("mobile"));
    assert_eq!(d.derivative_reason.as_deref(), Some("imwidth=400"));
    assert_eq!(d.raw_params.len(), 4);
    assert_eq!(d.translated_params[0].from, "imformat");
    assert_eq!(d.translated_params[0].to, "format");
    assert_eq!(d.ignored_params, vec!["utm_source".to_string()]);
    assert_eq!(d.cache_key, r.cache_key);
    assert_eq!(d.canonical_query, r.spec.to_canonical_query());
    let j = serde_json::to_value(d).unwrap();
    assert_eq!(j["spec"]["mode"], "video");
    assert_eq!(j["source"]["path"], "/v.mp4");
    assert_eq!(j["cache_key"], "video:/v.mp4:w=854:h=640:f=mp4:der=mobile");
    // Without debug, no diagnostics are built.
    assert!(run("/v.mp4", "imwidth=400").diagnostics.is_none());
}

#[test]
fn async_flag() {
    assert!(!run("/v.mp4", "duration=60s").needs_async);
    assert!(run("/v.mp4", "duration=61s").needs_async);
    assert!(run("/v.mp4", "duration=10m").needs_async);
    assert!(run("/v.mp4", "codec=av1").needs_async);
    assert!(!run("/v.mp4", "codec=h264").needs_async);
    assert!(
        !run("/v.mp4", "mode=frame&duration=2m").needs_async,
        "duration means nothing for a frame"
    );
}

#[test]
fn canonical_query_round_trips_resolved_specs() {
    for (path, q) in [
        ("/v.mp4", "imwidth=400&imformat=h265&start=5s&dur=2m&mute=true"),
        ("/a.jpg", "width=300&height=200&fit=cover&gravity=0.3x0.7&quality=high&background=red&crop=10:10:0:0"),
        ("/cdn-cgi/image/w=80,sharpen=0.5,blur=3,rotate=90,anim=false/a.gif", ""),
        ("/v.mp4", "derivative=thumbnail"),
        ("/v.mp4", "mode=spritesheet&imageCount=9&width=90&time=1.25s&duration=9s"),
        ("/v.mp4", "filename=clip&loop=true"),
        ("/v.mp4", "format=m4a&bitrate=128k&speed=1.5"),
    ] {
        let r = run(path, q);
        let c = r.spec.to_canonical_query();
        let back = TransformSpec::from_canonical_query(&c).unwrap_or_else(|e| panic!("{c}: {e}"));
        assert_eq!(back, r.spec, "{path}?{q} -> {c}");
        assert_eq!(back.to_canonical_query(), c);
    }
}
