//! Credentials: argon2id password hashes, JWT access tokens and opaque refresh
//! tokens. Pure computation; the use-cases in `service::auth` run the slow
//! parts off the async runtime.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::Expiring;
use crate::error::CoreError;
use crate::ids::{SessionFamilyId, TenantId, UserId};
use crate::model::{Password, Role};

/// How long an access token lives.
pub const ACCESS_TTL: Duration = Duration::minutes(15);
/// How long an unused refresh token lives.
pub const REFRESH_TTL: Duration = Duration::days(30);
const ISSUER: &str = "buildpeer";

/// Hashes a password with argon2id and a fresh salt (PHC string).
pub fn hash_password(password: &Password) -> Result<String, CoreError> {
    Argon2::default()
        .hash_password(password.expose().as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| CoreError::Internal(e.to_string().into()))
}

/// Checks a password against a PHC string; a malformed hash counts as a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), phc)
        .is_ok()
}

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub sub: UserId,
    /// The tenant.
    pub tid: TenantId,
    pub role: Role,
    /// The session (refresh-token family) the token was issued in: ending
    /// the session ends its access tokens too. Absent from tokens issued
    /// before sessions were named in them, which are let through until they
    /// expire (minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<SessionFamilyId>,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

/// Signs and checks access tokens (HS256).
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens verified lately, with their claims. A client sends the same
    /// token with every request while it lives, and verifying it again (two
    /// base64 parts, two JSON documents, an HMAC) costs several times this
    /// lookup. An entry lives a minute at most and never past the token's
    /// expiry, so a hit is as good as a fresh verification.
    verified: Expiring<String, Claims>,
}

/// How long a verified token is remembered at most.
const VERIFIED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys([redacted])")
    }
}

impl TokenKeys {
    /// At least 32 bytes of secret: HS256 is only as strong as its key.
    pub const MIN_SECRET_LEN: usize = 32;

    pub fn new(secret: &SecretSlice<u8>) -> Result<Self, CoreError> {
        let bytes = secret.expose_secret();
        if bytes.len() < Self::MIN_SECRET_LEN {
            return Err(CoreError::Internal(
                format!(
                    "the JWT secret must be at least {} bytes",
                    Self::MIN_SECRET_LEN
                )
                .into(),
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        let verified = Expiring::new(10_000);
        Ok(Self {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            validation,
            verified,
        })
    }

    pub fn issue(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Role,
        session: SessionFamilyId,
        now: DateTime<Utc>,
    ) -> Result<String, CoreError> {
        let claims = Claims {
            sub: user,
            tid: tenant,
            role,
            sid: Some(session),
            iat: now.timestamp(),
            exp: (now + ACCESS_TTL).timestamp(),
            iss: ISSUER.to_owned(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| CoreError::Internal(Box::new(e)))
    }

    /// Verifies signature, issuer and expiry (against the wall clock).
    pub fn verify(&self, token: &str) -> Result<Claims, CoreError> {
        if let Some(claims) = self.verified.get(token) {
            return Ok(claims);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|_| CoreError::Unauthorized)?;
        let left = claims
            .exp
            .saturating_add_unsigned(self.validation.leeway)
            .saturating_sub(Utc::now().timestamp());
        let left = std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0));
        self.verified
            .insert(token.to_owned(), claims.clone(), left.min(VERIFIED_FOR));
        Ok(claims)
    }
}

/// A fresh opaque refresh token and its SHA-256 (only the hash is stored).
pub fn new_refresh_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_refresh_token(&token);
    (token, hash)
}

pub fn hash_refresh_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &[u8]) -> TokenKeys {
        match TokenKeys::new(&SecretSlice::from(secret.to_vec())) {
            Ok(k) => k,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn access_tokens_verify_and_reject_tampering() {
        let k = keys(&[7u8; 32]);
        let (t, u) = (TenantId::new(), UserId::new());
        let token = k
            .issue(t, u, Role::Empleado, SessionFamilyId::new(), Utc::now())
            .unwrap_or_default();
        let claims = k.verify(&token).ok();
        assert_eq!(
            claims
                .as_ref()
                .map(|c| (c.tid, c.sub, c.role, c.sid.is_some())),
            Some((t, u, Role::Empleado, true))
        );
        assert_eq!(k.verify(&token).ok(), claims, "remembered");
        let mut tampered = token.clone();
        let last = if tampered.ends_with('A') { "B" } else { "A" };
        tampered.replace_range(tampered.len() - 1.., last);
        assert!(k.verify(&tampered).is_err(), "tampered after a hit");
        assert!(keys(&[8u8; 32]).verify(&token).is_err(), "other key");
        let expired = k
            .issue(
                t,
                u,
                Role::Admin,
                SessionFamilyId::new(),
                Utc::now() - Duration::hours(1),
            )
            .unwrap_or_default();
        assert!(k.verify(&expired).is_err(), "expired");
        assert!(k.verify("not.a.jwt").is_err());
        assert!(TokenKeys::new(&SecretSlice::from(vec![1u8; 8])).is_err());
    }

    #[test]
    fn passwords_hash_and_verify() {
        let p = Password::parse("obra-segura-2026").ok();
        let hash = p
            .as_ref()
            .and_then(|p| hash_password(p).ok())
            .unwrap_or_default();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("obra-segura-2026", &hash));
        assert!(!verify_password("obra-segura-2027", &hash));
        assert!(!verify_password("x", "not a hash"));
    }

    #[test]
    fn refresh_tokens_are_random_and_hashed() {
        let (a, ha) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(hash_refresh_token(&a), ha);
    }
}
