//! Rate limits: per user and per tenant on every authenticated API request,
//! and per account and per client IP on login. GCRA through the
//! `RateLimiter` port (shared by every replica when it is Redis). A limiter
//! that fails lets the request through: limits protect the service, they
//! must not take it down.
//!
//! Uploads are not API calls: a phone sending 50 photos at once makes
//! hundreds of tus requests a minute. Data requests (tus PATCH and HEAD,
//! signed PUTs and GETs, the download redirects) count against no request
//! quota; what protects the service from them is a bound on the uploads in
//! flight per user and per tenant in this process ([`Service::upload_slot`]),
//! each in-flight PATCH or signed PUT holding one place.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::Service;
use crate::auth::Claims;
use crate::cache::{CacheKey, RateDecision, RateLimiter, RateQuota};
use crate::ids::{TenantId, UserId};

/// The quotas (a quota with a zero is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub user: RateQuota,
    pub tenant: RateQuota,
    /// Login attempts per tenant and e-mail.
    pub login_account: RateQuota,
    /// Login attempts per client IP address.
    pub login_ip: RateQuota,
    /// Uploads in flight at once per user, in one process (0: no limit).
    pub uploads_per_user: u32,
    /// Uploads in flight at once per tenant, in one process (0: no limit).
    pub uploads_per_tenant: u32,
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
            uploads_per_user: 64,
            uploads_per_tenant: 512,
        }
    }
}

pub(super) struct Limiting {
    limiter: Option<Arc<dyn RateLimiter>>,
    limits: RateLimits,
    prefix: String,
    /// Uploads in flight per user and per tenant (entries at zero removed).
    in_flight: Arc<Mutex<HashMap<Holder, u32>>>,
}

impl Limiting {
    pub(super) fn off() -> Self {
        Self {
            limiter: None,
            limits: RateLimits::default(),
            prefix: "bp".into(),
            in_flight: Arc::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Holder {
    User(UserId),
    Tenant(TenantId),
}

/// One place among the uploads in flight, given back when dropped.
#[derive(Debug)]
pub struct UploadSlot {
    in_flight: Arc<Mutex<HashMap<Holder, u32>>>,
    holders: Vec<Holder>,
    /// Each bound checked: (policy, limit, places left after this one).
    pub checked: Vec<(&'static str, u32, u32)>,
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut map = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for holder in &self.holders {
            if let Some(n) = map.get_mut(holder) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(holder);
                }
            }
        }
    }
}

/// An upload refused: this many were in flight already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadsBusy {
    /// `uploads_user` or `uploads_tenant`.
    pub policy: &'static str,
    pub limit: u32,
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
            in_flight: Arc::default(),
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

    /// Takes a place for one upload in flight (a tus PATCH, a signed PUT)
    /// in `tenant`, and of `user` when known (a signed URL names no user),
    /// or says which bound refused it. Counted in this process: it protects
    /// this process's memory, connections and disk, which is what an upload
    /// uses.
    pub fn upload_slot(
        &self,
        tenant: TenantId,
        user: Option<UserId>,
    ) -> Result<UploadSlot, UploadsBusy> {
        take_slot(&self.limits, tenant, user)
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

/// See [`Service::upload_slot`].
fn take_slot(
    limiting: &Limiting,
    tenant: TenantId,
    user: Option<UserId>,
) -> Result<UploadSlot, UploadsBusy> {
    let limits = &limiting.limits;
    let user = user.map(|user| ("uploads_user", Holder::User(user), limits.uploads_per_user));
    let bounds: Vec<_> = user
        .into_iter()
        .chain([(
            "uploads_tenant",
            Holder::Tenant(tenant),
            limits.uploads_per_tenant,
        )])
        .collect();
    let in_flight = &limiting.in_flight;
    let mut map = in_flight.lock().unwrap_or_else(PoisonError::into_inner);
    let mut checked = Vec::with_capacity(2);
    for &(policy, holder, limit) in &bounds {
        if limit == 0 {
            continue;
        }
        let now = map.get(&holder).copied().unwrap_or(0);
        if now >= limit {
            metrics::counter!("rate_limited_total", "policy" => policy).increment(1);
            return Err(UploadsBusy { policy, limit });
        }
        checked.push((policy, limit, limit - now - 1));
    }
    let holders: Vec<Holder> = bounds
        .iter()
        .filter(|(_, _, limit)| *limit > 0)
        .map(|(_, holder, _)| *holder)
        .collect();
    for holder in &holders {
        *map.entry(*holder).or_insert(0) += 1;
    }
    Ok(UploadSlot {
        in_flight: in_flight.clone(),
        holders,
        checked,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn upload_slots_are_bounded_and_given_back() {
        let limiting = Limiting {
            limits: RateLimits {
                uploads_per_user: 2,
                uploads_per_tenant: 3,
                ..RateLimits::default()
            },
            ..Limiting::off()
        };
        let (t, other) = (
            TenantId::from_uuid(uuid::Uuid::now_v7()),
            TenantId::from_uuid(uuid::Uuid::now_v7()),
        );
        let (a, b) = (
            UserId::from_uuid(uuid::Uuid::now_v7()),
            UserId::from_uuid(uuid::Uuid::now_v7()),
        );
        let slot = |tenant, user| take_slot(&limiting, tenant, Some(user));
        let a1 = slot(t, a).unwrap();
        assert_eq!(
            a1.checked,
            [("uploads_user", 2, 1), ("uploads_tenant", 3, 2)]
        );
        let a2 = slot(t, a).unwrap();
        assert_eq!(slot(t, a).unwrap_err().policy, "uploads_user");
        let b1 = slot(t, b).unwrap();
        assert_eq!(slot(t, b).unwrap_err().policy, "uploads_tenant");
        // Another tenant is not affected; a place given back is free again.
        assert!(slot(other, UserId::from_uuid(uuid::Uuid::now_v7())).is_ok());
        drop(a1);
        assert!(slot(t, b).is_ok());
        drop(a2);
        // Without a user (a signed PUT) only the tenant's bound applies.
        let anonymous = take_slot(&limiting, t, None).unwrap();
        assert_eq!(anonymous.checked, [("uploads_tenant", 3, 1)]);
        let second = take_slot(&limiting, t, None).unwrap();
        assert_eq!(
            take_slot(&limiting, t, None).unwrap_err().policy,
            "uploads_tenant"
        );
        drop((anonymous, second));
        drop(b1);
        assert!(limiting.in_flight.lock().unwrap().is_empty());
    }
}
