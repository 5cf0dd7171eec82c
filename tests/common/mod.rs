//! Helpers shared by the test binaries. Each binary uses some of them, so
//! the others would be reported as unused there.
#![allow(dead_code)]

use serde_json::Value;

/// The PostgreSQL database the tests use.
pub fn database_url() -> String {
    std::env::var("OPD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The `host:port` of [`database_url`].
pub fn database_address() -> String {
    let url = reqwest::Url::parse(&database_url()).expect("a valid database URL");
    let host = url.host_str().expect("a database host");
    format!("{host}:{}", url.port().unwrap_or(5432))
}

/// [`database_url`] reached through `127.0.0.1:port` instead.
pub fn database_url_via(port: u16) -> String {
    let mut url = reqwest::Url::parse(&database_url()).expect("a valid database URL");
    url.set_host(Some("127.0.0.1")).expect("a host can be set");
    url.set_port(Some(port)).expect("a port can be set");
    url.to_string()
}

/// Drops a schema a test created. Best effort: one left behind only takes
/// space.
pub fn drop_schema(schema: &str) {
    let _ = std::process::Command::new("psql")
        .arg(database_url())
        .args(["-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// `GET url`, answered with JSON.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("a JSON answer")
}

/// One field of every token in a list of tokens.
pub fn fields<'a>(tokens: &'a Value, field: &str) -> Vec<&'a Value> {
    tokens
        .as_array()
        .expect("a list of tokens")
        .iter()
        .map(|token| &token[field])
        .collect()
}
