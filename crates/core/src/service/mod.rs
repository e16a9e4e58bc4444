//! Use-cases: the one place where every read and mutation passes, so policy,
//! validation and (later) auditing live here and nowhere else. Drivers (HTTP,
//! CLI, worker) call these and nothing below them.

mod auth;
mod projects;
mod tenants;
mod users;

use std::sync::Arc;

use crate::auth::TokenKeys;
use crate::clock::Clock;
use crate::error::CoreError;
use crate::ids::{TenantId, UserId};
use crate::model::Role;
use crate::policy::{self, TenantAction};
use crate::ports::MetadataStore;

pub use auth::{LoginInput, TokenPair};
pub use projects::{CreateProjectInput, ProjectListQuery, UpdateProjectInput};
pub use tenants::{Bootstrap, CreateTenantInput};
pub use users::{CreateUserInput, UpdateUserInput};

/// The authenticated principal of a request: who, in which tenant, with which
/// role (read from the database on every request, so a role change or a
/// disabled flag takes effect at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub role: Role,
}

/// The use-cases, over the ports.
#[derive(Clone)]
pub struct Service {
    store: Arc<dyn MetadataStore>,
    clock: Arc<dyn Clock>,
    tokens: Arc<TokenKeys>,
    /// A hash of a random password, verified against when a login names an
    /// unknown tenant or e-mail so that the answer takes as long as a real miss.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
}

impl Service {
    pub fn new(store: Arc<dyn MetadataStore>, clock: Arc<dyn Clock>, tokens: TokenKeys) -> Self {
        Self {
            store,
            clock,
            tokens: Arc::new(tokens),
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn MetadataStore> {
        &self.store
    }

    fn require(&self, actor: &Actor, action: TenantAction) -> Result<(), CoreError> {
        if policy::tenant_allows(actor.role, action) {
            Ok(())
        } else {
            Err(CoreError::Forbidden)
        }
    }
}

/// Runs CPU-heavy work (argon2) on the blocking pool, keeping the async
/// workers free for I/O.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CoreError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| CoreError::Internal(Box::new(e)))
}
