//! OPD Token Engine: hands out out-patient department tokens for doctors'
//! time slots.
//!
//! Modules in reading order:
//! - [`engine`]: the pure allocation state machine (no I/O, no clock);
//! - [`service`]: the engine behind a lock, or one PostgreSQL transaction
//!   per request, with idempotency and the decide → persist → acknowledge
//!   write path;
//! - [`store`]: durable storage: embedded SQLite with group commit, or the
//!   rows of a shared PostgreSQL database;
//! - [`http`]: routes, JSON shapes, validation and problem+json errors;
//! - [`config`], [`schedule`] and [`templates`]: start-up settings, the
//!   demo schedule, schedule files and weekly templates files.
//!
//! [`Application::build`] prepares everything and binds the listener;
//! [`Application::serve`] runs until the shutdown future completes.

pub mod config;
pub mod engine;
pub mod http;
pub mod schedule;
pub mod service;
pub mod store;
pub mod templates;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;
use tokio::net::TcpListener;

pub use config::Config;
use engine::{Engine, Limits, SlotQuery};
use service::{Clock, LocalStart, Service};
use store::EventBus;

/// The actor of changes the service makes on its own, such as loading the
/// schedule at start-up or closing a slot on time.
pub const SYSTEM: &str = engine::SYSTEM_ACTOR;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    #[error("cannot read schedule {path}: {message}")]
    Schedule { path: String, message: String },
    #[error("cannot use the weekly templates {path}: {message}")]
    Templates { path: String, message: String },
    #[error("cannot make the weekly templates' slots: {0}")]
    Expand(service::ServiceError),
    #[error("cannot read the stored slots: {0}")]
    ReadSlots(service::ServiceError),
    #[error("cannot load slot {slot}: {message}")]
    Slot { slot: String, message: String },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("--metrics-listen serves metrics, which --metrics off turns off")]
    MetricsOffButListened,
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Security(#[from] http::auth::SecurityError),
    #[error("cannot close the slots that fell due while the service was down: {0}")]
    Tick(service::ServiceError),
    #[error("backups are taken of the embedded SQLite store only ({0}); drop --backup-dir, --backup-every and --backup-keep")]
    Backups(&'static str),
}

/// A built, bound, not yet serving application.
pub struct Application {
    listener: TcpListener,
    /// `--metrics-listen`: serves `GET /metrics` only, without a key.
    metrics_listener: Option<TcpListener>,
    state: http::AppState,
    app: http::App,
    service: Arc<Service>,
    connection_limits: http::serve::ConnectionLimits,
    security: Arc<http::auth::Security>,
    /// Tells long-lived answers that the server is shutting down.
    shutting_down: tokio::sync::watch::Sender<bool>,
    /// Whether start-up loaded the demo schedule into an empty store.
    demo_loaded: bool,
    /// What SIGHUP reads again.
    reload: Reload,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartError> {
        Application::build_with_clock(config, Arc::new(jiff::Timestamp::now)).await
    }

    /// Like [`Application::build`], reading time from `clock`.
    pub async fn build_with_clock(config: Config, clock: Clock) -> Result<Application, StartError> {
        let zone = TimeZone::get(&config.timezone)
            .map_err(|_| StartError::TimeZone(config.timezone.clone()))?;
        // First, so an open server on a public address is refused before
        // any storage is touched.
        let security = Arc::new(http::auth::Security::new(access_settings(&config))?);
        // Before storage too: a file with a mistake stops the start-up
        // having changed nothing.
        let templates = match &config.schedule_templates {
            Some(path) => {
                let templates = read_templates(path).map_err(|message| StartError::Templates {
                    path: path.display().to_string(),
                    message,
                })?;
                tracing::info!(
                    templates = %path.display(),
                    sessions = templates.sessions().len(),
                    days_ahead = config.schedule_days_ahead,
                    "using the weekly templates"
                );
                Some(templates)
            }
            None => None,
        };
        let limits = Limits {
            waitlist_max: config.waitlist_max,
            overbook_max: config.overbook_max,
            max_skips: config.max_skips,
            close_after: config
                .close_after_minutes
                .map(|minutes| jiff::SignedDuration::from_mins(i64::from(minutes))),
        };
        let idempotency_limits = service::IdempotencyLimits {
            per_caller: config.idempotency_max_per_caller as usize,
            total: config.idempotency_max as usize,
        };
        let metrics_on = config.metrics == config::Switch::On;
        if !metrics_on && config.metrics_listen.is_some() {
            return Err(StartError::MetricsOffButListened);
        }
        let metrics = Arc::new(http::metrics::Metrics::new(metrics_on));
        let backup_flags = config.backup_dir.is_some()
            || config.backup_every.is_some()
            || config.backup_keep.is_some();
        if backup_flags && config.database_url.is_some() {
            return Err(StartError::Backups(
                "PostgreSQL is backed up with its own tools, see the README",
            ));
        }
        if backup_flags && config.in_memory {
            return Err(StartError::Backups("in memory nothing is kept"));
        }
        let service = if let Some(url) = &config.database_url {
            let database = store::postgres::Database::connect(
                url,
                config.database_schema.as_deref(),
                config.database_connections,
            )
            .await?;
            tracing::info!("state is kept in PostgreSQL");
            let events = EventBus::default();
            let postgres = service::Postgres::new(
                database,
                limits,
                idempotency_limits,
                events.clone(),
                clock.clone(),
                metrics.storage(&service::RETRIED_SQLSTATES),
            )
            .with_zone(zone.clone())
            .with_one_call_bookings(config.one_call_bookings);
            Service::postgres(postgres, events, clock, zone)
        } else if config.in_memory {
            tracing::warn!("running in memory: nothing survives a restart");
            Service::local(
                LocalStart::in_memory(Engine::new(limits)),
                idempotency_limits,
                EventBus::default(),
                clock,
                zone,
            )
        } else {
            let started = std::time::Instant::now();
            let limit_bytes = config.storage_limit_mib.map(|mib| mib * 1024 * 1024);
            let events = EventBus::default();
            let now = clock();
            let live_from = now
                .to_zoned(zone.clone())
                .date()
                .checked_sub(jiff::Span::new().days(i64::from(config.live_days)))
                .unwrap_or(jiff::civil::Date::MIN);
            let loaded = store::open(
                &config.data_dir,
                limits,
                limit_bytes,
                now,
                live_from,
                &events,
                metrics.storage(&[]),
            )?;
            tracing::info!(
                data_dir = %config.data_dir.display(),
                slots = loaded.engine.slot_count(),
                tokens = loaded.tokens,
                live_from = %live_from,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "rebuilt from storage"
            );
            let plan = service::BackupPlan {
                dir: config
                    .backup_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("backups")),
                every: config.backup_every,
                keep: config.backup_keep.map(|keep| keep as usize),
            };
            if let Some(every) = plan.every {
                tracing::info!(
                    backup_dir = %plan.dir.display(),
                    every = %format_args!("{every:#}"),
                    keep = plan.keep,
                    "backups are scheduled"
                );
            }
            Service::local(
                LocalStart {
                    engine: loaded.engine,
                    idempotency: loaded.idempotency,
                    journal: Some(loaded.journal),
                    last_event: loaded.last_event,
                    live_days: Some(config.live_days),
                },
                idempotency_limits,
                events,
                clock,
                zone,
            )
            .with_backups(plan, metrics.backups())
        };
        let service = match templates {
            Some(templates) => service.with_templates(templates, config.schedule_days_ahead),
            None => service,
        };
        let service = Arc::new(service);
        let demo_loaded = load_schedule(&config, &service).await?;
        service
            .expand_templates()
            .await
            .map_err(StartError::Expand)?;
        // What fell due while the service was down happens now, before
        // the first request is answered.
        let caught_up = service.tick().await.map_err(StartError::Tick)?;
        if caught_up > 0 {
            tracing::info!(
                changes = caught_up,
                "closed the slots and days that fell due while down"
            );
        }

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: config.listen,
                    source,
                })?;
        let metrics_listener = match config.metrics_listen {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(|source| StartError::MetricsListen { address, source })?,
            ),
            None => None,
        };
        let (shutting_down, shutdown) = tokio::sync::watch::channel(false);
        tokio::spawn(http::metrics::upkeep(metrics.clone()));
        let fanout = http::events::Fanout::start(&service, &metrics, shutdown.clone());
        let state = http::AppState {
            service: service.clone(),
            body_limit_bytes: config.body_limit_bytes,
            slots_page_max: config.slots_page_max as usize,
            fhir_base_url: config.fhir_base_url.as_deref().map(Arc::from),
            security: security.clone(),
            shutdown,
            fanout,
            metrics,
        };
        let app = http::app(
            state.clone(),
            Duration::from_secs(config.request_timeout_secs),
        );
        let reload = Reload {
            security: security.clone(),
            keys_file: config.api_keys_file.is_some(),
            templates: config.schedule_templates.clone().map(|path| TemplatesFile {
                path,
                service: service.clone(),
            }),
        };
        Ok(Application {
            listener,
            metrics_listener,
            state,
            app,
            service,
            connection_limits: http::serve::ConnectionLimits {
                head_timeout: Duration::from_secs(config.header_timeout_secs),
                write_timeout: Duration::from_secs(config.write_timeout_secs),
                max_connections: config.max_connections as usize,
                max_connections_per_address: config.max_connections_per_address as usize,
                max_requests_per_connection: config.max_requests_per_connection,
            },
            shutting_down,
            reload,
            security,
            demo_loaded,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The address of `--metrics-listen`, when it is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    pub fn service(&self) -> Arc<Service> {
        self.service.clone()
    }

    /// Whether start-up loaded the demo schedule, which it does only into a
    /// store without slots when no schedule file is given.
    pub fn demo_loaded(&self) -> bool {
        self.demo_loaded
    }

    /// The access settings, whose keys can be read again while serving.
    pub fn security(&self) -> Arc<http::auth::Security> {
        self.security.clone()
    }

    /// What SIGHUP reads again; see [`reload_on_hangup`].
    pub fn reload(&self) -> Reload {
        self.reload.clone()
    }

    /// Serves until `shutdown` completes, then lets requests in flight
    /// finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let shutting_down = self.shutting_down;
        let clock = tokio::spawn(run_clock(self.service, shutting_down.subscribe()));
        let metrics = self.metrics_listener.map(|listener| {
            let mut stop = shutting_down.subscribe();
            let router = http::metrics::scrape_router(self.state);
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                };
                if let Err(error) = axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(%error, "the metrics listener stopped");
                }
            })
        });
        let shutdown = async move {
            shutdown.await;
            // Event streams end now, so the requests in flight that
            // shutting down waits for all finish.
            shutting_down.send_replace(true);
        };
        let served =
            http::serve::serve(self.listener, self.app, self.connection_limits, shutdown).await;
        clock.abort();
        if let Some(metrics) = metrics {
            metrics.abort();
        }
        served
    }
}

/// How often the service looks for work the clock has made due. Closing
/// times are whole minutes, so a slot closes within this of its time.
const TICK_EVERY: Duration = Duration::from_secs(1);

/// Closes slots and ends days as the clock makes them due, until shutdown.
/// A tick that fails (storage down) is tried again at the next one: what
/// is due is read from the state, so nothing is lost meanwhile.
async fn run_clock(service: Arc<Service>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(TICK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.changed() => return,
        }
        match service.tick().await {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("closings, days' ends and the weekly templates are done again");
            }
            Ok(_) => {}
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "cannot close slots, end days or make the weekly templates' slots now; trying every second");
            }
            Err(_) => {}
        }
    }
}

/// The HTTP layer's access settings, from the configuration.
fn access_settings(config: &Config) -> http::auth::Settings {
    http::auth::Settings {
        listen: config.listen,
        keys_file: config.api_keys_file.clone(),
        inline_keys: config
            .api_keys
            .as_ref()
            .map(|keys| keys.expose().to_owned()),
        rate_limit_per_second: config.rate_limit_per_second,
        rate_limit_burst: config.rate_limit_burst,
        cors_origins: config.cors_origins.clone(),
    }
}

/// What the service reads again on SIGHUP: the API keys file and the
/// weekly templates file, each when configured.
#[derive(Clone)]
pub struct Reload {
    security: Arc<http::auth::Security>,
    /// Whether `--api-keys-file` was given. Without it SIGHUP leaves the
    /// keys alone, so that reloading only the templates logs no key error.
    keys_file: bool,
    templates: Option<TemplatesFile>,
}

#[derive(Clone)]
struct TemplatesFile {
    path: PathBuf,
    service: Arc<Service>,
}

impl Reload {
    /// Reads the weekly templates file again. A valid file replaces the
    /// templates in force and its slots are made at once; the answer is
    /// how many were made, or `None` without a templates file. An invalid
    /// or unreadable file is refused with the reason, and the templates in
    /// force stay.
    pub async fn templates(&self) -> Result<Option<usize>, String> {
        let Some(file) = &self.templates else {
            return Ok(None);
        };
        let templates = read_templates(&file.path).map_err(|message| {
            format!(
                "{}: {message}; the templates in force stay",
                file.path.display()
            )
        })?;
        file.service.replace_templates(templates);
        file.service
            .expand_templates()
            .await
            .map(Some)
            .map_err(|error| format!("the new templates are in force, but their slots cannot be made now ({error}); the clock tries again every second"))
    }
}

/// Reads the API keys file and the weekly templates file again each time
/// the process gets SIGHUP, so a key can be added or withdrawn, and a
/// session changed, without a restart. A failed reload is logged and
/// leaves what was in force as it was.
#[cfg(unix)]
pub async fn reload_on_hangup(reload: Reload) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; API keys and templates reload only on restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        if reload.keys_file {
            match reload.security.reload_keys() {
                Ok(count) => tracing::info!(keys = count, "API keys reloaded"),
                Err(error) => tracing::error!(%error, "the previous API keys stay in force"),
            }
        }
        match reload.templates().await {
            Ok(Some(made)) => tracing::info!(slots_made = made, "weekly templates reloaded"),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "reloading the weekly templates failed"),
        }
    }
}

/// Reads and checks a weekly templates file.
fn read_templates(path: &Path) -> Result<service::weekly::Templates, String> {
    let text = std::fs::read_to_string(path).map_err(|error| error.to_string())?;
    templates::parse(&text)
}

/// Creates the slots of the configured schedule file that do not exist yet
/// or, without one and without weekly templates, the demo schedule when the
/// store holds no slot at all; answers whether the demo was loaded.
///
/// The demo goes only into an empty store: a clinic that moved a data
/// directory on to its real days must not get demo slots beside them, which
/// would also overlap its doctors' real slots and stop the start-up.
async fn load_schedule(config: &Config, service: &Service) -> Result<bool, StartError> {
    let today = service.today();
    let specs = match &config.schedule {
        Some(path) => {
            let schedule_error = |message: String| StartError::Schedule {
                path: path.display().to_string(),
                message,
            };
            let text =
                std::fs::read_to_string(path).map_err(|error| schedule_error(error.to_string()))?;
            let specs = schedule::parse_file(&text, today).map_err(schedule_error)?;
            tracing::info!(schedule = %path.display(), slots = specs.len(), "loading the schedule file");
            specs
        }
        None if config.schedule_templates.is_some() => {
            tracing::info!("weekly templates given: the demo schedule is not loaded");
            return Ok(false);
        }
        None => {
            let any_slot = SlotQuery {
                doctor: None,
                date: None,
                after: None,
                limit: 1,
            };
            let holds_slots = !service
                .slots(&any_slot)
                .await
                .map_err(StartError::ReadSlots)?
                .slots
                .is_empty();
            if holds_slots {
                tracing::info!(
                    "no schedule file given and the store already holds slots: the demo schedule is not loaded"
                );
                return Ok(false);
            }
            tracing::info!(date = %today, "the store holds no slot: loading the demo schedule");
            schedule::demo(today)
        }
    };
    for spec in specs {
        let id = spec.id.clone();
        let exists = service
            .slot_summary(&id)
            .await
            .map(|summary| summary.is_some())
            .map_err(|error| StartError::Slot {
                slot: id.to_string(),
                message: error.to_string(),
            })?;
        if !exists {
            service
                .create_slot(spec, SYSTEM.into())
                .await
                .map_err(|error| StartError::Slot {
                    slot: id.to_string(),
                    message: error.to_string(),
                })?;
        }
    }
    Ok(config.schedule.is_none())
}
