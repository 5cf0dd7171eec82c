//! A server without keys: anonymous callers, loopback addresses only, and
//! only requests addressed to a loopback name (against DNS rebinding).

use opd::{Application, Config, StartError};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

#[tokio::test]
async fn open_mode_records_anonymous_callers() {
    let app = spawn_app(Config::for_tests()).await;
    let response = app
        .send(
            Method::POST,
            "/tokens",
            None,
            Some(json!({"patientId": "P1", "slotId": "D1-09", "source": "ONLINE"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let booking: Value = response.json().await.unwrap();
    let token = booking["token"]["tokenId"].as_str().unwrap();
    let detail: Value = app
        .send(Method::GET, &format!("/tokens/{token}"), None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(detail["history"][0]["actor"], "anonymous");
}

#[tokio::test]
async fn an_open_server_refuses_to_listen_beyond_loopback() {
    for address in ["0.0.0.0:0", "[::]:0"] {
        let mut config = Config::for_tests();
        config.listen = address.parse().unwrap();
        let error = Application::build(config).await.err().expect("refused");
        assert!(matches!(error, StartError::Security(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("without API keys"), "{message}");
        assert!(message.contains("loopback"), "{message}");
    }
}

#[tokio::test]
async fn an_open_server_answers_only_requests_addressed_to_a_loopback_name() {
    let app = spawn_app(Config::for_tests()).await;
    let port = app.address.port();
    for host in [
        "localhost".to_owned(),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        "127.9.9.9".to_owned(),
        "[::1]:8080".to_owned(),
    ] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let answer = exchange(app.address, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{host}: {answer}");
    }
    // HTTP/1.0 may omit Host; browsers never do.
    let answer = exchange(app.address, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), 200, "{answer}");

    // A page on another name that resolves to 127.0.0.1 (DNS rebinding),
    // and absolute-form targets, are refused before routing or booking.
    let booking = r#"{"patientId":"P-rebound","slotId":"D1-09","source":"ONLINE"}"#;
    let misdirected = [
        "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
        format!("GET /slots HTTP/1.1\r\nHost: evil.example:{port}\r\n\r\n"),
        "GET /nowhere HTTP/1.1\r\nHost: localhost.evil.example\r\n\r\n".to_owned(),
        "DELETE /slots HTTP/1.1\r\nHost: 10.0.0.1\r\n\r\n".to_owned(),
        "GET http://evil.example/slots HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
        "GET http://localhost/slots HTTP/1.1\r\nHost: evil.example\r\n\r\n".to_owned(),
        format!(
            "POST /tokens HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{booking}",
            booking.len()
        ),
    ];
    for head in misdirected {
        let request = head.replacen("\r\n", "\r\nConnection: close\r\n", 1);
        let answer = exchange(app.address, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 421, "{head}: {answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: application/problem+json"),
            "{answer}"
        );
        assert!(
            answer.contains(r#""code":"MISDIRECTED_REQUEST""#),
            "{answer}"
        );
    }
    let response = app
        .send(
            Method::POST,
            "/tokens",
            None,
            Some(serde_json::from_str(booking).unwrap()),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::CREATED,
        "the refused booking was made"
    );

    // HTTP/1.1 needs exactly one Host header.
    for request in [
        "GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(app.address, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 400, "{request}: {answer}");
        assert!(answer.contains(r#""code":"MALFORMED_REQUEST""#), "{answer}");
    }
}

#[tokio::test]
async fn a_server_with_keys_answers_any_host() {
    let app = spawn_app(keyed_config()).await;
    let request = format!(
        "GET /slots HTTP/1.1\r\nHost: opd.example.org\r\nAuthorization: Bearer {VIEWER_KEY}\r\n\
         Connection: close\r\n\r\n"
    );
    let answer = exchange(app.address, request.as_bytes()).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}
