//! CORS: configured origins may call from a browser, others get no CORS
//! headers, and a server without keys refuses any origin.

use opd::{Application, Config, StartError};
use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn configured_cors_origins_may_call_from_a_browser() {
    let mut config = keyed_config();
    config.cors_origins = vec!["https://desk.example.org".into()];
    let app = spawn_app(config).await;
    let preflight = app
        .client
        .request(Method::OPTIONS, app.url("/tokens"))
        .header("origin", "https://desk.example.org")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://desk.example.org"
    );
    // A page from the desk's origin can follow the slot listing's pages.
    let listing = app
        .client
        .get(app.url("/slots?limit=1"))
        .header("origin", "https://desk.example.org")
        .bearer_auth(VIEWER_KEY)
        .send()
        .await
        .unwrap();
    let exposed = listing.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(listing.headers().contains_key("link"));
    assert!(
        exposed.split(',').any(|name| name.trim() == "link"),
        "{exposed}"
    );

    let response = app
        .client
        .get(app.url("/slots"))
        .header("origin", "https://evil.example.org")
        .bearer_auth(VIEWER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // Without configured origins there is no CORS at all.
    let app = spawn_app(keyed_config()).await;
    let response = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "https://desk.example.org")
        .send()
        .await
        .unwrap();
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn an_open_server_refuses_cors_origins() {
    for origins in [vec!["*"], vec!["https://desk.example.org"]] {
        let mut config = Config::for_tests();
        config.cors_origins = origins.iter().map(|origin| origin.to_string()).collect();
        let error = Application::build(config).await.err().expect("refused");
        assert!(matches!(error, StartError::Security(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("without API keys"), "{message}");
        assert!(message.contains("--cors-origin"), "{message}");
    }
}
