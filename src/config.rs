//! Start-up settings: command-line flags, each also an environment variable.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "opd-token-engine",
    version,
    about = "OPD token allocation service"
)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "OPD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A second address that serves `GET /metrics` only, without an API
    /// key, for a Prometheus scraper on the hospital's internal network.
    /// The main address serves `/metrics` too, to admin and viewer keys.
    #[arg(long, env = "OPD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// `off` records no metrics and answers `GET /metrics` with 404: for a
    /// clinic that scrapes nothing, and to measure what counting costs.
    /// `--metrics-listen` needs them `on`.
    #[arg(long, env = "OPD_METRICS", value_enum, default_value_t = Switch::On)]
    pub metrics: Switch,

    /// A schedule file (JSON, see schedules/example.json) to load at start-up.
    /// Slots whose id already exists are kept. Without one (and without
    /// weekly templates), the demo schedule is loaded, and only into a
    /// store that holds no slot yet.
    #[arg(long, env = "OPD_SCHEDULE")]
    pub schedule: Option<PathBuf>,

    /// Weekly templates (TOML, see schedules/small-opd.toml): sessions made
    /// into dated slots from today through `--schedule-days-ahead` days
    /// ahead, at start-up and every day; read again on SIGHUP. With it, the
    /// demo schedule is never loaded.
    #[arg(long, env = "OPD_SCHEDULE_TEMPLATES")]
    pub schedule_templates: Option<PathBuf>,

    /// How many days after today the weekly templates are made into slots.
    #[arg(long, env = "OPD_SCHEDULE_DAYS_AHEAD", default_value_t = 14, value_parser = clap::value_parser!(u16).range(0..=366))]
    pub schedule_days_ahead: u16,

    /// Directory of the embedded SQLite database.
    #[arg(long, env = "OPD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Largest size the SQLite database may grow to, in MiB; past it,
    /// writes answer 503 and the service stops accepting them. Unlimited
    /// when absent.
    #[arg(long, env = "OPD_STORAGE_LIMIT_MIB")]
    pub storage_limit_mib: Option<u64>,

    /// A `postgres://` URL: keep state in PostgreSQL, shared by every
    /// instance given the same database (instead of the embedded store).
    // The URL may hold a password, so `--help` must not show its value.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// PostgreSQL schema to use (created if missing); the default is the
    /// connection's search path.
    #[arg(long, env = "DATABASE_SCHEMA", requires = "database_url")]
    pub database_schema: Option<String>,

    /// Connections this instance keeps open to PostgreSQL.
    #[arg(long, env = "DATABASE_CONNECTIONS", default_value_t = 16)]
    pub database_connections: u32,

    /// Book on PostgreSQL in one call, decided on this instance's copy of
    /// the slot (README, "Bookings in one call"); off by default until
    /// the failover test passes with it every time. Without PostgreSQL it
    /// changes nothing.
    #[arg(long, env = "OPD_ONE_CALL_BOOKINGS")]
    pub one_call_bookings: bool,

    /// Keep everything in memory: nothing survives a restart. For demos and
    /// benchmarks.
    #[arg(long, env = "OPD_IN_MEMORY", conflicts_with = "database_url")]
    pub in_memory: bool,

    /// The clinic's IANA time zone; "today" for slots is taken in it.
    #[arg(long, env = "OPD_TIMEZONE", default_value = "UTC")]
    pub timezone: String,

    /// Largest accepted request body.
    #[arg(long, env = "OPD_BODY_LIMIT_BYTES", default_value_t = 16 * 1024)]
    pub body_limit_bytes: usize,

    /// Most tokens one slot's waitlist may hold.
    #[arg(long, env = "OPD_WAITLIST_MAX", default_value_t = 1_000)]
    pub waitlist_max: u32,

    /// Idempotency keys one caller (one API key, or everyone when open)
    /// may have remembered at once; a booking with a new key past it is
    /// answered 429 `IDEMPOTENCY_LIMIT` until the caller's oldest key
    /// expires. Keys are remembered for 24 hours.
    #[arg(long, env = "OPD_IDEMPOTENCY_MAX_PER_CALLER", default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub idempotency_max_per_caller: u32,

    /// Idempotency keys remembered at once over all callers; past it, a
    /// booking with a new key is answered 429 `IDEMPOTENCY_LIMIT`.
    #[arg(long, env = "OPD_IDEMPOTENCY_MAX", default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub idempotency_max: u32,

    /// Most emergencies one full slot may take beyond its capacity; past
    /// it, an emergency is refused with 409 and goes to another slot. At
    /// least 1, and generous by default: an emergency is turned away only
    /// when a slot is already far past its capacity.
    #[arg(long, env = "OPD_OVERBOOK_MAX", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub overbook_max: u32,

    /// The skip that reaches this count makes a called patient who did
    /// not come a no-show (at least 1).
    #[arg(long, env = "OPD_MAX_SKIPS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..))]
    pub max_skips: u8,

    /// Close each slot this many minutes after its end time instead of at
    /// the end of its date (a slot always closes by the end of its date).
    /// Closing makes the patients who never came no-shows, seats the
    /// waitlisted patients who are in the hall, and expires the rest.
    #[arg(long, env = "OPD_CLOSE_AFTER_MINUTES", value_parser = clap::value_parser!(u32).range(0..=1440))]
    pub close_after_minutes: Option<u32>,

    /// How many past days the engine holds besides today and the days
    /// ahead (embedded SQLite storage): 0 keeps none, 1 keeps yesterday.
    /// A past day stays until it is over (closed, its day's end done)
    /// whatever this says; older days are read from storage when they are
    /// read, so memory and start-up follow today's work, not the history.
    #[arg(long, env = "OPD_LIVE_DAYS", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=3660))]
    pub live_days: u16,

    /// The most slots one page of `GET /slots` holds, and the page size
    /// when the request names none; a `Link` header leads to the next page.
    #[arg(long, env = "OPD_SLOTS_PAGE_MAX", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub slots_page_max: u32,

    /// The absolute URL of the FHIR routes as clients reach them, such as
    /// `https://opd.hospital.lan/fhir` behind a TLS proxy: FHIR answers
    /// name resources and pages with it. Without it, `http://`, the
    /// request's `Host` and `/fhir`.
    #[arg(long, env = "OPD_FHIR_BASE_URL", value_parser = parse_fhir_base_url)]
    pub fhir_base_url: Option<String>,

    /// Requests taking longer than this are answered 408.
    #[arg(long, env = "OPD_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,

    /// A connection that takes longer than this to send a request's headers
    /// (or sends nothing, idle) is closed.
    #[arg(long, env = "OPD_HEADER_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_secs: u64,

    /// The most client connections served at once. Past it, new
    /// connections wait in the kernel's accept queue until one closes, so a
    /// flood of idle connections cannot exhaust the server's file
    /// descriptors or memory.
    #[arg(long, env = "OPD_MAX_CONNECTIONS", default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,

    /// A connection whose answer cannot be written for this long, because
    /// the client has stopped reading, is closed. The deadline counts from
    /// the last byte written, so slow readers that keep reading are served.
    #[arg(long, env = "OPD_WRITE_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub write_timeout_secs: u64,

    /// The most connections open at once from one client address (an IPv6
    /// client's /64); past it, new connections from there are closed at
    /// once. Generous, since a clinic's desks may share one address.
    #[arg(long, env = "OPD_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections_per_address: u32,

    /// Requests answered on one connection; the last answer says
    /// `Connection: close` and the connection ends, so pipelined requests
    /// past it are not served and the client connects again.
    #[arg(long, env = "OPD_MAX_REQUESTS_PER_CONNECTION", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_per_connection: u32,

    /// A file of API keys, one per line `name role[:doctorId] key` (see
    /// config/api-keys.example and docs/security.md). Without any keys the
    /// server runs open, and then only on a loopback address.
    #[arg(long, env = "OPD_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// API keys as in the file, lines separated by `;`. Prefer the file or
    /// the environment variable: command lines are visible to other users.
    #[arg(long, env = "OPD_API_KEYS", hide_env_values = true)]
    pub api_keys: Option<Secret>,

    /// Requests a second allowed per API key (per client address when
    /// open); 0 turns rate limiting off.
    #[arg(long, env = "OPD_RATE_LIMIT_PER_SECOND", default_value_t = 200)]
    pub rate_limit_per_second: u32,

    /// Requests a client may send at once before the rate applies.
    #[arg(long, env = "OPD_RATE_LIMIT_BURST", default_value_t = 400)]
    pub rate_limit_burst: u32,

    /// An origin (`https://desk.example.org`) whose web pages may call the
    /// API; repeat for more, `*` for any. CORS is off by default.
    #[arg(long = "cors-origin", env = "OPD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Where backups of the embedded store are written (`POST
    /// /admin/backups`, the `backup` subcommand, `--backup-every`); by
    /// default `<data-dir>/backups`. Copy them to another disk or host:
    /// a backup on the database's own disk is lost with it.
    #[arg(long, env = "OPD_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// Take a backup this often, such as `6h`, `30m` or `1d` (at least a
    /// minute): the first a period after the newest backup in the backup
    /// directory (at start-up when there is none). Off by default.
    #[arg(long, env = "OPD_BACKUP_EVERY", value_parser = parse_interval)]
    pub backup_every: Option<jiff::SignedDuration>,

    /// Keep this many backups in the backup directory (at least 1): after
    /// each backup the oldest beyond are removed. Without it, every
    /// backup is kept.
    #[arg(long, env = "OPD_BACKUP_KEEP", value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: Option<u32>,

    /// How log lines are written to standard output: `text` for people,
    /// `json` (one object a line) for a log collector.
    #[arg(long, env = "OPD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The command line: serving (no subcommand, with [`Config`]'s flags), or
/// one of the operator's commands.
#[derive(Debug, Parser)]
#[command(
    name = "opd-token-engine",
    version,
    about = "OPD token allocation service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Asks the running server to take a backup now and prints where it
    /// wrote it (on the server's host, in its backup directory).
    Backup(BackupArgs),
    /// Puts a backup in place as the database of a data directory, with
    /// the server stopped: checks the backup first and keeps the previous
    /// database beside it. Start the server afterwards as usual.
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct BackupArgs {
    /// The server's address, as clients reach it (http only).
    #[arg(long, env = "OPD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An admin key of the server; none for a server without keys.
    #[arg(long, env = "OPD_ADMIN_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The backup file to restore.
    pub file: PathBuf,
    /// The data directory whose database it becomes; no server may be
    /// running on it.
    #[arg(long, env = "OPD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// The shape of log lines; see [`Config::log_format`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line an event, coloured only on a terminal.
    Text,
    /// One JSON object an event, with its fields under `fields`.
    Json,
}

/// A feature turned on or off; see [`Config::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

/// Text that holds secrets, e.g. the API key lines of `OPD_API_KEYS`: its
/// `Debug` form never shows it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The text itself, to use, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(text.to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Config {
    /// Defaults for tests and embedding: in memory, on a free loopback port,
    /// open (no API keys), without a rate limit and with the per-address
    /// connection cap as high as the connection cap, so tests that send many
    /// requests, some hundreds at once, all from 127.0.0.1, are not
    /// throttled or turned away; tests of access control and limits set
    /// those fields.
    pub fn for_tests() -> Config {
        let mut config = Config::parse_from([
            "opd-token-engine",
            "--listen",
            "127.0.0.1:0",
            "--in-memory",
            "--rate-limit-per-second",
            "0",
        ]);
        config.max_connections_per_address = config.max_connections;
        config
    }
}

/// The least interval between scheduled backups.
const BACKUP_EVERY_MIN: jiff::SignedDuration = jiff::SignedDuration::from_mins(1);

/// An interval such as `6h`, `90m`, `1d` or `PT6H`; a day is 24 hours.
fn parse_interval(text: &str) -> Result<jiff::SignedDuration, String> {
    let span: jiff::Span = text
        .parse()
        .map_err(|_| format!("{text:?} is not an interval such as 6h, 30m or 1d"))?;
    let interval = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|error| format!("{text:?}: {error}"))?;
    if interval < BACKUP_EVERY_MIN {
        return Err(format!("{text:?} is shorter than a minute"));
    }
    Ok(interval)
}

/// An absolute `http` or `https` URL without query or fragment; a trailing
/// slash is dropped, so that `{base}/Slot` is well formed.
fn parse_fhir_base_url(text: &str) -> Result<String, String> {
    let uri: axum::http::Uri = text.parse().map_err(|_| format!("{text:?} is not a URL"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() || text.contains('#') {
        return Err(format!(
            "{text:?} must be an absolute http or https URL without query or fragment, such as https://opd.hospital.lan/fhir"
        ));
    }
    Ok(text.trim_end_matches('/').to_owned())
}
