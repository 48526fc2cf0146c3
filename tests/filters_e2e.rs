//! End-to-end: every request form resolves to one spec and one cache key.

use e2e::*;

fn key(h: &reqwest::header::HeaderMap) -> String {
    h.get("x-cache-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn all_forms_share_one_key_and_cache_entry() {
    let edge = Edge::start(&samples_config("")).await;
    let forms = [
        "/samples/photo.jpg?width=640&format=webp&quality=75",
        "/samples/photo.jpg?quality=75&format=webp&width=640",
        "/samples/photo.jpg?w=640&f=webp&q=75",
        "/samples/photo.jpg?imformat=webp&w=640&q=75",
        "/cdn-cgi/image/width=640,format=webp,quality=75/samples/photo.jpg",
    ];
    let mut keys = Vec::new();
    let mut statuses = Vec::new();
    let mut caches = Vec::new();
    for f in forms {
        let (s, h, _) = get(&edge, f, &[]).await;
        keys.push(key(&h));
        statuses.push(s);
        caches.push(
            h.get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        );
    }
    assert!(
        keys.iter().all(|k| k == &keys[0] && !k.is_empty()),
        "{keys:?}"
    );
    assert!(
        keys[0].starts_with("image:/samples/photo.jpg:w=640"),
        "{}",
        keys[0]
    );
    if statuses[0] == 200 {
        assert!(caches[1..].iter().all(|c| c == "HIT"), "{caches:?}");
    }
    // Derivative spellings share one key.
    let (_, a, _) = get(&edge, "/samples/photo.jpg?derivative=tablet", &[]).await;
    let (_, b, _) = get(&edge, "/samples/photo.jpg?impolicy=tablet", &[]).await;
    let (_, c, _) = get(&edge, "/samples/photo.jpg?imwidth=1280", &[]).await;
    assert_eq!(key(&a), key(&b));
    assert_eq!(key(&a), key(&c));
    assert_eq!(
        a.get("x-derivative").and_then(|v| v.to_str().ok()),
        Some("tablet")
    );
    // Playback hints never enter the key.
    let (_, d, _) = get(&edge, "/samples/clip.mp4?loop=true&autoplay=true", &[]).await;
    assert_eq!(key(&d), "orig:/samples/clip.mp4");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_are_400_with_the_parameter_named() {
    let edge = Edge::start(&samples_config("")).await;
    for (q, needle) in [
        ("width=5000", "width"),
        ("fit=squash", "fit"),
        ("quality=101", "quality"),
        ("time=zz", "time"),
    ] {
        let (s, _, body) = get(&edge, &format!("/samples/photo.jpg?{q}"), &[]).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(s, 400, "{q}: {body}");
        assert!(
            body.contains("BAD_REQUEST") && body.contains(needle),
            "{q}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_view_needs_the_admin_token() {
    let edge = Edge::start(&samples_config("")).await;
    let (s, _, _) = get(&edge, "/samples/photo.jpg?imwidth=1280&debug=view", &[]).await;
    assert_eq!(s, 403);
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (s, _, body) = get(
        &edge,
        "/samples/photo.jpg?imwidth=1280&debug=view",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["origin"]["name"], "samples");
    assert!(
        v["cache_key"].as_str().unwrap().contains("der=tablet"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn format_auto_negotiates_and_varies_on_accept() {
    let edge = Edge::start(&samples_config("")).await;
    let (_, a, _) = get(
        &edge,
        "/samples/photo.jpg?width=300&format=auto",
        &[("accept", "image/avif,image/webp,*/*")],
    )
    .await;
    let (_, w, _) = get(
        &edge,
        "/samples/photo.jpg?width=300&format=auto",
        &[("accept", "image/webp,*/*")],
    )
    .await;
    let (_, j, _) = get(
        &edge,
        "/samples/photo.jpg?width=300&format=auto",
        &[("accept", "*/*")],
    )
    .await;
    assert!(key(&a).contains(":f=avif"), "{}", key(&a));
    assert!(key(&w).contains(":f=webp"), "{}", key(&w));
    assert!(key(&j).contains(":f=auto"), "{}", key(&j));
    for h in [&a, &w, &j] {
        assert!(h
            .get("vary")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .contains("Accept"));
    }
}
