//! Drop-in compatibility with Akamai Image & Video Manager, a row per documented behaviour,
//! each naming the documentation it follows (techdocs.akamai.com/ivm: "Image and video
//! query parameters", "Policies": an unknown policy is the default policy, an unknown
//! format the default format choice; "Derivative image widths": `imwidth` and the
//! breakpoints).

use e2e::*;

fn hv<'a>(h: &'a reqwest::header::HeaderMap, k: &str) -> &'a str {
    h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn image_and_video_manager_fallbacks() {
    let edge = Edge::start(&samples_config("")).await;
    let photo = "/samples/photo.jpg"; // 1800×1200
                                      // (documentation, URL, the answer it must equal (same key), a header and its value)
    let rows: &[(&str, String, Option<String>, (&str, &str))] = &[
        (
            "Policies: an impolicy that does not exist is the default policy (none here)",
            format!("{photo}?impolicy=nonesuch&imwidth=500"),
            Some(format!("{photo}?imwidth=500")),
            ("x-derivative", "mobile"),
        ),
        (
            "imformat: a format it does not know falls back to the default choice",
            format!("{photo}?imformat=tiff&imwidth=300"),
            Some(format!("{photo}?imwidth=300")),
            ("x-derivative", "mobile"),
        ),
        (
            "imwidth with derivatives configured: the narrowest at least that wide",
            format!("{photo}?imwidth=1000"),
            None,
            ("x-derivative", "tablet"),
        ),
        (
            "im-viewwidth alone sizes the image (responsive breakpoint at or above it)",
            format!("{photo}?im-viewwidth=300"),
            None,
            ("x-resolved-width", "320"),
        ),
        (
            "im-viewwidth with im-density: viewport × density",
            format!("{photo}?im-viewwidth=300&im-density=2"),
            None,
            ("x-resolved-width", "640"),
        ),
        (
            "im-viewheight alone sizes the image by its height",
            format!("{photo}?im-viewheight=400"),
            None,
            ("x-resolved-height", "400"),
        ),
    ];
    let mut failures = Vec::new();
    for (doc, url, same_as, (name, value)) in rows {
        let (s, h, body) = get(&edge, url, &[]).await;
        if s != 200 {
            failures.push(format!(
                "{doc}\n  GET {url}: {s} {}",
                String::from_utf8_lossy(&body)
            ));
            continue;
        }
        if hv(&h, name) != *value {
            failures.push(format!(
                "{doc}\n  GET {url}: {name} {:?}, want {value}",
                hv(&h, name)
            ));
        }
        if let Some(other) = same_as {
            let (_, h2, _) = get(&edge, other, &[]).await;
            if hv(&h, "x-cache-key") != hv(&h2, "x-cache-key") {
                failures.push(format!(
                    "{doc}\n  key {:?} differs from {other}'s {:?}",
                    hv(&h, "x-cache-key"),
                    hv(&h2, "x-cache-key")
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
