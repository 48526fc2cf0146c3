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

    // The same bytes again: a second record, the same object, no second write.
    let (s, b) = upload(&edge, Some(ACME), photo.clone()).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["deduplicated"], true);
    assert_eq!(b["sha256"], sha.as_str());
    assert_ne!(a["id"], b["id"]);
    assert_eq!(objects_of(&edge, "acme"), 1);
    // Another tenant: never deduplicated against acme.
    let (s, c) = upload(&edge, Some(BETA), photo.clone()).await;
    assert_eq!((s, &c["deduplicated"]), (201, &Value::Bool(false)), "{c}");
    assert!(object(&edge, "beta", &sha).is_file());

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
        m.contains("media_edge_uploads_total{result=\"stored\"} 2"),
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

#[tokio::test]
async fn sqlite_uploads_dedup_and_delete() {
    uploads("").await;
}

#[tokio::test]
async fn postgres_uploads_dedup_and_delete() {
    let pg = Postgres::start().await;
    uploads(&format!("database_url = \"{}\"", pg.url)).await;
}
