//! The web pages on a server with keys: every page and file is served
//! without a key (they carry no data), with a Content-Security-Policy that
//! lets them load only this server's own files; a browser's navigation to
//! `/board` gets the board's page while API clients still get the JSON;
//! and `GET /me` tells each key who it is.

use reqwest::header::{ACCEPT, CONTENT_SECURITY_POLICY, CONTENT_TYPE, VARY};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

/// What Chromium sends when a person opens a page.
const NAVIGATION: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";

#[tokio::test]
async fn every_page_and_file_is_served_without_a_key_and_with_a_strict_policy() {
    let app = spawn_app(keyed_config()).await;
    let cases = [
        ("/", "text/html", "/ui/app.css"),
        ("/desk", "text/html", "/ui/desk.js"),
        ("/doctor", "text/html", "/ui/doctor.js"),
        ("/schedule", "text/html", "/ui/schedule.js"),
        ("/reports", "text/html", "/ui/reports.js"),
        ("/ui/reports.js", "text/javascript", "/reports/days"),
        ("/ui/board.html", "text/html", "/ui/board.js"),
        ("/ui/board.js", "text/javascript", "/board"),
        ("/ui/stream.js", "text/javascript", "Last-Event-ID"),
        ("/ui/app.css", "text/css", "focus-visible"),
        ("/ui/icon.svg", "image/svg+xml", "<svg"),
    ];
    for (path, media_type, content) in cases {
        let response = app.send(Method::GET, path, None, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers().clone();
        assert!(
            headers[CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(media_type),
            "{path}: {:?}",
            headers[CONTENT_TYPE]
        );
        let policy = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
            "form-action 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(content), "{path} lacks {content}");
    }
}

#[tokio::test]
async fn the_pages_load_nothing_from_another_host() {
    let app = spawn_app(keyed_config()).await;
    for path in [
        "/",
        "/desk",
        "/doctor",
        "/schedule",
        "/reports",
        "/ui/board.html",
        "/ui/app.css",
        "/ui/board.css",
    ] {
        let body = app
            .send(Method::GET, path, None, None)
            .await
            .text()
            .await
            .unwrap();
        for outside in ["http://", "https://", "//fonts", "@import"] {
            assert!(!body.contains(outside), "{path} names {outside}");
        }
    }
}

#[tokio::test]
async fn an_unknown_file_is_a_404_problem() {
    let app = spawn_app(keyed_config()).await;
    for path in ["/ui/nothing.js", "/ui/..%2FCargo.toml", "/ui/"] {
        let (status, headers, problem) =
            problem(app.send(Method::GET, path, None, None).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert!(headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/problem+json"));
        assert_eq!(problem["code"], "NOT_FOUND", "{path}");
    }
    let response = app.send(Method::POST, "/desk", Some(ADMIN_KEY), None).await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn a_browser_navigating_to_the_board_gets_the_page_and_api_clients_the_json() {
    let app = spawn_app(keyed_config()).await;
    let get = |accept: Option<&'static str>, key: Option<&'static str>| {
        let mut request = app.client.get(app.url("/board?doctorId=D1&lang=hi"));
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };

    let page = get(Some(NAVIGATION), None).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()[VARY], "accept");
    assert!(page.headers()[CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key(CONTENT_SECURITY_POLICY));
    assert!(page.text().await.unwrap().contains("/ui/board.js"));

    for accept in [None, Some("*/*"), Some("application/json")] {
        let refused = get(accept, None).await.unwrap();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{accept:?}");
        assert_eq!(refused.headers()[VARY], "accept");
        let json = get(accept, Some(VIEWER_KEY)).await.unwrap();
        assert_eq!(json.status(), StatusCode::OK, "{accept:?}");
        assert_eq!(json.headers()[VARY], "accept");
        let board: Value = json.json().await.unwrap();
        assert_eq!(board["doctors"][0]["doctorId"], "D1", "{accept:?}");
    }
}

#[tokio::test]
async fn me_tells_each_key_its_name_role_and_doctor() {
    let app = spawn_app(keyed_config()).await;
    let cases = [
        (ADMIN_KEY, "root", "admin", Value::Null),
        (DESK_KEY, "desk-1", "front-desk", Value::Null),
        (DOCTOR_D1_KEY, "dr-one", "doctor:D1", Value::from("D1")),
        (VIEWER_KEY, "watcher", "viewer", Value::Null),
    ];
    for (key, name, role, doctor) in cases {
        let response = app.send(Method::GET, "/me", Some(key), None).await;
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["name"], name);
        assert_eq!(me["role"], role);
        assert_eq!(me["doctorId"], doctor);
        let today = me["today"].as_str().unwrap();
        assert!(today.len() == 10 && today.as_bytes()[4] == b'-', "{today}");
    }
    let (status, _, problem) = problem(app.send(Method::GET, "/me", None, None).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["code"], "UNAUTHORIZED");
}

#[tokio::test]
async fn me_on_an_open_server_is_an_anonymous_admin() {
    let app = spawn_app(opd::Config::for_tests()).await;
    let me: Value = app
        .send(Method::GET, "/me", None, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["name"], "anonymous");
    assert_eq!(me["role"], "admin");
    assert_eq!(me["doctorId"], Value::Null);
}
