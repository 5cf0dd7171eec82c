//! Reads the whole event log, `GET /events?after=0`, as Server-Sent Events.
//!
//! A stream never ends by itself: after the log it waits for new events.
//! So a read stops when no frame has come for a while, and then a new
//! stream resumes after the last id read; the log is read through when a
//! stream gives nothing more. A pause of the server longer than the quiet
//! time costs one more stream, never a missed event.

use std::time::Duration;

use crate::server::Server;
use crate::wire::{SlotEvent, TokenEvent};

/// How long a stream may stay silent before the read takes it as the end
/// of the log.
const QUIET: Duration = Duration::from_millis(250);
/// Streams read at the most; each one that gives something makes progress.
const STREAMS_MAX: usize = 100;
/// Bounds one stream, which the server keeps open.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// One frame of the stream: `id:`, `event:` and `data:` as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub id: u64,
    pub event: String,
    pub data: String,
}

impl Frame {
    /// The data of an `event: token` frame.
    pub fn token(&self) -> Option<TokenEvent> {
        (self.event == "token")
            .then(|| serde_json::from_str(&self.data).ok())
            .flatten()
    }

    /// The data of an `event: slot` frame.
    pub fn slot(&self) -> Option<SlotEvent> {
        (self.event == "slot")
            .then(|| serde_json::from_str(&self.data).ok())
            .flatten()
    }
}

/// Every event the server's log holds, in the order sent.
pub async fn read_all(server: &Server) -> Result<Vec<Frame>, String> {
    let mut frames: Vec<Frame> = Vec::new();
    for _ in 0..STREAMS_MAX {
        let after = frames.last().map_or(0, |frame| frame.id);
        let more = read_after(server, after).await?;
        if more.is_empty() {
            return Ok(frames);
        }
        frames.extend(more);
    }
    Err(format!(
        "the event log did not end after {STREAMS_MAX} streams ({} events)",
        frames.len()
    ))
}

/// The whole frames one stream after `after` gives until it falls quiet.
async fn read_after(server: &Server, after: u64) -> Result<Vec<Frame>, String> {
    let url = format!("{}/events?after={after}", server.base);
    let mut response = server
        .http
        .get(&url)
        .timeout(STREAM_TIMEOUT)
        .send()
        .await
        .map_err(|error| format!("GET {url}: {error}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let mut text = Vec::new();
    loop {
        match tokio::time::timeout(QUIET, response.chunk()).await {
            // Quiet for a while, or the stream ended.
            Err(_) | Ok(Ok(None)) => break,
            Ok(Ok(Some(chunk))) => text.extend_from_slice(&chunk),
            Ok(Err(error)) => return Err(format!("GET {url}: {error}")),
        }
    }
    let text = String::from_utf8(text).map_err(|error| format!("GET {url}: {error}"))?;
    // A frame ends with a blank line; a frame cut short by the quiet time
    // is read again by the next stream.
    let mut frames = Vec::new();
    let mut rest = text.as_str();
    while let Some(end) = rest.find("\n\n") {
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let (mut id, mut event, mut data) = (None, None, None);
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("id: ") {
                id = value.parse::<u64>().ok();
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = Some(value.to_owned());
            } else if let Some(value) = line.strip_prefix("data: ") {
                data = Some(value.to_owned());
            }
        }
        match (id, event, data) {
            (Some(id), Some(event), Some(data)) => frames.push(Frame { id, event, data }),
            // A keep-alive comment.
            (None, None, None) => {}
            _ => {
                return Err(format!(
                    "GET {url}: a frame that is not an event: {block:?}"
                ))
            }
        }
    }
    Ok(frames)
}
