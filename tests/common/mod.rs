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

/// One frame of a Server-Sent Events stream: `id`, `event` and `data` (as
/// JSON); all `None` for a comment.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Option<Value>,
}

/// An open `GET /events` stream, read frame by frame.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    /// Opens `url` (a `/events` URL), sending `Last-Event-ID` when given;
    /// checks the 200 and the content type.
    pub async fn open(
        client: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
    ) -> EventStream {
        let mut request = client.get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the server answers");
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next frame, or `None` when the stream ended (or broke, as when
    /// its server is killed); panics after 10 s without one.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame {
                    id: None,
                    event: None,
                    data: None,
                };
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        frame.id = Some(id.parse().expect("a numeric id"));
                    } else if let Some(event) = line.strip_prefix("event: ") {
                        frame.event = Some(event.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        frame.data = Some(serde_json::from_str(data).expect("JSON data"));
                    }
                }
                return Some(frame);
            }
            let chunk =
                tokio::time::timeout(std::time::Duration::from_secs(10), self.response.chunk())
                    .await
                    .expect("a frame within 10 s");
            match chunk {
                Ok(Some(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// The next `n` frames that are events (comments skipped); panics if
    /// the stream ends first.
    pub async fn events(&mut self, n: usize) -> Vec<Frame> {
        let mut events = Vec::new();
        while events.len() < n {
            let frame = self.next().await.expect("the stream goes on");
            if frame.event.is_some() {
                events.push(frame);
            }
        }
        events
    }
}
