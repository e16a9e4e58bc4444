//! Projects and their members.

use std::sync::Arc;

use super::{Actor, Service};
use crate::error::{Conflict, CoreError, StoreError};
use crate::ids::{ProjectId, UserId};
use crate::model::{Address, Member, Name, Project, ProjectCode, Role};
use crate::pagination::{Page, PageRequest};
use crate::policy::{self, Denied, ProjectAction, TenantAction};
use crate::ports::{IdempotencyKey, NewProject, ProjectFilter, ProjectPatch};
use crate::validate;

#[derive(Debug, Clone)]
pub struct CreateProjectInput {
    pub name: String,
    pub code: Option<String>,
    pub address: Option<String>,
    /// The client's `Idempotency-Key`: a retry with the same key and body
    /// answers with the project the first request created.
    pub idempotency_key: Option<String>,
}

/// The outer `None` leaves a field unchanged; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct UpdateProjectInput {
    pub name: Option<String>,
    pub code: Option<Option<String>>,
    pub address: Option<Option<String>>,
}

#[derive(Debug, Clone, Copy)]
pub struct ProjectListQuery {
    pub include_archived: bool,
    pub page: PageRequest,
}

fn code_conflict(e: StoreError) -> CoreError {
    match e {
        StoreError::Conflict(Conflict::ProjectCode) => CoreError::conflict(
            "conflict",
            "a project with that code already exists in this tenant",
        ),
        e => e.into(),
    }
}

fn archived() -> CoreError {
    CoreError::conflict("project_archived", "the project is archived")
}

impl Service {
    /// Loads a project the actor may act on: 404 when it does not exist, is
    /// in another tenant or is invisible to the actor; 403 when visible but
    /// the role lacks the action.
    pub(super) async fn authorized_project(
        &self,
        actor: &Actor,
        id: ProjectId,
        action: ProjectAction,
    ) -> Result<Arc<Project>, CoreError> {
        let project = self
            .cached_project(actor.tenant_id, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let is_member = actor.role == Role::Admin
            || self
                .cached_member_is(actor.tenant_id, id, actor.user_id)
                .await?;
        match policy::project_allows(actor.role, is_member, action) {
            Ok(()) => Ok(project),
            Err(Denied::NotVisible) => Err(CoreError::NotFound),
            Err(Denied::Forbidden) => Err(CoreError::Forbidden),
        }
    }

    /// A supervisor who creates a project becomes its member, so it can
    /// manage what it created.
    /// The project and whether this request created it (`false`: an
    /// idempotent replay of an earlier one).
    pub async fn create_project(
        &self,
        actor: &Actor,
        input: CreateProjectInput,
    ) -> Result<(Project, bool), CoreError> {
        self.require(actor, TenantAction::CreateProject)?;
        let (name, code, address, idempotency_key) = validate!(
            name = Name::parse(&input.name),
            code = input.code.as_deref().map(ProjectCode::parse).transpose(),
            address = input.address.as_deref().map(Address::parse).transpose(),
            idempotency_key = input
                .idempotency_key
                .as_deref()
                .map(super::parse_idempotency_key)
                .transpose(),
        )?;
        let idempotency = idempotency_key.map(|key| IdempotencyKey {
            request_hash: super::request_digest(&[
                Some(name.as_str()),
                code.as_ref().map(ProjectCode::as_str),
                address.as_ref().map(Address::as_str),
            ]),
            key,
        });
        let project = NewProject {
            id: ProjectId::new(),
            name,
            code,
            address,
            created_by: actor.user_id,
            created_at: self.clock.now(),
        };
        let outcome = self
            .store
            .project_create(
                actor.tenant_id,
                &project,
                actor.role != Role::Admin,
                idempotency.as_ref(),
            )
            .await
            .map_err(code_conflict)?;
        let (project, created) = super::replayed(outcome)?;
        if created {
            self.invalidate_project(actor.tenant_id, None).await;
        }
        Ok((project, created))
    }

    /// Admins see every project of the tenant; everyone else the projects
    /// they belong to. Archived projects only on request.
    pub async fn list_projects(
        &self,
        actor: &Actor,
        query: ProjectListQuery,
    ) -> Result<Page<Project>, CoreError> {
        let filter = ProjectFilter {
            member: (!policy::tenant_allows(actor.role, TenantAction::ReadAllProjects))
                .then_some(actor.user_id),
            include_archived: query.include_archived,
        };
        let rows = self
            .cached_project_list(actor.tenant_id, filter, query.page)
            .await?;
        Ok(Page::from_rows(rows, query.page, |p| p.id.as_uuid()))
    }

    pub async fn get_project(&self, actor: &Actor, id: ProjectId) -> Result<Project, CoreError> {
        self.authorized_project(actor, id, ProjectAction::Read)
            .await
            .map(Arc::unwrap_or_clone)
    }

    pub async fn update_project(
        &self,
        actor: &Actor,
        id: ProjectId,
        input: UpdateProjectInput,
    ) -> Result<Project, CoreError> {
        let (name, code, address) = validate!(
            name = input.name.as_deref().map(Name::parse).transpose(),
            code = input
                .code
                .map(|c| c.as_deref().map(ProjectCode::parse).transpose())
                .transpose(),
            address = input
                .address
                .map(|a| a.as_deref().map(Address::parse).transpose())
                .transpose(),
        )?;
        let project = self
            .authorized_project(actor, id, ProjectAction::Manage)
            .await?;
        if project.archived_at.is_some() {
            return Err(archived());
        }
        let patch = ProjectPatch {
            name,
            code,
            address,
        };
        let updated = self
            .store
            .project_update(actor.tenant_id, id, &patch, self.clock.now())
            .await;
        self.invalidate_project(actor.tenant_id, Some(id)).await;
        updated.map_err(code_conflict)?.ok_or(CoreError::NotFound)
    }

    /// Archiving keeps the project and its history; it is idempotent.
    pub async fn archive_project(
        &self,
        actor: &Actor,
        id: ProjectId,
    ) -> Result<Project, CoreError> {
        self.authorized_project(actor, id, ProjectAction::Manage)
            .await?;
        let archived = self
            .store
            .project_archive(actor.tenant_id, id, self.clock.now())
            .await;
        self.invalidate_project(actor.tenant_id, Some(id)).await;
        archived?.ok_or(CoreError::NotFound)
    }

    pub async fn list_members(
        &self,
        actor: &Actor,
        id: ProjectId,
        page: PageRequest,
    ) -> Result<Page<Member>, CoreError> {
        self.authorized_project(actor, id, ProjectAction::Read)
            .await?;
        let rows = self.store.member_list(actor.tenant_id, id, page).await?;
        Ok(Page::from_rows(rows, page, |m| m.membership_id.as_uuid()))
    }

    /// Adds a member; `true` when the membership is new. With an
    /// idempotency key, a retry answers as the key's first request did
    /// (`true` if that one created the membership).
    pub async fn add_member(
        &self,
        actor: &Actor,
        id: ProjectId,
        user: UserId,
        idempotency_key: Option<&str>,
    ) -> Result<bool, CoreError> {
        let key = idempotency_key
            .map(super::parse_idempotency_key)
            .transpose()
            .map_err(|e| CoreError::invalid("idempotency_key", e))?
            .map(|key| IdempotencyKey {
                request_hash: super::request_digest(&[
                    Some(&id.to_string()),
                    Some(&user.to_string()),
                ]),
                key,
            });
        let project = self
            .authorized_project(actor, id, ProjectAction::ManageMembers)
            .await?;
        if project.archived_at.is_some() {
            return Err(archived());
        }
        if self.store.user_get(actor.tenant_id, user).await?.is_none() {
            return Err(CoreError::NotFound);
        }
        let added = self
            .store
            .member_add(
                actor.tenant_id,
                id,
                user,
                self.clock.now(),
                key.as_ref().map(|k| (actor.user_id, k)),
            )
            .await;
        self.invalidate_membership(actor.tenant_id, id, user).await;
        let (added, _) = super::replayed(added?)?;
        Ok(added)
    }

    /// Removes a member; idempotent once the project and user exist.
    pub async fn remove_member(
        &self,
        actor: &Actor,
        id: ProjectId,
        user: UserId,
    ) -> Result<(), CoreError> {
        let project = self
            .authorized_project(actor, id, ProjectAction::ManageMembers)
            .await?;
        if project.archived_at.is_some() {
            return Err(archived());
        }
        if self.store.user_get(actor.tenant_id, user).await?.is_none() {
            return Err(CoreError::NotFound);
        }
        let removed = self.store.member_remove(actor.tenant_id, id, user).await;
        self.invalidate_membership(actor.tenant_id, id, user).await;
        removed?;
        Ok(())
    }
}
