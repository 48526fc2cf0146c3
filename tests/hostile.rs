//! End-to-end: a client that tries to exhaust the node's connections — heads trickled byte by
//! byte, heads without end, more connections than its share — is cut off, and others are
//! still served (issue: "Under attack", connection exhaustion).

use e2e::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(edge: &Edge) -> TcpStream {
    TcpStream::connect(("127.0.0.1", edge.port)).await.unwrap()
}

/// Reads until the peer closes (or `limit` passes): everything it sent.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One request on a keep-alive connection: the status of its answer (body read by length).
async fn exchange(s: &mut TcpStream) -> u16 {
    s.write_all(b"GET /samples/alpha.png HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return head[9..12].parse().unwrap();
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_has_a_deadline_however_slowly_it_trickles() {
    let edge = Edge::start(&samples_config("head_timeout = \"1s\"\n")).await;
    // One header line every 200 ms: each byte used to re-arm the idle timer.
    let mut s = connect(&edge).await;
    s.write_all(b"GET /samples/alpha.png HTTP/1.1\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut closed = false;
    let mut answer = Vec::new();
    while t0.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"X-Slow: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
            Err(_) => {}
        }
    }
    assert!(
        closed,
        "a trickled head was still open after {:?}",
        t0.elapsed()
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"TIMEOUT\""), "{text}");
    // A connection that never sends a head is closed too.
    let mut silent = connect(&edge).await;
    let got = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(
        got,
        Some(Vec::new()),
        "a silent connection is closed without an answer"
    );
    // Ordinary clients are unaffected.
    let mut s = connect(&edge).await;
    assert_eq!(exchange(&mut s).await, 200);
    let m = metrics_of(&edge).await;
    assert!(
        m.contains("media_edge_front_door_connection_events_total{event=\"head_timeout\"} 2"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_without_end_is_refused_before_it_is_buffered() {
    let edge = Edge::start(&samples_config("")).await;
    let mut s = connect(&edge).await;
    s.write_all(b"GET /samples/alpha.png HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
    for _ in 0..40 {
        if s.write_all(line.as_bytes()).await.is_err() {
            break;
        }
    }
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("closed");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    // 65 short headers (more than the front door reads) still reach Pingora once whole.
    let mut s = connect(&edge).await;
    let mut head =
        String::from("GET /samples/alpha.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for i in 0..70 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    s.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.write_all(b"\r\n").await.unwrap();
    let got = read_to_close(&mut s, Duration::from_secs(10))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_gets_its_share_of_connections() {
    let edge = Edge::start(&samples_config("max_connections_per_ip = 4\n")).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect(&edge).await;
        assert_eq!(exchange(&mut s).await, 200);
        held.push(s);
    }
    let mut fifth = connect(&edge).await;
    let got = read_to_close(&mut fifth, Duration::from_secs(10))
        .await
        .expect("refused");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );
    assert!(text.contains("OVERLOADED"), "{text}");
    // A released connection makes room again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect(&edge).await;
        s.write_all(b"GET /samples/alpha.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s, Duration::from_secs(10))
            .await
            .unwrap_or_default();
        if got.starts_with(b"HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no room after a release");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Slow heads hold no room a new client needs: when the node is full, the connection that
/// has waited the longest for its head is closed for the newcomer (a slowloris cannot lock
/// normal clients out until `head_timeout` frees its connections).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_closes_its_slowest_head_for_a_new_one() {
    let edge = Edge::start(&samples_config(
        "max_connections = 3\nmax_connections_per_ip = 0\nread_buffer = \"0\"\n",
    ))
    .await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&edge).await;
        s.write_all(b"GET /samples/alpha.png HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more byte on the oldest: a trickle does not make it younger.
    slow[0].write_all(b"X").await.unwrap();
    let mut newcomer = connect(&edge).await;
    assert_eq!(
        exchange(&mut newcomer).await,
        200,
        "the new connection is served"
    );
    let oldest = read_to_close(&mut slow[0], Duration::from_secs(5)).await;
    assert_eq!(oldest, Some(Vec::new()), "the oldest slow head was closed");
    // The younger slow heads are still open: they finish their request and are answered.
    slow[2]
        .write_all(b"X-A: 1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut slow[2], Duration::from_secs(5))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_node_closes_its_oldest_idle_connection_for_a_new_one() {
    let edge = Edge::start(&samples_config(
        "max_connections = 3\nmax_connections_per_ip = 0\n",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&edge).await;
        assert_eq!(exchange(&mut s).await, 200);
        held.push(s);
        // Idle in this order (idle times are kept in milliseconds).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut newcomer = connect(&edge).await;
    assert_eq!(
        exchange(&mut newcomer).await,
        200,
        "the new connection is served"
    );
    let oldest = read_to_close(&mut held[0], Duration::from_secs(10)).await;
    assert_eq!(
        oldest,
        Some(Vec::new()),
        "the oldest idle connection was closed"
    );
    assert_eq!(exchange(&mut held[2]).await, 200, "younger ones stay");
}
