//! End-to-end: the request log and `GET /admin/analytics`, on SQLite and on a throwaway
//! PostgreSQL cluster — generated traffic (misses, memory hits, transforms, 404s, a 400)
//! shows up in the totals, the hit rate by tier, the breakdowns by status, origin and mode,
//! the latency percentiles and the series; recent errors list the failures and hide the
//! admin API's own unless asked; both endpoints refuse without the admin token. And the
//! config view and validation endpoints.

use e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn admin_get(edge: &Edge, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut rb = client().get(edge.url(path));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.expect("request");
    let s = r.status().as_u16();
    let b = r.bytes().await.unwrap_or_default();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn row<'a>(v: &'a Value, table: &str, key: &str) -> &'a Value {
    v[table]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["key"] == key))
        .unwrap_or(&Value::Null)
}

async fn analytics(db_line: &str) {
    let edge = Edge::start(&samples_config(&format!(
        "[store]\n{db_line}\n[analytics]\nenabled = true\n"
    )))
    .await;
    // 6 of the same original (1 miss, then hits), 3 of one transform, 2 missing, 1 refused.
    for _ in 0..6 {
        assert_eq!(get(&edge, "/samples/photo.jpg", &[]).await.0, 200);
    }
    for _ in 0..3 {
        assert_eq!(
            get(&edge, "/samples/photo.jpg?width=120&format=webp", &[])
                .await
                .0,
            200
        );
    }
    for _ in 0..2 {
        assert_eq!(get(&edge, "/samples/missing.jpg", &[]).await.0, 404);
    }
    assert_eq!(get(&edge, "/samples/photo.jpg?width=abc", &[]).await.0, 400);
    // An admin call without the token: an error of the admin API's own.
    assert_eq!(admin_get(&edge, "/admin/analytics", None).await.0, 401);
    assert_eq!(
        admin_get(&edge, "/admin/analytics", Some("wrong")).await.0,
        403
    );
    assert_eq!(
        admin_get(&edge, "/admin/analytics/errors", None).await.0,
        401
    );
    assert_eq!(
        admin_get(&edge, "/admin/analytics?hours=0", Some(ADMIN_TOKEN))
            .await
            .0,
        400
    );

    // The log is written off the request path: ask until all 12 requests are in.
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let (s, v) = admin_get(&edge, "/admin/analytics?hours=1", Some(ADMIN_TOKEN)).await;
        assert_eq!(s, 200, "{v}");
        let non_admin = row(&v, "by_route", "original")["requests"]
            .as_i64()
            .unwrap_or(0)
            + row(&v, "by_route", "transform")["requests"]
                .as_i64()
                .unwrap_or(0)
            + row(&v, "by_route", "refused")["requests"]
                .as_i64()
                .unwrap_or(0);
        let admin = row(&v, "by_route", "admin")["requests"]
            .as_i64()
            .unwrap_or(0);
        if non_admin >= 12 && admin >= 4 {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the log never caught up: {v}\n{}",
            edge.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let t = &v["totals"];
    assert!(t["requests"].as_i64().unwrap() >= 12, "{v}");
    assert!(
        t["hits"].as_i64().unwrap() >= 6,
        "5 original hits and 2 transform hits: {v}"
    );
    assert!(v["tiers"]["memory"]["hits"].as_i64().unwrap() >= 6, "{v}");
    assert!(t["errors"].as_i64().unwrap() >= 3, "{v}");
    assert_eq!(row(&v, "by_status", "404")["requests"], 2, "{v}");
    assert_eq!(
        row(&v, "by_route", "refused")["requests"],
        1,
        "width=abc: {v}"
    );
    assert!(
        row(&v, "by_route", "admin")["requests"].as_i64().unwrap() >= 4,
        "{v}"
    );
    assert!(
        row(&v, "by_origin", "samples")["requests"]
            .as_i64()
            .unwrap()
            >= 11,
        "{v}"
    );
    assert_eq!(
        row(&v, "by_source", "local")["requests"],
        row(&v, "by_origin", "samples")["requests"]
    );
    assert_eq!(row(&v, "by_mode", "image")["requests"], 3, "{v}");
    assert_eq!(
        row(&v, "by_route", "original")["requests"],
        8,
        "6 + 2 missing: {v}"
    );
    let lat = &v["latency_ms"];
    let ms = |k: &str| lat[k].as_f64().unwrap();
    assert!(
        ms("p50") > 0.0 && ms("p50") <= ms("p95") && ms("p95") <= ms("p99"),
        "{v}"
    );
    assert!(ms("avg") > 0.0, "{v}");
    let points = v["series"]["points"].as_array().unwrap();
    assert!(!points.is_empty(), "{v}");
    let in_series: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
    assert_eq!(in_series, t["requests"].as_i64().unwrap(), "{v}");

    let (s, e) = admin_get(
        &edge,
        "/admin/analytics/errors?hours=1&limit=10",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let errors = e["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|r| r["path"] == "/samples/missing.jpg" && r["status"] == 404),
        "{e}"
    );
    assert!(
        errors.iter().all(|r| r["route"] != "admin"),
        "admin noise hidden: {e}"
    );
    let (_, all) = admin_get(
        &edge,
        "/admin/analytics/errors?hours=1&admin=1",
        Some(ADMIN_TOKEN),
    )
    .await;
    assert!(
        all["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["route"] == "admin" && r["status"] == 401),
        "{all}"
    );
}

#[tokio::test]
async fn sqlite_request_log_and_analytics() {
    analytics("").await;
}

#[tokio::test]
async fn postgres_request_log_and_analytics() {
    let pg = Postgres::start().await;
    analytics(&format!("database_url = \"{}\"", pg.url)).await;
}

/// `GET /admin/config` shows the running config with secrets masked; `POST
/// /admin/config/validate` answers every problem with its key path, and names the changed
/// keys only a restart applies.
#[tokio::test]
async fn admin_config_view_and_validate() {
    let cfg = samples_config(
        "[store]\ndatabase_url = \"\"\n[security]\n\
         signing_keys = [{ id = \"a\", secret_env = \"SIGN_SECRET\" }]\n",
    );
    let edge = Edge::start(&cfg).await;
    assert_eq!(admin_get(&edge, "/admin/config", None).await.0, 401);
    let (s, v) = admin_get(&edge, "/admin/config", Some(ADMIN_TOKEN)).await;
    assert_eq!(s, 200, "{v}");
    let toml = v["toml"].as_str().unwrap();
    assert!(toml.contains("secret_env = \"SIGN_SECRET\""), "{toml}");
    assert!(toml.contains("[[origins]]"), "{toml}");

    let validate = |body: String| {
        client()
            .post(edge.url("/admin/config/validate"))
            .bearer_auth(ADMIN_TOKEN)
            .body(body)
            .send()
    };
    let r = validate(toml.replace("threads = 2", "threads = 3"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(
        v["restart_required"],
        serde_json::json!(["server.threads"]),
        "{v}"
    );
    let bad = format!(
        "{toml}\n[cache]\nmemory_bytes = \"lots\"\n[[origins]]\nname = \"x\"\nmatcher = \"(\"\n"
    );
    let r = validate(bad).await.unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.iter().any(|p| p.starts_with("origins[1]")), "{v}");
    assert_eq!(v["valid"], false);
}
