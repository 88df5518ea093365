//! Rate limits of the REST API (governor token buckets): per identity and route class, per
//! client IP, and for logins per IP. Kept per node (a node's limits are its own; README says so).
//! The client IP comes from `X-Forwarded-For` only when the peer is a configured trusted proxy.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{Limit, RateLimitsConfig};
use crate::error::ApiError;

type Keyed = RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// What a call is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Read,
    Write,
    Backtest,
    /// Logins: per client IP (there is no identity yet).
    Login,
}

struct Bucket {
    limiter: Keyed,
    limit: Limit,
}

impl Bucket {
    fn new(limit: Limit) -> Bucket {
        let period = Duration::from_secs_f64(1.0 / limit.per_sec);
        let quota = Quota::with_period(period)
            .expect("validated: per_sec > 0")
            .allow_burst(NonZeroU32::new(limit.burst).expect("validated: burst >= 1"));
        Bucket { limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(), limit }
    }

    /// Takes one token for `key`, or says how long to wait.
    fn take(&self, key: &str) -> Result<Headers, Limited> {
        match self.limiter.check_key(&key.to_owned()) {
            Ok(snapshot) => Ok(Headers {
                limit: self.limit.burst,
                remaining: snapshot.remaining_burst_capacity(),
                reset_secs: (f64::from(self.limit.burst - snapshot.remaining_burst_capacity()) / self.limit.per_sec)
                    .ceil() as u64,
            }),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(Limited { retry_after: wait, limit: self.limit.burst })
            }
        }
    }
}

/// The `RateLimit-*` values of an allowed call.
#[derive(Debug, Clone, Copy)]
pub struct Headers {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
}

impl Headers {
    pub fn apply(&self, h: &mut HeaderMap) {
        let set = |h: &mut HeaderMap, name: &'static str, v: String| {
            h.insert(HeaderName::from_static(name), HeaderValue::from_str(&v).expect("numbers are valid headers"));
        };
        set(h, "ratelimit-limit", self.limit.to_string());
        set(h, "ratelimit-remaining", self.remaining.to_string());
        set(h, "ratelimit-reset", self.reset_secs.to_string());
    }
}

/// A refused call: 429 with `Retry-After` and `RateLimit-*`.
#[derive(Debug)]
pub struct Limited {
    retry_after: Duration,
    limit: u32,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let secs = self.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut resp = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests: retry after {secs} s"),
        )
        .into_response();
        let h = resp.headers_mut();
        h.insert("retry-after", HeaderValue::from(secs));
        Headers { limit: self.limit, remaining: 0, reset_secs: secs }.apply(h);
        resp
    }
}

/// Every limiter of a node.
pub struct RateLimits {
    enabled: bool,
    read: Bucket,
    write: Bucket,
    backtest: Bucket,
    login: Bucket,
    per_ip: Bucket,
    trusted: Vec<ipnet::IpNet>,
}

impl RateLimits {
    pub fn new(cfg: &RateLimitsConfig) -> RateLimits {
        RateLimits {
            enabled: cfg.enabled,
            read: Bucket::new(cfg.read),
            write: Bucket::new(cfg.write),
            backtest: Bucket::new(cfg.backtest),
            login: Bucket::new(cfg.login),
            per_ip: Bucket::new(cfg.per_ip),
            trusted: cfg
                .trusted_proxies
                .iter()
                .map(|p| {
                    p.parse::<ipnet::IpNet>()
                        .unwrap_or_else(|_| ipnet::IpNet::from(p.parse::<IpAddr>().expect("validated")))
                })
                .collect(),
        }
    }

    /// Counts a call of `class` by `identity` (none for logins) from `ip`.
    pub fn check(&self, class: Class, identity: Option<&str>, ip: Option<IpAddr>) -> Result<Option<Headers>, Limited> {
        if !self.enabled {
            return Ok(None);
        }
        let ip = ip.map(|i| i.to_string());
        if let Some(ip) = &ip {
            self.per_ip.take(ip)?;
        }
        let bucket = match class {
            Class::Read => &self.read,
            Class::Write => &self.write,
            Class::Backtest => &self.backtest,
            Class::Login => &self.login,
        };
        match (class, identity, &ip) {
            (Class::Login, _, Some(ip)) => bucket.take(ip).map(Some),
            (_, Some(id), _) => bucket.take(id).map(Some),
            _ => Ok(None),
        }
    }

    /// The client's address: the peer, or — when the peer is a trusted proxy — the last address in
    /// `X-Forwarded-For` that is not a trusted proxy itself.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        Some(forwarded.into_iter().rev().find(|a| !self.trusted(*a)).unwrap_or(peer))
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// Forgets idle buckets (memory stays bounded by recent callers).
    pub fn prune(&self) {
        for b in [&self.read, &self.write, &self.backtest, &self.login, &self.per_ip] {
            b.limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> RateLimits {
        RateLimits::new(&RateLimitsConfig {
            enabled: true,
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            read: Limit { per_sec: 1.0, burst: 2 },
            write: Limit { per_sec: 1.0, burst: 2 },
            backtest: Limit { per_sec: 1.0, burst: 1 },
            login: Limit { per_sec: 0.1, burst: 1 },
            per_ip: Limit { per_sec: 100.0, burst: 100 },
        })
    }

    #[test]
    fn buckets_refuse_past_the_burst_per_identity() {
        let l = limits(&[]);
        assert!(l.check(Class::Read, Some("a"), None).is_ok());
        assert!(l.check(Class::Read, Some("a"), None).is_ok());
        let refused = l.check(Class::Read, Some("a"), None).unwrap_err();
        assert!(refused.retry_after > Duration::ZERO);
        assert!(l.check(Class::Read, Some("b"), None).is_ok(), "another identity has its own bucket");
        let ip = Some("127.0.0.9".parse().unwrap());
        assert!(l.check(Class::Login, None, ip).is_ok());
        assert!(l.check(Class::Login, None, ip).is_err(), "logins per IP");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "203.0.113.7, 10.0.0.2".parse().unwrap());
        let proxy: SocketAddr = "10.0.0.1:4000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.1:4000".parse().unwrap();
        let l = limits(&["10.0.0.0/8"]);
        assert_eq!(l.client_ip(Some(proxy), &h), Some("203.0.113.7".parse().unwrap()));
        assert_eq!(l.client_ip(Some(stranger), &h), Some("198.51.100.1".parse().unwrap()), "not a trusted proxy");
        assert_eq!(limits(&[]).client_ip(Some(proxy), &h), Some("10.0.0.1".parse().unwrap()));
    }
}
