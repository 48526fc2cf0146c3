//! Drop-in compatibility with Fluxer's media proxy, a row per documented behaviour of its
//! `/proxy/*` routes (the fluxerapp media proxy's README and its route handlers): errors as
//! `{"code","message"[, "retry_after"]}` at the top level, `Cache-Control: public,
//! max-age=604800` and a strong `ETag` on answers, originals with their real (sniffed)
//! content type, and no internal path in any error message.

use e2e::*;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

#[tokio::test(flavor = "multi_thread")]
async fn proxy_routes_answer_fluxer_shapes() {
    // Objects stored by their hash, without an extension (as uploads are).
    let dir = tempfile::tempdir().unwrap();
    let photo = std::fs::read(workspace().join("conf/samples/photo.jpg")).unwrap();
    let ph = sha256_hex(&photo);
    std::fs::write(dir.path().join(&ph), &photo).unwrap();
    let edge = Edge::start(&samples_config(&format!(
        "[content]\nprefix = \"/content/\"\n[[origins]]\nname = \"content\"\n\
         matcher = \"^/content/([0-9a-f]{{64}})$\"\n[[origins.sources]]\nkind = \"local\"\n\
         root = \"{}\"\n",
        dir.path().display()
    )))
    .await;

    // Successes: a week of browser cache and a strong ETag, whatever the route.
    for (doc, url, ctype) in [
        (
            "original: its sniffed type",
            format!("/proxy/image/{ph}"),
            "image/jpeg",
        ),
        (
            "resized",
            format!("/proxy/image/{ph}?width=200&format=webp"),
            "image/webp",
        ),
        (
            "thumbnail",
            format!("/proxy/thumbnail/{ph}?width=160"),
            "image/jpeg",
        ),
        (
            "metadata",
            format!("/proxy/metadata/{ph}"),
            "application/json",
        ),
    ] {
        for pass in ["miss", "hit"] {
            let (s, h, body) = get(&edge, &url, &[]).await;
            assert_eq!(s, 200, "{doc} ({pass}): {}", String::from_utf8_lossy(&body));
            assert_eq!(hv(&h, "content-type"), ctype, "{doc} ({pass})");
            assert_eq!(
                hv(&h, "cache-control"),
                "public, max-age=604800",
                "{doc} ({pass})"
            );
            let etag = hv(&h, "etag");
            assert!(
                etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
                "{doc} ({pass}): a strong ETag, got {etag:?}"
            );
        }
    }
    // The same object on its own route keeps the nested shape and its own cache rule.
    let (s, h, _) = get(&edge, &format!("/content/{ph}"), &[]).await;
    assert_eq!(s, 200);
    assert_eq!(hv(&h, "content-type"), "image/jpeg", "sniffed there too");

    // Errors: flat, and no internal path in the message.
    let missing = "0".repeat(64);
    for (doc, url, status) in [
        ("no such object", format!("/proxy/image/{missing}"), 404),
        (
            "no such object (resized)",
            format!("/proxy/image/{missing}?width=100"),
            404,
        ),
        ("a bad option", format!("/proxy/image/{ph}?width=abc"), 400),
        ("not a hash", "/proxy/image/nothex".to_string(), 400),
    ] {
        let (s, h, body) = get(&edge, &url, &[]).await;
        let text = String::from_utf8_lossy(&body).to_string();
        assert_eq!(s, status, "{doc}: {text}");
        assert_eq!(hv(&h, "content-type"), "application/json", "{doc}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            v["code"].is_string() && v["message"].is_string(),
            "{doc}: {v}"
        );
        assert!(v.get("error").is_none(), "{doc}: flat, got {v}");
        for internal in ["/content/", "/_uploads/", "_uploads", &missing] {
            assert!(!text.contains(internal), "{doc}: {internal:?} in {text}");
        }
        // Elsewhere errors stay nested.
    }
    let (s, _, body) = get(&edge, "/samples/none.jpg", &[]).await;
    assert_eq!(s, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"]["code"].is_string(), "{v}");
}
