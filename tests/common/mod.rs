//! Helpers shared by the test binaries. Each binary uses some of them, so
//! the others would be reported as unused there.
#![allow(dead_code)]

use serde_json::Value;

/// The PostgreSQL database the tests use, as configured, whether or not
/// a server answers there.
fn configured_database_url() -> String {
    std::env::var("OPD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The PostgreSQL database the tests use. When no server answers there,
/// the test fails here, before it builds anything: the first such failure
/// of a test binary says how to start one or how to leave these tests out,
/// the others only that the server is missing, so a run without PostgreSQL
/// ends with one explanation instead of many bare "Connection refused".
pub fn database_url() -> String {
    static REACHABLE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    static EXPLAINED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let url = configured_database_url();
    let Err(error) = REACHABLE.get_or_init(|| reach(&url)) else {
        return url;
    };
    if EXPLAINED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        panic!("no PostgreSQL server at {url} ({error}); see the first failure of this run");
    }
    panic!(
        "\n\nThis test needs a PostgreSQL server, and none answers at {url} ({error}).\n\
         \n\
         Start one (Debian; `pg_lsclusters` lists the installed version):\n\
         \x20   sudo apt-get install postgresql\n\
         \x20   sudo pg_ctlcluster 15 main start\n\
         with trust authentication on 127.0.0.1 (the first line of\n\
         /etc/postgresql/15/main/pg_hba.conf: `host all all 127.0.0.1/32 trust`,\n\
         then `sudo pg_ctlcluster 15 main reload`) and a database `test`:\n\
         \x20   psql -h 127.0.0.1 -U postgres -c 'CREATE DATABASE test'\n\
         (`bash .ci/run` does all of this), or set OPD_TEST_DATABASE_URL to\n\
         another server's database.\n\
         \n\
         Or run without the PostgreSQL tests:\n\
         \x20   cargo test --no-default-features\n\n"
    );
}

/// Whether a server accepts connections at the URL's address; the error
/// when none does.
fn reach(url: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let url = reqwest::Url::parse(url).map_err(|error| format!("not a URL: {error}"))?;
    let host = url.host_str().ok_or("the URL names no host")?;
    let addresses = (host, url.port().unwrap_or(5432))
        .to_socket_addrs()
        .map_err(|error| error.to_string())?;
    let mut last = String::from("the host has no address");
    for address in addresses {
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3)) {
            Ok(_) => return Ok(()),
            Err(error) => last = format!("{address}: {error}"),
        }
    }
    Err(last)
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
        .arg(configured_database_url())
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
