//! Rate limits: per key, per address, health checks on a budget of their
//! own, and floods of unknown paths and wrong methods.

use opd::Config;
use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn a_key_past_its_rate_gets_429_with_retry_after_while_other_keys_go_on() {
    let mut config = keyed_config();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 3;
    let app = spawn_app(config).await;

    let mut limited = None;
    for _ in 0..20 {
        let response = app.send(Method::GET, "/slots", Some(DESK_KEY), None).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), StatusCode::OK);
    }
    let response = limited.expect("20 requests at once exceed a burst of 3 at 1/s");
    let (_, headers, body) = problem(response).await;
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(body["code"], "RATE_LIMITED");
    assert_eq!(body["status"], 429);

    let response = app
        .send(Method::GET, "/slots", Some(VIEWER_KEY), None)
        .await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "each key has its own budget"
    );
}

#[tokio::test]
async fn an_open_server_limits_each_client_address() {
    let mut config = Config::for_tests();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 2;
    let app = spawn_app(config).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let status = app.send(Method::GET, "/healthz", None, None).await.status();
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn health_checks_stay_answerable_while_an_address_floods_bad_keys() {
    let mut config = keyed_config();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 3;
    let app = spawn_app(config).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let status = slots_status(&app, UNKNOWN_KEY).await;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let response = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Sends `method path` with `key` until it is answered 429; returns the
/// statuses in order.
async fn flood(app: &TestApp, method: Method, path: &str, key: Option<&str>) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let response = app.send(method.clone(), path, key, None).await;
        let (status, headers, body) = problem(response).await;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(headers.contains_key("retry-after"));
            assert_eq!(body["code"], "RATE_LIMITED");
            break;
        }
    }
    statuses
}

#[tokio::test]
async fn floods_of_unknown_paths_and_wrong_methods_get_429() {
    let mut config = keyed_config();
    config.rate_limit_per_second = 1;
    config.rate_limit_burst = 3;

    // Without a key, the address's budget; health checks keep their own.
    let app = spawn_app(config.clone()).await;
    let statuses = flood(&app, Method::GET, "/nowhere", None).await;
    assert_eq!(
        statuses[0],
        StatusCode::NOT_FOUND,
        "route errors come first"
    );
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let response = app.send(Method::GET, "/healthz", None, None).await;
    assert_eq!(response.status(), StatusCode::OK);

    let app = spawn_app(config.clone()).await;
    let statuses = flood(&app, Method::DELETE, "/slots", None).await;
    assert_eq!(statuses[0], StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );

    // With a valid key, the key's budget, which other keys do not share.
    let app = spawn_app(config).await;
    let statuses = flood(&app, Method::GET, "/nowhere", Some(DESK_KEY)).await;
    assert_eq!(statuses[0], StatusCode::NOT_FOUND);
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        slots_status(&app, DESK_KEY).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(slots_status(&app, VIEWER_KEY).await, StatusCode::OK);
}
