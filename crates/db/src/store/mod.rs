//! The one `MetadataStore`: every port written once over the executor seam,
//! by area (`accounts`, `uploads`, `tus`, `queue`), for both backends.

mod accounts;
mod queue;
mod tus;
mod uploads;

use async_trait::async_trait;
use buildpeer_core::ids::{TenantId, UploadId};
use buildpeer_core::ports::{MetadataStore, PoolStats, StoreResult};
use buildpeer_core::upload::Upload;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::exec::{On, Pool, Query, Sql, Tx, WRITE, q};
use crate::sql::{self, UploadRow};

pub(crate) use queue::{Wakeup, wake};

pub(crate) struct Store {
    backend: &'static str,
    pool: Pool,
    /// How `job_wait` hears of queued jobs.
    wakeup: Wakeup,
}

impl Store {
    pub(crate) fn new(backend: &'static str, pool: Pool, wakeup: Wakeup) -> Self {
        Self {
            backend,
            pool,
            wakeup,
        }
    }

    async fn write(&self) -> StoreResult<Tx> {
        self.pool.begin(WRITE).await
    }

    /// Runs a statement on the pool; true if it changed exactly one row
    /// (the conditional updates' "did it apply").
    async fn one_changed(&self, query: Query<'_>) -> StoreResult<bool> {
        Ok(query.execute(&self.pool).await? == 1)
    }
}

/// A statement on one row a tenant owns: `$1` the tenant, `$2` the row's id
/// (every tenant-owned query names its tenant).
fn owned(text: impl Into<Sql>, tenant: TenantId, id: Uuid) -> Query<'static> {
    q(text).bind(tenant.as_uuid()).bind(id)
}

async fn get_upload<'c>(
    on: impl Into<On<'c>>,
    tenant: TenantId,
    id: UploadId,
) -> StoreResult<Option<Upload>> {
    upload_of(on, owned(sql::UPLOAD_GET, tenant, id.as_uuid())).await
}

/// Runs a `(tenant, id, now)` update that returns the upload as it is after.
async fn update_upload<'c>(
    on: impl Into<On<'c>>,
    text: &'static str,
    tenant: TenantId,
    id: UploadId,
    now: DateTime<Utc>,
) -> StoreResult<Option<Upload>> {
    let query = owned(text, tenant, id.as_uuid());
    upload_of(on, query.bind(now)).await
}

/// The upload a statement returns, if any.
async fn upload_of<'c>(on: impl Into<On<'c>>, query: Query<'_>) -> StoreResult<Option<Upload>> {
    query
        .fetch_optional::<UploadRow>(on)
        .await?
        .map(Upload::try_from)
        .transpose()
}

#[async_trait]
impl MetadataStore for Store {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    async fn ping(&self) -> StoreResult<()> {
        q(sql::PING).execute(&self.pool).await?;
        Ok(())
    }
}
