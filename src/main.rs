//! Starts the service: reads the configuration, sets up logging, builds the
//! application and serves until Ctrl-C or SIGTERM. The `backup` and
//! `restore` subcommands are the operator's: the first asks a running
//! server for a backup, the second puts one in place with the server
//! stopped.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use opd::config::{BackupArgs, Cli, Command, LogFormat, RestoreArgs};
use tracing_subscriber::EnvFilter;

/// Every request allocates a little (its body, its answer, the token's
/// strings); mimalloc makes that markedly cheaper than the system
/// allocator under load (see the README's performance figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` in its v2 option list (mimalloc.h,
/// `mi_option_e`); the Rust bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it
/// to the OS. The default, 10 ms, is shorter than the gap between bursts of
/// requests: memory went back and was faulted in again moments later, a
/// zeroed huge page each time (about 3 % of the server's CPU under load).
const PURGE_DELAY_MS: std::os::raw::c_long = 1_000;

fn main() -> ExitCode {
    // SAFETY: mimalloc's options are plain globals that are not safe to set
    // while other threads allocate; no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("opd-token-engine: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cli = Cli::parse();
    match cli.command {
        None => runtime.block_on(serve(cli.config)),
        Some(Command::Backup(args)) => runtime.block_on(backup(args)),
        Some(Command::Restore(args)) => restore(args),
    }
}

/// Asks the server at `args.url` for a backup and prints where it is.
async fn backup(args: BackupArgs) -> ExitCode {
    let url = format!("{}/admin/backups", args.url.trim_end_matches('/'));
    let client = reqwest::Client::new();
    let mut request = client.post(&url);
    if let Some(key) = &args.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            eprintln!("opd-token-engine backup: cannot reach {url}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        let detail = body["detail"].as_str().unwrap_or("no detail given");
        eprintln!("opd-token-engine backup: the server answered {status}: {detail}");
        return ExitCode::FAILURE;
    }
    // Scripts read the path from stdout (`file=$(opd-token-engine backup …)`),
    // so it is stdout's only line; the summary is for the person at the
    // terminal and goes to stderr.
    println!("{}", body["path"].as_str().unwrap_or_default());
    eprintln!(
        "{} bytes, events up to id {}, taken at {} in {} ms",
        body["bytes"],
        body["lastEventId"],
        body["takenAt"].as_str().unwrap_or_default(),
        body["durationMs"],
    );
    ExitCode::SUCCESS
}

/// Puts a backup in place as a stopped server's database.
fn restore(args: RestoreArgs) -> ExitCode {
    match opd::store::backup::restore(&args.file, &args.data_dir, jiff::Timestamp::now()) {
        Ok(restored) => {
            println!(
                "restored {} into {} ({} tokens, events up to id {})",
                args.file.display(),
                restored.database.display(),
                restored.tokens,
                restored.last_event,
            );
            if let Some(previous) = restored.previous {
                println!("the previous database is kept as {}", previous.display());
            }
            println!("start the server on {} as usual", args.data_dir.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "opd-token-engine restore: {error}; {} is unchanged",
                args.data_dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: opd::Config) -> ExitCode {
    init_logging(config.log_format);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // An operator reads this: the message, not the error's Debug form.
            eprintln!("opd-token-engine: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard output, filtered by `RUST_LOG` (default `info`), in
/// the configured format. Text is coloured only on a terminal and without
/// `NO_COLOR`: escape codes in a file or a log collector are noise.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
            logs.with_ansi(std::io::stdout().is_terminal() && !no_color)
                .init();
        }
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
}

async fn run(config: opd::Config) -> Result<(), Box<dyn std::error::Error>> {
    // What the start-up line reports, taken before the build consumes it.
    let timezone = config.timezone.clone();
    let data_dir = config.data_dir.clone();
    let schema = config.database_schema.clone();
    let templates = config.schedule_templates.clone();
    let application = opd::Application::build(config).await?;
    // Start-up read every live token with its history from storage, built
    // the engine from the rows and freed them, on this thread. mimalloc
    // returns freed pages only as the thread goes on allocating, which an
    // idle server may not do for hours: hand them back now.
    // SAFETY: mi_collect takes no pointers and may run at any time; it
    // only frees pages of this thread's heap that hold no live block.
    unsafe { libmimalloc_sys::mi_collect(true) };
    let address = application.local_addr();
    let base = format!("http://{address}");
    let storage = application.service().storage_name();
    // A newcomer's first questions: where to look, where the data is, which
    // "today" the clinic is in and whether the slots are the demo's.
    tracing::info!(
        %address,
        docs = %format!("{base}/docs"),
        pages = %format!("{base}/desk {base}/doctor {base}/board {base}/schedule"),
        storage,
        data_dir = (storage == "sqlite").then(|| tracing::field::display(data_dir.display())),
        database_schema = schema.filter(|_| storage == "postgres"),
        timezone,
        demo_loaded = application.demo_loaded(),
        schedule_templates = templates.as_ref().map(|path| tracing::field::display(path.display())),
        "serving"
    );
    #[cfg(unix)]
    tokio::spawn(opd::reload_on_hangup(application.reload()));
    application.serve(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is a bare number: this holds it to the option the
    /// linked mimalloc calls purge delay, whose default is 10 ms, between
    /// `eager_commit_delay` (default 1) and `use_numa_nodes` (default 0).
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        let defaults = unsafe {
            [
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY - 1),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY + 1),
            ]
        };
        assert_eq!(defaults, [1, 10, 0]);
    }
}
