//! Start-up settings: command-line flags, each also an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(name = "opd-token-engine", version, about = "OPD token allocation service")]
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "OPD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// A schedule file (JSON, see schedules/example.json) to load at start-up
    /// instead of the demo schedule. Slots whose id already exists are kept.
    #[arg(long, env = "OPD_SCHEDULE")]
    pub schedule: Option<PathBuf>,

    /// Directory of the embedded SQLite database.
    #[arg(long, env = "OPD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// A `postgres://` URL: keep state in PostgreSQL, shared by every
    /// instance given the same database (instead of the embedded store).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// PostgreSQL schema to use (created if missing); the default is the
    /// connection's search path.
    #[arg(long, env = "DATABASE_SCHEMA", requires = "database_url")]
    pub database_schema: Option<String>,

    /// Connections this instance keeps open to PostgreSQL.
    #[arg(long, env = "DATABASE_CONNECTIONS", default_value_t = 16)]
    pub database_connections: u32,

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

    /// Requests taking longer than this are answered 408.
    #[arg(long, env = "OPD_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    pub request_timeout_secs: u64,
}

impl Config {
    /// Defaults for tests and embedding: in memory, on a free loopback port.
    pub fn for_tests() -> Config {
        Config::parse_from(["opd-token-engine", "--listen", "127.0.0.1:0", "--in-memory"])
    }
}
