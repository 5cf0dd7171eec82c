//! Starts the service: reads the configuration, sets up logging, builds the
//! application and serves until Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use opd::config::LogFormat;
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
    runtime.block_on(serve())
}

async fn serve() -> ExitCode {
    let config = opd::Config::parse();
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
