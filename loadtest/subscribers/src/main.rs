//! Many screens on `GET /events` at once, for the event stream's load test
//! (`loadtest/events.sh`): opens the streams, reads every frame, and for
//! each event measures how long after its change was decided (its `at`) it
//! arrived. Prints one `RESULT` line when the run ends.
//!
//! Usage: `opd-bench-subscribers ADDRESS SECONDS FILTERED UNFILTERED DOCTORS GROUPS`
//! — FILTERED streams each follow one doctor (`?doctorId=BD01-00` …, taking
//! turns over the DOCTORS doctors of each of the GROUPS groups, as
//! `loadtest/http.sh` names them), UNFILTERED streams follow everything.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What one stream saw.
#[derive(Default)]
struct Seen {
    delays_us: Vec<u64>,
    /// Streams that ended before the run did (a lagging stream is closed by
    /// the server).
    ended_early: usize,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, address, seconds, filtered, unfiltered, doctors, groups] = &args[..] else {
        eprintln!(
            "usage: opd-bench-subscribers ADDRESS SECONDS FILTERED UNFILTERED DOCTORS GROUPS"
        );
        std::process::exit(2);
    };
    let seconds: u64 = seconds.parse().expect("SECONDS");
    let filtered: usize = filtered.parse().expect("FILTERED");
    let unfiltered: usize = unfiltered.parse().expect("UNFILTERED");
    let doctors: usize = doctors.parse().expect("DOCTORS");
    let groups: usize = groups.parse().expect("GROUPS");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut streams = Vec::new();
    for n in 0..filtered + unfiltered {
        let query = if n < filtered {
            format!(
                "?doctorId=BD{:02}-{:02}",
                n % doctors + 1,
                n / doctors % groups
            )
        } else {
            String::new()
        };
        streams.push(tokio::spawn(follow(address.clone(), query, deadline)));
    }
    let mut all = Seen::default();
    for stream in streams {
        let seen = stream.await.expect("a stream task");
        all.delays_us.extend(seen.delays_us);
        all.ended_early += seen.ended_early;
    }
    all.delays_us.sort_unstable();
    let quantile = |q: f64| -> f64 {
        if all.delays_us.is_empty() {
            return 0.0;
        }
        let index = ((all.delays_us.len() - 1) as f64 * q).round() as usize;
        all.delays_us[index] as f64 / 1000.0
    };
    println!(
        "RESULT streams={} events={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} ended_early={}",
        filtered + unfiltered,
        all.delays_us.len(),
        quantile(0.5),
        quantile(0.99),
        quantile(1.0),
        all.ended_early
    );
}

/// Reads one stream until the deadline.
async fn follow(address: String, query: String, deadline: Instant) -> Seen {
    let mut seen = Seen::default();
    let Ok(mut socket) = TcpStream::connect(&address).await else {
        seen.ended_early = 1;
        return seen;
    };
    let request = format!(
        "GET /events{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    );
    if socket.write_all(request.as_bytes()).await.is_err() {
        seen.ended_early = 1;
        return seen;
    }
    let mut buffer = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut times = Times::default();
    let at_key = memchr::memmem::Finder::new(b"\"at\":\"");
    loop {
        let read = tokio::time::timeout_at(deadline.into(), socket.read(&mut chunk)).await;
        let received = Timestamp::now();
        let read = match read {
            Err(_) => return seen,
            Ok(Ok(0)) | Ok(Err(_)) => {
                seen.ended_early = 1;
                return seen;
            }
            Ok(Ok(read)) => read,
        };
        buffer.extend_from_slice(&chunk[..read]);
        // Every complete `"at":"…"` in what arrived is one event.
        let mut consumed = 0;
        while let Some(start) = at_key.find(&buffer[consumed..]) {
            let from = consumed + start + 6;
            let Some(length) = memchr::memchr(b'"', &buffer[from..]) else {
                break;
            };
            if let Some(at) = times.parse(&buffer[from..from + length]) {
                let delay = received.duration_since(at).as_micros().max(0) as u64;
                seen.delays_us.push(delay);
            }
            consumed = from + length;
        }
        buffer.drain(..consumed);
    }
}

/// Reads the events' RFC 3339 times cheaply: the reader shares a core with
/// the load generator and reads every event of every stream, so it parses
/// the date and time to the second once per second and only the fraction
/// of each event.
#[derive(Default)]
struct Times {
    second: Vec<u8>,
    parsed: Option<Timestamp>,
}

impl Times {
    fn parse(&mut self, text: &[u8]) -> Option<Timestamp> {
        // `2026-11-30T09:10:00.123456789Z`: 19 bytes to the second.
        let (second, rest) = text.split_at_checked(19)?;
        if self.second != second {
            let mut whole = second.to_vec();
            whole.push(b'Z');
            self.parsed = std::str::from_utf8(&whole).ok()?.parse().ok();
            self.second = second.to_vec();
        }
        let mut nanos: i64 = 0;
        if let Some(fraction) = rest.strip_prefix(b".") {
            let digits = fraction.strip_suffix(b"Z")?;
            if digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            for digit in digits {
                nanos = nanos * 10 + i64::from(digit - b'0');
            }
            nanos *= 10i64.pow(9 - digits.len() as u32);
        } else if rest != b"Z" {
            return None;
        }
        self.parsed?
            .checked_add(jiff::SignedDuration::from_nanos(nanos))
            .ok()
    }
}
