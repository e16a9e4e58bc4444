//! The queue as a tenant's admin sees it: its jobs, their error
//! history, and retrying the dead ones. These are the admin's reads and
//! mutations, which pass the policy like every other; the worker's side is
//! `lifecycle.rs`.
//!
//! No audit log exists yet; each mutation logs one line with the actor.

use crate::error::{CoreError, FieldError, Invalid};
use crate::ids::JobId;
use crate::pagination::{Page, PageRequest};
use crate::policy::TenantAction;
use crate::queue::{Job, JobFailure, JobState};
use crate::service::{Actor, Service};

/// A job with every failed run, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDetail {
    pub job: Job,
    pub errors: Vec<JobFailure>,
}

/// `?state=`: one of `JobState`'s names.
fn parse_state(raw: &str) -> Result<JobState, CoreError> {
    JobState::parse(raw).ok_or_else(|| {
        CoreError::Validation(vec![FieldError::new(
            "state",
            Invalid::new("invalid_state", "must be queued, running, done or dead"),
        )])
    })
}

impl Service {
    /// The tenant's jobs, newest first, optionally in one state (admins).
    pub async fn list_jobs(
        &self,
        actor: &Actor,
        state: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Job>, CoreError> {
        self.require(actor, TenantAction::ManageJobs)?;
        let state = state.map(parse_state).transpose()?;
        let rows = self.store.job_list(actor.tenant_id, state, page).await?;
        Ok(Page::from_rows(rows, page, |j| j.id.as_uuid()))
    }

    /// One job with its error history (admins).
    pub async fn get_job(&self, actor: &Actor, id: JobId) -> Result<JobDetail, CoreError> {
        self.require(actor, TenantAction::ManageJobs)?;
        let (job, errors) = self
            .store
            .job_get(actor.tenant_id, id)
            .await?
            .ok_or(CoreError::NotFound)?;
        Ok(JobDetail { job, errors })
    }

    /// Queues a dead job again from its first attempt (admins). A job that
    /// is not dead is refused with `job_not_dead` (409) and left alone: a
    /// queued or running job will run anyway, a done one must not run twice.
    pub async fn retry_job(&self, actor: &Actor, id: JobId) -> Result<Job, CoreError> {
        self.require(actor, TenantAction::ManageJobs)?;
        let before = self
            .store
            .job_get(actor.tenant_id, id)
            .await?
            .ok_or(CoreError::NotFound)?
            .0;
        if before.state != JobState::Dead {
            return Err(not_dead(before.state));
        }
        let job = self
            .store
            .job_retry(actor.tenant_id, id, self.clock.now())
            .await?
            .ok_or(CoreError::NotFound)?;
        // Another admin may have retried it in between.
        if job.state != JobState::Queued || job.attempts != 0 {
            return Err(not_dead(job.state));
        }
        tracing::info!(
            job_id = %id,
            kind = %job.kind,
            actor = %actor.user_id,
            "dead job queued again by an admin"
        );
        Ok(job)
    }

    /// Queues every dead job of the tenant again (admins); returns how many.
    pub async fn retry_dead_jobs(&self, actor: &Actor) -> Result<u64, CoreError> {
        self.require(actor, TenantAction::ManageJobs)?;
        let n = self
            .store
            .job_retry_dead(actor.tenant_id, self.clock.now())
            .await?;
        tracing::info!(retried = n, actor = %actor.user_id, "dead jobs queued again by an admin");
        Ok(n)
    }
}

fn not_dead(state: JobState) -> CoreError {
    CoreError::conflict(
        "job_not_dead",
        format!(
            "only a dead job can be retried; this one is {}",
            state.as_str()
        ),
    )
}
