//! Login, refresh-token rotation with reuse detection, logout, and turning a
//! bearer token into an `Actor`.

use rand::distr::{Alphanumeric, SampleString};

use super::{Actor, Service, blocking};
use crate::auth::{self, ACCESS_TTL, Claims, REFRESH_TTL, hash_refresh_token, new_refresh_token};
use crate::error::CoreError;
use crate::ids::{RefreshTokenId, SessionFamilyId, TenantId, UserId};
use crate::model::{Email, Password, Role, Slug};
use crate::ports::{NewRefreshToken, RotateOutcome};

#[derive(Debug, Clone)]
pub struct LoginInput {
    pub tenant: String,
    pub email: String,
    pub password: String,
}

/// What login and refresh return.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Every failure is the same `Unauthorized`, and an unknown tenant or
    /// e-mail still costs one argon2 verification, so neither the answer nor
    /// its timing tells whether an account exists.
    pub async fn login(&self, input: LoginInput) -> Result<TokenPair, CoreError> {
        let slug = Slug::parse(&input.tenant).ok();
        let email = Email::parse(&input.email).ok();
        let tenant = match slug {
            Some(slug) => self.store.tenant_by_slug(&slug).await?,
            None => None,
        };
        let credentials = match (&tenant, email) {
            (Some(t), Some(email)) => self.store.user_credentials(t.id, &email).await?,
            _ => None,
        };
        let hash = match &credentials {
            Some(c) => c.password_hash.clone(),
            None => self.dummy_hash().await?,
        };
        let password = input.password;
        let matches = password.len() <= Password::MAX_LEN
            && blocking(move || auth::verify_password(&password, &hash)).await?;
        let user = match credentials {
            Some(c) if matches && !c.user.disabled => c.user,
            _ => return Err(CoreError::Unauthorized),
        };
        let now = self.clock.now();
        let (refresh_token, hash) = new_refresh_token();
        let token = NewRefreshToken {
            id: RefreshTokenId::new(),
            hash,
            created_at: now,
            expires_at: now + REFRESH_TTL,
        };
        let session = SessionFamilyId::new();
        self.store
            .session_start(user.tenant_id, user.id, session, &token)
            .await?;
        tracing::info!(tenant_id = %user.tenant_id, user_id = %user.id, "login");
        self.pair(user.tenant_id, user.id, user.role, session, refresh_token)
    }

    /// Rotates a refresh token. Presenting a token that was already rotated
    /// (or logged out) revokes its whole family: whoever holds the newer tokens
    /// is logged out too, since one of the two holders is a thief.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, CoreError> {
        let now = self.clock.now();
        let (refresh_token, hash) = new_refresh_token();
        let next = NewRefreshToken {
            id: RefreshTokenId::new(),
            hash,
            created_at: now,
            expires_at: now + REFRESH_TTL,
        };
        let outcome = self
            .store
            .session_rotate(&hash_refresh_token(presented), &next, now)
            .await?;
        match outcome {
            RotateOutcome::Rotated {
                tenant_id,
                user_id,
                family_id,
            } => {
                let user = self.store.user_get(tenant_id, user_id).await?;
                match user {
                    Some(u) if !u.disabled => {
                        self.pair(tenant_id, user_id, u.role, family_id, refresh_token)
                    }
                    _ => {
                        self.store.session_revoke_family(family_id, now).await?;
                        self.session_ended(family_id).await;
                        Err(CoreError::Unauthorized)
                    }
                }
            }
            RotateOutcome::Reused { family_id } => {
                tracing::warn!(family_id = %family_id, "refresh token reused: session family revoked");
                self.session_ended(family_id).await;
                Err(CoreError::Unauthorized)
            }
            RotateOutcome::Expired | RotateOutcome::Unknown => Err(CoreError::Unauthorized),
        }
    }

    /// Ends the session the refresh token belongs to. Idempotent: an unknown
    /// token is not an error, so logout cannot be used to probe tokens.
    pub async fn logout(&self, presented: &str) -> Result<(), CoreError> {
        let ended = self
            .store
            .session_revoke(&hash_refresh_token(presented), self.clock.now())
            .await?;
        if let Some(session) = ended {
            self.session_ended(session).await;
        }
        Ok(())
    }

    /// Verifies an access token and loads its user: a disabled or deleted user,
    /// or a token for a tenant the user is not in, is `Unauthorized`.
    pub async fn authenticate(&self, bearer: &str) -> Result<Actor, CoreError> {
        let claims = self.verify_access_token(bearer)?;
        self.authenticate_verified(&claims).await
    }

    /// The claims of an access token whose signature and expiry check out
    /// (`Unauthorized` otherwise). Says nothing about its user yet.
    pub fn verify_access_token(&self, bearer: &str) -> Result<Claims, CoreError> {
        self.tokens.verify(bearer)
    }

    /// The actor of claims [`Service::verify_access_token`] returned: loads
    /// the user, as [`Service::authenticate`] does.
    pub async fn authenticate_verified(&self, claims: &Claims) -> Result<Actor, CoreError> {
        let user = self
            .cached_user(claims.tid, claims.sub)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(CoreError::Unauthorized)?;
        if let Some(session) = claims.sid
            && self.cached_session_revoked(session).await?
        {
            return Err(CoreError::Unauthorized);
        }
        Ok(Actor {
            tenant_id: user.tenant_id,
            user_id: user.id,
            role: user.role,
        })
    }

    fn pair(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Role,
        session: SessionFamilyId,
        refresh_token: String,
    ) -> Result<TokenPair, CoreError> {
        Ok(TokenPair {
            access_token: self
                .tokens
                .issue(tenant, user, role, session, self.clock.now())?,
            refresh_token,
            expires_in: ACCESS_TTL.num_seconds(),
        })
    }

    async fn dummy_hash(&self) -> Result<String, CoreError> {
        self.dummy_hash
            .get_or_try_init(|| async {
                let pw = Alphanumeric.sample_string(&mut rand::rng(), 24);
                let pw = Password::parse(&pw).map_err(|e| CoreError::Internal(e.message.into()))?;
                blocking(move || auth::hash_password(&pw)).await?
            })
            .await
            .cloned()
    }
}

impl Service {
    /// Computes the dummy hash ahead of the first login, so that even the first
    /// miss after start-up costs what every other miss costs.
    pub async fn warm_up(&self) -> Result<(), CoreError> {
        self.dummy_hash().await.map(drop)
    }
}
