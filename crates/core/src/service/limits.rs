//! Rate limits: per user and per tenant on every authenticated request, and
//! per account and per client IP on login. GCRA through the `RateLimiter`
//! port (shared by every replica when it is Redis). A limiter that fails
//! lets the request through: limits protect the service, they must not take
//! it down.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Service;
use crate::auth::Claims;
use crate::cache::{CacheKey, RateDecision, RateLimiter, RateQuota};

/// The quotas (a quota with a zero is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub user: RateQuota,
    pub tenant: RateQuota,
    /// Login attempts per tenant and e-mail.
    pub login_account: RateQuota,
    /// Login attempts per client IP address.
    pub login_ip: RateQuota,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            user: RateQuota {
                per_minute: 1200,
                burst: 200,
            },
            tenant: RateQuota {
                per_minute: 20_000,
                burst: 2000,
            },
            login_account: RateQuota {
                per_minute: 10,
                burst: 10,
            },
            login_ip: RateQuota {
                per_minute: 300,
                burst: 100,
            },
        }
    }
}

pub(super) struct Limiting {
    limiter: Option<Arc<dyn RateLimiter>>,
    limits: RateLimits,
    prefix: String,
}

impl Limiting {
    pub(super) fn off() -> Self {
        Self {
            limiter: None,
            limits: RateLimits::default(),
            prefix: "bp".into(),
        }
    }
}

/// One quota's verdict on a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyDecision {
    /// `user`, `tenant`, `login_account`, `login_ip`.
    pub policy: &'static str,
    pub quota: RateQuota,
    pub decision: RateDecision,
}

/// Every quota checked for one request, for the response headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateStatus {
    pub checked: Vec<PolicyDecision>,
}

impl RateStatus {
    pub fn allowed(&self) -> bool {
        self.checked.iter().all(|c| c.decision.allowed)
    }

    /// How long a refused client should wait.
    pub fn retry_after(&self) -> Duration {
        self.checked
            .iter()
            .filter(|c| !c.decision.allowed)
            .map(|c| c.decision.retry_after)
            .max()
            .unwrap_or_default()
    }

    /// The quota closest to refusing (the refused one, if any).
    pub fn tightest(&self) -> Option<&PolicyDecision> {
        self.checked
            .iter()
            .min_by_key(|c| (c.decision.allowed, c.decision.remaining))
    }
}

impl Service {
    /// Sets the limiter and the quotas.
    pub fn with_rate_limits(
        mut self,
        limiter: Arc<dyn RateLimiter>,
        limits: RateLimits,
        prefix: &str,
    ) -> Self {
        self.limits = Arc::new(Limiting {
            limiter: Some(limiter),
            limits,
            prefix: prefix.to_owned(),
        });
        self
    }

    /// Counts one request of the bearer of a verified access token against
    /// its user's and its tenant's quotas. `None` when limits are off. It
    /// needs only the token's claims: a refused request costs no database
    /// query.
    pub async fn rate_limit_request(&self, claims: &Claims) -> Option<RateStatus> {
        let limiting = &self.limits;
        limiting.limiter.as_ref()?;
        let prefix = &limiting.prefix;
        let user = CacheKey::tenant(prefix, claims.tid, "rl", format_args!("u:{}", claims.sub));
        let tenant = CacheKey::tenant(prefix, claims.tid, "rl", "t");
        let checks = [
            ("user", user, limiting.limits.user),
            ("tenant", tenant, limiting.limits.tenant),
        ];
        Some(self.check_all(checks).await)
    }

    /// Counts one login attempt against the account's and the client
    /// address's quotas (before the password is checked, so a guesser is
    /// slowed down whether or not it guesses right).
    pub async fn rate_limit_login(
        &self,
        tenant: &str,
        email: &str,
        ip: Option<IpAddr>,
    ) -> Option<RateStatus> {
        let limiting = &self.limits;
        limiting.limiter.as_ref()?;
        let prefix = &limiting.prefix;
        let mut h = Sha256::new();
        h.update(tenant.trim().to_lowercase().as_bytes());
        h.update(b"\0");
        h.update(email.trim().to_lowercase().as_bytes());
        let account = hex::encode(&h.finalize()[..16]);
        let ip = ip.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let checks = [
            (
                "login_account",
                CacheKey::global(prefix, "rl:login", account),
                limiting.limits.login_account,
            ),
            (
                "login_ip",
                CacheKey::global(prefix, "rl:ip", ip),
                limiting.limits.login_ip,
            ),
        ];
        Some(self.check_all(checks).await)
    }

    /// Checks quotas in order and stops at the first refusal (a refused
    /// request counts against no later quota).
    async fn check_all<const N: usize>(
        &self,
        checks: [(&'static str, CacheKey, RateQuota); N],
    ) -> RateStatus {
        let mut status = RateStatus::default();
        let Some(limiter) = &self.limits.limiter else {
            return status;
        };
        for (policy, key, quota) in checks {
            if quota.is_off() {
                continue;
            }
            let decision = match limiter.check(&key, quota).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, policy, "rate limiter failed; request let through");
                    continue;
                }
            };
            status.checked.push(PolicyDecision {
                policy,
                quota,
                decision,
            });
            if !decision.allowed {
                metrics::counter!("rate_limited_total", "policy" => policy).increment(1);
                break;
            }
        }
        status
    }
}
