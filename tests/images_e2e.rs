//! End-to-end: image transforms through the edge and the origin service.

use e2e::*;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// A PNG whose header claims 100000×100000 pixels (a decompression bomb).
fn bomb_png() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked before the size limit)
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn resize_convert_cache_and_metadata() {
    let edge = Edge::start(&samples_config("")).await;
    let (s, h, body) = get(&edge, "/samples/photo.jpg?width=300&format=webp", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "image/webp");
    assert!(body.starts_with(b"RIFF") && &body[8..12] == b"WEBP");
    assert_eq!(hv(&h, "x-resolved-width"), "300");
    assert_eq!(
        hv(&h, "x-resolved-height"),
        "200",
        "EXIF orientation applied: 1800x1200 landscape"
    );
    assert_eq!(hv(&h, "x-transform-source"), "image");
    assert!(!hv(&h, "etag").is_empty());
    assert_eq!(hv(&h, "x-cache"), "MISS");
    let (_, h2, body2) = get(&edge, "/samples/photo.jpg?format=webp&width=300", &[]).await;
    assert_eq!(hv(&h2, "x-cache"), "HIT");
    assert_eq!(body2, body);

    // JPEG output keeps only the copyright (Cloudflare's default): no GPS leaks.
    let (s, h, body) = get(
        &edge,
        "/samples/photo.jpg?width=400&format=jpeg&quality=high",
        &[],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "image/jpeg");
    assert!(body.starts_with(&[0xff, 0xd8]));
    assert!(
        body.windows(13).any(|w| w == b"Public domain"),
        "the copyright is kept"
    );
    // (That only Artist and Copyright are rebuilt, never GPS, is the engine's unit tests'.)

    // Alpha survives to PNG.
    let (s, h, body) = get(&edge, "/samples/alpha.png?width=200&format=png", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "image/png");
    assert!(body.starts_with(b"\x89PNG"));

    // Metadata JSON with EXIF and GPS.
    let (s, _, body) = get(&edge, "/samples/photo.jpg?format=json", &[]).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["width"], 1800);
    assert_eq!(v["height"], 1200);
    let lat = v["exif"]["latitude"].as_f64().unwrap();
    assert!((lat - 48.8584).abs() < 0.001, "{v}");
    assert!(v["placeholder"].as_str().is_some_and(|p| !p.is_empty()));

    // The same rendition through the cdn-cgi form shares the cache entry.
    let (_, h, _) = get(
        &edge,
        "/cdn-cgi/image/width=300,format=webp/samples/photo.jpg",
        &[],
    )
    .await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_are_4xx_and_never_cached() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(folder.path().join("bomb.png"), bomb_png()).unwrap();
    let mut truncated = std::fs::read(workspace().join("conf/samples/photo.jpg")).unwrap();
    truncated.truncate(truncated.len() / 3);
    std::fs::write(folder.path().join("truncated.jpg"), &truncated).unwrap();
    std::fs::write(
        folder.path().join("garbage.jpg"),
        b"this is not an image at all",
    )
    .unwrap();
    let origins = format!(
        "[[origins]]\nname = \"bad\"\nmatcher = \"^/bad/(.+)$\"\n[[origins.sources]]\nkind = \"local\"\nroot = \"{}\"\n",
        folder.path().display()
    );
    let edge = Edge::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n{origins}"
    ))
    .await;
    let (s, _, body) = get(&edge, "/bad/bomb.png?width=100", &[]).await;
    assert_eq!(s, 413, "{}", String::from_utf8_lossy(&body));
    let (s, _, body) = get(&edge, "/bad/garbage.jpg?width=100", &[]).await;
    assert_eq!(s, 415, "{}", String::from_utf8_lossy(&body));
    for _ in 0..2 {
        let (s, h, body) = get(&edge, "/bad/truncated.jpg?width=100&format=png", &[]).await;
        assert!(
            s == 422 || s == 200,
            "{s}: {}",
            String::from_utf8_lossy(&body)
        );
        if s == 422 {
            assert_ne!(
                hv(&h, "x-cache"),
                "HIT",
                "a failed transform is never cached"
            );
        }
    }
    let (s, _, _) = get(&edge, "/bad/bomb.png?width=100", &[]).await;
    assert_eq!(s, 413, "still refused, not cached as success");
    // The server is still serving.
    let (s, _, _) = get(&edge, "/health", &[]).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn video_frames_metadata_and_audio() {
    let edge = Edge::start(&samples_config("")).await;
    let (s, h, body) = get(&edge, "/samples/clip.mp4?mode=frame&time=5s&width=320", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "image/jpeg");
    assert!(body.starts_with(&[0xff, 0xd8]));
    assert_eq!(hv(&h, "x-transform-source"), "video");
    assert_eq!(hv(&h, "x-resolved-width"), "320");
    let (_, _, other) = get(&edge, "/samples/clip.mp4?mode=frame&time=1s&width=320", &[]).await;
    assert_ne!(
        other, body,
        "the frame at 1 s differs from the frame at 5 s"
    );
    let (_, h, _) = get(
        &edge,
        "/cdn-cgi/media/mode=frame,time=5s,width=320/samples/clip.mp4",
        &[],
    )
    .await;
    assert_eq!(
        hv(&h, "x-cache"),
        "HIT",
        "cdn-cgi media form shares the key"
    );
    let (s, _, body) = get(&edge, "/samples/clip.mp4?format=json", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["width"], 1280);
    assert!((v["duration"].as_f64().unwrap() - 12.0).abs() < 0.5, "{v}");
    let (s, h, body) = get(&edge, "/samples/clip.mp4?format=m4a&duration=3s", &[]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "audio/mp4");
    assert_eq!(&body[4..8], b"ftyp");
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_avif_is_encoded_in_the_background() {
    let edge = Edge::start(&samples_config(
        "[transform]\navif_background = true\navif_pending_max_age = \"1s\"\n",
    ))
    .await;
    let accept = [("accept", "image/avif,image/webp,*/*")];
    let path = "/samples/photo.jpg?width=500&format=auto";
    // Cold: WebP at once, short-lived, in the AVIF's key (Vary: Accept).
    let (s, h, body) = get(&edge, path, &accept).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(hv(&h, "content-type"), "image/webp");
    assert!(hv(&h, "cache-control").contains("max-age=1"), "{h:?}");
    assert!(hv(&h, "vary").to_ascii_lowercase().contains("accept"));
    assert!(image::load_from_memory(&body).is_ok());
    // Once the stand-in expires, the AVIF encoded in the background is served.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let avif = loop {
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        let (s, h, body) = get(&edge, path, &accept).await;
        assert_eq!(s, 200);
        if hv(&h, "content-type") == "image/avif" {
            assert!(!hv(&h, "cache-control").contains("max-age=1,"), "{h:?}");
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "AVIF never arrived");
    };
    assert_eq!(&avif[4..12], b"ftypavif");
    // A client without AVIF gets WebP in its own key, normally cached.
    let (s, h, _) = get(&edge, path, &[("accept", "image/webp")]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "image/webp");
    assert!(hv(&h, "x-avif").is_empty());
    // The AVIF is now an ordinary cache hit.
    let (_, h, again) = get(&edge, path, &accept).await;
    assert_eq!(hv(&h, "x-cache"), "HIT");
    assert_eq!(again, avif);
}
