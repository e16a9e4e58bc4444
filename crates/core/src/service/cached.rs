//! Cached reads of the hot rows, and their invalidation. Every write of a
//! cached value calls one of the `invalidate_*` methods after it commits.
//!
//! | cache | key (inside the tenant's hash tag) | TTL |
//! | --- | --- | --- |
//! | `user` | `user:<id>` (the per-request user load and profiles) | 5 min |
//! | `upload` | `upload:<id>` (status polls) | 30 s |
//! | `project` | `project:<id>` | 5 min |
//! | `member` | `member:<project>:<user>` | 5 min |
//! | `project_list` | `projects:<generation>:<filter>:<page>` | 5 min |
//! | `session` | `session:<family>` (global; whether a session ended) | 5 min |
//!
//! Users, projects and uploads are handed out as `Arc`s: every request
//! reads its user and most read a project, and a hit from the local tier is
//! then a reference count rather than a copy of their strings (and the API
//! can tell an upload it has already serialized by its `Arc`).

use std::sync::Arc;

use super::Service;
use crate::cache::{CacheKey, CacheName, Caching, Renderings};
use crate::error::CoreError;
use crate::ids::{ProjectId, SessionFamilyId, TenantId, UploadId, UserId};
use crate::model::{Project, User};
use crate::pagination::PageRequest;
use crate::ports::ProjectFilter;
use crate::upload::Upload;

static USER: CacheName = CacheName::new("user");
static UPLOAD: CacheName = CacheName::new("upload");
static PROJECT: CacheName = CacheName::new("project");
static MEMBER: CacheName = CacheName::new("member");
static PROJECT_LIST: CacheName = CacheName::new("project_list");
static SESSION: CacheName = CacheName::new("session");

impl Service {
    /// Gives the use-cases a cache (the default caches nothing).
    pub fn with_cache(mut self, caching: Arc<Caching>) -> Self {
        self.caching = caching;
        self
    }

    pub fn caching(&self) -> &Arc<Caching> {
        &self.caching
    }

    /// Renderings of the uploads `get_upload` hands out, for a driver that
    /// serves the same bytes while the upload is unchanged (`Renderings`).
    pub fn rendered_uploads(&self) -> &Renderings<UploadId, Upload> {
        &self.rendered_uploads
    }

    pub(super) async fn cached_user(
        &self,
        tenant: TenantId,
        id: UserId,
    ) -> Result<Option<Arc<User>>, CoreError> {
        let key = self.caching.key(tenant, "user", id);
        let ttl = self.caching.settings().user_ttl;
        self.caching
            .get_or_load(&USER, &key, ttl, || async {
                Ok(self.store.user_get(tenant, id).await?.map(Arc::new))
            })
            .await
    }

    /// Whether a session ended, asked on every authenticated request. While
    /// the shared cache does not answer, `false` without asking the
    /// database: access tokens are then checked as they were before
    /// sessions could end them (signature and expiry, the seed's stateless
    /// fallback), rather than adding a query to every request while the
    /// database is all there is.
    pub(super) async fn cached_session_revoked(
        &self,
        session: SessionFamilyId,
    ) -> Result<bool, CoreError> {
        let key = self.session_key(session);
        let ttl = self.caching.settings().user_ttl;
        let revoked = self
            .caching
            .get_or_load_unless_down(&SESSION, &key, ttl, false, || async {
                Ok(Some(self.store.session_revoked(session).await?))
            })
            .await?;
        Ok(revoked.unwrap_or(false))
    }

    fn session_key(&self, session: SessionFamilyId) -> CacheKey {
        CacheKey::global(&self.caching.settings().prefix, "session", session)
    }

    /// After a session ended: its access tokens stop working on every
    /// replica as soon as the invalidation reaches it.
    pub(super) async fn session_ended(&self, session: SessionFamilyId) {
        self.caching.invalidate(&[self.session_key(session)]).await;
    }

    pub(super) async fn cached_upload(
        &self,
        tenant: TenantId,
        id: UploadId,
    ) -> Result<Option<Arc<Upload>>, CoreError> {
        let key = self.caching.key(tenant, "upload", id);
        let ttl = self.caching.settings().upload_ttl;
        self.caching
            .get_or_load(&UPLOAD, &key, ttl, || async {
                Ok(self.store.upload_get(tenant, id).await?.map(Arc::new))
            })
            .await
    }

    pub(super) async fn cached_project(
        &self,
        tenant: TenantId,
        id: ProjectId,
    ) -> Result<Option<Arc<Project>>, CoreError> {
        let key = self.caching.key(tenant, "project", id);
        let ttl = self.caching.settings().project_ttl;
        self.caching
            .get_or_load(&PROJECT, &key, ttl, || async {
                Ok(self.store.project_get(tenant, id).await?.map(Arc::new))
            })
            .await
    }

    pub(super) async fn cached_member_is(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) -> Result<bool, CoreError> {
        let key = self
            .caching
            .key(tenant, "member", format_args!("{project}:{user}"));
        let ttl = self.caching.settings().project_ttl;
        let is = self
            .caching
            .get_or_load(&MEMBER, &key, ttl, || async {
                Ok(Some(self.store.member_is(tenant, project, user).await?))
            })
            .await?;
        Ok(is.unwrap_or(false))
    }

    pub(super) async fn cached_project_list(
        &self,
        tenant: TenantId,
        filter: ProjectFilter,
        page: PageRequest,
    ) -> Result<Vec<Project>, CoreError> {
        let generation = self
            .caching
            .generation(&PROJECT_LIST, &self.project_list_generation(tenant))
            .await;
        let member = filter.member.map(|u| u.to_string()).unwrap_or_default();
        let before = page.before.map(|u| u.to_string()).unwrap_or_default();
        let key = self.caching.key(
            tenant,
            "projects",
            format_args!(
                "{generation}:{member}:{}:{before}:{}",
                filter.include_archived, page.limit
            ),
        );
        let ttl = self.caching.settings().project_list_ttl;
        let rows = self
            .caching
            .get_or_load(&PROJECT_LIST, &key, ttl, || async {
                Ok(Some(self.store.project_list(tenant, filter, page).await?))
            })
            .await?;
        Ok(rows.unwrap_or_default())
    }

    fn project_list_generation(&self, tenant: TenantId) -> CacheKey {
        self.caching.key(tenant, "projects-gen", "")
    }

    /// After an upload row changed (status, trash, restore, expiry, purge).
    pub async fn invalidate_upload(&self, tenant: TenantId, id: UploadId) {
        let key = self.caching.key(tenant, "upload", id);
        self.caching.invalidate(&[key]).await;
    }

    /// After a user's profile, role or disabled flag changed.
    pub(super) async fn invalidate_user(&self, tenant: TenantId, id: UserId) {
        let key = self.caching.key(tenant, "user", id);
        self.caching.invalidate(&[key]).await;
    }

    /// After a project was created, changed or archived.
    pub(super) async fn invalidate_project(&self, tenant: TenantId, id: Option<ProjectId>) {
        if let Some(id) = id {
            let key = self.caching.key(tenant, "project", id);
            self.caching.invalidate(&[key]).await;
        }
        self.invalidate_project_lists(tenant).await;
    }

    /// After a membership was added or removed (it decides which projects a
    /// non-admin sees).
    pub(super) async fn invalidate_membership(
        &self,
        tenant: TenantId,
        project: ProjectId,
        user: UserId,
    ) {
        let key = self
            .caching
            .key(tenant, "member", format_args!("{project}:{user}"));
        self.caching.invalidate(&[key]).await;
        self.invalidate_project_lists(tenant).await;
    }

    async fn invalidate_project_lists(&self, tenant: TenantId) {
        let ttl = self.caching.settings().project_list_ttl;
        self.caching
            .bump_generation(&self.project_list_generation(tenant), ttl)
            .await;
    }
}
