//! Cloudflare Image Resizing, second table: the options of the "Features" page
//! (developers.cloudflare.com/images/optimization/features/) that crop by pixels or by
//! border colour (`trim`), need a model (`gravity=face`, `zoom`, `segment=foreground`),
//! follow the network (`slow-connection-quality`), take CSS colours (`background`), answer
//! JSON (`format=json`), and the unknown-option policy shared by both URL forms. Every row
//! goes through the real binary.

use e2e::*;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn size(h: &reqwest::header::HeaderMap) -> (String, String) {
    (
        hv(h, "x-resolved-width").to_string(),
        hv(h, "x-resolved-height").to_string(),
    )
}

/// A 300×200 PNG: a 25 px white frame around a dark gradient.
fn framed_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(300, 200, |x, y| {
        if x < 25 || y < 25 || x >= 275 || y >= 175 {
            image::Rgb([255, 255, 255])
        } else {
            image::Rgb([(x / 3) as u8, (y / 2) as u8, 60])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread")]
async fn trim_models_network_colours_json_and_unknown_names() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("framed.png"), framed_png()).unwrap();
    let edge = Edge::start(&samples_config(&format!(
        "[[origins]]\nname = \"files\"\nmatcher = \"^/files/(.+)$\"\n[[origins.sources]]\n\
         kind = \"local\"\nroot = \"{}\"\n",
        dir.path().display()
    )))
    .await;
    let photo = "/samples/photo.jpg"; // 1800×1200 after EXIF orientation
    let photo_len = std::fs::metadata(workspace().join("conf/samples/photo.jpg"))
        .unwrap()
        .len();

    // trim=top;right;bottom;left, before the resize (X-Resolved-* are the output's).
    for url in [
        format!("/cdn-cgi/image/trim=20;30;20;0,format=png{photo}"),
        format!("{photo}?trim=20;30;20;0&format=png"),
        format!("/cdn-cgi/image/trim.top=20,trim.left=0,trim.height=1160,trim.width=1770,format=png{photo}"),
    ] {
        let (s, h, b) = get(&edge, &url, &[]).await;
        assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
        assert_eq!(size(&h), ("1770".into(), "1160".into()), "{url}");
        let img = image::load_from_memory(&b).unwrap();
        assert_eq!((img.width(), img.height()), (1770, 1160), "{url}");
    }
    // Takes dpr into account: trim=10 at dpr=2 cuts 20 source pixels.
    let (_, h, _) = get(
        &edge,
        &format!("/cdn-cgi/image/trim=10;10;10;10,dpr=2,format=jpeg{photo}"),
        &[],
    )
    .await;
    assert_eq!(size(&h), ("1760".into(), "1160".into()));
    // trim=border: the white frame found in the pixels.
    let (s, h, b) = get(
        &edge,
        "/cdn-cgi/image/trim=border,format=png/files/framed.png",
        &[],
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(size(&h), ("250".into(), "150".into()));
    let (_, h, _) = get(
        &edge,
        "/cdn-cgi/image/trim=border,trim.border.keep=5,width=130,format=png/files/framed.png",
        &[],
    )
    .await;
    assert_eq!(size(&h), ("130".into(), "80".into()));

    // format=json in Cloudflare's shape: the output size and the original's.
    let (s, h, b) = get(
        &edge,
        &format!("/cdn-cgi/image/width=300,format=json{photo}"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "application/json");
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(300), Some(200)),
        "{v}"
    );
    assert_eq!(v["original"]["width"], 1800, "{v}");
    assert_eq!(v["original"]["height"], 1200, "{v}");
    assert_eq!(v["original"]["format"], "image/jpeg", "{v}");
    assert_eq!(v["original"]["file_size"].as_u64(), Some(photo_len), "{v}");

    // Options that need a model Cloudflare runs: a 400 that says why (and on the cdn-cgi
    // form, Cloudflare's own, `Cf-Resized: err=9401`).
    for (url, why) in [
        (
            format!("/cdn-cgi/image/width=200,height=200,fit=cover,gravity=face{photo}"),
            "vision model",
        ),
        (format!("{photo}?width=200&g=face"), "vision model"),
        (
            format!("/cdn-cgi/image/segment=foreground{photo}"),
            "segmentation model",
        ),
    ] {
        let (s, h, b) = get(&edge, &url, &[]).await;
        assert_eq!(s, 400, "{url}");
        if url.starts_with("/cdn-cgi/") {
            assert_eq!(hv(&h, "cf-resized"), "err=9401", "{url}");
        }
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(why), "{url}: {v}");
    }
    // zoom acts only with gravity=face: accepted, one cache entry with the plain request.
    let key = |url: String| {
        let edge = &edge;
        async move {
            let (s, h, _) = get(edge, &url, &[]).await;
            assert_eq!(s, 200, "{url}");
            hv(&h, "x-cache-key").to_string()
        }
    };
    assert_eq!(
        key(format!("/cdn-cgi/image/width=140,zoom=0.5{photo}")).await,
        key(format!("/cdn-cgi/image/width=140{photo}")).await
    );

    // slow-connection-quality: the quality for slow clients, and the answer varies on the
    // hints and asks for them.
    let url = format!("/cdn-cgi/image/width=200,format=jpeg,scq=40{photo}");
    for (hints, q) in [
        (vec![("ect", "2g")], "q=40"),
        (vec![("save-data", "on")], "q=40"),
        (vec![("ect", "4g"), ("rtt", "50")], "q=85"),
        (vec![], "q=85"),
    ] {
        let (s, h, _) = get(&edge, &url, &hints).await;
        assert_eq!(s, 200);
        let resized = hv(&h, "cf-resized");
        assert!(resized.split(' ').any(|p| p == q), "{hints:?}: {resized}");
        let vary = hv(&h, "vary").to_ascii_lowercase();
        for name in ["rtt", "save-data", "ect", "downlink"] {
            assert!(vary.contains(name), "{hints:?}: Vary {vary}");
        }
        assert!(hv(&h, "accept-ch").contains("ECT"), "{hints:?}");
    }

    // background: rgb()/rgba() as Cloudflare documents them, escaped or not.
    for url in [
        format!("/cdn-cgi/image/width=100,height=100,fit=pad,background=rgba(250,40,145,0.5),format=png{photo}"),
        format!("/cdn-cgi/image/width=100,height=100,fit=pad,background=rgb%28240%2C40%2C145%29,format=png{photo}"),
        format!("{photo}?width=100&height=100&fit=pad&background=orange&format=png"),
    ] {
        let (s, h, b) = get(&edge, &url, &[]).await;
        assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&b));
        assert_eq!(size(&h), ("100".into(), "100".into()), "{url}");
        let img = image::load_from_memory(&b).unwrap().to_rgba8();
        let top = img.get_pixel(50, 0);
        assert!(top[0] > 200 && top[2] < 200, "{url}: padding {top:?}");
    }

    // An unknown name: a 400 naming it, in both forms; tracking names are not refused.
    for url in [
        format!("/cdn-cgi/image/width=100,widht=3{photo}"),
        format!("{photo}?width=100&widht=3"),
    ] {
        let (s, _, b) = get(&edge, &url, &[]).await;
        assert_eq!(s, 400, "{url}");
        assert!(String::from_utf8_lossy(&b).contains("widht"), "{url}");
    }
    let (s, _, _) = get(
        &edge,
        &format!("{photo}?width=100&utm_source=news&fbclid=x"),
        &[],
    )
    .await;
    assert_eq!(s, 200);
}
