//! Per-client rate limiting: a keyed GCRA limiter (the `governor` crate)
//! with one bucket per API key, or per client address when a request
//! carries no valid key (open mode, public routes, failed logins, unknown
//! paths). Health checks spend a bucket of their own per address, so that
//! no flood of other requests from an address makes its health checks
//! fail.
//!
//! Every bucket refills at `per_second` requests a second and holds at most
//! `burst` requests. A refused request is answered 429 with `Retry-After`
//! by the gate ([`super::auth::Gate`]).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

/// How often buckets that have refilled completely are forgotten, so the
/// limiter's memory follows the number of recent clients, not all clients
/// ever seen.
const FORGET_FULL_BUCKETS_EVERY: Duration = Duration::from_secs(60);

/// Whose budget a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// An authenticated API key, by its name.
    Key(Arc<str>),
    /// A client address; IPv6 addresses are cut to their /64 network, since
    /// one host usually holds a whole /64.
    Address(IpAddr),
    /// Health checks from a client address (cut as for `Address`).
    HealthCheck(IpAddr),
}

impl Client {
    pub fn address(address: IpAddr) -> Client {
        Client::Address(network(address))
    }

    pub fn health_check(address: IpAddr) -> Client {
        Client::HealthCheck(network(address))
    }
}

/// The address itself for IPv4, its /64 network for IPv6.
fn network(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<Client>,
    clock: DefaultClock,
}

impl RateLimiter {
    /// `per_second` requests a second per client, at most `burst` at once.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Arc<RateLimiter> {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        let clock = DefaultClock::default();
        let limiter = Arc::new(RateLimiter {
            limiter: DefaultKeyedRateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
        });
        // Outside a runtime (unit tests) there is nothing to clean up for.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(forget_full_buckets(Arc::downgrade(&limiter)));
        }
        limiter
    }

    /// Spends one request of `client`'s budget, or says how long to wait.
    pub fn check(&self, client: &Client) -> Result<(), Duration> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// How many clients have a bucket that is not full.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }
}

/// Whole seconds to put in `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// Runs until the limiter is dropped with the application.
async fn forget_full_buckets(limiter: Weak<RateLimiter>) {
    let mut interval = tokio::time::interval(FORGET_FULL_BUCKETS_EVERY);
    interval.tick().await;
    loop {
        interval.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.limiter.retain_recent();
        limiter.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn ipv6_clients_share_their_64_bit_network() {
        let a = Client::address("2001:db8:1:2::1".parse().unwrap());
        let b = Client::address("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = Client::address("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = Client::address("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(mapped, Client::Address("10.0.0.1".parse().unwrap()));
        let health = Client::health_check("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(
            health,
            Client::HealthCheck("2001:db8:1:2::".parse().unwrap())
        );
    }

    #[test]
    fn an_address_spends_its_health_checks_apart_from_its_other_requests() {
        let limiter = RateLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(1).unwrap());
        let address: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(limiter.check(&Client::address(address)).is_ok());
        assert!(limiter.check(&Client::address(address)).is_err());
        assert!(limiter.check(&Client::health_check(address)).is_ok());
    }

    #[test]
    fn a_client_past_its_burst_waits_while_others_do_not() {
        let limiter = RateLimiter::new(NonZeroU32::new(1).unwrap(), NonZeroU32::new(2).unwrap());
        let key = Client::Key(Arc::from("desk-1"));
        assert!(limiter.check(&key).is_ok());
        assert!(limiter.check(&key).is_ok());
        let wait = limiter.check(&key).expect_err("the burst is spent");
        assert!(wait <= Duration::from_secs(1));
        assert!(limiter.check(&Client::Key(Arc::from("desk-2"))).is_ok());
    }
}
