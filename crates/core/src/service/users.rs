//! User administration inside a tenant.

use super::{Actor, Service, blocking};
use crate::auth::hash_password;
use crate::error::{Conflict, CoreError, Invalid, StoreError};
use crate::ids::UserId;
use crate::model::{Email, Name, Password, Role, User};
use crate::pagination::{Page, PageRequest};
use crate::policy::TenantAction;
use crate::ports::{IdempotencyKey, NewUser, UserPatch};
use crate::validate;

#[derive(Debug, Clone)]
pub struct CreateUserInput {
    pub email: String,
    pub password: String,
    pub name: String,
    pub role: String,
    /// The client's `Idempotency-Key`: a retry with the same key and body
    /// answers with the user the first request created. The password is
    /// not part of what is compared (it is never kept, not even hashed
    /// fast), so a retry with another password replays the first user.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UpdateUserInput {
    pub name: Option<String>,
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

impl Service {
    pub async fn me(&self, actor: &Actor) -> Result<User, CoreError> {
        self.cached_user(actor.tenant_id, actor.user_id)
            .await?
            .map(std::sync::Arc::unwrap_or_clone)
            .ok_or(CoreError::NotFound)
    }

    /// The user and whether this request created it (`false`: an
    /// idempotent replay of an earlier one).
    pub async fn create_user(
        &self,
        actor: &Actor,
        input: CreateUserInput,
    ) -> Result<(User, bool), CoreError> {
        self.require(actor, TenantAction::ManageUsers)?;
        let (email, password, name, role, idempotency_key) = validate!(
            email = Email::parse(&input.email),
            password = Password::parse(&input.password),
            name = Name::parse(&input.name),
            role = Role::parse(&input.role),
            idempotency_key = input
                .idempotency_key
                .as_deref()
                .map(super::parse_idempotency_key)
                .transpose(),
        )?;
        let idempotency = idempotency_key.map(|key| IdempotencyKey {
            request_hash: super::request_digest(&[
                Some(email.as_str()),
                Some(name.as_str()),
                Some(role.as_str()),
            ]),
            key,
        });
        let password_hash = blocking(move || hash_password(&password)).await??;
        let user = NewUser {
            id: UserId::new(),
            email,
            name,
            role,
            password_hash,
            created_at: self.clock.now(),
        };
        let outcome = self
            .store
            .user_create(actor.tenant_id, &user, actor.user_id, idempotency.as_ref())
            .await;
        match outcome {
            Ok(outcome) => super::replayed(outcome),
            Err(StoreError::Conflict(Conflict::UserEmail)) => Err(CoreError::conflict(
                "conflict",
                "a user with that e-mail already exists in this tenant",
            )),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list_users(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<User>, CoreError> {
        self.require(actor, TenantAction::ReadUsers)?;
        let rows = self.store.user_list(actor.tenant_id, page).await?;
        Ok(Page::from_rows(rows, page, |u| u.id.as_uuid()))
    }

    /// Anyone may read themselves; reading others needs `ReadUsers`.
    pub async fn get_user(&self, actor: &Actor, id: UserId) -> Result<User, CoreError> {
        if id != actor.user_id {
            self.require(actor, TenantAction::ReadUsers)?;
        }
        self.cached_user(actor.tenant_id, id)
            .await?
            .map(std::sync::Arc::unwrap_or_clone)
            .ok_or(CoreError::NotFound)
    }

    /// An admin may not demote or disable itself: that is how a tenant loses
    /// its last admin.
    pub async fn update_user(
        &self,
        actor: &Actor,
        id: UserId,
        input: UpdateUserInput,
    ) -> Result<User, CoreError> {
        self.require(actor, TenantAction::ManageUsers)?;
        let (name, role) = validate!(
            name = input.name.as_deref().map(Name::parse).transpose(),
            role = input.role.as_deref().map(Role::parse).transpose(),
        )?;
        // Existence first: a foreign id is 404 before anything else is said.
        if self.store.user_get(actor.tenant_id, id).await?.is_none() {
            return Err(CoreError::NotFound);
        }
        if id == actor.user_id {
            if role.is_some_and(|r| r != Role::Admin) {
                return Err(CoreError::invalid(
                    "role",
                    Invalid::new("self_demotion", "an admin cannot change its own role"),
                ));
            }
            if input.disabled == Some(true) {
                return Err(CoreError::invalid(
                    "disabled",
                    Invalid::new("self_disable", "an admin cannot disable itself"),
                ));
            }
        }
        let patch = UserPatch {
            name,
            role,
            disabled: input.disabled,
        };
        let updated = self
            .store
            .user_update(actor.tenant_id, id, &patch, self.clock.now())
            .await;
        self.invalidate_user(actor.tenant_id, id).await;
        updated?.ok_or(CoreError::NotFound)
    }
}
