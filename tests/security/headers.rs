//! Headers every answer carries: `nosniff` everywhere, and
//! `Connection: close` on a 413.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn every_answer_tells_browsers_not_to_sniff() {
    let app = spawn_app(keyed_config()).await;
    let token = app.d1_token().await;
    let booking = json!({"patientId": "P-sniff", "slotId": "D1-09", "source": "ONLINE"});
    let cases = [
        (Method::GET, "/healthz".to_owned(), None, None, 200),
        (
            Method::POST,
            "/tokens".to_owned(),
            Some(DESK_KEY),
            Some(booking),
            201,
        ),
        (Method::GET, "/nowhere".to_owned(), None, None, 404),
        (
            Method::DELETE,
            "/slots".to_owned(),
            Some(ADMIN_KEY),
            None,
            405,
        ),
        (Method::GET, "/slots".to_owned(), None, None, 401),
        (
            Method::POST,
            "/slots".to_owned(),
            Some(VIEWER_KEY),
            Some(json!({})),
            403,
        ),
        (
            Method::GET,
            "/tokens/not-a-uuid".to_owned(),
            Some(VIEWER_KEY),
            None,
            400,
        ),
        (
            Method::POST,
            "/tokens".to_owned(),
            Some(DESK_KEY),
            Some(json!({})),
            422,
        ),
        (
            Method::POST,
            format!("/tokens/{token}/no-show"),
            Some(DESK_KEY),
            None,
            200,
        ),
        (
            Method::POST,
            format!("/tokens/{token}/no-show"),
            Some(DESK_KEY),
            None,
            409,
        ),
    ];
    for (method, path, key, body, status) in cases {
        let response = app.send(method.clone(), &path, key, body).await;
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        assert_eq!(
            response
                .headers()
                .get("x-content-type-options")
                .map(|value| value.as_bytes()),
            Some(&b"nosniff"[..]),
            "{method} {path}"
        );
    }

    let mut config = keyed_config();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 1;
    let app = spawn_app(config).await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            app.send(Method::GET, "/slots", Some(VIEWER_KEY), None)
                .await,
        );
    }
    let response = last.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn a_413_says_the_connection_closes_and_closes_it() {
    let app = spawn_app(keyed_config()).await;
    let oversized = " ".repeat(17 * 1024);
    let requests = [
        // Declared too large.
        format!(
            "POST /tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DESK_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{oversized}",
            oversized.len()
        ),
        // Chunked, over the limit.
        format!(
            "POST /tokens HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {DESK_KEY}\r\n\
             Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{oversized}\r\n0\r\n\r\n",
            oversized.len()
        ),
    ];
    for request in requests {
        // A keep-alive request: only the server's answer ends the connection.
        let answer = exchange(app.address, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 413, "{answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("\r\nconnection: close\r\n"), "{answer}");
        assert!(
            lower.contains("x-content-type-options: nosniff"),
            "{answer}"
        );
    }
}
