//! Who may call what, decided once for every service: admin RPCs need the
//! bearer token of `GRPC_ADMIN_TOKEN`; the other RPCs of the service's own
//! API are rate limited per client address. Health and reflection are
//! neither: a probe must always get an answer.
//!
//! The client is the peer's IP address. A header naming the client would be
//! the caller's word; behind a proxy every caller shares the proxy's address,
//! so raise `GRPC_RATE_LIMIT` there or turn it off (0) and limit at the proxy.

use std::{
    collections::HashSet,
    future::Future,
    net::IpAddr,
    num::NonZeroU32,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use orderflow_config::{RateLimit, Secret};
use subtle::ConstantTimeEq as _;
use tonic::{Code, Status, transport::server::TcpConnectInfo};
use tonic_types::{ErrorDetails, StatusExt as _};

/// What a service's [`AccessLayer`] enforces.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// `GRPC_ADMIN_TOKEN`; without it admin RPCs are refused to everyone.
    pub admin_token: Option<Secret>,
    /// Full paths (`/orderflow.inventory.v1.InventoryService/UpsertProduct`).
    pub admin_methods: &'static [&'static str],
    /// Per client address; `None` is no limit.
    pub rate_limit: Option<RateLimit>,
    /// Customer calls in flight at once, over all clients (admission
    /// control); beyond it a call is shed at once. `None` is no limit.
    pub max_in_flight: Option<usize>,
}

/// How long a shed client is told to wait (RetryInfo): about the time a
/// loaded server needs to work off what it holds.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(250);

/// How often addresses that have been quiet long enough to have a full
/// bucket again are forgotten, so the limiter's memory stays bounded.
const FORGET_EVERY: Duration = Duration::from_secs(60);

/// The layer (built by [`crate::GrpcServer::serve`]).
#[derive(Clone)]
pub struct AccessLayer(Arc<Policy>);

struct Policy {
    admin_token: Option<Secret>,
    admin: HashSet<String>,
    /// The service's own non-admin methods.
    limited: HashSet<String>,
    limiter: Option<(Arc<DefaultKeyedRateLimiter<IpAddr>>, RateLimit)>,
    /// Permits for customer calls in flight, and their number.
    admission: Option<(Arc<tokio::sync::Semaphore>, usize)>,
}

impl AccessLayer {
    /// `own_methods`: the paths of the service's own API (what is rate
    /// limited unless it is an admin method).
    ///
    /// # Errors
    /// An admin method that the service does not serve (a typo would leave
    /// the method open).
    pub(crate) fn new(access: Access, own_methods: HashSet<String>) -> anyhow::Result<Self> {
        let admin: HashSet<String> = access
            .admin_methods
            .iter()
            .map(|m| (*m).to_owned())
            .collect();
        if let Some(unknown) = admin.iter().find(|m| !own_methods.contains(*m)) {
            anyhow::bail!("admin method {unknown} is not a method of this service");
        }
        let limited = own_methods.difference(&admin).cloned().collect();
        let limiter = access.rate_limit.and_then(|limit| {
            let per_second = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst).unwrap_or(per_second);
            let limiter = Arc::new(RateLimiter::keyed(
                Quota::per_second(per_second).allow_burst(burst),
            ));
            forget_quiet_clients(Arc::downgrade(&limiter));
            Some((limiter, limit))
        });
        let admission = access
            .max_in_flight
            .map(|n| (Arc::new(tokio::sync::Semaphore::new(n)), n));
        Ok(Self(Arc::new(Policy {
            admin_token: access.admin_token,
            admin,
            limited,
            limiter,
            admission,
        })))
    }
}

/// Prunes the limiter until the server (the last strong reference) is gone.
fn forget_quiet_clients(limiter: Weak<DefaultKeyedRateLimiter<IpAddr>>) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FORGET_EVERY);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(limiter) = limiter.upgrade() else {
                return;
            };
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    });
}

impl Policy {
    /// `Err` is the status to answer instead of calling the method.
    fn check(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<(), Status> {
        if self.admin.contains(path) {
            return self.check_admin(headers);
        }
        if let (Some((limiter, limit)), Some(peer)) = (&self.limiter, peer)
            && self.limited.contains(path)
            && let Err(not_until) = limiter.check_key(&peer)
        {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            return Err(rate_limited(peer, *limit, wait));
        }
        Ok(())
    }

    /// A permit for a customer call (held until it is answered), `None`
    /// for calls outside admission control, or the status that sheds it.
    fn admit(&self, path: &str) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
        match &self.admission {
            Some((permits, limit)) if self.limited.contains(path) => permits
                .clone()
                .try_acquire_owned()
                .map(Some)
                .map_err(|_| shed(*limit)),
            _ => Ok(None),
        }
    }

    fn check_admin(&self, headers: &http::HeaderMap) -> Result<(), Status> {
        let Some(expected) = &self.admin_token else {
            return Err(denied(
                Code::PermissionDenied,
                "ADMIN_RPCS_DISABLED",
                "admin RPCs are disabled on this server: GRPC_ADMIN_TOKEN is not set",
            ));
        };
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match presented {
            None => Err(denied(
                Code::Unauthenticated,
                "ADMIN_TOKEN_REQUIRED",
                "this admin RPC needs the header `authorization: Bearer <GRPC_ADMIN_TOKEN>`",
            )),
            Some(token) if bool::from(token.as_bytes().ct_eq(expected.expose().as_bytes())) => {
                Ok(())
            }
            Some(_) => Err(denied(
                Code::Unauthenticated,
                "ADMIN_TOKEN_INVALID",
                "the bearer token is not this server's admin token",
            )),
        }
    }
}

fn denied(code: Code, reason: &str, message: &str) -> Status {
    let details = ErrorDetails::with_error_info(reason, "orderflow", []);
    Status::with_error_details(code, message.to_owned(), details)
}

/// The rate limit's RESOURCE_EXHAUSTED ([`crate::resource_exhausted`]).
fn rate_limited(peer: IpAddr, limit: RateLimit, wait: Duration) -> Status {
    let description = format!(
        "more than {} requests per second (burst {}) from {peer}",
        limit.per_second, limit.burst
    );
    crate::resource_exhausted(
        &format!("client:{peer}"),
        &description,
        &format!(
            "rate limited: {description}; retry in {} ms",
            wait.as_millis().max(1)
        ),
        wait,
    )
}

/// RESOURCE_EXHAUSTED for a call beyond the admission limit: the server is
/// healthy but busy, so the client retries later (RetryInfo) instead of
/// waiting in a queue that only grows.
fn shed(limit: usize) -> Status {
    let description = format!("more than {limit} calls in flight on this server");
    crate::resource_exhausted(
        "server:in-flight",
        &description,
        &format!(
            "overloaded: {description} (GRPC_MAX_IN_FLIGHT); retry in {} ms",
            SHED_RETRY_AFTER.as_millis()
        ),
        SHED_RETRY_AFTER,
    )
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    policy: Arc<Policy>,
}

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for Guarded<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let peer = req
            .extensions()
            .get::<TcpConnectInfo>()
            .and_then(TcpConnectInfo::remote_addr)
            .map(|a| a.ip());
        let admitted = self
            .policy
            .check(req.uri().path(), req.headers(), peer)
            .and_then(|()| self.policy.admit(req.uri().path()));
        match admitted {
            Ok(None) => Box::pin(self.inner.call(req)),
            Ok(Some(permit)) => {
                let call = self.inner.call(req);
                Box::pin(async move {
                    let answer = call.await;
                    drop(permit);
                    answer
                })
            }
            Err(status) => {
                let response = status.into_http::<ResBody>();
                Box::pin(std::future::ready(Ok(response)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "/pkg.Svc/Admin";
    const OPEN: &str = "/pkg.Svc/Open";

    fn policy(token: Option<&str>, limit: Option<(u32, u32)>) -> AccessLayer {
        AccessLayer::new(
            Access {
                admin_token: token.map(Secret::new),
                admin_methods: &[ADMIN],
                rate_limit: limit.map(|(per_second, burst)| RateLimit { per_second, burst }),
                max_in_flight: None,
            },
            HashSet::from([ADMIN.to_owned(), OPEN.to_owned()]),
        )
        .unwrap()
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    const PEER: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[tokio::test]
    async fn admin_methods_need_the_token() {
        let p = policy(Some("sixteen-chars-token"), None);
        let none = p.0.check(ADMIN, &http::HeaderMap::new(), PEER).unwrap_err();
        assert_eq!(none.code(), Code::Unauthenticated);
        assert_eq!(
            none.get_details_error_info().unwrap().reason,
            "ADMIN_TOKEN_REQUIRED"
        );
        let wrong =
            p.0.check(ADMIN, &bearer("sixteen-chars-tokem"), PEER)
                .unwrap_err();
        assert_eq!(
            wrong.get_details_error_info().unwrap().reason,
            "ADMIN_TOKEN_INVALID"
        );
        assert!(
            p.0.check(ADMIN, &bearer("sixteen-chars-token"), PEER)
                .is_ok()
        );
        // Customer methods need none.
        assert!(p.0.check(OPEN, &http::HeaderMap::new(), PEER).is_ok());
    }

    #[tokio::test]
    async fn without_a_token_admin_methods_are_closed() {
        let p = policy(None, None);
        let status =
            p.0.check(ADMIN, &bearer("anything-at-all-really"), PEER)
                .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("GRPC_ADMIN_TOKEN"),
            "{}",
            status.message()
        );
    }

    #[tokio::test]
    async fn customer_calls_beyond_the_admission_limit_are_shed_with_retry_info() {
        let layer = AccessLayer::new(
            Access {
                admin_token: Some(Secret::new("0123456789abcdef")),
                admin_methods: &[ADMIN],
                rate_limit: None,
                max_in_flight: Some(2),
            },
            HashSet::from([ADMIN.to_owned(), OPEN.to_owned()]),
        )
        .unwrap();
        let policy = &layer.0;
        let first = policy.admit(OPEN).unwrap();
        let second = policy.admit(OPEN).unwrap();
        assert!(first.is_some() && second.is_some());
        let status = policy.admit(OPEN).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status.message().contains("GRPC_MAX_IN_FLIGHT"),
            "{}",
            status.message()
        );
        let retry = status.get_details_retry_info().expect("RetryInfo");
        assert_eq!(retry.retry_delay, Some(SHED_RETRY_AFTER));
        // Admin RPCs, health and reflection are not admission controlled.
        assert!(policy.admit(ADMIN).unwrap().is_none());
        assert!(
            policy
                .admit("/grpc.health.v1.Health/Check")
                .unwrap()
                .is_none()
        );
        // An answered call frees its place.
        drop(first);
        assert!(policy.admit(OPEN).unwrap().is_some());
    }

    #[tokio::test]
    async fn an_unknown_admin_method_is_a_startup_error() {
        let err = AccessLayer::new(
            Access {
                admin_token: None,
                admin_methods: &["/pkg.Svc/Typo"],
                rate_limit: None,
                max_in_flight: None,
            },
            HashSet::from([OPEN.to_owned()]),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("/pkg.Svc/Typo"), "{err}");
    }

    #[tokio::test]
    async fn customer_methods_are_limited_per_client() {
        let p = policy(Some("sixteen-chars-token"), Some((1, 3)));
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)));
        for _ in 0..3 {
            assert!(p.0.check(OPEN, &http::HeaderMap::new(), PEER).is_ok());
        }
        let status = p.0.check(OPEN, &http::HeaderMap::new(), PEER).unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().unwrap();
        assert!(retry.retry_delay.unwrap() > Duration::ZERO);
        let quota = status.get_details_quota_failure().unwrap();
        assert_eq!(quota.violations[0].subject, "client:127.0.0.1");
        // Another client has its own bucket; admin calls and unknown paths
        // (health, reflection) are not limited.
        assert!(p.0.check(OPEN, &http::HeaderMap::new(), other).is_ok());
        assert!(
            p.0.check(ADMIN, &bearer("sixteen-chars-token"), PEER)
                .is_ok()
        );
        assert!(
            p.0.check(
                "/grpc.health.v1.Health/Check",
                &http::HeaderMap::new(),
                PEER
            )
            .is_ok()
        );
    }

    #[tokio::test]
    async fn zero_turns_the_limit_off() {
        let p = policy(None, Some((0, 0)));
        for _ in 0..100 {
            assert!(p.0.check(OPEN, &http::HeaderMap::new(), PEER).is_ok());
        }
    }
}
