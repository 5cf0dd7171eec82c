//! What the server binary logs as it starts: JSON lines with
//! `--log-format json`, plain text without colour codes when its output is
//! not a terminal, and a start-up line that tells a newcomer where the API
//! documentation, the pages and the data are and whether the demo
//! schedule was loaded.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary data directory, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new() -> DataDir {
        DataDir(std::env::temp_dir().join(format!("opd-logs-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running binary; killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary on `data_dir` with `args`, its standard output and
/// error piped (so neither is a terminal), and returns every line it wrote
/// up to and including the one that says it is serving.
fn start_up_lines(data_dir: &Path, args: &[&str]) -> Vec<String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opd-token-engine"));
    command
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        // Nothing from the caller's environment (RUST_LOG, NO_COLOR, a
        // DATABASE_URL) may change what is logged.
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut server = Server(command.spawn().expect("start the server binary"));
    let (lines, received) = mpsc::channel();
    for output in [
        Box::new(server.0.stdout.take().expect("piped stdout")) as Box<dyn std::io::Read + Send>,
        Box::new(server.0.stderr.take().expect("piped stderr")),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut seen = Vec::new();
    loop {
        let line = received
            .recv_timeout(START_TIMEOUT)
            .unwrap_or_else(|_| panic!("the server did not start; it wrote {seen:#?}"));
        let serving = line.contains("serving");
        seen.push(line);
        if serving {
            drop(server);
            return seen;
        }
    }
}

#[test]
fn json_logs_are_one_object_a_line_and_the_start_up_line_names_the_storage() {
    let data = DataDir::new();
    let lines = start_up_lines(&data.0, &["--log-format", "json"]);
    let events: Vec<Value> = lines
        .iter()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line}"))
        })
        .collect();
    assert!(
        events.iter().all(|event| event["level"].is_string()),
        "{events:#?}"
    );
    let serving = &events.last().expect("a start-up line")["fields"];
    assert_eq!(serving["message"], "serving");
    assert_eq!(serving["storage"], "sqlite");
    assert_eq!(serving["data_dir"], data.0.display().to_string());
    assert_eq!(serving["timezone"], "UTC");
    assert_eq!(serving["demo_loaded"], true);
    let address = serving["address"].as_str().expect("the address it serves");
    assert_eq!(serving["docs"], format!("http://{address}/docs"));
    let pages = serving["pages"].as_str().expect("the pages' addresses");
    for page in ["desk", "doctor", "board", "schedule"] {
        assert!(
            pages.contains(&format!("http://{address}/{page}")),
            "{pages}"
        );
    }

    // The same store again: it holds the demo's slots, so the demo is not
    // loaded a second time.
    let lines = start_up_lines(&data.0, &["--log-format", "json"]);
    let serving: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(serving["fields"]["demo_loaded"], false, "{lines:#?}");
}

#[test]
fn text_logs_written_to_a_pipe_have_no_colour_codes() {
    let data = DataDir::new();
    let lines = start_up_lines(&data.0, &[]);
    assert!(
        lines.iter().all(|line| !line.contains('\u{1b}')),
        "{lines:#?}"
    );
    let serving = lines.last().expect("a start-up line");
    assert!(serving.contains(" INFO "), "{serving}");
    for field in ["storage=\"sqlite\"", "demo_loaded=true", "timezone=\"UTC\""] {
        assert!(serving.contains(field), "{field} in {serving}");
    }
}
