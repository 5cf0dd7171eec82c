//! What the security tests share: the keys, a server started with a
//! configuration, requests with or without a key, and raw socket reads and
//! writes for the tests that speak HTTP by hand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opd::config::Secret;
use opd::http::auth::Security;
use opd::{Application, Config};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;

pub const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
pub const DESK_KEY: &str = "desk-key-0123456789abcdef";
pub const DOCTOR_D1_KEY: &str = "doctor-d1-key-0123456789";
pub const DOCTOR_D2_KEY: &str = "doctor-d2-key-0123456789";
pub const VIEWER_KEY: &str = "viewer-key-0123456789abcdef";
pub const UNKNOWN_KEY: &str = "not-a-configured-key-0123456789";

/// The keys every keyed test runs with, as `OPD_API_KEYS` would carry them.
pub fn keys() -> Secret {
    format!(
        "root admin {ADMIN_KEY}; desk-1 front-desk {DESK_KEY}; dr-one doctor:D1 {DOCTOR_D1_KEY};\
         dr-two doctor:D2 {DOCTOR_D2_KEY}; watcher viewer {VIEWER_KEY}"
    )
    .parse()
    .expect("key lines are plain text")
}

/// Test config with keys and no rate limit.
pub fn keyed_config() -> Config {
    let mut config = Config::for_tests();
    config.api_keys = Some(keys());
    config.rate_limit_per_second = 0;
    config
}

pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    pub security: Arc<Security>,
    /// What SIGHUP reads again.
    pub reload: opd::Reload,
}

/// Starts the application and serves it on a spawned task for the rest of
/// the test's runtime.
pub async fn spawn_app(config: Config) -> TestApp {
    let application = Application::build(config).await.expect("the app builds");
    let address = application.local_addr();
    let security = application.security();
    let reload = application.reload();
    tokio::spawn(application.serve(std::future::pending()));
    TestApp {
        address,
        client: client(),
        security,
        reload,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("a client")
}

static UNIQUE: AtomicU64 = AtomicU64::new(1);

pub fn unique() -> u64 {
    UNIQUE.fetch_add(1, Ordering::Relaxed)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("the server answers")
    }

    /// Books an always-ALLOCATED (emergency) token in D1-09; returns its id.
    pub async fn d1_token(&self) -> String {
        let body = json!({"patientId": format!("P{}", unique()), "slotId": "D1-09", "source": "EMERGENCY"});
        let response = self
            .send(Method::POST, "/tokens", Some(ADMIN_KEY), Some(body))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let booking: Value = response.json().await.unwrap();
        booking["token"]["tokenId"].as_str().unwrap().to_owned()
    }

    /// A new D1 token taken through `steps` by the admin, after D1's
    /// current patient (if any) is skipped or completed, so that the
    /// doctor is free to call.
    pub async fn d1_token_through(&self, steps: &[&str]) -> String {
        let queue: Value = self
            .send(Method::GET, "/doctors/D1/queue", Some(ADMIN_KEY), None)
            .await
            .json()
            .await
            .unwrap();
        if let Some(current) = queue["current"]["tokenId"].as_str() {
            let finish = match queue["current"]["status"].as_str() {
                Some("CALLED") => "skip",
                _ => "complete",
            };
            let path = format!("/tokens/{current}/{finish}");
            let response = self.send(Method::POST, &path, Some(ADMIN_KEY), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        let token = self.d1_token().await;
        for step in steps {
            let path = format!("/tokens/{token}/{step}");
            let response = self.send(Method::POST, &path, Some(ADMIN_KEY), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        token
    }
}

pub async fn problem(response: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    let content_type = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{status}: content-type {content_type:?}"
    );
    (
        status,
        headers,
        response.json().await.expect("a JSON problem"),
    )
}

/// Sends `request` (which asks the server to close the connection, or is
/// HTTP/1.0) on a new connection and returns the whole answer as text.
pub async fn exchange(address: SocketAddr, request: &[u8]) -> String {
    let stream = TcpStream::connect(address).await.unwrap();
    write_all(&stream, request).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let read_all = async {
        loop {
            stream.readable().await.unwrap();
            match stream.try_read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("reading the answer: {error}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the server answers and closes");
    String::from_utf8_lossy(&received).into_owned()
}

/// The status of an answer read by [`exchange`].
pub fn status_of(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// Writes all of `bytes`, or fails if the server closed the connection.
pub async fn write_all(stream: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Reads until the server closes, a full head has arrived, or 30 s pass.
pub async fn read_head(stream: &TcpStream) -> String {
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut buffer = [0u8; 4096];
    while !received.windows(4).any(|window| window == b"\r\n\r\n") {
        let Ok(ready) = tokio::time::timeout_at(deadline, stream.readable()).await else {
            break;
        };
        if ready.is_err() {
            break;
        }
        match stream.try_read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

/// The status of `GET /slots` with `key`.
pub async fn slots_status(app: &TestApp, key: &str) -> StatusCode {
    app.send(Method::GET, "/slots", Some(key), None)
        .await
        .status()
}
