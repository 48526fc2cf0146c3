//! End-to-end: uploads on SQLite and on a throwaway PostgreSQL cluster — SHA-256 of the
//! body, EXIF in the record, per-tenant dedup (same bytes twice → one object, two records;
//! another tenant → its own object), tenant isolation, bad bodies (not media, empty,
//! truncated, no token), and reference-counted deletes under races, many times over.

use e2e::*;
use serde_json::Value;
use sha2::Digest;
use std::path::PathBuf;
use std::time::Duration;

const ACME: &str = "acme-upload-token";
const BETA: &str = "beta-upload-token";

fn config(db_line: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:{{PORT}}\"]\nthreads = 2\n\
         [store]\n{db_line}\n\
         [jobs]\nworkers = 1\npoll_interval = \"100ms\"\nretry_base = \"1s\"\n\
         retry_max = \"1s\"\nmax_attempts = 2\n\
         [filters.ratelimit]\nenabled = false\n\
         [security]\ntokens = [\
         {{ token_env = \"T_ACME\", tenant = \"acme\", scopes = [\"upload\"] }}, \
         {{ token_env = \"T_BETA\", tenant = \"beta\", scopes = [\"upload\"] }}]\n\
         {}",
        samples_origin()
    )
}

async fn start(db_line: &str) -> Edge {
    Edge::start_with_env(&config(db_line), &[("T_ACME", ACME), ("T_BETA", BETA)]).await
}

async fn upload(edge: &Edge, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut rb = client().post(edge.url("/upload")).body(body);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("upload");
    let s = r.status().as_u16();
    let b = r.bytes().await.unwrap_or_default();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn media(edge: &Edge, method: reqwest::Method, token: &str, id: &str) -> u16 {
    client()
        .request(method, edge.url(&format!("/media/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .expect("media")
        .status()
        .as_u16()
}

fn object(edge: &Edge, tenant: &str, sha: &str) -> PathBuf {
    edge.dir.path().join("data/uploads").join(tenant).join(sha)
}

fn objects_of(edge: &Edge, tenant: &str) -> usize {
    std::fs::read_dir(edge.dir.path().join("data/uploads").join(tenant))
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(workspace().join("conf/samples").join(name)).expect("sample")
}

async fn uploads(db_line: &str) {
    let edge = start(db_line).await;
    let photo = sample("photo.jpg");
    let sha = hex::encode(sha2::Sha256::digest(&photo));

    let (s, a) = upload(&edge, Some(ACME), photo.clone()).await;
    assert_eq!(s, 201, "{a}\n{}", edge.log());
    assert_eq!(a["sha256"], sha.as_str());
    assert_eq!(a["size"], photo.len());
    assert_eq!(a["content_type"], "image/jpeg");
    assert_eq!(a["status"], "complete");
    assert_eq!(a["deduplicated"], false);
    let exif = &a["metadata"]["exif"];
    assert!(exif["Make"].as_str().is_some_and(|m| !m.is_empty()), "{a}");
    assert!(
        (exif["latitude"].as_f64().unwrap() - 48.8584).abs() < 0.001,
        "{a}"
    );
    assert!(object(&edge, "acme", &sha).is_file());
    derivatives(&edge, &a, &photo).await;

    // The same bytes again: a second record, the same object, no second write.
    let (s, b) = upload(&edge, Some(ACME), photo.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["deduplicated"], true);
    assert_eq!(b["sha256"], sha.as_str());
    assert_ne!(a["id"], b["id"]);
    assert_eq!(objects_of(&edge, "acme"), 1);
    assert_eq!(
        b["metadata"], a["metadata"],
        "a deduplicated record shares the derivatives"
    );
    // Another tenant: never deduplicated against acme.
    let (s, c) = upload(&edge, Some(BETA), photo.clone()).await;
    assert_eq!((s, &c["deduplicated"]), (201, &Value::Bool(false)), "{c}");
    assert!(object(&edge, "beta", &sha).is_file());
    multipart(&edge).await;

    let a_id = a["id"].as_str().unwrap();
    assert_eq!(media(&edge, reqwest::Method::GET, ACME, a_id).await, 200);
    assert_eq!(media(&edge, reqwest::Method::GET, BETA, a_id).await, 404);
    assert_eq!(media(&edge, reqwest::Method::DELETE, BETA, a_id).await, 404);

    // Bad bodies.
    assert_eq!(upload(&edge, None, photo.clone()).await.0, 401);
    assert_eq!(upload(&edge, Some("wrong"), photo.clone()).await.0, 403);
    let (s, v) = upload(&edge, Some(ACME), b"just some text, not media".to_vec()).await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (415, &Value::from("UNSUPPORTED_MEDIA")),
        "{v}"
    );
    assert_eq!(upload(&edge, Some(ACME), Vec::new()).await.0, 400);
    // Bytes that start like a JPEG but are not one: 422, nothing stored or recorded.
    let mut fake = vec![
        0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0,
    ];
    fake.extend(pattern(4096));
    let fake_sha = hex::encode(sha2::Sha256::digest(&fake));
    let (s, v) = upload(&edge, Some(ACME), fake).await;
    assert_eq!(s, 422, "{v}");
    assert!(!object(&edge, "acme", &fake_sha).exists());
    // A body cut short of its Content-Length: nothing recorded, no temp file left.
    {
        use tokio::io::AsyncWriteExt;
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
            .await
            .unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
             Content-Length: {}\r\n\r\n",
            photo.len()
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&photo[..photo.len() / 3]).await.unwrap();
        drop(sock);
    }
    // A Content-Length over the limit: 413 before a byte of the body is read.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut sock = tokio::net::TcpStream::connect(("127.0.0.1", edge.port))
            .await
            .unwrap();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ACME}\r\n\
             Content-Length: 999999999999\r\n\r\n"
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer))
            .await
            .expect("answered without the body")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let tmp = edge.dir.path().join("data/tmp");
    let leftovers = || {
        std::fs::read_dir(&tmp)
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    while leftovers() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(leftovers(), 0);
    let m = metrics_of(&edge).await;
    assert!(
        m.contains("media_edge_uploads_total{result=\"stored\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("media_edge_uploads_total{result=\"deduplicated\"} 1"),
        "{m}"
    );

    // Deleting one of two records keeps the object; the last takes it.
    assert_eq!(media(&edge, reqwest::Method::DELETE, ACME, a_id).await, 200);
    assert!(object(&edge, "acme", &sha).is_file());
    assert_eq!(media(&edge, reqwest::Method::GET, ACME, a_id).await, 404);
    let b_id = b["id"].as_str().unwrap();
    assert_eq!(media(&edge, reqwest::Method::DELETE, ACME, b_id).await, 200);
    assert!(!object(&edge, "acme", &sha).exists());
    assert!(object(&edge, "beta", &sha).is_file());
    // What the edge cached of it went with it (cached before: a thumbnail, a resize).
    let auth = format!("Bearer {ACME}");
    for url in [
        format!("/proxy/image/{sha}?width=200&format=jpeg"),
        a["urls"]["thumbnails"][0]["url"]
            .as_str()
            .unwrap()
            .to_string(),
    ] {
        assert_eq!(
            get(&edge, &url, &[("authorization", &auth)]).await.0,
            404,
            "{url}"
        );
    }

    // Races, many times: two deletes of the last two records leave no object; a delete
    // racing an upload of the same bytes never removes what the upload's record references.
    let png = sample("alpha.png");
    let psha = hex::encode(sha2::Sha256::digest(&png));
    for round in 0..15 {
        let (s, x) = upload(&edge, Some(ACME), png.clone()).await;
        assert_eq!(s, 201, "{x}");
        let (_, y) = upload(&edge, Some(ACME), png.clone()).await;
        let (x, y) = (x["id"].as_str().unwrap(), y["id"].as_str().unwrap());
        let (dx, dy) = tokio::join!(
            media(&edge, reqwest::Method::DELETE, ACME, x),
            media(&edge, reqwest::Method::DELETE, ACME, y)
        );
        assert_eq!((dx, dy), (200, 200), "round {round}");
        assert!(
            !object(&edge, "acme", &psha).exists(),
            "round {round}: object left"
        );

        let (_, z) = upload(&edge, Some(ACME), png.clone()).await;
        let z = z["id"].as_str().unwrap().to_string();
        let (dz, (s, w)) = tokio::join!(
            media(&edge, reqwest::Method::DELETE, ACME, &z),
            upload(&edge, Some(ACME), png.clone())
        );
        assert_eq!((dz, s), (200, 201), "round {round}: {w}");
        assert!(
            object(&edge, "acme", &psha).is_file(),
            "round {round}: a committed record lost its object (dedup {})",
            w["deduplicated"]
        );
        let w = w["id"].as_str().unwrap();
        assert_eq!(media(&edge, reqwest::Method::DELETE, ACME, w).await, 200);
        assert!(!object(&edge, "acme", &psha).exists(), "round {round}");
    }
}

/// An image record's derivatives: dimensions, ThumbHash, a `data:` placeholder and WebP
/// thumbnails already in the store; the content-hash routes find the tenant's upload (not
/// another tenant's, never anonymously here); no output carries the camera's EXIF.
async fn derivatives(edge: &Edge, a: &Value, photo: &[u8]) {
    let m = &a["metadata"];
    assert!(m["width"].as_u64().is_some_and(|w| w > 0), "{a}");
    assert!(
        m["thumbhash"].as_str().is_some_and(|t| !t.is_empty()),
        "{a}"
    );
    let ph = m["placeholder"].as_str().unwrap_or_default();
    assert!(ph.starts_with("data:image/webp;base64,"), "{a}");
    assert!(ph.len() < 6000, "{}", ph.len());
    let thumbs = a["urls"]["thumbnails"].as_array().expect("thumbnails");
    assert_eq!(thumbs.len(), 3, "{a}");
    let make = m["exif"]["Make"].as_str().unwrap().as_bytes().to_vec();
    let auth = format!("Bearer {ACME}");
    // Outputs keep at most the copyright (Cloudflare's JPEG default): never the camera.
    let no_exif = |what: &str, body: &[u8]| {
        assert!(
            !body.windows(make.len()).any(|w| w == make),
            "{what} carries the camera make"
        );
    };
    for t in thumbs {
        let url = t["url"].as_str().unwrap();
        let (s, h, body) = get(edge, url, &[("authorization", &auth)]).await;
        assert_eq!(s, 200, "{url}: {}", String::from_utf8_lossy(&body));
        assert_eq!(h["content-type"], "image/webp", "{url}");
        assert_eq!(h["x-store"], "HIT", "{url}: made at upload time");
        assert_eq!(&body[8..12], b"WEBP");
        no_exif(url, &body);
    }
    let sha = a["sha256"].as_str().unwrap();
    let original = a["urls"]["original"].as_str().unwrap();
    let (s, _, body) = get(edge, original, &[("authorization", &auth)]).await;
    assert_eq!((s, body.as_slice()), (200, photo), "{original}");
    let resized = format!("/proxy/image/{sha}?width=200&format=jpeg");
    let (s, _, body) = get(edge, &resized, &[("authorization", &auth)]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..2], &[0xFF, 0xD8]);
    no_exif(&resized, &body);
    // Not another tenant's upload, not without a token, never by its internal path.
    let beta = format!("Bearer {BETA}");
    assert_eq!(
        get(edge, &resized, &[("authorization", &beta)]).await.0,
        404
    );
    assert_eq!(get(edge, &resized, &[]).await.0, 404);
    assert_eq!(
        get(edge, &format!("/_uploads/acme/{sha}"), &[]).await.0,
        404
    );
}

/// A multipart upload (curl's `-F`): the file part is the upload, other parts are dropped.
async fn multipart(edge: &Edge) {
    let png = sample("alpha.png");
    let form = reqwest::multipart::Form::new()
        .text("title", "a title")
        .part(
            "media",
            reqwest::multipart::Part::bytes(png.clone()).file_name("alpha.png"),
        );
    let r = client()
        .post(edge.url("/upload"))
        .bearer_auth(BETA)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["sha256"], hex::encode(sha2::Sha256::digest(&png)));
    assert_eq!(v["size"], png.len());
    // A part header without an end: refused once it outgrows the parser's bound, not
    // kept whole in memory.
    let mut endless =
        b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nX-Pad: ".to_vec();
    endless.extend(std::iter::repeat_n(b'a', 4 << 20));
    let r = client()
        .post(edge.url("/upload"))
        .bearer_auth(BETA)
        .header("content-type", "multipart/form-data; boundary=B")
        .body(endless)
        .send()
        .await;
    if let Ok(r) = r {
        // (The server may close before the client has sent it all: also a refusal.)
        let s = r.status().as_u16();
        let v: Value =
            serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("part headers"),
            "{v}"
        );
    }
    // No file part: 400.
    let form = reqwest::multipart::Form::new().text("title", "no file");
    let r = client()
        .post(edge.url("/upload"))
        .bearer_auth(BETA)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn sqlite_uploads_dedup_and_delete() {
    uploads("").await;
}

#[tokio::test]
async fn postgres_uploads_dedup_and_delete() {
    let pg = Postgres::start().await;
    uploads(&format!("database_url = \"{}\"", pg.url)).await;
}

/// Polls `GET /media/{id}` until the record leaves `processing` (at most `limit`).
async fn settled(edge: &Edge, token: &str, id: &str, limit: Duration) -> Value {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let r = client()
            .get(edge.url(&format!("/media/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        if v["status"] != "processing" {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still processing: {v}\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A video upload: `processing`, then `complete` with an HLS playlist that ffprobe plays
/// (every part from the store) and a poster; bytes that only look like a video end
/// `failed` with the reason.
async fn video_uploads(db_line: &str) {
    let edge = start(db_line).await;
    let clip = edge.dir.path().join("clip.mp4");
    make_test_video(&clip, 8, "320x240");
    let bytes = std::fs::read(&clip).unwrap();
    let (s, v) = upload(&edge, Some(ACME), bytes.clone()).await;
    assert_eq!(s, 201, "{v}\n{}", edge.log());
    assert_eq!(
        (&v["status"], &v["content_type"]),
        (&Value::from("processing"), &Value::from("video/mp4")),
        "{v}"
    );
    assert!(v["metadata"]["job_id"].is_string(), "{v}");
    let id = v["id"].as_str().unwrap();
    let done = settled(&edge, ACME, id, Duration::from_secs(240)).await;
    assert_eq!(done["status"], "complete", "{done}\n{}", edge.log());
    let hls = done["urls"]["hls"].as_str().expect("hls url");
    let poster = done["urls"]["poster"].as_str().expect("poster url");
    let auth = format!("Bearer {ACME}");
    let (s, h, body) = get(&edge, hls, &[("authorization", &auth)]).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["x-store"], "HIT");
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.starts_with("#EXTM3U") && text.contains("#EXT-X-ENDLIST"),
        "{text}"
    );
    let segments: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(segments.len() >= 2, "8 s in 6 s segments: {text}");
    // Every part was kept by the job: a store hit, no packaging on request.
    let sha = v["sha256"].as_str().unwrap();
    for seg in &segments {
        let url = format!("/proxy/video/{seg}");
        assert!(url.contains(sha), "{url}");
        let (s, h, _) = get(&edge, &url, &[("authorization", &auth)]).await;
        assert_eq!((s, h["x-store"].to_str().unwrap()), (200, "HIT"), "{url}");
    }
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-headers"])
        .arg(format!("Authorization: {auth}\r\n"))
        .args([
            "-show_entries",
            "format=duration:stream=codec_type,width",
            "-of",
            "json",
        ])
        .arg(edge.url(hls))
        .output()
        .expect("ffprobe");
    let probe: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dur: f64 = probe["format"]["duration"]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!((dur - 8.0).abs() < 1.0, "{probe}");
    let types: Vec<_> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].clone())
        .collect();
    assert!(
        types.contains(&Value::from("video")) && types.contains(&Value::from("audio")),
        "{probe}"
    );
    let (s, h, body) = get(&edge, poster, &[("authorization", &auth)]).await;
    assert_eq!(
        (s, h["content-type"].to_str().unwrap()),
        (200, "image/jpeg")
    );
    assert_eq!(&body[..2], &[0xFF, 0xD8]);

    // An MP4 header on garbage: accepted (it looks like a video), then failed with why.
    let mut fake = bytes[..64].to_vec();
    fake.extend(pattern(64 * 1024));
    let (s, v) = upload(&edge, Some(ACME), fake).await;
    assert_eq!((s, &v["status"]), (201, &Value::from("processing")), "{v}");
    let failed = settled(
        &edge,
        ACME,
        v["id"].as_str().unwrap(),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["metadata"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{failed}"
    );
    assert!(failed["urls"]["hls"].is_null(), "{failed}");
}

#[tokio::test]
async fn sqlite_video_upload_to_hls() {
    video_uploads("").await;
}

#[tokio::test]
async fn postgres_video_upload_to_hls() {
    let pg = Postgres::start().await;
    video_uploads(&format!("database_url = \"{}\"", pg.url)).await;
}
