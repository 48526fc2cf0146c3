//! Cloudflare's image options that `resolve` folds or refuses (Cloudflare Images,
//! "Features" page): `trim` in all its spellings, `zoom`, `gravity=face`,
//! `segment=foreground`, `slow-connection-quality`, CSS colours, and the unknown-name
//! policy of the query form. Each row names the behaviour it follows.

use filters::{
    resolve, FilterError, FiltersConfig, Quality, RequestParts, ResolveOptions, Resolved,
    UnknownParams,
};

fn run_cfg(
    cfg: &FiltersConfig,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<Resolved, FilterError> {
    let req = RequestParts {
        path,
        query: (!query.is_empty()).then_some(query),
        headers: &headers,
    };
    resolve(&req, cfg, &ResolveOptions::default())
}

fn run_h(path: &str, query: &str, headers: &[(&str, &str)]) -> Result<Resolved, FilterError> {
    run_cfg(&FiltersConfig::default(), path, query, headers)
}

fn ok(path: &str, query: &str) -> Resolved {
    run_h(path, query, &[]).unwrap_or_else(|e| panic!("{path}?{query}: {e}"))
}

fn err(path: &str, query: &str) -> String {
    match run_h(path, query, &[]) {
        Ok(r) => panic!("{path}?{query} resolved to {:?}", r.cache_key),
        Err(e) => {
            assert_eq!(e.status(), 400, "{path}?{query}");
            e.to_string()
        }
    }
}

#[test]
fn every_spelling_of_a_trim_is_one_key() {
    // "top;right;bottom;left", or the dotted parts; the query form takes the same names.
    let want = ok("/a.jpg", "trim=20;0;0;30&width=100").cache_key;
    assert!(want.contains(":trim=20;0;0;30"), "{want}");
    for (path, q) in [
        ("/cdn-cgi/image/trim=20;0;0;30,width=100/a.jpg", ""),
        (
            "/cdn-cgi/image/trim.top=20,trim.left=30,width=100/a.jpg",
            "",
        ),
        ("/a.jpg", "trim.top=20&trim.left=30&width=100"),
        ("/a.jpg", "trim=20%3B0%3B0%3B30&width=100"),
    ] {
        assert_eq!(ok(path, q).cache_key, want, "{path}?{q}");
    }
    // trim.width / trim.height keep a window from the top-left corner.
    let k = ok(
        "/cdn-cgi/image/trim.width=678,trim.height=600,trim.left=30/a.jpg",
        "",
    )
    .cache_key;
    assert!(k.contains(":trim=0;0;0;30;w=678;h=600"), "{k}");
    // Takes dpr into account.
    let k = ok("/cdn-cgi/image/trim=10;0;0;5,dpr=2,width=100/a.jpg", "").cache_key;
    assert!(k.contains(":trim=20;0;0;10") && k.contains(":w=200"), "{k}");
    // A trim of nothing is no trim.
    assert_eq!(
        ok("/a.jpg", "trim=0;0;0;0&width=100").cache_key,
        ok("/a.jpg", "width=100").cache_key
    );
    // The canonical query carries the merged value and parses back to the same spec.
    let r = ok("/cdn-cgi/image/trim.top=20,trim.left=30/a.jpg", "");
    let q = r.spec.to_canonical_query();
    assert_eq!(
        filters::TransformSpec::from_canonical_query(&q).unwrap(),
        r.spec,
        "{q}"
    );
}

#[test]
fn trim_border_and_its_settings() {
    let k = ok("/cdn-cgi/image/trim=border/a.jpg", "").cache_key;
    assert!(k.ends_with(":trim=border"), "{k}");
    let k = ok(
        "/cdn-cgi/image/trim=border,trim.border.color=%23FFF,trim.border.tolerance=200,trim.border.keep=4/a.jpg",
        "",
    )
    .cache_key;
    assert!(
        k.contains(":trim=border;color=#ffffff;tolerance=200;keep=4"),
        "{k}"
    );
    // The default tolerance is no separate variant.
    assert_eq!(
        ok("/a.jpg", "trim=border&trim.border.tolerance=245").cache_key,
        ok("/a.jpg", "trim=border").cache_key
    );
    for (path, q, msg) in [
        (
            "/a.jpg",
            "trim.border.color=red&trim.top=1",
            "trim=border cannot",
        ),
        ("/a.jpg", "trim=border&trim.left=3", "trim=border cannot"),
        ("/a.jpg", "trim=border&trim.border.tolerance=300", "0..=255"),
        ("/a.jpg", "trim=1;2;3", "top;right;bottom;left"),
        ("/a.jpg", "trim.width=0", "1..=16384"),
        ("/v.mp4", "mode=frame&trim=1;1;1;1", "trims are for images"),
    ] {
        let e = err(path, q);
        assert!(e.contains(msg), "{q}: {e}");
    }
    // A border setting on its own asks for a border trim.
    assert_eq!(
        ok("/a.jpg", "trim.border.keep=2").cache_key,
        ok("/a.jpg", "trim=border&trim.border.keep=2").cache_key
    );
}

#[test]
fn models_cloudflare_runs_are_refused_with_their_reason() {
    for (path, q) in [
        (
            "/cdn-cgi/image/gravity=face,width=100,height=100,fit=cover/a.jpg",
            "",
        ),
        ("/a.jpg", "g=face&width=100"),
    ] {
        let e = err(path, q);
        assert!(
            e.contains("=face is not available") && e.contains("vision model"),
            "{e}"
        );
    }
    for (path, q) in [
        ("/cdn-cgi/image/segment=foreground/a.jpg", ""),
        ("/a.jpg", "segment=foreground"),
    ] {
        let e = err(path, q);
        assert!(
            e.contains("segment=foreground") && e.contains("segmentation model"),
            "{e}"
        );
    }
    // zoom (alias face-zoom) only acts with gravity=face: checked, then no separate key.
    let base = ok("/a.jpg", "width=100").cache_key;
    assert_eq!(
        ok("/cdn-cgi/image/width=100,zoom=0.5/a.jpg", "").cache_key,
        base
    );
    assert_eq!(
        ok("/cdn-cgi/image/width=100,face-zoom=1/a.jpg", "").cache_key,
        base
    );
    assert_eq!(ok("/a.jpg", "width=100&zoom=0").cache_key, base);
    assert!(err("/a.jpg", "width=100&zoom=1.5").contains("0..=1"));
}

#[test]
fn slow_connection_quality_follows_the_network_hints() {
    let path = "/cdn-cgi/image/width=100,quality=85,scq=50/a.jpg";
    let fast = run_h(
        path,
        "",
        &[("ect", "4g"), ("rtt", "50"), ("downlink", "10")],
    )
    .unwrap();
    assert_eq!(fast.spec.quality, Some(Quality::Value(85)));
    for slow in [
        [("rtt", "300")],
        [("save-data", "on")],
        [("ect", "3g")],
        [("downlink", "1.5")],
    ] {
        let r = run_h(path, "", &slow).unwrap();
        assert_eq!(r.spec.quality, Some(Quality::Value(50)), "{slow:?}");
        assert_ne!(r.cache_key, fast.cache_key);
    }
    // No hints: not slow. Every answer varies on the hints and asks for them.
    let none = run_h(path, "", &[]).unwrap();
    assert_eq!(none.cache_key, fast.cache_key);
    for r in [&none, &fast] {
        assert!(r.network_hints && !r.accept_ch);
        for h in ["RTT", "Save-Data", "ECT", "Downlink"] {
            assert!(r.vary.contains(&h), "{:?}", r.vary);
        }
    }
    // The long name, in the query form, and a perceptual level.
    let r = run_h(
        "/a.jpg",
        "width=100&slow-connection-quality=low",
        &[("save-data", "on")],
    )
    .unwrap();
    assert_eq!(r.spec.quality, Some(Quality::Low));
    assert!(err("/a.jpg", "width=100&scq=900").contains("scq"));
}

#[test]
fn css_colours_as_cloudflare_documents_them() {
    for (opt, want) in [
        ("background=%23ff0000", "#ff0000"),
        ("background=red", "#ff0000"),
        ("background=orange", "#ffa500"),
        ("background=rgb%28240%2C40%2C145%29", "#f02891"),
        ("background=rgb(240,40,145)", "#f02891"),
        ("background=rgba(250,40,145,0.5)", "#fa289180"),
        ("background=rgba(0,0,0,1)", "#000000"),
    ] {
        let path = format!("/cdn-cgi/image/width=100,{opt},fit=pad,height=100/a.png");
        let r = ok(&path, "");
        assert_eq!(r.spec.background.as_deref(), Some(want), "{opt}");
        assert_eq!(
            r.spec.width,
            Some(100),
            "{opt}: the options after the colour survive"
        );
    }
    // The CSS4 space-and-slash form, in the query form (a `/` would end cdn-cgi options).
    let r = ok(
        "/a.png",
        "background=rgb(100%25%200%25%200%25%20/%2050%25)&width=100",
    );
    assert_eq!(r.spec.background.as_deref(), Some("#ff000080"));
    for bad in ["rgb(300,0,0)", "rgba(1,2,3,4)", "rgb(1,2)", "chartreuse2"] {
        let e = err("/a.png", &format!("background={bad}&width=100"));
        assert!(e.contains("background"), "{bad}: {e}");
    }
}

#[test]
fn unknown_names_are_refused_alike_in_both_forms() {
    // cdn-cgi: an unknown option is a 400 naming it.
    let e = err("/cdn-cgi/image/width=100,widht=3/a.jpg", "");
    assert!(e.contains("widht"), "{e}");
    // The query form: the same for a transform of a path.
    let e = err("/a.jpg", "width=100&widht=3");
    assert!(
        e.contains("\"widht\"") && e.contains("ignore_params"),
        "{e}"
    );
    // Tracking and cache-busting names, the signing names: never refused.
    for q in [
        "width=100&utm_source=x&utm_campaign=y",
        "width=100&fbclid=1&gclid=2&v=3&cb=4",
        "width=100&signature=a&expires=1&kid=k",
    ] {
        ok("/a.jpg", q);
    }
    // A passthrough keeps any query (the original is not ours to judge).
    assert!(ok("/a.jpg", "token=abc&whatever=1").spec.is_passthrough());
    // The source query of a cdn-cgi path belongs to the source.
    ok("/cdn-cgi/image/width=100/a.jpg", "token=abc");
    // An external source's own query goes to the source.
    ok(
        "/cdn-cgi/image/width=100/https://example.com/a.jpg",
        "sig=1",
    );
    // Sites that want Akamai's leniency say so; the list is theirs to extend.
    let mut cfg = FiltersConfig {
        unknown_params: UnknownParams::Ignore,
        ..FiltersConfig::default()
    };
    run_cfg(&cfg, "/a.jpg", "width=100&widht=3", &[]).unwrap();
    cfg.unknown_params = UnknownParams::Reject;
    cfg.ignore_params = vec!["session*".into()];
    run_cfg(&cfg, "/a.jpg", "width=100&session_id=3", &[]).unwrap();
    assert!(run_cfg(&cfg, "/a.jpg", "width=100&utm_source=3", &[]).is_err());
    cfg.ignore_params = vec!["*".into()];
    assert!(cfg.validate().is_err());
}

#[test]
fn the_query_form_takes_every_cdn_cgi_image_name() {
    // Each Cloudflare option name in the cdn-cgi form and in the query form: one key.
    for opt in [
        "width=120",
        "height=90",
        "fit=cover",
        "gravity=left",
        "g=0.5x0.2",
        "quality=60",
        "format=webp",
        "anim=false",
        "background=red",
        "blur=5",
        "rotate=90",
        "sharpen=2",
        "brightness=0.5",
        "contrast=2",
        "gamma=0.8",
        "saturation=0",
        "flip=hv",
        "metadata=none",
        "compression=fast",
        "trim=1;2;3;4",
        "trim.top=5",
        "trim.left=5",
        "trim.width=50",
        "trim.height=50",
        "zoom=0.2",
        "face-zoom=0.2",
        "scq=40",
        "slow-connection-quality=40",
        "onerror=redirect",
    ] {
        let cdn = ok(&format!("/cdn-cgi/image/dpr=1,{opt}/a.jpg"), "");
        let q = ok("/a.jpg", &format!("dpr=1&{opt}"));
        assert_eq!(cdn.cache_key, q.cache_key, "{opt}");
    }
    // `w`, `h`, `q`, `f` are accepted in both; in the query form they are Akamai's names,
    // whose widths snap up to the breakpoints (per origin: `akamai_snapping = false`).
    for opt in ["w=120", "h=90", "q=60", "f=webp"] {
        ok(&format!("/cdn-cgi/image/{opt}/a.jpg"), "");
        ok("/a.jpg", opt);
    }
}
