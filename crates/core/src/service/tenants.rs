//! Tenant creation and the first-start demo tenant.

use rand::distr::{Alphanumeric, SampleString};

use super::{Service, blocking};
use crate::auth::hash_password;
use crate::error::{Conflict, CoreError, StoreError};
use crate::ids::{TenantId, UserId};
use crate::model::{Email, Name, Password, Role, Slug, Tenant, User};
use crate::ports::{NewTenant, NewUser};
use crate::validate;

#[derive(Debug, Clone)]
pub struct CreateTenantInput {
    pub slug: String,
    pub name: String,
    pub admin_email: String,
    pub admin_name: String,
    pub admin_password: String,
}

/// What the first start on an empty database did.
#[derive(Debug)]
pub enum Bootstrap {
    /// The database already had tenants (or bootstrap raced another replica).
    Skipped,
    /// The demo tenant was created with this one-time admin password.
    Created {
        tenant: Tenant,
        admin_email: String,
        admin_password: String,
    },
}

impl Service {
    /// Creates a tenant with its first admin (an operator action: the CLI).
    pub async fn create_tenant(
        &self,
        input: CreateTenantInput,
    ) -> Result<(Tenant, User), CoreError> {
        let (slug, name, admin_email, admin_name, admin_password) = validate!(
            slug = Slug::parse(&input.slug),
            name = Name::parse(&input.name),
            admin_email = Email::parse(&input.admin_email),
            admin_name = Name::parse(&input.admin_name),
            admin_password = Password::parse(&input.admin_password),
        )?;
        let password_hash = blocking(move || hash_password(&admin_password)).await??;
        let now = self.clock.now();
        let tenant = NewTenant {
            id: TenantId::new(),
            slug,
            name,
            created_at: now,
        };
        let admin = NewUser {
            id: UserId::new(),
            email: admin_email,
            name: admin_name,
            role: Role::Admin,
            password_hash,
            created_at: now,
        };
        match self.store.tenant_create(&tenant, &admin).await {
            Ok(()) => {}
            Err(StoreError::Conflict(Conflict::TenantSlug)) => {
                return Err(CoreError::conflict(
                    "conflict",
                    "a tenant with that slug already exists",
                ));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(tenant_id = %tenant.id, slug = tenant.slug.as_str(), "tenant created");
        let created = Tenant {
            id: tenant.id,
            slug: tenant.slug.as_str().to_owned(),
            name: tenant.name.as_str().to_owned(),
            created_at: now,
        };
        let user = User {
            id: admin.id,
            tenant_id: tenant.id,
            email: admin.email.as_str().to_owned(),
            name: admin.name.as_str().to_owned(),
            role: Role::Admin,
            disabled: false,
            created_at: now,
            updated_at: now,
        };
        Ok((created, user))
    }

    /// On an empty database, creates the `demo` tenant with admin
    /// `admin@demo.local` and a random password, so a newcomer can log in.
    pub async fn bootstrap_demo(&self) -> Result<Bootstrap, CoreError> {
        if self.store.tenant_count().await? > 0 {
            return Ok(Bootstrap::Skipped);
        }
        let admin_password = Alphanumeric.sample_string(&mut rand::rng(), 20);
        let input = CreateTenantInput {
            slug: "demo".into(),
            name: "Demo Constructora".into(),
            admin_email: "admin@demo.local".into(),
            admin_name: "Demo Admin".into(),
            admin_password: admin_password.clone(),
        };
        match self.create_tenant(input).await {
            Ok((tenant, user)) => Ok(Bootstrap::Created {
                tenant,
                admin_email: user.email,
                admin_password,
            }),
            // Another replica bootstrapped first.
            Err(CoreError::Conflict { .. }) => Ok(Bootstrap::Skipped),
            Err(e) => Err(e),
        }
    }
}

impl Service {
    /// Overrides a tenant's upload limits (an operator action: the CLI).
    pub async fn set_tenant_limits(
        &self,
        slug: &str,
        limits: crate::ports::TenantLimits,
    ) -> Result<(), CoreError> {
        let (slug,) = validate!(slug = Slug::parse(slug))?;
        let tenant = self
            .store
            .tenant_by_slug(&slug)
            .await?
            .ok_or(CoreError::NotFound)?;
        self.store.tenant_set_limits(tenant.id, limits).await?;
        Ok(())
    }
}
