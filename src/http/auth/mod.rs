//! Who may call what: API keys with roles, each route's access, and the
//! gate that enforces both together with the rate limit.
//!
//! - [`keys`]: key lines, the key set and its reload (`SIGHUP`), and
//!   finding the key a request presents (`Authorization: Bearer <key>`).
//!   A caller that passes gets a [`Caller`] carrying the key's *name*
//!   (never the key), which the engine records as the actor of every
//!   change.
//! - [`access`]: roles, [`Access`] and the table of every route's access.
//!   A route's access is declared where the route is registered (see
//!   [`Routes`](crate::http::routes::Routes)), so no route is served
//!   without one; a method that a route's rules do not name gets 405.
//! - [`gate`]: the check the edge runs before routing.
//!
//! [`Security`] holds what the gate needs at run time: the keys, the rate
//! limiter (see [`rate_limit`]) and the CORS
//! layer (see [`cors`]), built from [`Settings`].
//!
//! Without keys the server runs open, every caller anonymous; that is
//! allowed only on a loopback address, without CORS, and for requests
//! addressed to a loopback name (see [`Security::new`] and [`Gate`]).

pub mod access;
pub mod gate;
pub mod keys;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::HeaderMap;
use tower_http::cors::CorsLayer;

pub use access::{Access, AccessRules, Caller, DoctorScope, Role};
pub use gate::Gate;
pub use keys::{parse_keys, ApiKey, KEY_LEN_MIN};

use super::cors::{self, InvalidOrigin};
use super::error::ApiError;
use super::rate_limit::{self, Client, RateLimiter};
use keys::{bearer, KeySet};

/// The access settings the application gives the HTTP layer at start-up.
/// No `Debug`: the inline key lines hold keys.
pub struct Settings {
    /// Where the server listens: without keys, it must be a loopback
    /// address.
    pub listen: SocketAddr,
    /// A keys file, one key per line; read again on
    /// [`Security::reload_keys`].
    pub keys_file: Option<PathBuf>,
    /// Key lines as in the keys file, separated by `;`.
    pub inline_keys: Option<String>,
    /// Requests a second per client; 0 turns rate limiting off.
    pub rate_limit_per_second: u32,
    /// Requests a client may send at once before the rate applies.
    pub rate_limit_burst: u32,
    /// Origins whose web pages may call the API; empty for no CORS.
    pub cors_origins: Vec<String>,
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
    #[error(transparent)]
    CorsOrigin(#[from] InvalidOrigin),
    #[error("refusing --cors-origin / OPD_CORS_ORIGINS without API keys: any page those origins serve could book and read patient data through the visitor's browser; configure keys (--api-keys-file / OPD_API_KEYS_FILE or OPD_API_KEYS) or drop the origins")]
    CorsWithoutKeys,
    #[error("API keys not reloaded: {0}")]
    Reload(&'static str),
}

/// Everything the gate needs, built at start-up; the keys can be read
/// again while serving (see [`Security::reload_keys`]).
pub struct Security {
    keys: KeySet,
    /// Fixed at start-up: the published API document depends on it.
    open: bool,
    /// `None` when rate limiting is off.
    rate_limiter: Option<Arc<RateLimiter>>,
    cors: Option<CorsLayer>,
}

impl Security {
    /// Reads the keys and checks the rate limit and CORS origins. Without
    /// keys the server may only listen on a loopback address, and allows
    /// no CORS origin.
    pub fn new(settings: Settings) -> Result<Security, SecurityError> {
        let keys = KeySet::read(settings.keys_file, settings.inline_keys)?;
        let current = keys.current();
        if current.is_empty() {
            if !settings.listen.ip().to_canonical().is_loopback() {
                return Err(SecurityError::OpenOnPublicAddress {
                    address: settings.listen,
                });
            }
            // A page the clinic's user visits runs in a browser on this
            // very machine: allowed as an origin, it would act for anyone.
            if !settings.cors_origins.is_empty() {
                return Err(SecurityError::CorsWithoutKeys);
            }
            tracing::warn!(
                listen = %settings.listen,
                "NO API KEYS CONFIGURED: the API is open to every local process, all callers are anonymous; \
                 configure keys (--api-keys-file or OPD_API_KEYS) before listening beyond loopback"
            );
        } else {
            let mut roles: Vec<String> = current.iter().map(|key| key.role.to_string()).collect();
            roles.sort();
            roles.dedup();
            tracing::info!(keys = current.len(), roles = %roles.join(","), "API keys loaded");
        }
        let rate_limiter = match NonZeroU32::new(settings.rate_limit_per_second) {
            None => {
                tracing::warn!("rate limiting is off (--rate-limit-per-second 0)");
                None
            }
            Some(per_second) => {
                let burst = NonZeroU32::new(settings.rate_limit_burst).ok_or_else(|| {
                    SecurityError::RateLimit("--rate-limit-burst must be at least 1".into())
                })?;
                Some(RateLimiter::new(per_second, burst))
            }
        };
        let cors = cors::layer(&settings.cors_origins)?;
        Ok(Security {
            open: current.is_empty(),
            keys,
            rate_limiter,
            cors,
        })
    }

    /// No keys, no rate limit, no CORS: for embedding the router in tests.
    pub fn open() -> Security {
        Security {
            keys: KeySet::none(),
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
        self.keys.reload()
    }

    /// The configured key a request presents, if any: for a route that
    /// tells the caller about its own key (the gate has already admitted
    /// the request).
    pub fn presented_key(&self, headers: &HeaderMap) -> Option<ApiKey> {
        bearer(headers)
            .ok()
            .and_then(|presented| self.key(presented))
    }

    /// The CORS layer, when origins are configured.
    pub fn cors(&self) -> Option<CorsLayer> {
        self.cors.clone()
    }

    /// The configured key that `presented` is, if any.
    fn key(&self, presented: &str) -> Option<ApiKey> {
        self.keys.find(presented)
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
