//! Slow, idle, oversized and greedy clients: timeouts, connection caps and
//! size limits keep the server serving others.

use std::time::Duration;

use clap::Parser;
use opd::Config;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::TcpStream;

use crate::helpers::*;

async fn assert_still_serving(app: &TestApp) {
    let response = app
        .send(Method::GET, "/slots/D1-09", Some(VIEWER_KEY), None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// The request timeout is armed only when an answer is not ready at once;
/// a body that stops arriving is such a case.
#[tokio::test]
async fn a_body_that_stops_arriving_gets_408_and_books_nothing() {
    let mut config = keyed_config();
    config.request_timeout_secs = 1;
    let app = spawn_app(config).await;
    let patient = format!("P{}", unique());
    let body = json!({"patientId": patient, "slotId": "D2-10", "source": "WALK_IN"}).to_string();
    let head = format!(
        "POST /tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DESK_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = TcpStream::connect(app.address).await.unwrap();
    write_all(&stream, head.as_bytes()).await.unwrap();
    write_all(&stream, &body.as_bytes()[..10]).await.unwrap();
    let answer = read_head(&stream).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    let rebooked = app
        .send(
            Method::POST,
            "/tokens",
            Some(DESK_KEY),
            Some(serde_json::from_str(&body).unwrap()),
        )
        .await;
    assert_eq!(
        rebooked.status(),
        StatusCode::CREATED,
        "the first booking was not made"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_stop_others_from_being_served() {
    let app = spawn_app(keyed_config()).await;
    let mut slow = Vec::new();
    for index in 0..100 {
        let stream = TcpStream::connect(app.address).await.expect("connects");
        slow.push(tokio::spawn(async move {
            // A head that never ends, one byte at a time.
            let head = format!("GET /slots HTTP/1.1\r\nHost: localhost\r\nX-Slow-{index}: ");
            for byte in head.bytes().chain(std::iter::repeat(b'a')) {
                if write_all(&stream, &[byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_still_serving(&app).await;
    }
    for task in slow {
        task.abort();
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_is_disconnected() {
    let mut config = keyed_config();
    config.header_timeout_secs = 1;
    let app = spawn_app(config).await;
    let silent = TcpStream::connect(app.address).await.unwrap();
    let slow = TcpStream::connect(app.address).await.unwrap();
    write_all(
        &slow,
        b"GET /slots HTTP/1.1\r\nHost: localhost\r\nX-Slow: a",
    )
    .await
    .unwrap();
    assert_still_serving(&app).await;
    // Both get closed (a 408 may come first); read_head gives up after 30 s.
    for stream in [&silent, &slow] {
        let answer = read_head(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                stream.readable().await.unwrap();
                match stream.try_read(&mut buffer) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => break,
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the server kept a connection with an unfinished head"
        );
    }
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let mut config = keyed_config();
    config.max_connections = 2;
    let app = spawn_app(config).await;
    // Two idle connections take both places.
    let first = TcpStream::connect(app.address).await.unwrap();
    let second = TcpStream::connect(app.address).await.unwrap();
    // The kernel queues a third, but the server does not take it up.
    let third = TcpStream::connect(app.address).await.unwrap();
    write_all(&third, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let early = tokio::time::timeout(Duration::from_millis(500), read_head(&third)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // Once one of the two closes, the waiting connection is served.
    drop(first);
    let head = read_head(&third).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(second);
}

#[test]
fn the_connection_cap_must_allow_a_connection() {
    let parsed =
        Config::try_parse_from(["opd-token-engine", "--in-memory", "--max-connections", "0"]);
    assert!(parsed.is_err());
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Reads everything the server sends until it closes the connection;
/// `None` if it has not closed within `within`.
async fn read_until_closed(stream: &TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
    closed.ok().map(|()| received)
}

/// Five clients pipeline requests for an answer larger than the socket
/// buffers and never read: each connection's writes stall. The write
/// timeout closes them, so a sixth client, waiting behind the connection
/// cap, is served.
#[tokio::test]
async fn clients_that_never_read_cannot_hold_every_connection() {
    const WRITE_TIMEOUT_SECS: u64 = 1;
    let mut config = keyed_config();
    config.max_connections = 5;
    config.write_timeout_secs = WRITE_TIMEOUT_SECS;
    let app = spawn_app(config).await;
    let pipelined = "GET /docs/swagger-ui-bundle.js HTTP/1.1\r\nHost: localhost\r\n\r\n".repeat(16);
    let mut stalled = Vec::new();
    for _ in 0..5 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        // A small receive window, so the answers back up into the server.
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(app.address).await.unwrap();
        write_all(&stream, pipelined.as_bytes()).await.unwrap();
        stalled.push(stream);
    }
    let sixth = TcpStream::connect(app.address).await.unwrap();
    write_all(&sixth, HEALTHZ).await.unwrap();
    let head = tokio::time::timeout(
        Duration::from_secs(WRITE_TIMEOUT_SECS + 5),
        read_head(&sixth),
    )
    .await
    .expect("clients that never read held every connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(stalled);
    // The answer the stalled clients asked for is larger than the socket
    // buffers of this test (16 of them, several times over).
    let bundle = app
        .client
        .get(app.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), StatusCode::OK);
    assert!(bundle.bytes().await.unwrap().len() > 1024 * 1024);
}

/// Between requests a keep-alive connection waits for a head, so the header
/// timeout closes it when the client has gone quiet after its answer.
#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let mut config = keyed_config();
    config.header_timeout_secs = 1;
    let app = spawn_app(config).await;
    let stream = TcpStream::connect(app.address).await.unwrap();
    write_all(&stream, HEALTHZ).await.unwrap();
    let received = read_until_closed(&stream, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was kept open");
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with("HTTP/1.1 200"), "{received}");
}

#[tokio::test]
async fn connections_past_the_per_address_cap_are_closed_unanswered() {
    let mut config = keyed_config();
    config.max_connections_per_address = 2;
    let app = spawn_app(config).await;
    let first = TcpStream::connect(app.address).await.unwrap();
    let second = TcpStream::connect(app.address).await.unwrap();
    for stream in [&first, &second] {
        write_all(stream, HEALTHZ).await.unwrap();
        let head = read_head(stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    // A third from the same address is closed without an answer (the
    // request may not even be written before the close).
    let third = TcpStream::connect(app.address).await.unwrap();
    let _ = write_all(&third, HEALTHZ).await;
    let answer = read_until_closed(&third, Duration::from_secs(10))
        .await
        .expect("a connection past the per-address cap was kept open");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // Once one of the two closes, a new connection is served. The server
    // learns of the close a moment after the client makes it, so a few
    // attempts may be refused first.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let next = TcpStream::connect(app.address).await.unwrap();
        let _ = write_all(&next, HEALTHZ).await;
        let head = read_head(&next).await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection was served after one of the two closed: {head:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(second);
}

#[tokio::test]
async fn a_connection_is_closed_after_its_request_cap() {
    let mut config = keyed_config();
    config.max_requests_per_connection = 3;
    let app = spawn_app(config).await;
    let stream = TcpStream::connect(app.address).await.unwrap();
    write_all(&stream, &HEALTHZ.repeat(5)).await.unwrap();
    let received = read_until_closed(&stream, Duration::from_secs(30))
        .await
        .expect("the connection was kept open");
    let received = String::from_utf8_lossy(&received).to_ascii_lowercase();
    let answers: Vec<&str> = received.split("http/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), 3, "{received}");
    for answer in &answers[..2] {
        assert!(answer.starts_with("200"), "{answer}");
        assert!(!answer.contains("connection: close"), "{answer}");
    }
    assert!(answers[2].starts_with("200"), "{}", answers[2]);
    assert!(answers[2].contains("connection: close"), "{}", answers[2]);
}

#[test]
fn connection_bounds_must_be_positive() {
    for flag in [
        "--write-timeout-secs",
        "--max-connections-per-address",
        "--max-requests-per-connection",
    ] {
        let parsed = Config::try_parse_from(["opd-token-engine", "--in-memory", flag, "0"]);
        assert!(parsed.is_err(), "{flag} 0 was accepted");
    }
}

#[tokio::test]
async fn oversized_heads_are_refused_and_others_still_served() {
    let app = spawn_app(keyed_config()).await;
    let big_header = format!(
        "GET /slots HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {VIEWER_KEY}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let many_headers = format!(
        "GET /slots HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..500)
            .map(|index| format!("X-Many-{index}: a\r\n"))
            .collect::<String>()
    );
    let mut open = Vec::new();
    for request in [big_header, many_headers] {
        let stream = TcpStream::connect(app.address).await.unwrap();
        // The server may close before the whole head is sent.
        let _ = write_all(&stream, request.as_bytes()).await;
        let head = read_head(&stream).await;
        if !head.is_empty() {
            let status_line = head.lines().next().unwrap_or_default().to_owned();
            assert!(status_line.starts_with("HTTP/1.1 4"), "{status_line}");
        }
        open.push(stream);
        assert_still_serving(&app).await;
    }
}

#[tokio::test]
async fn oversized_bodies_get_413_and_others_still_served() {
    let app = spawn_app(keyed_config()).await;

    // Declared too large: refused before the body is read.
    let stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DESK_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        64 * 1024 * 1024
    );
    write_all(&stream, head.as_bytes()).await.unwrap();
    let _ = write_all(&stream, &[b' '; 64 * 1024]).await;
    let response = read_head(&stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{response}"
    );
    assert_still_serving(&app).await;

    // Chunked, with no declared length: cut off at the limit.
    let stream = TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DESK_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    write_all(&stream, head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 8192, " ".repeat(8192));
    for _ in 0..128 {
        if write_all(&stream, chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let response = read_head(&stream).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{response}"
    );
    assert_still_serving(&app).await;
}
