//! Who may call what: API keys with roles, one table of access rules, and
//! the middleware that enforces both together with the rate limit.
//!
//! A key is sent as `Authorization: Bearer <key>`. Only SHA-256 digests of
//! the configured keys are kept, and a presented key is compared with every
//! digest in constant time. A caller that passes gets a [`Caller`] carrying
//! the key's *name* (never the key), which the engine records as the actor
//! of every change.
//!
//! Authorization is table-driven: [`RULES`] maps each (method, route
//! template) pair, the template found as axum's router finds it, to an
//! [`Access`]. The API refuses to build when one of its routes has no
//! rule, so a route added without thinking about access fails loudly
//! rather than opening up; a method that a route's rules do not name gets
//! 405.
//!
//! Without keys the server runs open, every caller anonymous; that is
//! allowed only on a loopback address, without CORS, and for requests
//! addressed to a loopback name (see [`Security::from_config`] and
//! [`Gate`]).

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, Request};
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::error::{self, ApiError};
use super::rate_limit::{self, Client, RateLimiter};
use super::{input, AppState, Caller};
use crate::engine::{DoctorId, SlotId};
use crate::Config;

/// Keys shorter than this are refused at start-up: a key must not be
/// guessable.
pub const KEY_LEN_MIN: usize = 16;

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Everything, including creating slots and changing capacity.
    Admin,
    /// Book, cancel, no-show, and every read.
    FrontDesk,
    /// Reads of this doctor's slots and tokens only.
    Doctor(DoctorId),
    /// Every read.
    Viewer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::FrontDesk => f.write_str("front-desk"),
            Role::Doctor(doctor) => write!(f, "doctor:{doctor}"),
            Role::Viewer => f.write_str("viewer"),
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        match text.split_once(':') {
            None => match text {
                "admin" => Ok(Role::Admin),
                "front-desk" => Ok(Role::FrontDesk),
                "viewer" => Ok(Role::Viewer),
                "doctor" => Err("the doctor role needs a doctor id: doctor:<doctorId>".into()),
                _ => Err(format!("unknown role {text:?}; expected admin, front-desk, doctor:<doctorId> or viewer")),
            },
            Some(("doctor", doctor)) => DoctorId::parse(doctor)
                .map(Role::Doctor)
                .ok_or_else(|| format!("doctor id {doctor:?} is not 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'")),
            Some((role, _)) => Err(format!("only the doctor role takes a doctor id, not {role:?}")),
        }
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a key.
    Public,
    /// Every role. A doctor key only for its own doctor's data, found as
    /// the scope says.
    Read(DoctorScope),
    /// Admin and front-desk keys.
    FrontDesk,
    /// The doctor's own work (call, start, complete, skip, call-next):
    /// admin and front-desk keys, and a doctor key for its own doctor,
    /// found as the scope says.
    Clinical(DoctorScope),
    /// Admin keys only.
    Admin,
}

/// How a doctor key's access to a read route is narrowed to its doctor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoctorScope {
    /// A slot list: a doctor gets its own doctor's slots only, and asking
    /// for another doctor's is 403.
    SlotList,
    /// The slot in the path parameter `slotId` must be the doctor's.
    SlotInPath,
    /// The token in the path parameter `tokenId` must be the doctor's.
    TokenInPath,
    /// The doctor in the path parameter `doctorId` must be the doctor.
    DoctorInPath,
    /// Any doctor's: the waiting-hall board, which carries no patient ids.
    AnyDoctor,
}

/// The health check's route: its requests spend a rate budget of their
/// own (see [`Client::health_check`]).
const HEALTH_ROUTE: &str = "/healthz";

/// The access rules, one per (method, route template). `HEAD` follows the
/// `GET` rule. The security test walks every route of the OpenAPI document
/// with every role against these.
pub const RULES: &[(Method, &str, Access)] = &[
    (Method::GET, HEALTH_ROUTE, Access::Public),
    (Method::GET, "/openapi.json", Access::Public),
    (Method::GET, "/docs", Access::Public),
    (Method::GET, "/docs/", Access::Public),
    (Method::GET, "/docs/{*rest}", Access::Public),
    (Method::POST, "/tokens", Access::FrontDesk),
    (
        Method::GET,
        "/tokens/{tokenId}",
        Access::Read(DoctorScope::TokenInPath),
    ),
    (
        Method::POST,
        "/tokens/{tokenId}/check-in",
        Access::FrontDesk,
    ),
    (Method::POST, "/tokens/{tokenId}/call", DOCTORS_TOKEN),
    (Method::POST, "/tokens/{tokenId}/start", DOCTORS_TOKEN),
    (Method::POST, "/tokens/{tokenId}/complete", DOCTORS_TOKEN),
    (Method::POST, "/tokens/{tokenId}/skip", DOCTORS_TOKEN),
    (Method::POST, "/tokens/{tokenId}/cancel", Access::FrontDesk),
    (Method::POST, "/tokens/{tokenId}/no-show", Access::FrontDesk),
    (
        Method::POST,
        "/doctors/{doctorId}/call-next",
        Access::Clinical(DoctorScope::DoctorInPath),
    ),
    (
        Method::GET,
        "/doctors/{doctorId}/queue",
        Access::Read(DoctorScope::DoctorInPath),
    ),
    (Method::GET, "/board", Access::Read(DoctorScope::AnyDoctor)),
    (Method::GET, "/slots", Access::Read(DoctorScope::SlotList)),
    (Method::POST, "/slots", Access::Admin),
    (
        Method::GET,
        "/slots/{slotId}",
        Access::Read(DoctorScope::SlotInPath),
    ),
    (Method::PATCH, "/slots/{slotId}", Access::Admin),
];

/// A doctor's action on a token: the desk's too.
const DOCTORS_TOKEN: Access = Access::Clinical(DoctorScope::TokenInPath);

/// The rule for a method on a route template, if there is one.
pub fn rule(method: &Method, route: &str) -> Option<Access> {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    RULES
        .iter()
        .find(|(rule_method, rule_route, _)| rule_method == method && *rule_route == route)
        .map(|(_, _, access)| *access)
}

impl Access {
    /// Whether `role` may use a route with this access, before any doctor
    /// scope is checked.
    pub fn permits(self, role: &Role) -> bool {
        match self {
            Access::Public => true,
            Access::Read(_) => true,
            Access::FrontDesk => matches!(role, Role::Admin | Role::FrontDesk),
            Access::Clinical(_) => {
                matches!(role, Role::Admin | Role::FrontDesk | Role::Doctor(_))
            }
            Access::Admin => matches!(role, Role::Admin),
        }
    }
}

/// One configured key. Only the key's digest is kept.
#[derive(Clone)]
pub struct ApiKey {
    pub name: Arc<str>,
    pub role: Role,
    digest: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Text that holds keys, e.g. `OPD_API_KEYS`: never printed by `Debug`.
#[derive(Clone)]
pub struct KeyLines(String);

impl FromStr for KeyLines {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<KeyLines, Self::Err> {
        Ok(KeyLines(text.to_owned()))
    }
}

impl fmt::Debug for KeyLines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyLines(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("refusing to listen on {address} without API keys: configure keys with --api-keys-file / OPD_API_KEYS_FILE or OPD_API_KEYS (see config/api-keys.example), or listen on a loopback address such as 127.0.0.1")]
    OpenOnPublicAddress { address: SocketAddr },
    #[error("cannot read API keys file {path}: {message}")]
    KeysFile { path: String, message: String },
    #[error("API keys in {source_name}, line {line}: {message}")]
    Key {
        source_name: String,
        line: usize,
        message: String,
    },
    #[error("invalid rate limit: {0}")]
    RateLimit(String),
    #[error("invalid CORS origin {origin:?}: {message}")]
    CorsOrigin { origin: String, message: String },
    #[error("refusing --cors-origin / OPD_CORS_ORIGINS without API keys: any page those origins serve could book and read patient data through the visitor's browser; configure keys (--api-keys-file / OPD_API_KEYS_FILE or OPD_API_KEYS) or drop the origins")]
    CorsWithoutKeys,
    #[error("API keys not reloaded: {0}")]
    Reload(&'static str),
}

/// Parses key lines `name role[:doctorId] key`, separated by `separator`;
/// blank lines and lines starting with `#` are skipped. Errors name the
/// line and the key's name, never the key.
pub fn parse_keys(
    text: &str,
    separator: char,
    source_name: &str,
) -> Result<Vec<ApiKey>, SecurityError> {
    let mut keys = Vec::new();
    for (index, line) in text.split(separator).enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error = |message: String| SecurityError::Key {
            source_name: source_name.to_owned(),
            line: index + 1,
            message,
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, role, key] = fields[..] else {
            return Err(error(format!(
                "expected three fields `name role[:doctorId] key`, found {}",
                fields.len()
            )));
        };
        if !crate::engine::is_valid_id(name) {
            return Err(error(
                "the name must be 1–64 characters of A–Z, a–z, 0–9, '.', '_' or '-'".into(),
            ));
        }
        let role = role.parse::<Role>().map_err(error)?;
        if key.chars().count() < KEY_LEN_MIN {
            return Err(error(format!(
                "the key of {name:?} is shorter than {KEY_LEN_MIN} characters"
            )));
        }
        // A key travels in the Authorization header, which the gate reads
        // only as visible ASCII: any other character would make a key that
        // loads but can never be presented.
        if !key.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(error(format!(
                "the key of {name:?} has a character that is not visible ASCII (A–Z, a–z, 0–9 and punctuation)"
            )));
        }
        keys.push(ApiKey {
            name: Arc::from(name),
            role,
            digest: Sha256::digest(key.as_bytes()).into(),
        });
    }
    Ok(keys)
}

/// Everything the access middleware needs, built at start-up; the keys
/// can be read again while serving (see [`Security::reload_keys`]).
pub struct Security {
    /// Empty when the server runs open. A reload replaces the whole set at
    /// once, so a request sees either the old keys or the new ones.
    keys: RwLock<Arc<[ApiKey]>>,
    /// Where the keys were read from, to read them again.
    keys_file: Option<PathBuf>,
    inline_keys: Option<KeyLines>,
    /// Fixed at start-up: the published API document depends on it.
    open: bool,
    /// `None` when rate limiting is off.
    rate_limiter: Option<Arc<RateLimiter>>,
    cors: Option<CorsLayer>,
}

impl Security {
    /// Reads keys, rate limits and CORS origins from the configuration.
    /// Without keys the server may only listen on a loopback address, and
    /// allows no CORS origin.
    pub fn from_config(config: &Config) -> Result<Security, SecurityError> {
        let keys = read_keys(config.api_keys_file.as_deref(), config.api_keys.as_ref())?;
        if keys.is_empty() {
            if !config.listen.ip().to_canonical().is_loopback() {
                return Err(SecurityError::OpenOnPublicAddress {
                    address: config.listen,
                });
            }
            // A page the clinic's user visits runs in a browser on this
            // very machine: allowed as an origin, it would act for anyone.
            if !config.cors_origins.is_empty() {
                return Err(SecurityError::CorsWithoutKeys);
            }
            tracing::warn!(
                listen = %config.listen,
                "NO API KEYS CONFIGURED: the API is open to every local process, all callers are anonymous; \
                 configure keys (--api-keys-file or OPD_API_KEYS) before listening beyond loopback"
            );
        } else {
            let mut roles: Vec<String> = keys.iter().map(|key| key.role.to_string()).collect();
            roles.sort();
            roles.dedup();
            tracing::info!(keys = keys.len(), roles = %roles.join(","), "API keys loaded");
        }
        let rate_limiter = match NonZeroU32::new(config.rate_limit_per_second) {
            None => {
                tracing::warn!("rate limiting is off (--rate-limit-per-second 0)");
                None
            }
            Some(per_second) => {
                let burst = NonZeroU32::new(config.rate_limit_burst).ok_or_else(|| {
                    SecurityError::RateLimit("--rate-limit-burst must be at least 1".into())
                })?;
                Some(RateLimiter::new(per_second, burst))
            }
        };
        let cors = cors_layer(&config.cors_origins)?;
        Ok(Security {
            open: keys.is_empty(),
            keys: RwLock::new(keys.into()),
            keys_file: config.api_keys_file.clone(),
            inline_keys: config.api_keys.clone(),
            rate_limiter,
            cors,
        })
    }

    /// No keys, no rate limit, no CORS: for embedding the router in tests.
    pub fn open() -> Security {
        Security {
            keys: RwLock::new(Arc::new([])),
            keys_file: None,
            inline_keys: None,
            open: true,
            rate_limiter: None,
            cors: None,
        }
    }

    /// True when no keys are configured and every caller is anonymous.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Reads the keys file again, with the inline keys (which cannot
    /// change while the process runs), and puts the new set in place of
    /// the old one: keys added to the file work from now on, keys removed
    /// from it stop working. Returns how many keys are in force. On any
    /// error the old keys stay: an unreadable or invalid file, repeated
    /// names or keys, a server started without keys, or a file that would
    /// leave no key at all (opening or closing the API needs a restart).
    pub fn reload_keys(&self) -> Result<usize, SecurityError> {
        if self.open {
            return Err(SecurityError::Reload(
                "the server was started without keys; restart it with keys to turn access control on",
            ));
        }
        if self.keys_file.is_none() {
            return Err(SecurityError::Reload(
                "keys come only from OPD_API_KEYS, which is read at start-up; use --api-keys-file",
            ));
        }
        let keys = read_keys(self.keys_file.as_deref(), self.inline_keys.as_ref())?;
        if keys.is_empty() {
            return Err(SecurityError::Reload(
                "the new keys file holds no key, which would lock every client out",
            ));
        }
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = keys.into();
        Ok(count)
    }

    /// The CORS layer, when origins are configured.
    pub fn cors(&self) -> Option<CorsLayer> {
        self.cors.clone()
    }

    /// The key whose digest matches `presented`. Every digest is compared,
    /// each in constant time, so timing tells nothing about near misses.
    fn key(&self, presented: &str) -> Option<ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        let mut found = None;
        for key in keys.iter() {
            if bool::from(key.digest.ct_eq(&digest)) {
                found = Some(key);
            }
        }
        found.cloned()
    }

    /// Spends one request of the budget of a request that no route takes
    /// (404) or whose method its route does not take (405): the key's, when
    /// it carries a valid one, else its address's. Such answers are cheap,
    /// but a flood of them is throttled like any other.
    fn spend_unrouted(&self, headers: &HeaderMap, address: IpAddr) -> Result<(), ApiError> {
        if self.rate_limiter.is_none() {
            return Ok(());
        }
        let key = bearer(headers)
            .ok()
            .and_then(|presented| self.key(presented));
        match key {
            Some(key) => self.spend(&Client::Key(key.name)),
            None => self.spend(&Client::address(address)),
        }
    }

    /// Spends one request of `client`'s budget, or answers 429.
    fn spend(&self, client: &Client) -> Result<(), ApiError> {
        let Some(limiter) = &self.rate_limiter else {
            return Ok(());
        };
        limiter
            .check(client)
            .map_err(|wait| ApiError::TooManyRequests {
                retry_after_secs: rate_limit::retry_after_secs(wait),
            })
    }
}

/// The keys of the keys file and of the inline key lines together, each
/// name and key at most once.
fn read_keys(file: Option<&Path>, inline: Option<&KeyLines>) -> Result<Vec<ApiKey>, SecurityError> {
    let mut keys = Vec::new();
    if let Some(path) = file {
        keys.extend(read_keys_file(path)?);
    }
    if let Some(KeyLines(text)) = inline {
        keys.extend(parse_keys(text, ';', "OPD_API_KEYS")?);
    }
    check_unique(&keys)?;
    Ok(keys)
}

fn read_keys_file(path: &Path) -> Result<Vec<ApiKey>, SecurityError> {
    let file_error = |message: String| SecurityError::KeysFile {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|error| file_error(error.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            if metadata.permissions().mode() & 0o004 != 0 {
                tracing::warn!(path = %path.display(), "the API keys file is readable by every user: chmod 600 it");
            }
        }
    }
    parse_keys(&text, '\n', &path.display().to_string())
}

fn check_unique(keys: &[ApiKey]) -> Result<(), SecurityError> {
    let mut names = HashSet::new();
    let mut digests = HashSet::new();
    for key in keys {
        let duplicate = |message: String| SecurityError::Key {
            source_name: "the configured keys".into(),
            line: 0,
            message,
        };
        if !names.insert(key.name.clone()) {
            return Err(duplicate(format!("the name {:?} is used twice", key.name)));
        }
        if !digests.insert(key.digest) {
            return Err(duplicate(format!(
                "the key of {:?} is also another key's",
                key.name
            )));
        }
    }
    Ok(())
}

/// A CORS layer for the given origins; `*` alone allows any origin (keys
/// travel in a header, never in cookies, so no credentials are allowed).
fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, SecurityError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        if origins.len() > 1 {
            return Err(SecurityError::CorsOrigin {
                origin: "*".into(),
                message: "`*` allows every origin and cannot be combined with others".into(),
            });
        }
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST, Method::PATCH])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::LOCATION,
                header::LINK,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    ))
}

/// An origin is `scheme://host[:port]`, as browsers send it.
fn parse_origin(origin: &str) -> Result<HeaderValue, SecurityError> {
    let invalid = |message: &str| SecurityError::CorsOrigin {
        origin: origin.to_owned(),
        message: message.to_owned(),
    };
    let uri: Uri = origin
        .parse()
        .map_err(|_| invalid("expected scheme://host[:port]"))?;
    let has_path = uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/");
    if uri.scheme().is_none() || uri.authority().is_none() || has_path || origin.ends_with('/') {
        return Err(invalid(
            "expected scheme://host[:port] with no path or trailing slash",
        ));
    }
    HeaderValue::from_str(origin).map_err(|_| invalid("not a valid header value"))
}

/// The access check, run by the [`edge`](super::edge) for every request
/// before it is routed. It finds a request's rule by matching its path
/// against the rules' route templates with matchit, the matcher axum's
/// router uses, so a path gets the same template here as there.
///
/// It is not a route layer: axum clones a route layer's boxed service, and
/// the layer's own state, for every request, which cost about a tenth of
/// the in-memory booking throughput (see the README's performance
/// section).
pub struct Gate {
    app: AppState,
    templates: matchit::Router<&'static str>,
}

impl Gate {
    pub fn new(app: AppState) -> Gate {
        // In the rules' order, each template once (rules repeat a template
        // for each of its methods).
        let mut seen = HashSet::new();
        let mut templates = matchit::Router::new();
        for (_, template, _) in RULES {
            if seen.insert(*template) {
                templates
                    .insert(*template, *template)
                    .expect("the rules' route templates are valid and do not overlap");
            }
        }
        Gate { app, templates }
    }

    /// Checks the key and the rate limit, narrows doctor keys to their
    /// doctor and records the [`Caller`]; the request goes on, or the
    /// refusal is the answer. A path that no rule names goes on to the
    /// router's 404 once it has spent its caller's rate budget: every route
    /// the router serves has a rule (`http::app` refuses to build
    /// otherwise). An open server first refuses requests that are not
    /// addressed to a loopback name.
    pub async fn admit(&self, request: &mut Request) -> Result<(), Response> {
        match self.check(request) {
            Verdict::Admitted => Ok(()),
            Verdict::Refused(refusal) => Err(refusal),
            Verdict::Narrow {
                subject,
                doctor,
                key,
            } => {
                // Boxed: the reads it may make (of PostgreSQL, say) are
                // large futures, and every request's future would carry
                // their size.
                Box::pin(narrow_to_doctor(self, subject, &doctor, request)).await?;
                record_caller(request, &key);
                Ok(())
            }
        }
    }

    /// What can be decided without reading data.
    fn check(&self, request: &mut Request) -> Verdict {
        let security = &self.app.security;
        // Before anything else: a web page that got a name of its own
        // resolved to 127.0.0.1 (DNS rebinding) reaches an open server only
        // under that name, which this refuses.
        if security.is_open() {
            if let Err(error) = addressed_to_loopback(request) {
                return Verdict::Refused(error.into_response());
            }
        }
        let address = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let Ok(found) = self.templates.at(request.uri().path()) else {
            return match security.spend_unrouted(request.headers(), address) {
                Ok(()) => Verdict::Admitted,
                Err(error) => Verdict::Refused(error.into_response()),
            };
        };
        let route = *found.value;
        let method = request.method();
        let Some(access) = rule(method, route) else {
            if let Err(error) = security.spend_unrouted(request.headers(), address) {
                return Verdict::Refused(error.into_response());
            }
            return Verdict::Refused(no_rule(method, route));
        };

        if access == Access::Public || security.is_open() {
            // Health checks have a budget of their own, so that a flood of
            // other requests from the address (bad keys, unknown paths)
            // leaves them answerable.
            let client = if route == HEALTH_ROUTE {
                Client::health_check(address)
            } else {
                Client::address(address)
            };
            return match security.spend(&client) {
                // No caller recorded reads as anonymous (see `Caller::of`).
                Ok(()) => Verdict::Admitted,
                Err(error) => Verdict::Refused(error.into_response()),
            };
        }

        let key = match bearer(request.headers()) {
            Ok(presented) => security.key(presented),
            Err(()) => None,
        };
        let Some(key) = key else {
            // Failed attempts spend the address's budget, which slows guessing.
            if let Err(error) = security.spend(&Client::address(address)) {
                return Verdict::Refused(error.into_response());
            }
            return Verdict::Refused(unauthorized(
                request.headers().contains_key(header::AUTHORIZATION),
            ));
        };
        if let Err(error) = security.spend(&Client::Key(key.name.clone())) {
            return Verdict::Refused(error.into_response());
        }
        if !access.permits(&key.role) {
            return Verdict::Refused(ApiError::Forbidden.into_response());
        }
        if let (Access::Read(scope) | Access::Clinical(scope), Role::Doctor(doctor)) =
            (access, &key.role)
        {
            let in_path = |name| path_parameter(&found.params, name);
            let subject = match scope {
                DoctorScope::SlotList => Ok(Subject::SlotList),
                DoctorScope::SlotInPath => in_path("slotId").map(Subject::Slot),
                DoctorScope::TokenInPath => in_path("tokenId").map(Subject::Token),
                DoctorScope::DoctorInPath => in_path("doctorId").map(Subject::Doctor),
                DoctorScope::AnyDoctor => {
                    record_caller(request, &key);
                    return Verdict::Admitted;
                }
            };
            return match subject {
                Ok(subject) => Verdict::Narrow {
                    subject,
                    doctor: doctor.clone(),
                    key,
                },
                Err(error) => Verdict::Refused(error.into_response()),
            };
        }
        record_caller(request, &key);
        Verdict::Admitted
    }
}

/// What [`Gate::check`] decided.
enum Verdict {
    Admitted,
    Refused(Response),
    /// A doctor key's read, admitted once it is narrowed to its doctor.
    Narrow {
        subject: Subject,
        doctor: DoctorId,
        key: ApiKey,
    },
}

/// What a doctor key's read is about, as its rule's [`DoctorScope`] finds
/// it; path parameters percent-decoded.
enum Subject {
    SlotList,
    Slot(String),
    Token(String),
    Doctor(String),
}

fn record_caller(request: &mut Request, key: &ApiKey) {
    request.extensions_mut().insert(Caller {
        name: key.name.clone(),
    });
}

/// An open server answers only requests addressed to a loopback name:
/// `localhost`, `127.x.x.x` or `[::1]`, with or without a port, in the
/// `Host` header and in the target of an absolute-form request line.
/// 421 otherwise; 400 for an HTTP/1.1 request without exactly one `Host`
/// header (RFC 9112, section 3.2). An HTTP/1.0 request may omit `Host`:
/// browsers always send it.
fn addressed_to_loopback(request: &Request) -> Result<(), ApiError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ApiError::Malformed(
            "the request has more than one Host header".into(),
        ));
    }
    if let Some(target) = request.uri().authority() {
        if !is_loopback_authority(target.as_str()) {
            return Err(ApiError::MisdirectedRequest);
        }
    }
    match host {
        Some(host) if host.to_str().is_ok_and(is_loopback_authority) => Ok(()),
        Some(_) => Err(ApiError::MisdirectedRequest),
        None if request.version() >= Version::HTTP_11 => Err(ApiError::Malformed(
            "an HTTP/1.1 request must have a Host header".into(),
        )),
        None => Ok(()),
    }
}

/// Whether `authority` (`host[:port]`) names a loopback host: `localhost`
/// in any letter case, an IPv4 address in 127.0.0.0/8, or the bracketed
/// IPv6 loopback address (also as an IPv4-mapped address).
fn is_loopback_authority(authority: &str) -> bool {
    let (is_loopback, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let Some((inside, port)) = bracketed.split_once(']') else {
                return false;
            };
            let address = inside.parse::<Ipv6Addr>();
            (
                address.is_ok_and(|address| IpAddr::V6(address).to_canonical().is_loopback()),
                port,
            )
        }
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            (
                host.eq_ignore_ascii_case("localhost")
                    || host
                        .parse::<Ipv4Addr>()
                        .is_ok_and(|address| address.is_loopback()),
                port,
            )
        }
    };
    let port_is_valid = port.is_empty()
        || port.strip_prefix(':').is_some_and(|digits| {
            (1..=5).contains(&digits.len()) && digits.bytes().all(|byte| byte.is_ascii_digit())
        });
    is_loopback && port_is_valid
}

/// The key of an `Authorization: Bearer <key>` header.
fn bearer(headers: &HeaderMap) -> Result<&str, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(());
    };
    let (scheme, key) = value
        .to_str()
        .map_err(|_| ())?
        .trim()
        .split_once(' ')
        .ok_or(())?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() {
        return Err(());
    }
    Ok(key)
}

/// Checks a doctor key's read against the data's doctor. Resources that do
/// not exist or cannot be parsed are left to the handler (404 or 400).
async fn narrow_to_doctor(
    gate: &Gate,
    subject: Subject,
    doctor: &DoctorId,
    request: &mut Request,
) -> Result<(), Response> {
    let app = &gate.app;
    let other_doctor = || {
        error::problem(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this key may see and act on only its own doctor's slots, tokens and queue",
            Default::default(),
        )
    };
    match subject {
        Subject::SlotList => {
            let Ok(Query(pairs)) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            else {
                return Err(
                    ApiError::Malformed("the query string could not be read".into())
                        .into_response(),
                );
            };
            let asked: Vec<&str> = pairs
                .iter()
                .filter(|(name, _)| name == "doctorId")
                .map(|(_, value)| value.as_str())
                .collect();
            if asked.iter().any(|asked| *asked != doctor.as_str()) {
                return Err(other_doctor());
            }
            if asked.is_empty() {
                add_doctor_filter(request, doctor);
            }
            Ok(())
        }
        Subject::Slot(raw) => {
            let Some(slot) = SlotId::parse(&raw) else {
                return Ok(());
            };
            match app.service.slot_summary(&slot).await {
                Ok(Some(summary)) if summary.doctor != *doctor => Err(other_doctor()),
                Ok(_) => Ok(()),
                Err(error) => Err(ApiError::from(error).into_response()),
            }
        }
        Subject::Doctor(raw) if raw == doctor.as_str() => Ok(()),
        Subject::Doctor(_) => Err(other_doctor()),
        Subject::Token(raw) => {
            let Ok(token) = input::token_id(&raw) else {
                return Ok(());
            };
            match app.service.token(token).await {
                Ok(Some(detail)) if detail.token.doctor != *doctor => Err(other_doctor()),
                Ok(_) => Ok(()),
                Err(error) => Err(ApiError::from(error).into_response()),
            }
        }
    }
}

/// Makes `GET /slots` list only `doctor`'s slots. Doctor ids need no
/// percent-encoding.
fn add_doctor_filter(request: &mut Request, doctor: &DoctorId) {
    let uri = request.uri().clone();
    let path_and_query = match uri.query() {
        Some(query) if !query.is_empty() => format!("{}?{query}&doctorId={doctor}", uri.path()),
        _ => format!("{}?doctorId={doctor}", uri.path()),
    };
    let mut parts = uri.into_parts();
    parts.path_and_query =
        Some(PathAndQuery::from_str(&path_and_query).expect("a valid path plus a valid id"));
    *request.uri_mut() = Uri::from_parts(parts).expect("only the query changed");
}

/// A path parameter of the request, percent-decoded as axum decodes it
/// for the handler.
fn path_parameter(params: &matchit::Params, name: &str) -> Result<String, ApiError> {
    let Some(raw) = params.get(name) else {
        tracing::error!(
            parameter = name,
            "an access rule names a path parameter its route lacks"
        );
        return Err(ApiError::Forbidden);
    };
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|value| value.into_owned())
        .map_err(|_| ApiError::Malformed("the path could not be read".into()))
}

fn unauthorized(sent_a_key: bool) -> Response {
    let mut response = ApiError::Unauthorized.into_response();
    // RFC 6750: no error code when no credentials were sent.
    let challenge = if sent_a_key {
        "Bearer error=\"invalid_token\""
    } else {
        "Bearer"
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// A route without a rule: closed. A known route with other methods gets
/// the 405 that axum would give, with the rules' methods in `Allow`.
fn no_rule(method: &Method, route: &str) -> Response {
    let mut allowed: Vec<&str> = Vec::new();
    for (rule_method, rule_route, _) in RULES {
        if *rule_route == route {
            allowed.push(rule_method.as_str());
            if rule_method == Method::GET {
                allowed.push("HEAD");
            }
        }
    }
    if allowed.is_empty() {
        tracing::error!(%method, route, "no access rule for this route: it stays closed until one is added to auth::RULES");
        return closed("no access rule covers this route");
    }
    let mut response = error::problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this path does not take this method; see the Allow header",
        Default::default(),
    );
    let allow = HeaderValue::from_str(&allowed.join(",")).expect("method names are header text");
    response.headers_mut().insert(header::ALLOW, allow);
    response
}

fn closed(detail: &str) -> Response {
    error::problem(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        detail,
        Default::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Result<Vec<ApiKey>, SecurityError> {
        parse_keys(text, '\n', "test")
    }

    #[test]
    fn key_lines_give_names_roles_and_digests_only() {
        let parsed = keys(
            "# comment\n\n  desk-1 front-desk 0123456789abcdef0123\ndr-a doctor:D1 fedcba9876543210fedc\nboss admin aaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(&*parsed[0].name, "desk-1");
        assert_eq!(parsed[0].role, Role::FrontDesk);
        assert_eq!(parsed[1].role, Role::Doctor(DoctorId::parse("D1").unwrap()));
        assert_eq!(parsed[2].role, Role::Admin);
        let debug = format!("{:?}", parsed[0]);
        assert!(!debug.contains("0123456789abcdef"), "{debug}");
    }

    #[test]
    fn bad_key_lines_are_refused_without_showing_the_key() {
        for (text, expected) in [
            ("desk front-desk short-key-12345", "shorter than 16"),
            ("desk front-desk", "three fields"),
            ("desk nurse 0123456789abcdef", "unknown role"),
            ("desk doctor 0123456789abcdef", "needs a doctor id"),
            ("desk admin:D1 0123456789abcdef", "only the doctor role"),
            ("bad/name viewer 0123456789abcdef", "name must be"),
        ] {
            let error = keys(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("0123456789abcdef"), "{error}");
            assert!(!error.contains("short-key-12345"), "{error}");
        }
    }

    #[test]
    fn keys_that_no_header_can_carry_are_refused() {
        for text in [
            "desk front-desk 0123456789abcdéf",
            "desk front-desk 0123456789abcdef\u{7f}",
            "desk front-desk 0123456789abcdef\u{1}",
        ] {
            let error = keys(text).expect_err(text).to_string();
            assert!(error.contains("not visible ASCII"), "{text}: {error}");
            assert!(!error.contains("0123456789abcd"), "{error}");
        }
    }

    #[test]
    fn loopback_authorities_are_recognised() {
        for loopback in [
            "localhost",
            "LocalHost:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "127.1.2.3:65535",
            "[::1]",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(is_loopback_authority(loopback), "{loopback}");
        }
        for other in [
            "",
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "localhost.",
            "user@localhost",
            "128.0.0.1",
            "10.0.0.1:8080",
            "[::2]",
            "::1",
            "[::1",
            "localhost:",
            "localhost:80x",
            "localhost:123456",
            "127.0.0.1:8080:80",
        ] {
            assert!(!is_loopback_authority(other), "{other}");
        }
    }

    #[test]
    fn duplicate_names_and_keys_are_refused() {
        let same_name = keys("a viewer 0123456789abcdef\na admin fedcba9876543210").unwrap();
        assert!(check_unique(&same_name).is_err());
        let same_key = keys("a viewer 0123456789abcdef\nb admin 0123456789abcdef").unwrap();
        assert!(check_unique(&same_key).is_err());
    }

    #[test]
    fn only_bearer_headers_carry_a_key() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(bearer(&with("Bearer abc")), Ok("abc"));
        assert_eq!(bearer(&with("bearer   abc ")), Ok("abc"));
        assert_eq!(bearer(&with("Basic abc")), Err(()));
        assert_eq!(bearer(&with("Bearer ")), Err(()));
        assert_eq!(bearer(&HeaderMap::new()), Err(()));
    }

    #[test]
    fn every_rule_is_unique_and_heads_follow_gets() {
        let mut seen = HashSet::new();
        for (method, route, _) in RULES {
            assert!(
                seen.insert((method.clone(), *route)),
                "{method} {route} twice"
            );
        }
        assert_eq!(rule(&Method::HEAD, "/slots"), rule(&Method::GET, "/slots"));
        assert_eq!(rule(&Method::DELETE, "/slots"), None);
    }

    #[test]
    fn a_route_without_rules_is_closed_and_a_known_route_allows_only_its_rules() {
        let closed = no_rule(&Method::GET, "/reports");
        assert_eq!(closed.status(), StatusCode::FORBIDDEN);
        let wrong_method = no_rule(&Method::DELETE, "/slots/{slotId}");
        assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong_method.headers()[header::ALLOW], "GET,HEAD,PATCH");
    }

    #[test]
    fn cors_origins_must_be_bare_origins() {
        assert!(cors_layer(&[]).unwrap().is_none());
        assert!(cors_layer(&["https://desk.example.org".into()])
            .unwrap()
            .is_some());
        assert!(cors_layer(&["http://localhost:3000".into()])
            .unwrap()
            .is_some());
        assert!(cors_layer(&["*".into()]).unwrap().is_some());
        for bad in [
            "desk.example.org",
            "https://desk.example.org/",
            "https://x.org/app",
            "*,https://a.org",
        ] {
            let origins: Vec<String> = bad.split(',').map(str::to_owned).collect();
            assert!(cors_layer(&origins).is_err(), "{bad}");
        }
    }
}
