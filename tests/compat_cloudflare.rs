//! Drop-in compatibility with Cloudflare Image Resizing and Media Transformations, a row per
//! documented option or header, each naming the documentation it follows:
//! "Transform via URL" (developers.cloudflare.com/images/transform-images/transform-via-url/,
//! its option list), "Transform videos" (developers.cloudflare.com/stream/transform-videos/)
//! and "Troubleshooting" (…/images/reference/troubleshooting/: `Cf-Resized` and its
//! `err=9xxx` codes).

use e2e::*;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The JPEG start-of-frame marker kind: 0xC0/0xC1 baseline, 0xC2 progressive.
fn jpeg_sof(b: &[u8]) -> Option<u8> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let m = b[i + 1];
        if (0xC0..=0xC3).contains(&m) {
            return Some(m);
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        i += 2 + len;
    }
    None
}

/// The content type the body's first bytes show (the few this test meets).
fn sniffed(b: &[u8]) -> &'static str {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if b.starts_with(b"\x89PNG") {
        "image/png"
    } else if b.starts_with(b"RIFF") && b.get(8..12) == Some(b"WEBP") {
        "image/webp"
    } else if b.starts_with(b"GIF8") {
        "image/gif"
    } else if b.first() == Some(&b'{') {
        "application/json"
    } else {
        "?"
    }
}

/// A folder origin at `/files/` holding a file that is no image at all, and one at
/// `/short/` with a two-hour browser TTL.
fn config(dir: &std::path::Path) -> String {
    samples_config(&format!(
        "[[origins]]\nname = \"files\"\nmatcher = \"^/files/(.+)$\"\n[[origins.sources]]\n\
         kind = \"local\"\nroot = \"{d}\"\n\
         [[origins]]\nname = \"short\"\nmatcher = \"^/short/(.+)$\"\nbrowser_ttl = \"2h\"\n\
         [[origins.sources]]\nkind = \"local\"\nroot = \"{s}\"\n",
        d = dir.display(),
        s = workspace().join("conf/samples").display()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn image_resizing_options_and_headers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.jpg"), pattern(50_000)).unwrap();
    let edge = Edge::start(&config(dir.path())).await;
    let photo = "/samples/photo.jpg"; // 1800×1200 after EXIF orientation

    // (documentation, URL, status, checks on the answer)
    type Check = fn(&reqwest::header::HeaderMap, &[u8]) -> Result<(), String>;
    let rows: &[(&str, String, u16, Check)] = &[
        (
            "fit=squeeze: exactly width × height, the aspect ratio not kept",
            format!("/cdn-cgi/image/width=100,height=100,fit=squeeze{photo}"),
            200,
            |h, _| size(h, "100", "100"),
        ),
        (
            "fit=scale-down: never enlarged; X-Resolved-* report the real output",
            format!("{photo}?width=3000&fit=scale-down&format=jpeg"),
            200,
            |h, _| size(h, "1800", "1200"),
        ),
        (
            "fit=contain with both sides: the real output size, not the box",
            format!("/cdn-cgi/image/width=300,height=300,fit=contain{photo}"),
            200,
            |h, _| size(h, "300", "200"),
        ),
        (
            "quality: 85 is the default",
            format!("/cdn-cgi/image/width=200,format=jpeg{photo}"),
            200,
            |h, _| quality(h, 85),
        ),
        (
            "quality=medium-high (perceptual levels high|medium-high|medium-low|low)",
            format!("/cdn-cgi/image/width=200,format=jpeg,quality=medium-high{photo}"),
            200,
            |h, _| quality(h, 82),
        ),
        (
            "quality=medium-low",
            format!("/cdn-cgi/image/width=200,format=jpeg,q=medium-low{photo}"),
            200,
            |h, _| quality(h, 68),
        ),
        (
            "format=baseline-jpeg: a baseline sequential JPEG",
            format!("/cdn-cgi/image/width=200,format=baseline-jpeg{photo}"),
            200,
            |_, b| match jpeg_sof(b) {
                Some(0xC0 | 0xC1) => Ok(()),
                m => Err(format!("SOF {m:x?}, want baseline")),
            },
        ),
        (
            "format=jpeg: interlaced progressive JPEG",
            format!("/cdn-cgi/image/width=200,format=jpeg{photo}"),
            200,
            |_, b| match jpeg_sof(b) {
                Some(0xC2) => Ok(()),
                m => Err(format!("SOF {m:x?}, want progressive")),
            },
        ),
        (
            "compression=fast: overrides the format and chooses JPEG over WebP",
            format!("/cdn-cgi/image/width=200,format=webp,compression=fast{photo}"),
            200,
            |h, _| want(hv(h, "content-type"), "image/jpeg"),
        ),
        (
            "Cache-Control: an hour for a transform whose source sent none",
            format!("{photo}?width=120"),
            200,
            |h, _| want(hv(h, "cache-control"), "public, max-age=3600"),
        ),
        (
            "Cache-Control: the origin's TTL for an original",
            photo.to_string(),
            200,
            |h, _| want(hv(h, "cache-control"), "public, max-age=86400"),
        ),
        (
            "Browser Cache TTL: the origin's browser_ttl wins",
            "/short/photo.jpg?width=120".to_string(),
            200,
            |h, _| want(hv(h, "cache-control"), "public, max-age=7200"),
        ),
        (
            "Cf-Resized: err=9401 for invalid options",
            format!("/cdn-cgi/image/width=abc{photo}"),
            400,
            |h, _| want(hv(h, "cf-resized"), "err=9401"),
        ),
        (
            "Cf-Resized: err=9404 when the source does not exist",
            "/cdn-cgi/image/width=100/samples/none.jpg".to_string(),
            404,
            |h, _| want(hv(h, "cf-resized"), "err=9404"),
        ),
        (
            "Cf-Resized: err=9412 when the source is not an image",
            "/cdn-cgi/image/width=100/files/broken.jpg".to_string(),
            415,
            |h, _| want(hv(h, "cf-resized"), "err=9412"),
        ),
        (
            "metadata: JPEG keeps the copyright by default",
            format!("/cdn-cgi/image/width=200,format=jpeg{photo}"),
            200,
            |_, b| {
                has_exif(b, true)?;
                if b.windows(13).any(|w| w == b"Public domain") {
                    Ok(())
                } else {
                    Err("the sample's copyright is not in the output".into())
                }
            },
        ),
        (
            "metadata=none: nothing kept",
            format!("/cdn-cgi/image/width=200,format=jpeg,metadata=none{photo}"),
            200,
            |_, b| has_exif(b, false),
        ),
        (
            "metadata: WebP discards metadata by default",
            format!("/cdn-cgi/image/width=200,format=webp{photo}"),
            200,
            |_, b| {
                let exif = b.windows(4).any(|w| w == b"EXIF");
                if exif {
                    Err("an EXIF chunk in the WebP".into())
                } else {
                    Ok(())
                }
            },
        ),
    ];
    let mut failures = Vec::new();
    for (doc, url, status, check) in rows {
        let (s, h, body) = get(&edge, url, &[]).await;
        let mut problems = Vec::new();
        if s != *status {
            problems.push(format!(
                "status {s}, want {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        } else if let Err(e) = check(&h, &body) {
            problems.push(e);
        }
        if s == 200 && hv(&h, "content-type") != sniffed(&body) {
            problems.push(format!(
                "Content-Type {} but the body is {}",
                hv(&h, "content-type"),
                sniffed(&body)
            ));
        }
        if s == 200 && url.contains("width=") && !hv(&h, "cf-resized").starts_with("internal=ok") {
            problems.push(format!("Cf-Resized {:?}", hv(&h, "cf-resized")));
        }
        if !problems.is_empty() {
            failures.push(format!("{doc}\n  GET {url}\n  {}", problems.join("\n  ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // compression=fast where it changes nothing is no separate cache entry.
    let key = |url: String| {
        let edge = &edge;
        async move { hv(&get(edge, &url, &[]).await.1, "x-cache-key").to_string() }
    };
    assert_eq!(
        key(format!(
            "/cdn-cgi/image/width=150,format=jpeg,compression=fast{photo}"
        ))
        .await,
        key(format!("/cdn-cgi/image/width=150,format=jpeg{photo}")).await,
    );
    // The query form takes the cdn-cgi names `g` and `anim` too: one output, one key.
    assert_eq!(
        key(format!("{photo}?width=100&height=100&fit=cover&g=left")).await,
        key(format!(
            "/cdn-cgi/image/width=100,height=100,fit=cover,gravity=left{photo}"
        ))
        .await,
    );
    assert_eq!(
        key("/samples/anim.gif?width=50&anim=false".into()).await,
        key("/cdn-cgi/image/width=50,anim=false/samples/anim.gif".into()).await,
    );
    // onerror=redirect: a failed transform of a source on this host redirects to the
    // source, every time; a missing source is not redirected.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    for (url, status, location) in [
        (
            "/cdn-cgi/image/width=100,onerror=redirect/files/broken.jpg",
            302,
            "/files/broken.jpg",
        ),
        (
            "/cdn-cgi/image/width=100,onerror=redirect/files/broken.jpg",
            302,
            "/files/broken.jpg",
        ),
        (
            "/files/broken.jpg?width=90&onerror=redirect",
            302,
            "/files/broken.jpg",
        ),
        (
            "/cdn-cgi/image/width=100,onerror=redirect/samples/none.jpg",
            404,
            "",
        ),
    ] {
        let r = no_follow.get(edge.url(url)).send().await.unwrap();
        let h = r.headers().clone();
        assert_eq!(r.status().as_u16(), status, "{url}");
        assert_eq!(hv(&h, "location"), location, "{url}");
        if status == 302 {
            assert_eq!(hv(&h, "cf-resized"), "err=9412", "{url}");
            assert_eq!(hv(&h, "cache-control"), "no-store", "{url}");
        }
    }
    let (s, _, body) = get(&edge, "/files/broken.jpg", &[]).await;
    assert_eq!(
        (s, body.len()),
        (200, 50_000),
        "the redirect's target is the original"
    );
}

/// brightness, contrast, gamma, saturation ("1.0 equals no change… 0 is ignored"), flip
/// (h, v, hv): the pixels of lossless PNG outputs against the unadjusted one.
#[tokio::test(flavor = "multi_thread")]
async fn image_resizing_colour_and_flip() {
    let edge = Edge::start(&samples_config("")).await;
    let png = |opts: &'static str| {
        let edge = &edge;
        async move {
            let url = format!("/cdn-cgi/image/width=120,format=png{opts}/samples/photo.jpg");
            let (s, h, body) = get(edge, &url, &[]).await;
            assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&body));
            assert_eq!(hv(&h, "content-type"), "image/png", "{url}");
            image::load_from_memory(&body).unwrap().to_rgb8()
        }
    };
    let mean = |img: &image::RgbImage| {
        img.as_raw().iter().map(|v| f64::from(*v)).sum::<f64>() / img.as_raw().len() as f64
    };
    let spread = |img: &image::RgbImage| {
        let m = mean(img);
        img.as_raw()
            .iter()
            .map(|v| (f64::from(*v) - m).abs())
            .sum::<f64>()
            / img.as_raw().len() as f64
    };
    let base = png("").await;
    let (w, h) = base.dimensions();
    let darker = png(",brightness=0.5").await;
    assert!(mean(&darker) < mean(&base) * 0.6, "brightness=0.5 halves");
    assert!(
        mean(&png(",brightness=2").await) > mean(&base),
        "brightness=2 brightens"
    );
    assert_eq!(png(",brightness=0").await, base, "brightness=0 is ignored");
    assert!(
        spread(&png(",contrast=0.5").await) < spread(&base),
        "contrast=0.5 flattens"
    );
    assert!(
        spread(&png(",contrast=2").await) > spread(&base),
        "contrast=2 hardens"
    );
    assert!(
        mean(&png(",gamma=2").await) > mean(&base),
        "gamma=2 lightens"
    );
    assert!(
        mean(&png(",gamma=0.5").await) < mean(&base),
        "gamma=0.5 darkens"
    );
    let grey = png(",saturation=0").await;
    assert!(
        grey.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
        "saturation=0 is grey"
    );
    let flipped = png(",flip=h").await;
    assert_eq!(flipped.dimensions(), (w, h));
    assert!(
        (0..h).step_by(7).all(|y| (0..w)
            .step_by(5)
            .all(|x| { flipped.get_pixel(x, y) == base.get_pixel(w - 1 - x, y) })),
        "flip=h mirrors left and right"
    );
    let v = png(",flip=v").await;
    assert_eq!(
        v.get_pixel(3, 0),
        base.get_pixel(3, h - 1),
        "flip=v mirrors top and bottom"
    );
    let hv2 = png(",flip=hv").await;
    assert_eq!(
        hv2.get_pixel(0, 0),
        base.get_pixel(w - 1, h - 1),
        "flip=hv both"
    );
    // The query form takes the same names; a factor of 1 is the plain output's key.
    let key = |url: &'static str| {
        let edge = &edge;
        async move { hv(&get(edge, url, &[]).await.1, "x-cache-key").to_string() }
    };
    assert_eq!(
        key("/samples/photo.jpg?width=120&format=png&flip=h&saturation=0").await,
        key("/cdn-cgi/image/width=120,format=png,flip=h,saturation=0/samples/photo.jpg").await,
    );
    assert_eq!(
        key("/samples/photo.jpg?width=120&format=png&contrast=1&gamma=1").await,
        key("/samples/photo.jpg?width=120&format=png").await,
    );
    // Out of range, or on a video mode: 400.
    for url in [
        "/cdn-cgi/image/width=120,brightness=11/samples/photo.jpg",
        "/cdn-cgi/image/width=120,flip=x/samples/photo.jpg",
        "/samples/clip.mp4?mode=frame&brightness=2",
    ] {
        assert_eq!(get(&edge, url, &[]).await.0, 400, "{url}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn media_transformations_limits() {
    let edge = Edge::start(&samples_config("")).await;
    let clip = "/samples/clip.mp4";
    // (documentation, URL, status)
    let rows: &[(&str, String, u16)] = &[
        (
            "mode=audio with audio=false is an error",
            format!("/cdn-cgi/media/mode=audio,audio=false{clip}"),
            400,
        ),
        (
            "imageCount only with mode=spritesheet",
            format!("/cdn-cgi/media/mode=frame,time=1s,imageCount=4{clip}"),
            400,
        ),
        (
            "width 10..=2000",
            format!("/cdn-cgi/media/mode=frame,width=2001{clip}"),
            400,
        ),
        (
            "an unknown option is an error",
            format!("/cdn-cgi/media/mode=frame,zoom=2{clip}"),
            400,
        ),
        (
            "mode=frame with time and width",
            format!("/cdn-cgi/media/mode=frame,time=2s,width=160{clip}"),
            200,
        ),
    ];
    for (doc, url, status) in rows {
        let (s, h, body) = get(&edge, url, &[]).await;
        assert_eq!(
            s,
            *status,
            "{doc}: {url}: {}",
            String::from_utf8_lossy(&body)
        );
        if s == 400 {
            assert_eq!(hv(&h, "cf-resized"), "err=9401", "{doc}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["error"]["message"].is_string(), "{doc}: {v}");
        } else {
            assert_eq!(hv(&h, "content-type"), sniffed(&body), "{doc}");
            assert_eq!(hv(&h, "x-resolved-width"), "160", "{doc}");
        }
    }
}

fn want(got: &str, want: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{got:?}, want {want:?}"))
    }
}

fn size(h: &reqwest::header::HeaderMap, w: &str, hh: &str) -> Result<(), String> {
    want(hv(h, "x-resolved-width"), w)?;
    want(hv(h, "x-resolved-height"), hh)
}

fn quality(h: &reqwest::header::HeaderMap, q: u8) -> Result<(), String> {
    let v = hv(h, "cf-resized");
    if v.starts_with("internal=ok") && v.split(' ').any(|p| p == format!("q={q}")) {
        Ok(())
    } else {
        Err(format!("Cf-Resized {v:?}, want q={q}"))
    }
}

/// Whether a JPEG carries an APP1 `Exif` block.
fn has_exif(b: &[u8], want_it: bool) -> Result<(), String> {
    let got = b.windows(6).any(|w| w == b"Exif\0\0");
    if got == want_it {
        Ok(())
    } else {
        Err(format!("EXIF present {got}, want {want_it}"))
    }
}

/// `Cf-Resized` codes that depend on the form ("Troubleshooting" of Image Resizing and of
/// Media Transformations): an image too large is 9413, a request loop 9403 (a video too
/// large, 9402, is the unit test `cf_resized_codes_follow_the_form`: frames read only the
/// ranges they need, so a small `max_video_bytes` does not trip them).
#[tokio::test(flavor = "multi_thread")]
async fn cf_resized_codes_by_form() {
    let edge = Edge::start(&samples_config(
        "[transform]\nmax_image_bytes = \"100KiB\"\nmax_video_bytes = \"100KiB\"",
    ))
    .await;
    for (url, via, status, code) in [
        (
            "/cdn-cgi/image/width=100/samples/photo.jpg",
            "",
            413,
            "err=9413",
        ),
        (
            "/cdn-cgi/image/width=50/samples/alpha.png",
            "1.1 other, 1.1 media-edge",
            508,
            "err=9403",
        ),
    ] {
        let headers: Vec<(&str, &str)> = if via.is_empty() {
            vec![]
        } else {
            vec![("via", via)]
        };
        let (s, h, body) = get(&edge, url, &headers).await;
        assert_eq!(s, status, "{url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(hv(&h, "cf-resized"), code, "{url}");
    }
}
