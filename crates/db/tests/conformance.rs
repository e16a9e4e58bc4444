//! Conformance suite: every scenario runs against both backends, each on a
//! fresh database (a temporary SQLite file; a PostgreSQL database created from
//! `BUILDPEER_TEST_POSTGRES_URL` and dropped afterwards), so the two adapters
//! are held to one contract: `sqlite::<scenario>` and `postgres::<scenario>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use buildpeer_core::StoreError;
use buildpeer_core::blob::ObjectKey;
use buildpeer_core::error::Conflict;
use buildpeer_core::ids::{
    JobId, ProjectId, RefreshTokenId, SessionFamilyId, TenantId, UploadId, UserId,
};
use buildpeer_core::model::{Address, Email, Name, ProjectCode, Role, Slug};
use buildpeer_core::pagination::PageRequest;
use buildpeer_core::ports::{
    Creation, IdempotencyKey, MetadataStore, NewJob, NewProject, NewRefreshToken, NewTenant,
    NewTus, NewUpload, NewUser, ProjectFilter, ProjectPatch, RotateOutcome, TenantLimits,
    TusConcat, TusMultipart, TusPart, UploadFilter, UserPatch,
};
use buildpeer_core::queue::{FailOutcome, Job, JobFailure, JobState};
use buildpeer_core::upload::{
    ContentType, Filename, Sha256Hex, Transfer, Upload, UploadFailure, UploadStatus,
};
use buildpeer_db::{DbError, DbOptions, connect};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};
use uuid::Uuid;

/// What a scenario gets: the store, and its URL for reconnecting.
struct Ctx {
    store: Arc<dyn MetadataStore>,
    url: String,
    backend: &'static str,
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_sqlite(super::$name).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::on_postgres(super::$name).await;
                }
            )+
        }
    };
}

conformance!(
    ping_backend_and_pool_stats,
    migrations_are_idempotent,
    tenant_create_count_and_lookup,
    tenant_create_is_atomic,
    tenant_slug_conflict,
    user_create_get_and_credentials,
    user_email_conflict,
    user_list_pages_newest_first,
    user_update_applies_patch,
    user_disable_revokes_sessions,
    users_are_tenant_scoped,
    project_create_get_update,
    project_code_conflict,
    project_list_filters_and_pages,
    project_archive_is_idempotent,
    projects_and_members_are_tenant_scoped,
    members_add_remove_list,
    session_rotate_then_reuse_revokes_family,
    session_expiry_boundaries,
    session_unknown_and_expired_store_nothing,
    concurrent_rotations_yield_one_winner,
    concurrent_logout_and_rotation_leave_nothing_live,
    session_revoke_and_revoke_family,
    upload_create_and_get_round_trip,
    uploads_are_tenant_scoped,
    upload_idempotency_keys_replay,
    concurrent_creates_with_one_key_write_one_upload,
    upload_duplicates_are_stored_live_copies,
    upload_usage_counts_all_but_expired,
    upload_list_filters_and_pages,
    upload_mark_uploaded_enqueues_one_job,
    uploads_expire_due_only_due_pending,
    concurrent_expiry_sweeps_never_share_an_upload,
    upload_trash_and_restore_are_idempotent,
    uploads_purge_due_oldest_first_before_cutoff,
    upload_purge_takes_only_trashed,
    tenant_limits_round_trip,
    job_claim_takes_due_jobs_oldest_first,
    job_lease_expiry_reclaims_a_killed_workers_job,
    job_lost_on_its_last_attempt_is_claimed_past_its_limit,
    job_bury_dead_letters_a_poison_job,
    job_calls_for_a_lost_attempt_change_nothing,
    job_transient_failures_end_dead_with_their_history,
    job_permanent_failure_is_dead_at_once,
    job_retry_queues_a_dead_job_from_the_start,
    job_defer_gives_the_attempt_back,
    jobs_are_tenant_scoped_and_listed_newest_first,
    job_depth_counts_by_kind_and_state,
    job_enqueue_rolls_back_with_its_transaction,
    concurrent_claimers_never_share_a_job,
    job_wait_wakes_on_an_enqueue,
    tus_create_get_round_trip,
    tus_lease_fences_the_offset,
    tus_complete_uploads_are_finished_not_expired,
    project_keys_replay_what_they_created,
    tus_parts_ledger_records_with_the_offset,
    tus_declare_length_and_terminate,
    tus_creation_keys_share_the_upload_key_space,
    member_keys_replay_what_the_first_request_did,
);

fn options() -> DbOptions {
    DbOptions {
        max_connections: 5,
        acquire_timeout: Duration::from_secs(10),
        run_migrations: true,
    }
}

fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Runs the scenario on its own task so that a failing assertion still lets
/// the database be cleaned up before the panic is passed on.
async fn run<F>(ctx: Ctx, scenario: impl FnOnce(Ctx) -> F, cleanup: impl AsyncFnOnce())
where
    F: Future<Output = ()> + Send + 'static,
{
    let outcome = tokio::spawn(scenario(ctx)).await;
    cleanup().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn on_sqlite<F>(scenario: impl FnOnce(Ctx) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let path = std::env::temp_dir().join(format!("buildpeer-test-{}.db", random_suffix()));
    let url = format!("sqlite://{}", path.display());
    let store = connect(&url, &options()).await.unwrap();
    let ctx = Ctx {
        store,
        url,
        backend: "sqlite",
    };
    run(ctx, scenario, async || {
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    })
    .await;
}

async fn on_postgres<F>(scenario: impl FnOnce(Ctx) -> F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let Some(admin_url) = buildpeer_testkit::required_env("BUILDPEER_TEST_POSTGRES_URL") else {
        return;
    };
    let prefix = std::env::var("BUILDPEER_TEST_DB_PREFIX").unwrap_or_else(|_| "bpt_".into());
    let name = format!("{prefix}{}", random_suffix());
    let mut admin = PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = with_database(&admin_url, &name);
    let store = match connect(&url, &options()).await {
        Ok(store) => store,
        Err(e) => {
            drop_database(&mut admin, &name).await;
            panic!("connect: {e}");
        }
    };
    let ctx = Ctx {
        store,
        url,
        backend: "postgres",
    };
    run(ctx, scenario, async || {
        drop_database(&mut admin, &name).await
    })
    .await;
}

async fn drop_database(admin: &mut PgConnection, name: &str) {
    let sql = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(admin).await {
        eprintln!("could not drop test database {name}: {e}");
    }
}

/// The admin URL with its database path replaced.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority = base.find("://").map_or(0, |i| i + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{db}{query}", &base[..path])
}

// ---- Fixtures -------------------------------------------------------------

/// PostgreSQL keeps microseconds, so round-trips compare equal only at that
/// precision.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn micros(n: i64) -> TimeDelta {
    TimeDelta::microseconds(n)
}

fn first(limit: u32) -> PageRequest {
    PageRequest::first(limit)
}

fn after(limit: u32, before: Uuid) -> PageRequest {
    PageRequest {
        limit,
        before: Some(before),
    }
}

fn all_projects() -> ProjectFilter {
    ProjectFilter {
        member: None,
        include_archived: true,
    }
}

fn new_user(email: &str, role: Role) -> NewUser {
    NewUser {
        id: UserId::new(),
        email: Email::parse(email).unwrap(),
        name: Name::parse(&format!("User {email}")).unwrap(),
        role,
        password_hash: format!("hash-of-{email}"),
        created_at: now(),
    }
}

/// A tenant with its admin.
async fn tenant(store: &dyn MetadataStore, slug: &str) -> (TenantId, UserId) {
    let tenant = NewTenant {
        id: TenantId::new(),
        slug: Slug::parse(slug).unwrap(),
        name: Name::parse(&format!("Constructora {slug}")).unwrap(),
        created_at: now(),
    };
    let admin = new_user(&format!("admin@{slug}.mx"), Role::Admin);
    store.tenant_create(&tenant, &admin).await.unwrap();
    (tenant.id, admin.id)
}

async fn user(store: &dyn MetadataStore, tenant: TenantId, email: &str, role: Role) -> UserId {
    store
        .user_create(tenant, &new_user(email, role), UserId::new(), None)
        .await
        .map(made)
        .unwrap()
        .id
}

fn new_project(name: &str, code: Option<&str>, created_by: UserId) -> NewProject {
    NewProject {
        id: ProjectId::new(),
        name: Name::parse(name).unwrap(),
        code: code.map(|c| ProjectCode::parse(c).unwrap()),
        address: None,
        created_by,
        created_at: now(),
    }
}

async fn project(store: &dyn MetadataStore, tenant: TenantId, by: UserId, name: &str) -> ProjectId {
    store
        .project_create(tenant, &new_project(name, None, by), false, None)
        .await
        .map(made)
        .unwrap()
        .id
}

/// A creator's idempotency key replays the project it created, whatever new
/// project a retry brings; concurrent uses of one key create one project.
async fn project_keys_replay_what_they_created(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let key = |hash: u8| IdempotencyKey {
        key: "k".into(),
        request_hash: [hash; 32],
    };
    let original = new_project("Uno", None, admin);
    let created = made(
        store
            .project_create(t, &original, false, Some(&key(1)))
            .await
            .unwrap(),
    );
    let retry = new_project("Uno", None, admin);
    match store
        .project_create(t, &retry, false, Some(&key(1)))
        .await
        .unwrap()
    {
        Creation::Replayed {
            existing: project,
            same_request,
        } => {
            assert_eq!(project, created);
            assert!(same_request);
        }
        other => panic!("{other:?}"),
    }
    match store
        .project_create(t, &retry, false, Some(&key(2)))
        .await
        .unwrap()
    {
        Creation::Replayed { same_request, .. } => assert!(!same_request),
        other => panic!("{other:?}"),
    }
    // Racing: one creates, the others replay it.
    let race = |name: &'static str| {
        let p = new_project(name, None, admin);
        async move {
            let k = IdempotencyKey {
                key: "race".into(),
                request_hash: [3; 32],
            };
            store.project_create(t, &p, false, Some(&k)).await.unwrap()
        }
    };
    let (a, b, c, d) = tokio::join!(race("Dos"), race("Dos"), race("Dos"), race("Dos"));
    let outcomes = [a, b, c, d];
    let made_count = outcomes
        .iter()
        .filter(|o| matches!(o, Creation::Created(_)))
        .count();
    assert_eq!(made_count, 1, "{outcomes:?}");
    let listed = store
        .project_list(
            t,
            ProjectFilter {
                member: None,
                include_archived: true,
            },
            first(10),
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
}

/// What a creation without an idempotency key made.
fn made<T: std::fmt::Debug>(outcome: Creation<T>) -> T {
    match outcome {
        Creation::Created(created) => created,
        other => panic!("not created: {other:?}"),
    }
}

fn token(expires_at: DateTime<Utc>) -> NewRefreshToken {
    NewRefreshToken {
        id: RefreshTokenId::new(),
        hash: rand::random(),
        created_at: now(),
        expires_at,
    }
}

fn live_token() -> NewRefreshToken {
    token(now() + TimeDelta::days(30))
}

/// Starts a session family; returns it with its first token.
async fn session(
    store: &dyn MetadataStore,
    tenant: TenantId,
    user: UserId,
) -> (SessionFamilyId, NewRefreshToken) {
    let family = SessionFamilyId::new();
    let first = live_token();
    store
        .session_start(tenant, user, family, &first)
        .await
        .unwrap();
    (family, first)
}

async fn rotate(store: &dyn MetadataStore, presented: &NewRefreshToken) -> RotateOutcome {
    store
        .session_rotate(&presented.hash, &live_token(), now())
        .await
        .unwrap()
}

fn is_rotated(outcome: &RotateOutcome) -> bool {
    matches!(outcome, RotateOutcome::Rotated { .. })
}

const MIB: u64 = 1024 * 1024;
/// Past 32 bits, to catch a column or conversion that is too narrow.
const TIB: u64 = 1024 * 1024 * MIB;

/// A pending single-PUT upload of a photo, created now, its URLs valid for an hour.
fn new_upload(tenant: TenantId, project: ProjectId, by: UserId) -> NewUpload {
    let id = UploadId::new();
    NewUpload {
        id,
        project_id: project,
        uploaded_by: by,
        filename: Filename::parse("fachada norte.jpg").unwrap(),
        content_type: ContentType::parse("image/jpeg").unwrap(),
        size: 3 * MIB,
        sha256: None,
        object_key: ObjectKey::original(tenant, project, id),
        transfer: Transfer::Single,
        expires_at: now() + TimeDelta::hours(1),
        created_at: now(),
    }
}

fn sha(digit: char) -> Sha256Hex {
    Sha256Hex::parse(&digit.to_string().repeat(64)).unwrap()
}

fn idempotency(key: &str, hash: u8) -> IdempotencyKey {
    IdempotencyKey {
        key: key.to_owned(),
        request_hash: [hash; 32],
    }
}

fn added(outcome: Creation<bool>) -> bool {
    match outcome {
        Creation::Created(added) => added,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn created(outcome: Creation<Upload>) -> Upload {
    match outcome {
        Creation::Created(upload) => upload,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn create(store: &dyn MetadataStore, tenant: TenantId, new: &NewUpload) -> Upload {
    created(store.upload_create(tenant, new, None).await.unwrap())
}

/// A pending upload with the defaults of `new_upload`.
async fn upload(store: &dyn MetadataStore, t: TenantId, p: ProjectId, by: UserId) -> Upload {
    create(store, t, &new_upload(t, p, by)).await
}

/// The trace context is the example of the W3C recommendation.
fn new_job(at: DateTime<Utc>) -> NewJob {
    NewJob {
        id: JobId::new(),
        kind: "process_upload",
        // In the text form of PostgreSQL's JSONB (one key, as JSONB reorders
        // keys), so that both backends read it back alike.
        payload: r#"{"source": "test"}"#.to_owned(),
        max_attempts: 5,
        run_at: at,
        trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        created_at: at,
    }
}

async fn mark(store: &dyn MetadataStore, t: TenantId, id: UploadId) -> Option<Upload> {
    store
        .upload_mark_uploaded(t, id, &new_job(now()), now())
        .await
        .unwrap()
}

async fn get(store: &dyn MetadataStore, t: TenantId, id: UploadId) -> Upload {
    store.upload_get(t, id).await.unwrap().unwrap()
}

fn upload_ids(uploads: &[Upload]) -> Vec<UploadId> {
    uploads.iter().map(|u| u.id).collect()
}

/// Binds `$conn` to a new connection to the scenario's database, for what
/// the port does not show: the jobs it writes, and the worker's states
/// (PROCESSING, COMPLETED, FAILED) that nothing sets yet.
macro_rules! with_db {
    ($cx:expr, |$conn:ident| $body:expr) => {
        if $cx.backend == "sqlite" {
            let mut $conn = SqliteConnection::connect(&$cx.url).await.unwrap();
            $body
        } else {
            let mut $conn = PgConnection::connect(&$cx.url).await.unwrap();
            $body
        }
    };
}

/// Puts an upload in a state as the worker would; `FAILED` gets a failure.
async fn set_status(cx: &Ctx, id: UploadId, status: UploadStatus) {
    let sql = "UPDATE uploads SET status = $2, error_code = $3, error_message = $4 WHERE id = $1";
    let failure = (status == UploadStatus::Failed).then_some(("corrupt_image", "not a JPEG"));
    let (code, message) = failure.unzip();
    let changed = with_db!(cx, |conn| sqlx::query(sql)
        .bind(id.as_uuid())
        .bind(status.as_str())
        .bind(code)
        .bind(message)
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected());
    assert_eq!(changed, 1);
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct JobRow {
    id: Uuid,
    tenant_id: Uuid,
    kind: String,
    payload: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    trace_context: Option<String>,
    created_at: DateTime<Utc>,
}

impl JobRow {
    /// The row a freshly enqueued `job` should be.
    fn queued(tenant: TenantId, job: &NewJob) -> Self {
        JobRow {
            id: job.id.as_uuid(),
            tenant_id: tenant.as_uuid(),
            kind: job.kind.to_owned(),
            payload: job.payload.clone(),
            state: "queued".to_owned(),
            attempts: 0,
            max_attempts: i32::try_from(job.max_attempts).unwrap(),
            run_at: job.run_at,
            trace_context: job.trace_context.clone(),
            created_at: job.created_at,
        }
    }
}

async fn jobs_of(cx: &Ctx, upload: UploadId) -> Vec<JobRow> {
    let sql = "SELECT id, tenant_id, kind, CAST(payload AS TEXT) AS payload, state, attempts, \
               max_attempts, run_at, trace_context, created_at FROM jobs \
               WHERE upload_id = $1 ORDER BY id";
    with_db!(cx, |conn| sqlx::query_as(sql)
        .bind(upload.as_uuid())
        .fetch_all(&mut conn)
        .await
        .unwrap())
}

// ---- Scenarios ------------------------------------------------------------

async fn ping_backend_and_pool_stats(cx: Ctx) {
    cx.store.ping().await.unwrap();
    assert_eq!(cx.store.backend(), cx.backend);
    let stats = cx.store.pool_stats();
    assert!(stats.max >= 1, "{stats:?}");
    assert!(stats.size >= 1 && stats.size <= stats.max, "{stats:?}");
    assert!(stats.idle <= stats.size, "{stats:?}");
}

async fn migrations_are_idempotent(cx: Ctx) {
    tenant(&*cx.store, "acme").await;
    for _ in 0..2 {
        let again = connect(&cx.url, &options()).await.unwrap();
        again.ping().await.unwrap();
        assert_eq!(again.tenant_count().await.unwrap(), 1);
    }
}

async fn tenant_create_count_and_lookup(cx: Ctx) {
    let store = &*cx.store;
    assert_eq!(store.tenant_count().await.unwrap(), 0);
    let tenant = NewTenant {
        id: TenantId::new(),
        slug: Slug::parse("acme").unwrap(),
        name: Name::parse("Acme Construcciones").unwrap(),
        created_at: now(),
    };
    let admin = new_user("admin@acme.mx", Role::Admin);
    store.tenant_create(&tenant, &admin).await.unwrap();
    assert_eq!(store.tenant_count().await.unwrap(), 1);

    let found = store.tenant_by_slug(&tenant.slug).await.unwrap().unwrap();
    assert_eq!(found.id, tenant.id);
    assert_eq!(found.slug, "acme");
    assert_eq!(found.name, "Acme Construcciones");
    assert_eq!(found.created_at, tenant.created_at);
    let missing = Slug::parse("nadie").unwrap();
    assert!(store.tenant_by_slug(&missing).await.unwrap().is_none());
    let by_id = store.tenant_by_id(tenant.id).await.unwrap().unwrap();
    assert_eq!(by_id.slug, "acme");
    assert!(store.tenant_by_id(TenantId::new()).await.unwrap().is_none());

    let stored = store.user_get(tenant.id, admin.id).await.unwrap().unwrap();
    assert_eq!(stored.tenant_id, tenant.id);
    assert_eq!(stored.email, "admin@acme.mx");
    assert_eq!(stored.role, Role::Admin);
    assert!(!stored.disabled);
    assert_eq!(stored.created_at, admin.created_at);
    assert_eq!(stored.updated_at, admin.created_at);
}

async fn tenant_create_is_atomic(cx: Ctx) {
    let store = &*cx.store;
    let (_, admin_id) = tenant(store, "acme").await;
    let second = NewTenant {
        id: TenantId::new(),
        slug: Slug::parse("beta").unwrap(),
        name: Name::parse("Beta").unwrap(),
        created_at: now(),
    };
    // The admin insert fails (its id is taken), so the tenant must not stay.
    let clash = NewUser {
        id: admin_id,
        ..new_user("admin@beta.mx", Role::Admin)
    };
    assert!(store.tenant_create(&second, &clash).await.is_err());
    assert!(store.tenant_by_slug(&second.slug).await.unwrap().is_none());
    assert_eq!(store.tenant_count().await.unwrap(), 1);
}

async fn tenant_slug_conflict(cx: Ctx) {
    let store = &*cx.store;
    tenant(store, "acme").await;
    let again = NewTenant {
        id: TenantId::new(),
        slug: Slug::parse("acme").unwrap(),
        name: Name::parse("Otra Acme").unwrap(),
        created_at: now(),
    };
    let err = store
        .tenant_create(&again, &new_user("admin@otra.mx", Role::Admin))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::TenantSlug)),
        "{err:?}"
    );
    assert_eq!(store.tenant_count().await.unwrap(), 1);
}

async fn user_create_get_and_credentials(cx: Ctx) {
    let store = &*cx.store;
    let (t, _) = tenant(store, "acme").await;
    let new = new_user("ana@acme.mx", Role::Supervisor);
    let created = made(
        store
            .user_create(t, &new, UserId::new(), None)
            .await
            .unwrap(),
    );
    assert_eq!(created.id, new.id);
    assert_eq!(created.tenant_id, t);
    assert_eq!(created.email, "ana@acme.mx");
    assert_eq!(created.name, "User ana@acme.mx");
    assert_eq!(created.role, Role::Supervisor);
    assert!(!created.disabled);
    assert_eq!(created.created_at, new.created_at);
    assert_eq!(created.updated_at, new.created_at);
    assert_eq!(
        store.user_get(t, new.id).await.unwrap(),
        Some(created.clone())
    );
    assert!(store.user_get(t, UserId::new()).await.unwrap().is_none());

    let creds = store
        .user_credentials(t, &new.email)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(creds.user, created);
    assert_eq!(creds.password_hash, "hash-of-ana@acme.mx");
    let nobody = Email::parse("nadie@acme.mx").unwrap();
    assert!(store.user_credentials(t, &nobody).await.unwrap().is_none());
}

async fn user_email_conflict(cx: Ctx) {
    let store = &*cx.store;
    let (a, _) = tenant(store, "acme").await;
    let (b, _) = tenant(store, "beta").await;
    user(store, a, "ana@acme.mx", Role::Empleado).await;
    let err = store
        .user_create(
            a,
            &new_user("ana@acme.mx", Role::Viewer),
            UserId::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::UserEmail)),
        "{err:?}"
    );
    // Unique per tenant only.
    user(store, b, "ana@acme.mx", Role::Viewer).await;
}

async fn user_list_pages_newest_first(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    tenant(store, "beta").await;
    let mut ids = vec![admin.as_uuid()];
    for i in 0..4 {
        ids.push(
            user(store, t, &format!("u{i}@acme.mx"), Role::Viewer)
                .await
                .as_uuid(),
        );
    }
    ids.reverse();

    let page1 = store.user_list(t, first(2)).await.unwrap();
    let page1: Vec<Uuid> = page1.iter().map(|u| u.id.as_uuid()).collect();
    assert_eq!(page1, ids[..3], "limit + 1 rows, newest first");
    let page2 = store.user_list(t, after(2, page1[1])).await.unwrap();
    let page2: Vec<Uuid> = page2.iter().map(|u| u.id.as_uuid()).collect();
    assert_eq!(page2, ids[2..5]);
    let page3 = store.user_list(t, after(2, page2[1])).await.unwrap();
    let page3: Vec<Uuid> = page3.iter().map(|u| u.id.as_uuid()).collect();
    assert_eq!(page3, ids[4..]);
    let all = store.user_list(t, first(100)).await.unwrap();
    assert_eq!(all.len(), 5, "the other tenant's admin is not listed");
}

async fn user_update_applies_patch(cx: Ctx) {
    let store = &*cx.store;
    let (t, _) = tenant(store, "acme").await;
    let id = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let before = store.user_get(t, id).await.unwrap().unwrap();

    let t1 = now() + TimeDelta::seconds(1);
    let patch = UserPatch {
        name: Some(Name::parse("Ana Pérez").unwrap()),
        ..UserPatch::default()
    };
    let renamed = store.user_update(t, id, &patch, t1).await.unwrap().unwrap();
    assert_eq!(renamed.name, "Ana Pérez");
    assert_eq!(renamed.role, Role::Empleado);
    assert!(!renamed.disabled);
    assert_eq!(renamed.created_at, before.created_at);
    assert_eq!(renamed.updated_at, t1);
    assert_eq!(store.user_get(t, id).await.unwrap(), Some(renamed.clone()));

    let t2 = t1 + TimeDelta::seconds(1);
    let patch = UserPatch {
        role: Some(Role::Supervisor),
        disabled: Some(true),
        ..UserPatch::default()
    };
    let changed = store.user_update(t, id, &patch, t2).await.unwrap().unwrap();
    assert_eq!(changed.name, "Ana Pérez");
    assert_eq!(changed.role, Role::Supervisor);
    assert!(changed.disabled);
    assert_eq!(changed.updated_at, t2);

    let t3 = t2 + TimeDelta::seconds(1);
    let patch = UserPatch {
        disabled: Some(false),
        ..UserPatch::default()
    };
    let enabled = store.user_update(t, id, &patch, t3).await.unwrap().unwrap();
    assert!(!enabled.disabled);
    assert_eq!(enabled.role, Role::Supervisor);

    let t4 = t3 + TimeDelta::seconds(1);
    let touched = store
        .user_update(t, id, &UserPatch::default(), t4)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        touched.updated_at, t4,
        "an empty patch still bumps updated_at"
    );

    let missing = store
        .user_update(t, UserId::new(), &UserPatch::default(), t4)
        .await;
    assert!(missing.unwrap().is_none());
}

async fn user_disable_revokes_sessions(cx: Ctx) {
    let store = &*cx.store;
    let (t, _) = tenant(store, "acme").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let bob = user(store, t, "bob@acme.mx", Role::Empleado).await;
    let (f1, a1) = session(store, t, ana).await;
    let (f2, a2) = session(store, t, ana).await;
    let (_, b1) = session(store, t, bob).await;

    // Enabling (or re-stating enabled) revokes nothing.
    let enable = UserPatch {
        disabled: Some(false),
        ..UserPatch::default()
    };
    store.user_update(t, bob, &enable, now()).await.unwrap();

    let disable = UserPatch {
        disabled: Some(true),
        ..UserPatch::default()
    };
    store.user_update(t, ana, &disable, now()).await.unwrap();
    assert_eq!(
        rotate(store, &a1).await,
        RotateOutcome::Reused { family_id: f1 }
    );
    assert_eq!(
        rotate(store, &a2).await,
        RotateOutcome::Reused { family_id: f2 }
    );
    assert!(is_rotated(&rotate(store, &b1).await));
}

async fn users_are_tenant_scoped(cx: Ctx) {
    let store = &*cx.store;
    let (a, _) = tenant(store, "acme").await;
    let (b, b_admin) = tenant(store, "beta").await;
    let new = new_user("ana@acme.mx", Role::Empleado);
    let ana = made(
        store
            .user_create(a, &new, UserId::new(), None)
            .await
            .unwrap(),
    );

    assert!(store.user_get(b, ana.id).await.unwrap().is_none());
    assert!(
        store
            .user_credentials(b, &new.email)
            .await
            .unwrap()
            .is_none()
    );
    let patch = UserPatch {
        name: Some(Name::parse("Intruso").unwrap()),
        role: Some(Role::Admin),
        disabled: Some(true),
    };
    assert!(
        store
            .user_update(b, ana.id, &patch, now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.user_get(a, ana.id).await.unwrap(), Some(ana.clone()));
    let listed: Vec<UserId> = store
        .user_list(b, first(50))
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(listed, [b_admin]);
    // A session cannot be started for a user under another tenant.
    let family = SessionFamilyId::new();
    assert!(
        store
            .session_start(b, ana.id, family, &live_token())
            .await
            .is_err()
    );
}

async fn project_create_get_update(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let sup = user(store, t, "sup@acme.mx", Role::Supervisor).await;
    let new = NewProject {
        address: Some(Address::parse("Av. Reforma 1, CDMX").unwrap()),
        ..new_project("Torre Norte", Some("OBR-2026-014"), sup)
    };
    let created = made(store.project_create(t, &new, true, None).await.unwrap());
    assert_eq!(created.id, new.id);
    assert_eq!(created.tenant_id, t);
    assert_eq!(created.name, "Torre Norte");
    assert_eq!(created.code.as_deref(), Some("OBR-2026-014"));
    assert_eq!(created.address.as_deref(), Some("Av. Reforma 1, CDMX"));
    assert_eq!(created.created_by, sup);
    assert_eq!(created.archived_at, None);
    assert_eq!(created.created_at, new.created_at);
    assert_eq!(created.updated_at, new.created_at);
    assert_eq!(
        store.project_get(t, new.id).await.unwrap(),
        Some(created.clone())
    );
    assert!(store.member_is(t, new.id, sup).await.unwrap());
    let members = store.member_list(t, new.id, first(10)).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].added_at, new.created_at);

    let other = made(
        store
            .project_create(t, &new_project("Sin miembros", None, admin), false, None)
            .await
            .unwrap(),
    );
    assert!(!store.member_is(t, other.id, admin).await.unwrap());
    assert!(
        store
            .project_get(t, ProjectId::new())
            .await
            .unwrap()
            .is_none()
    );

    let t1 = now() + TimeDelta::seconds(1);
    let patch = ProjectPatch {
        name: Some(Name::parse("Torre Sur").unwrap()),
        ..ProjectPatch::default()
    };
    let renamed = store
        .project_update(t, new.id, &patch, t1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renamed.name, "Torre Sur");
    assert_eq!(renamed.code, created.code);
    assert_eq!(renamed.address, created.address);
    assert_eq!(renamed.updated_at, t1);
    assert_eq!(renamed.created_at, created.created_at);

    let t2 = t1 + TimeDelta::seconds(1);
    let patch = ProjectPatch {
        code: Some(None),
        address: Some(Some(Address::parse("Calle 5, Monterrey").unwrap())),
        ..ProjectPatch::default()
    };
    let changed = store
        .project_update(t, new.id, &patch, t2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed.name, "Torre Sur");
    assert_eq!(changed.code, None);
    assert_eq!(changed.address.as_deref(), Some("Calle 5, Monterrey"));
    assert_eq!(changed.updated_at, t2);
    assert_eq!(store.project_get(t, new.id).await.unwrap(), Some(changed));

    let missing = store
        .project_update(t, ProjectId::new(), &ProjectPatch::default(), t2)
        .await;
    assert!(missing.unwrap().is_none());
}

async fn project_code_conflict(cx: Ctx) {
    let store = &*cx.store;
    let (a, admin_a) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    store
        .project_create(a, &new_project("Uno", Some("OBR-1"), admin_a), false, None)
        .await
        .unwrap();
    let err = store
        .project_create(a, &new_project("Dos", Some("OBR-1"), admin_a), true, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ProjectCode)),
        "{err:?}"
    );
    // Codes are optional, and unique per tenant only.
    let no_code = project(store, a, admin_a, "Sin código").await;
    project(store, a, admin_a, "Tampoco").await;
    store
        .project_create(b, &new_project("Uno", Some("OBR-1"), admin_b), false, None)
        .await
        .unwrap();

    let take = ProjectPatch {
        code: Some(Some(ProjectCode::parse("OBR-1").unwrap())),
        ..ProjectPatch::default()
    };
    let err = store
        .project_update(a, no_code, &take, now())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::ProjectCode)),
        "{err:?}"
    );
    let listed = store
        .project_list(a, all_projects(), first(10))
        .await
        .unwrap();
    assert_eq!(listed.len(), 3, "the failed create left nothing behind");
}

async fn project_list_filters_and_pages(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let mut p = Vec::new();
    for i in 0..5 {
        p.push(project(store, t, admin, &format!("Obra {i}")).await);
    }
    for &i in &[1, 3, 4] {
        assert!(added(
            store.member_add(t, p[i], ana, now(), None).await.unwrap()
        ));
    }
    store.project_archive(t, p[4], now()).await.unwrap();

    let ids = |rows: Vec<buildpeer_core::model::Project>| -> Vec<ProjectId> {
        rows.into_iter().map(|r| r.id).collect()
    };
    let filter = |member: Option<UserId>, include_archived| ProjectFilter {
        member,
        include_archived,
    };
    let list = async |f: ProjectFilter, page: PageRequest| {
        ids(store.project_list(t, f, page).await.unwrap())
    };

    assert_eq!(
        list(filter(None, false), first(10)).await,
        [p[3], p[2], p[1], p[0]]
    );
    assert_eq!(
        list(filter(None, true), first(10)).await,
        [p[4], p[3], p[2], p[1], p[0]]
    );
    assert_eq!(
        list(filter(Some(ana), false), first(10)).await,
        [p[3], p[1]]
    );
    assert_eq!(
        list(filter(Some(ana), true), first(10)).await,
        [p[4], p[3], p[1]]
    );
    assert!(list(filter(Some(admin), true), first(10)).await.is_empty());

    assert_eq!(list(filter(None, true), first(2)).await, [p[4], p[3], p[2]]);
    let cursor = p[3].as_uuid();
    assert_eq!(
        list(filter(None, true), after(2, cursor)).await,
        [p[2], p[1], p[0]]
    );
    assert_eq!(
        list(filter(None, false), after(1, cursor)).await,
        [p[2], p[1]]
    );
    assert_eq!(
        list(filter(Some(ana), true), after(1, p[4].as_uuid())).await,
        [p[3], p[1]]
    );
    assert!(
        list(filter(None, true), after(5, p[0].as_uuid()))
            .await
            .is_empty()
    );
}

async fn project_archive_is_idempotent(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let id = project(store, t, admin, "Torre").await;
    let t1 = now() + TimeDelta::seconds(1);
    let archived = store.project_archive(t, id, t1).await.unwrap().unwrap();
    assert_eq!(archived.archived_at, Some(t1));
    assert_eq!(archived.updated_at, t1);
    let t2 = t1 + TimeDelta::seconds(1);
    let again = store.project_archive(t, id, t2).await.unwrap().unwrap();
    assert_eq!(again, archived, "a second archive changes nothing");
    assert_eq!(store.project_get(t, id).await.unwrap(), Some(archived));
    let missing = store.project_archive(t, ProjectId::new(), t2).await;
    assert!(missing.unwrap().is_none());
}

async fn projects_and_members_are_tenant_scoped(cx: Ctx) {
    let store = &*cx.store;
    let (a, admin_a) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    let pa = project(store, a, admin_a, "Torre").await;
    let pb = project(store, b, admin_b, "Puente").await;
    let ana = user(store, a, "ana@acme.mx", Role::Empleado).await;
    assert!(added(
        store.member_add(a, pa, ana, now(), None).await.unwrap()
    ));
    let original = store.project_get(a, pa).await.unwrap().unwrap();

    assert!(store.project_get(b, pa).await.unwrap().is_none());
    let patch = ProjectPatch {
        name: Some(Name::parse("Robado").unwrap()),
        code: Some(None),
        address: Some(None),
    };
    assert!(
        store
            .project_update(b, pa, &patch, now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.project_archive(b, pa, now()).await.unwrap().is_none());
    assert_eq!(store.project_get(a, pa).await.unwrap(), Some(original));
    for filter in [
        all_projects(),
        ProjectFilter {
            member: Some(ana),
            include_archived: true,
        },
    ] {
        let listed: Vec<ProjectId> = store
            .project_list(b, filter, first(10))
            .await
            .unwrap()
            .iter()
            .map(|p| p.id)
            .collect();
        assert!(!listed.contains(&pa), "{filter:?}");
    }
    assert!(!store.member_is(b, pa, ana).await.unwrap());
    assert!(
        store
            .member_list(b, pa, first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.member_remove(b, pa, ana).await.unwrap());
    assert!(store.member_is(a, pa, ana).await.unwrap(), "still a member");

    // No membership can cross tenants, whichever side names the other.
    assert!(store.member_add(b, pa, ana, now(), None).await.is_err());
    assert!(store.member_add(b, pa, admin_b, now(), None).await.is_err());
    assert!(store.member_add(a, pa, admin_b, now(), None).await.is_err());
    assert!(store.member_add(a, pb, ana, now(), None).await.is_err());
    assert!(store.member_add(b, pb, ana, now(), None).await.is_err());
    assert!(
        store
            .member_list(b, pb, first(10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.member_list(a, pa, first(10)).await.unwrap().len(), 1);
}

async fn members_add_remove_list(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let other = project(store, t, admin, "Puente").await;
    let u1 = user(store, t, "u1@acme.mx", Role::Empleado).await;
    let u2 = user(store, t, "u2@acme.mx", Role::Viewer).await;
    let u3 = user(store, t, "u3@acme.mx", Role::Supervisor).await;

    assert!(!store.member_is(t, p, u1).await.unwrap());
    let added_at = now();
    assert!(added(
        store.member_add(t, p, u1, added_at, None).await.unwrap()
    ));
    assert!(
        !added(store.member_add(t, p, u1, now(), None).await.unwrap()),
        "idempotent"
    );
    assert!(store.member_is(t, p, u1).await.unwrap());
    assert!(added(
        store.member_add(t, p, u2, now(), None).await.unwrap()
    ));
    assert!(added(
        store.member_add(t, p, u3, now(), None).await.unwrap()
    ));
    assert!(added(
        store.member_add(t, other, u1, now(), None).await.unwrap()
    ));

    let rename = UserPatch {
        name: Some(Name::parse("Uno Renombrado").unwrap()),
        ..UserPatch::default()
    };
    store.user_update(t, u1, &rename, now()).await.unwrap();

    let members = store.member_list(t, p, first(10)).await.unwrap();
    let users: Vec<UserId> = members.iter().map(|m| m.user_id).collect();
    assert_eq!(users, [u3, u2, u1], "newest membership first");
    assert!(members.iter().all(|m| m.project_id == p));
    assert_eq!(members[0].email, "u3@acme.mx");
    assert_eq!(members[0].role, Role::Supervisor);
    assert_eq!(members[1].role, Role::Viewer);
    assert_eq!(
        members[2].name, "Uno Renombrado",
        "the user's current profile"
    );
    assert_eq!(members[2].added_at, added_at);

    let page = store.member_list(t, p, first(1)).await.unwrap();
    assert_eq!(page, members[..2]);
    let cursor = members[0].membership_id.as_uuid();
    let rest = store.member_list(t, p, after(5, cursor)).await.unwrap();
    assert_eq!(rest, members[1..]);

    assert!(store.member_remove(t, p, u2).await.unwrap());
    assert!(!store.member_remove(t, p, u2).await.unwrap());
    assert!(!store.member_is(t, p, u2).await.unwrap());
    assert!(store.member_is(t, other, u1).await.unwrap());
    let users: Vec<UserId> = store
        .member_list(t, p, first(10))
        .await
        .unwrap()
        .iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(users, [u3, u1]);
    assert!(
        added(store.member_add(t, p, u2, now(), None).await.unwrap()),
        "re-adding works"
    );
}

async fn session_rotate_then_reuse_revokes_family(cx: Ctx) {
    let store = &*cx.store;
    let (t, ana) = tenant(store, "acme").await;
    let (family, t1) = session(store, t, ana).await;
    let (_, other) = session(store, t, ana).await;

    let t2 = live_token();
    let rotated = store.session_rotate(&t1.hash, &t2, now()).await.unwrap();
    let expected = RotateOutcome::Rotated {
        tenant_id: t,
        user_id: ana,
        family_id: family,
    };
    assert_eq!(rotated, expected);
    let t3 = live_token();
    assert_eq!(
        store.session_rotate(&t2.hash, &t3, now()).await.unwrap(),
        expected
    );

    // t1 again: someone replayed it, so the whole family goes, t3 included.
    let reused = RotateOutcome::Reused { family_id: family };
    assert_eq!(rotate(store, &t1).await, reused);
    assert_eq!(rotate(store, &t3).await, reused);
    assert!(
        is_rotated(&rotate(store, &other).await),
        "other sessions live on"
    );
}

/// Timestamps are compared in SQL; on SQLite they are text, so check the
/// edges where sqlx's encoding changes shape (whole seconds vs fractions).
async fn session_expiry_boundaries(cx: Ctx) {
    let store = &*cx.store;
    let (t, ana) = tenant(store, "acme").await;
    let second = Utc::now().trunc_subsecs(0) + TimeDelta::days(1);
    let ms = TimeDelta::milliseconds;
    let cases = [
        (second, second - micros(1), true),
        (second, second, false),
        (second, second + micros(1), false),
        (second + ms(500), second + ms(500) - micros(1), true),
        (second + ms(500), second + ms(500) + micros(1), false),
        (second + micros(123_456), second + ms(123), true),
        (second + ms(123), second + micros(123_001), false),
        (
            second + TimeDelta::seconds(1),
            second + micros(999_999),
            true,
        ),
        (
            second + micros(999_999),
            second + TimeDelta::seconds(1),
            false,
        ),
    ];
    for (expires_at, at, live) in cases {
        let presented = token(expires_at);
        store
            .session_start(t, ana, SessionFamilyId::new(), &presented)
            .await
            .unwrap();
        let outcome = store
            .session_rotate(&presented.hash, &live_token(), at)
            .await
            .unwrap();
        let expected = if live { "rotated" } else { "expired" };
        assert_eq!(
            is_rotated(&outcome),
            live,
            "expires {expires_at:?}, presented {at:?}: want {expected}, got {outcome:?}"
        );
        if !live {
            assert_eq!(outcome, RotateOutcome::Expired);
        }
    }
}

async fn session_unknown_and_expired_store_nothing(cx: Ctx) {
    let store = &*cx.store;
    let (t, ana) = tenant(store, "acme").await;
    let unknown = live_token();
    let next = live_token();
    let outcome = store
        .session_rotate(&unknown.hash, &next, now())
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Unknown);
    assert_eq!(rotate(store, &next).await, RotateOutcome::Unknown);

    let expires = now() + TimeDelta::minutes(1);
    let presented = token(expires);
    let family = SessionFamilyId::new();
    store
        .session_start(t, ana, family, &presented)
        .await
        .unwrap();
    let next = live_token();
    let late = expires + TimeDelta::minutes(1);
    let outcome = store
        .session_rotate(&presented.hash, &next, late)
        .await
        .unwrap();
    assert_eq!(outcome, RotateOutcome::Expired);
    assert_eq!(rotate(store, &next).await, RotateOutcome::Unknown);
    // Expired changed nothing: presented in time, the token still rotates.
    assert_eq!(
        store
            .session_rotate(&presented.hash, &live_token(), expires - micros(1))
            .await
            .unwrap(),
        RotateOutcome::Rotated {
            tenant_id: t,
            user_id: ana,
            family_id: family
        }
    );
}

async fn concurrent_rotations_yield_one_winner(cx: Ctx) {
    let (t, ana) = tenant(&*cx.store, "acme").await;
    let (family, presented) = session(&*cx.store, t, ana).await;
    let hash = presented.hash;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&cx.store);
            tokio::spawn(async move { store.session_rotate(&hash, &live_token(), now()).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes.iter().filter(|o| is_rotated(o)).count(),
        1,
        "{outcomes:?}"
    );
    let reused = RotateOutcome::Reused { family_id: family };
    assert!(
        outcomes.iter().all(|o| is_rotated(o) || *o == reused),
        "{outcomes:?}"
    );
}

/// A logout racing a rotation of the same token must not leave the token
/// the rotation mints alive, whichever commits first.
async fn concurrent_logout_and_rotation_leave_nothing_live(cx: Ctx) {
    let (t, ana) = tenant(&*cx.store, "acme").await;
    for _ in 0..20 {
        let (_, presented) = session(&*cx.store, t, ana).await;
        let next = live_token();
        let (store, hash, minted) = (Arc::clone(&cx.store), presented.hash, next.clone());
        let rotation =
            tokio::spawn(async move { store.session_rotate(&hash, &minted, now()).await });
        let store = Arc::clone(&cx.store);
        let logout = tokio::spawn(async move { store.session_revoke(&hash, now()).await });
        rotation.await.unwrap().unwrap();
        assert!(logout.await.unwrap().unwrap().is_some());
        let after = rotate(&*cx.store, &next).await;
        assert!(!is_rotated(&after), "{after:?}");
    }
}

async fn session_revoke_and_revoke_family(cx: Ctx) {
    let store = &*cx.store;
    let (t, ana) = tenant(store, "acme").await;
    let (f, f1) = session(store, t, ana).await;
    let f2 = live_token();
    store.session_rotate(&f1.hash, &f2, now()).await.unwrap();
    let (g, g1) = session(store, t, ana).await;
    let (_, h1) = session(store, t, ana).await;

    // Logging out with an already-rotated token still ends its session.
    assert!(!store.session_revoked(f).await.unwrap());
    assert_eq!(
        store.session_revoke(&f1.hash, now()).await.unwrap(),
        Some(f)
    );
    assert!(store.session_revoked(f).await.unwrap());
    assert!(!store.session_revoked(g).await.unwrap());
    assert_eq!(
        rotate(store, &f2).await,
        RotateOutcome::Reused { family_id: f }
    );
    assert_eq!(
        store.session_revoke(&f2.hash, now()).await.unwrap(),
        Some(f),
        "idempotent"
    );
    assert_eq!(
        store
            .session_revoke(&live_token().hash, now())
            .await
            .unwrap(),
        None
    );

    store.session_revoke_family(g, now()).await.unwrap();
    assert!(store.session_revoked(g).await.unwrap());
    assert_eq!(
        rotate(store, &g1).await,
        RotateOutcome::Reused { family_id: g }
    );
    store
        .session_revoke_family(SessionFamilyId::new(), now())
        .await
        .unwrap();
    assert!(
        is_rotated(&rotate(store, &h1).await),
        "other sessions live on"
    );
}

async fn upload_create_and_get_round_trip(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;

    let single = NewUpload {
        sha256: Some(sha('a')),
        ..new_upload(t, p, admin)
    };
    let got = create(store, t, &single).await;
    assert_eq!(got.id, single.id);
    assert_eq!(got.tenant_id, t);
    assert_eq!(got.project_id, p);
    assert_eq!(got.uploaded_by, admin);
    assert_eq!(got.status, UploadStatus::Pending);
    assert_eq!(got.filename, "fachada norte.jpg");
    assert_eq!(got.content_type, "image/jpeg");
    assert_eq!(got.size, 3 * MIB);
    assert_eq!(got.sha256.as_deref(), Some(sha('a').as_str()));
    assert_eq!(got.object_key, single.object_key.as_str());
    assert_eq!(got.transfer, Transfer::Single);
    assert_eq!(got.expires_at, single.expires_at);
    assert_eq!(got.uploaded_at, None);
    assert_eq!(got.deleted_at, None);
    assert_eq!(got.failure, None);
    assert_eq!(got.created_at, single.created_at);
    assert_eq!(got.updated_at, single.created_at);
    assert_eq!(store.upload_get(t, single.id).await.unwrap(), Some(got));

    let multipart = NewUpload {
        content_type: ContentType::parse("application/pdf").unwrap(),
        size: 5 * TIB,
        transfer: Transfer::Multipart {
            upload_id: "2~mp-7f3a9c".to_owned(),
            part_size: 525 * MIB,
            part_count: 9_987,
        },
        ..new_upload(t, p, admin)
    };
    let got = create(store, t, &multipart).await;
    assert_eq!(got.transfer, multipart.transfer);
    assert_eq!(got.size, 5 * TIB);
    assert_eq!(got.content_type, "application/pdf");
    assert_eq!(got.sha256, None);
    assert_eq!(store.upload_get(t, multipart.id).await.unwrap(), Some(got));

    // The worker's failure comes back with the upload.
    set_status(&cx, single.id, UploadStatus::Failed).await;
    let failed = get(store, t, single.id).await;
    assert_eq!(failed.status, UploadStatus::Failed);
    assert_eq!(
        failed.failure,
        Some(UploadFailure {
            code: "corrupt_image".to_owned(),
            message: "not a JPEG".to_owned(),
        })
    );

    // A size SQL cannot hold is refused, not wrapped, and writes nothing.
    let huge = NewUpload {
        size: u64::MAX,
        ..new_upload(t, p, admin)
    };
    let err = store.upload_create(t, &huge, None).await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert!(store.upload_get(t, huge.id).await.unwrap().is_none());
    // So is an upload into a project that does not exist.
    let orphan = new_upload(t, ProjectId::new(), admin);
    assert!(store.upload_create(t, &orphan, None).await.is_err());
    assert!(
        store
            .upload_get(t, UploadId::new())
            .await
            .unwrap()
            .is_none()
    );
}

async fn uploads_are_tenant_scoped(cx: Ctx) {
    let store = &*cx.store;
    let (a, admin_a) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    let pa = project(store, a, admin_a, "Torre").await;
    let pb = project(store, b, admin_b, "Puente").await;
    let hashed = NewUpload {
        sha256: Some(sha('a')),
        ..new_upload(a, pa, admin_a)
    };
    let stored = create(store, a, &hashed).await;
    mark(store, a, stored.id).await.unwrap();
    let pending = upload(store, a, pa, admin_a).await;
    let trashed = upload(store, a, pa, admin_a).await;
    store
        .upload_trash(a, trashed.id, now())
        .await
        .unwrap()
        .unwrap();
    let before = [
        get(store, a, stored.id).await,
        pending.clone(),
        get(store, a, trashed.id).await,
    ];

    for up in &before {
        assert!(store.upload_get(b, up.id).await.unwrap().is_none());
        let job = new_job(now());
        let marked = store.upload_mark_uploaded(b, up.id, &job, now()).await;
        assert!(marked.unwrap().is_none());
        assert!(store.upload_trash(b, up.id, now()).await.unwrap().is_none());
        let restored = store.upload_restore(b, up.id, now()).await;
        assert!(restored.unwrap().is_none());
        assert!(!store.upload_purge(b, up.id, later()).await.unwrap());
    }
    for deleted in [false, true] {
        let filter = UploadFilter {
            deleted,
            ..UploadFilter::default()
        };
        let listed = store.upload_list(b, pa, &filter, first(10)).await.unwrap();
        assert!(listed.is_empty(), "deleted: {deleted}");
    }
    let duplicate = store.upload_find_duplicate(b, pa, admin_a, &sha('a')).await;
    assert!(duplicate.unwrap().is_none());
    assert_eq!(store.upload_usage(b).await.unwrap(), 0);

    // Nothing B tried changed A's uploads, or enqueued a job for them.
    for up in &before {
        assert_eq!(&get(store, a, up.id).await, up);
    }
    assert!(jobs_of(&cx, pending.id).await.is_empty());
    let duplicate = store.upload_find_duplicate(a, pa, admin_a, &sha('a')).await;
    assert_eq!(duplicate.unwrap().map(|u| u.id), Some(stored.id));
    assert_eq!(store.upload_usage(a).await.unwrap(), 9 * MIB);

    // An upload cannot name another tenant's project or user.
    assert!(
        store
            .upload_create(b, &new_upload(b, pa, admin_b), None)
            .await
            .is_err()
    );
    assert!(
        store
            .upload_create(b, &new_upload(b, pb, admin_a), None)
            .await
            .is_err()
    );
    let own = upload(store, b, pb, admin_b).await;
    assert_eq!(store.upload_usage(b).await.unwrap(), own.size);
    let all = UploadFilter::default();
    let listed = store.upload_list(b, pb, &all, first(10)).await.unwrap();
    assert_eq!(upload_ids(&listed), [own.id]);
}

async fn upload_idempotency_keys_replay(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let p = project(store, t, admin, "Torre").await;
    let key = idempotency("req-7c1e", 1);

    let initial = new_upload(t, p, admin);
    let original = created(store.upload_create(t, &initial, Some(&key)).await.unwrap());

    // A retry comes with a fresh upload; it is not written.
    let retry = new_upload(t, p, admin);
    assert_eq!(
        store.upload_create(t, &retry, Some(&key)).await.unwrap(),
        Creation::Replayed {
            existing: original.clone(),
            same_request: true
        }
    );
    assert!(store.upload_get(t, retry.id).await.unwrap().is_none());
    // The very same upload again is a replay too, not a clash on its id.
    assert_eq!(
        store.upload_create(t, &initial, Some(&key)).await.unwrap(),
        Creation::Replayed {
            existing: original.clone(),
            same_request: true
        }
    );
    // The key with another request behind it.
    let other_request = idempotency("req-7c1e", 2);
    assert_eq!(
        store
            .upload_create(t, &new_upload(t, p, admin), Some(&other_request))
            .await
            .unwrap(),
        Creation::Replayed {
            existing: original.clone(),
            same_request: false
        }
    );

    // Keys belong to their uploader.
    let anas = created(
        store
            .upload_create(t, &new_upload(t, p, ana), Some(&key))
            .await
            .unwrap(),
    );
    assert_ne!(anas.id, original.id);
    assert_eq!(anas.uploaded_by, ana);
    // Other keys, or none, create.
    let other_key = idempotency("req-8d2f", 1);
    let third = store
        .upload_create(t, &new_upload(t, p, admin), Some(&other_key))
        .await;
    created(third.unwrap());
    upload(store, t, p, admin).await;
    upload(store, t, p, admin).await;
    let all = UploadFilter::default();
    let listed = store.upload_list(t, p, &all, first(10)).await.unwrap();
    assert_eq!(listed.len(), 5);

    // A replay shows the upload as it is now.
    let marked = mark(store, t, original.id).await.unwrap();
    assert_eq!(
        store
            .upload_create(t, &new_upload(t, p, admin), Some(&key))
            .await
            .unwrap(),
        Creation::Replayed {
            existing: marked,
            same_request: true
        }
    );
}

async fn concurrent_creates_with_one_key_write_one_upload(cx: Ctx) {
    let (t, admin) = tenant(&*cx.store, "acme").await;
    let p = project(&*cx.store, t, admin, "Torre").await;
    let key = idempotency("req-7c1e", 1);
    // Half retry with the very same upload, half with fresh ones.
    let shared = new_upload(t, p, admin);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&cx.store);
            let key = key.clone();
            let new = if i % 2 == 0 {
                shared.clone()
            } else {
                new_upload(t, p, admin)
            };
            tokio::spawn(async move { store.upload_create(t, &new, Some(&key)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    let winners: Vec<&Upload> = outcomes
        .iter()
        .filter_map(|o| match o {
            Creation::Created(upload) => Some(upload),
            Creation::Replayed { .. } => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = winners[0].clone();
    for outcome in &outcomes {
        if let Creation::Replayed {
            existing,
            same_request,
        } = outcome
        {
            assert_eq!(existing, &winner);
            assert!(same_request);
        }
    }
    let all = UploadFilter::default();
    let listed = cx.store.upload_list(t, p, &all, first(10)).await.unwrap();
    assert_eq!(listed, [winner]);
}

async fn upload_duplicates_are_stored_live_copies(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let p = project(store, t, admin, "Torre").await;
    let other = project(store, t, admin, "Puente").await;
    let h = sha('c');
    let hashed = |project, by| NewUpload {
        sha256: Some(h.clone()),
        ..new_upload(t, project, by)
    };
    let find = async |project, by, hash: &Sha256Hex| {
        store
            .upload_find_duplicate(t, project, by, hash)
            .await
            .unwrap()
            .map(|u| u.id)
    };

    let older = create(store, t, &hashed(p, admin)).await;
    assert_eq!(find(p, admin, &h).await, None, "pending: no bytes yet");
    mark(store, t, older.id).await.unwrap();
    assert_eq!(find(p, admin, &h).await, Some(older.id));
    assert_eq!(
        store.upload_find_duplicate(t, p, admin, &h).await.unwrap(),
        Some(get(store, t, older.id).await)
    );
    for status in UploadStatus::ALL {
        set_status(&cx, older.id, status).await;
        let found = find(p, admin, &h).await;
        assert_eq!(found.is_some(), status.has_bytes(), "{status}");
    }
    set_status(&cx, older.id, UploadStatus::Completed).await;

    // The newest stored copy wins, pending ones do not count.
    let newer = create(store, t, &hashed(p, admin)).await;
    mark(store, t, newer.id).await.unwrap();
    create(store, t, &hashed(p, admin)).await;
    assert_eq!(find(p, admin, &h).await, Some(newer.id));

    // Trashed copies are no duplicates.
    store.upload_trash(t, newer.id, now()).await.unwrap();
    assert_eq!(find(p, admin, &h).await, Some(older.id));
    store.upload_trash(t, older.id, now()).await.unwrap();
    assert_eq!(find(p, admin, &h).await, None);
    store.upload_restore(t, older.id, now()).await.unwrap();
    assert_eq!(find(p, admin, &h).await, Some(older.id));

    // Only the same uploader, project and hash.
    let anas = create(store, t, &hashed(p, ana)).await;
    mark(store, t, anas.id).await.unwrap();
    assert_eq!(find(p, ana, &h).await, Some(anas.id));
    assert_eq!(find(other, admin, &h).await, None);
    assert_eq!(find(p, admin, &sha('d')).await, None);
}

async fn upload_usage_counts_all_but_expired(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    let p = project(store, t, admin, "Torre").await;
    let pb = project(store, b, admin_b, "Puente").await;
    assert_eq!(store.upload_usage(t).await.unwrap(), 0);

    let sized = |size| NewUpload {
        size,
        ..new_upload(t, p, admin)
    };
    create(store, t, &sized(100)).await;
    let uploaded = create(store, t, &sized(2_000)).await;
    mark(store, t, uploaded.id).await.unwrap();
    let trashed = create(store, t, &sized(5 * TIB)).await;
    store.upload_trash(t, trashed.id, now()).await.unwrap();
    let due = NewUpload {
        expires_at: now() - TimeDelta::seconds(1),
        ..sized(30_000)
    };
    create(store, t, &due).await;
    let expired = store.uploads_expire_due(now(), 10).await.unwrap();
    assert_eq!(upload_ids(&expired), [due.id]);
    let theirs = NewUpload {
        size: 7,
        ..new_upload(b, pb, admin_b)
    };
    create(store, b, &theirs).await;

    assert_eq!(store.upload_usage(t).await.unwrap(), 100 + 2_000 + 5 * TIB);
    assert_eq!(store.upload_usage(b).await.unwrap(), 7);
    store.upload_purge(t, trashed.id, later()).await.unwrap();
    assert_eq!(store.upload_usage(t).await.unwrap(), 100 + 2_000);
}

async fn upload_list_filters_and_pages(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let p = project(store, t, admin, "Torre").await;
    let q = project(store, t, admin, "Puente").await;
    let base = now() - TimeDelta::hours(1);
    let minute = |i: i64| base + TimeDelta::minutes(i);
    let mut u = Vec::new();
    for i in 0..6 {
        let new = NewUpload {
            created_at: minute(i),
            ..new_upload(t, p, if i % 2 == 0 { admin } else { ana })
        };
        u.push(create(store, t, &new).await.id);
    }
    let elsewhere = upload(store, t, q, admin).await;
    mark(store, t, u[1]).await.unwrap();
    mark(store, t, u[4]).await.unwrap();
    store.upload_trash(t, u[2], now()).await.unwrap();
    store.upload_trash(t, u[5], now()).await.unwrap();

    let list = async |filter: UploadFilter, page: PageRequest| {
        upload_ids(&store.upload_list(t, p, &filter, page).await.unwrap())
    };
    let live = UploadFilter::default();
    let trash = UploadFilter {
        deleted: true,
        ..UploadFilter::default()
    };
    assert_eq!(
        list(live.clone(), first(10)).await,
        [u[4], u[3], u[1], u[0]]
    );
    assert_eq!(list(trash.clone(), first(10)).await, [u[5], u[2]]);
    let status = |status| UploadFilter {
        status: Some(status),
        ..UploadFilter::default()
    };
    assert_eq!(
        list(status(UploadStatus::Uploaded), first(10)).await,
        [u[4], u[1]]
    );
    assert_eq!(
        list(status(UploadStatus::Pending), first(10)).await,
        [u[3], u[0]]
    );
    assert!(
        list(status(UploadStatus::Expired), first(10))
            .await
            .is_empty()
    );
    let by_ana = UploadFilter {
        uploaded_by: Some(ana),
        ..UploadFilter::default()
    };
    assert_eq!(list(by_ana.clone(), first(10)).await, [u[3], u[1]]);
    let ana_trash = UploadFilter {
        deleted: true,
        ..by_ana
    };
    assert_eq!(list(ana_trash, first(10)).await, [u[5]]);
    // `from` is inclusive, `to` exclusive.
    let range = UploadFilter {
        from: Some(minute(1)),
        to: Some(minute(4)),
        ..UploadFilter::default()
    };
    assert_eq!(list(range.clone(), first(10)).await, [u[3], u[1]]);
    let range_trash = UploadFilter {
        deleted: true,
        ..range
    };
    assert_eq!(list(range_trash, first(10)).await, [u[2]]);
    let from = UploadFilter {
        from: Some(minute(4) + micros(1)),
        deleted: true,
        ..UploadFilter::default()
    };
    assert_eq!(list(from, first(10)).await, [u[5]]);
    let to = UploadFilter {
        to: Some(minute(1) + micros(1)),
        ..UploadFilter::default()
    };
    assert_eq!(list(to, first(10)).await, [u[1], u[0]]);

    // Pages: limit + 1 rows, newest first, from the cursor on.
    assert_eq!(list(live.clone(), first(2)).await, [u[4], u[3], u[1]]);
    let cursor = u[3].as_uuid();
    assert_eq!(list(live.clone(), after(2, cursor)).await, [u[1], u[0]]);
    let pending = status(UploadStatus::Pending);
    assert_eq!(list(pending, after(1, u[4].as_uuid())).await, [u[3], u[0]]);
    assert!(list(live, after(5, u[0].as_uuid())).await.is_empty());

    let all = UploadFilter::default();
    let other = store.upload_list(t, q, &all, first(10)).await.unwrap();
    assert_eq!(upload_ids(&other), [elsewhere.id]);
}

async fn upload_mark_uploaded_enqueues_one_job(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let pending = upload(store, t, p, admin).await;

    let at = now() + TimeDelta::seconds(1);
    let job = new_job(at);
    let marked = store
        .upload_mark_uploaded(t, pending.id, &job, at)
        .await
        .unwrap()
        .unwrap();
    let expected = Upload {
        status: UploadStatus::Uploaded,
        uploaded_at: Some(at),
        updated_at: at,
        ..pending.clone()
    };
    assert_eq!(marked, expected);
    assert_eq!(get(store, t, pending.id).await, expected);
    assert_eq!(jobs_of(&cx, pending.id).await, [JobRow::queued(t, &job)]);

    // Again: the upload as it is, and no second job.
    let later = at + TimeDelta::seconds(1);
    let again = store
        .upload_mark_uploaded(t, pending.id, &new_job(later), later)
        .await
        .unwrap();
    assert_eq!(again, Some(expected));
    assert_eq!(jobs_of(&cx, pending.id).await, [JobRow::queued(t, &job)]);

    // Concurrent completions enqueue once, and all see the one outcome.
    let raced = upload(store, t, p, admin).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&cx.store);
            tokio::spawn(async move {
                store
                    .upload_mark_uploaded(t, raced.id, &new_job(now()), now())
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap().unwrap());
    }
    assert_eq!(outcomes[0].status, UploadStatus::Uploaded);
    assert!(outcomes.iter().all(|o| *o == outcomes[0]), "{outcomes:?}");
    assert_eq!(jobs_of(&cx, raced.id).await.len(), 1);

    // Uploads past PENDING are returned unchanged, without a job.
    let late = NewUpload {
        expires_at: now() - TimeDelta::seconds(1),
        ..new_upload(t, p, admin)
    };
    create(store, t, &late).await;
    store.uploads_expire_due(now(), 10).await.unwrap();
    let expired = get(store, t, late.id).await;
    assert_eq!(mark(store, t, late.id).await, Some(expired));
    assert!(jobs_of(&cx, late.id).await.is_empty());
    for status in [UploadStatus::Processing, UploadStatus::Failed] {
        let up = upload(store, t, p, admin).await;
        set_status(&cx, up.id, status).await;
        let before = get(store, t, up.id).await;
        assert_eq!(mark(store, t, up.id).await, Some(before));
        assert!(jobs_of(&cx, up.id).await.is_empty());
    }
    assert!(mark(store, t, UploadId::new()).await.is_none());
}

async fn uploads_expire_due_only_due_pending(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    let p = project(store, t, admin, "Torre").await;
    let pb = project(store, b, admin_b, "Puente").await;
    let at = now();
    let expiring = |tenant, project, by, expires_at| NewUpload {
        expires_at,
        ..new_upload(tenant, project, by)
    };
    let secs = TimeDelta::seconds;
    // Sweeps are system-wide: another tenant's uploads expire too.
    let theirs = create(store, b, &expiring(b, pb, admin_b, at - secs(5))).await;
    let due1 = create(store, t, &expiring(t, p, admin, at - secs(2))).await;
    let due2 = create(store, t, &expiring(t, p, admin, at - micros(1))).await;
    // URLs stop working at `expires_at`, as refresh tokens do.
    let due3 = create(store, t, &expiring(t, p, admin, at)).await;
    let not_due = create(store, t, &expiring(t, p, admin, at + micros(1))).await;
    let uploaded = create(store, t, &expiring(t, p, admin, at - secs(9))).await;
    mark(store, t, uploaded.id).await.unwrap();
    let uploaded = get(store, t, uploaded.id).await;

    let sweep = async |limit| {
        let mut expired = store.uploads_expire_due(at, limit).await.unwrap();
        expired.sort_by_key(|u| u.expires_at);
        expired
    };
    let expired = sweep(2).await;
    assert_eq!(upload_ids(&expired), [theirs.id, due1.id], "earliest first");
    for (after, before) in expired.iter().zip([&theirs, &due1]) {
        let expected = Upload {
            status: UploadStatus::Expired,
            updated_at: at,
            ..before.clone()
        };
        assert_eq!(after, &expected);
        assert_eq!(get(store, after.tenant_id, after.id).await, expected);
    }
    assert_eq!(upload_ids(&sweep(10).await), [due2.id, due3.id]);
    assert!(sweep(10).await.is_empty());
    assert_eq!(get(store, t, not_due.id).await, not_due);
    assert_eq!(get(store, t, uploaded.id).await, uploaded);
    let later = store.uploads_expire_due(at + micros(1), 10).await.unwrap();
    assert_eq!(upload_ids(&later), [not_due.id]);
}

async fn concurrent_expiry_sweeps_never_share_an_upload(cx: Ctx) {
    let (t, admin) = tenant(&*cx.store, "acme").await;
    let p = project(&*cx.store, t, admin, "Torre").await;
    let mut due = HashSet::new();
    for _ in 0..30 {
        let new = NewUpload {
            expires_at: now() - TimeDelta::seconds(1),
            ..new_upload(t, p, admin)
        };
        due.insert(create(&*cx.store, t, &new).await.id);
    }
    let sweepers: Vec<_> = (0..4)
        .map(|_| {
            let store = Arc::clone(&cx.store);
            tokio::spawn(async move {
                let mut expired = Vec::new();
                loop {
                    let batch = store.uploads_expire_due(now(), 3).await.unwrap();
                    if batch.is_empty() {
                        return expired;
                    }
                    expired.extend(batch.into_iter().map(|u| u.id));
                }
            })
        })
        .collect();
    let mut expired = Vec::new();
    for sweeper in sweepers {
        expired.extend(sweeper.await.unwrap());
    }
    let unique: HashSet<UploadId> = expired.iter().copied().collect();
    assert_eq!(unique.len(), expired.len(), "an upload was returned twice");
    assert_eq!(unique, due);
}

async fn upload_trash_and_restore_are_idempotent(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let up = upload(store, t, p, admin).await;
    let second = TimeDelta::seconds(1);

    let t1 = now() + second;
    let trashed = store.upload_trash(t, up.id, t1).await.unwrap().unwrap();
    let expected = Upload {
        deleted_at: Some(t1),
        updated_at: t1,
        ..up.clone()
    };
    assert_eq!(trashed, expected, "the status stays as it was");
    let again = store.upload_trash(t, up.id, t1 + second).await.unwrap();
    assert_eq!(
        again,
        Some(expected.clone()),
        "a second trash changes nothing"
    );
    assert_eq!(get(store, t, up.id).await, expected);

    let t3 = t1 + second * 2;
    let restored = store.upload_restore(t, up.id, t3).await.unwrap().unwrap();
    let expected = Upload {
        deleted_at: None,
        updated_at: t3,
        ..up.clone()
    };
    assert_eq!(restored, expected);
    let again = store.upload_restore(t, up.id, t3 + second).await.unwrap();
    assert_eq!(again, Some(expected.clone()));
    assert_eq!(get(store, t, up.id).await, expected);

    let missing = UploadId::new();
    assert!(store.upload_trash(t, missing, t3).await.unwrap().is_none());
    assert!(
        store
            .upload_restore(t, missing, t3)
            .await
            .unwrap()
            .is_none()
    );
}

async fn uploads_purge_due_oldest_first_before_cutoff(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (b, admin_b) = tenant(store, "beta").await;
    let p = project(store, t, admin, "Torre").await;
    let pb = project(store, b, admin_b, "Puente").await;
    let base = now() - TimeDelta::days(40);
    let at = |ms: i64| base + TimeDelta::milliseconds(ms);
    let mut trashed = Vec::new();
    for ms in [3_000, 1_000, 2_000, 10_000] {
        let up = upload(store, t, p, admin).await;
        store.upload_trash(t, up.id, at(ms)).await.unwrap();
        trashed.push(up.id);
    }
    let [u3, u1, u2, u10] = trashed[..] else {
        unreachable!()
    };
    let theirs = upload(store, b, pb, admin_b).await;
    store.upload_trash(b, theirs.id, at(500)).await.unwrap();
    upload(store, t, p, admin).await;

    let due = async |before, limit| {
        let rows = store.uploads_purge_due(before, limit).await.unwrap();
        assert!(rows.iter().all(|u| u.deleted_at.is_some()));
        upload_ids(&rows)
    };
    assert_eq!(due(at(5_000), 10).await, [theirs.id, u1, u2, u3]);
    assert_eq!(due(at(5_000), 2).await, [theirs.id, u1]);
    // Trashed before the cutoff, not at it.
    assert_eq!(due(at(3_000), 10).await, [theirs.id, u1, u2]);
    assert_eq!(due(at(10_000) + micros(1), 10).await.len(), 5);
    assert!(due(at(500), 10).await.is_empty());
    assert!(due(now(), 10).await.contains(&u10));
    // Restored uploads are no longer due.
    store.upload_restore(t, u1, now()).await.unwrap();
    assert_eq!(due(at(5_000), 10).await, [theirs.id, u2, u3]);
}

async fn upload_purge_takes_only_trashed(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let key = idempotency("req-7c1e", 1);
    let initial = new_upload(t, p, admin);
    let up = created(store.upload_create(t, &initial, Some(&key)).await.unwrap());
    mark(store, t, up.id).await.unwrap();
    assert_eq!(jobs_of(&cx, up.id).await.len(), 1);

    assert!(
        !store.upload_purge(t, up.id, later()).await.unwrap(),
        "live"
    );
    assert!(store.upload_get(t, up.id).await.unwrap().is_some());
    store.upload_trash(t, up.id, now()).await.unwrap();
    store.upload_restore(t, up.id, now()).await.unwrap();
    assert!(
        !store.upload_purge(t, up.id, later()).await.unwrap(),
        "restored"
    );

    store.upload_trash(t, up.id, now()).await.unwrap();
    let trashed_at = store
        .upload_get(t, up.id)
        .await
        .unwrap()
        .unwrap()
        .deleted_at
        .unwrap();
    assert!(
        !store.upload_purge(t, up.id, trashed_at).await.unwrap(),
        "trashed after the cutoff"
    );
    assert!(store.upload_purge(t, up.id, later()).await.unwrap());
    assert!(store.upload_get(t, up.id).await.unwrap().is_none());
    assert!(
        !store.upload_purge(t, up.id, later()).await.unwrap(),
        "already gone"
    );
    assert!(
        store
            .upload_restore(t, up.id, now())
            .await
            .unwrap()
            .is_none()
    );
    // Its jobs and idempotency key went with it: the key creates anew.
    assert!(jobs_of(&cx, up.id).await.is_empty());
    let again = store
        .upload_create(t, &new_upload(t, p, admin), Some(&key))
        .await;
    assert_ne!(created(again.unwrap()).id, up.id);
    assert!(
        !store
            .upload_purge(t, UploadId::new(), later())
            .await
            .unwrap()
    );
}

async fn tenant_limits_round_trip(cx: Ctx) {
    let store = &*cx.store;
    let (t, _) = tenant(store, "acme").await;
    let (b, _) = tenant(store, "beta").await;
    assert_eq!(
        store.tenant_limits(t).await.unwrap(),
        TenantLimits::default()
    );

    for limits in [
        TenantLimits {
            max_upload_bytes: Some(5 * TIB),
            quota_bytes: None,
        },
        TenantLimits {
            max_upload_bytes: None,
            quota_bytes: Some(20 * TIB),
        },
        TenantLimits {
            max_upload_bytes: Some(0),
            quota_bytes: Some(u64::try_from(i64::MAX).unwrap()),
        },
        TenantLimits::default(),
    ] {
        store.tenant_set_limits(t, limits).await.unwrap();
        assert_eq!(store.tenant_limits(t).await.unwrap(), limits);
        assert_eq!(
            store.tenant_limits(b).await.unwrap(),
            TenantLimits::default()
        );
    }

    let set = TenantLimits {
        max_upload_bytes: Some(MIB),
        quota_bytes: Some(TIB),
    };
    store.tenant_set_limits(t, set).await.unwrap();
    let too_big = TenantLimits {
        max_upload_bytes: Some(u64::MAX),
        quota_bytes: None,
    };
    let err = store.tenant_set_limits(t, too_big).await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert_eq!(store.tenant_limits(t).await.unwrap(), set, "unchanged");

    // An unknown tenant has the defaults, and setting its limits is a no-op.
    let nobody = TenantId::new();
    store.tenant_set_limits(nobody, set).await.unwrap();
    assert_eq!(
        store.tenant_limits(nobody).await.unwrap(),
        TenantLimits::default()
    );
}

// ---- Backend-specific -----------------------------------------------------

#[tokio::test]
async fn sqlite_in_memory_keeps_its_data() {
    let store = connect("sqlite::memory:", &options()).await.unwrap();
    tenant(&*store, "acme").await;
    assert_eq!(store.tenant_count().await.unwrap(), 1);
    assert_eq!(store.pool_stats().max, 1);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    for url in ["mysql://root@localhost/db", "/var/lib/buildpeer.db", ""] {
        let err = connect(url, &options()).await.err().unwrap();
        assert!(matches!(err, DbError::UnsupportedScheme), "{url}: {err:?}");
    }
}

#[tokio::test]
async fn connection_errors_do_not_reveal_the_password() {
    let opts = DbOptions {
        acquire_timeout: Duration::from_secs(2),
        ..options()
    };
    let err = connect("postgres://bp:s3cr3t-pw@127.0.0.1:1/bp", &opts)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, DbError::Connect { .. }), "{err:?}");
    let mut text = format!("{err:?}");
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        text.push_str(&e.to_string());
        source = e.source();
    }
    assert!(!text.contains("s3cr3t-pw"), "{text}");
}

/// A purge cutoff after everything the tests trash.
fn later() -> DateTime<Utc> {
    now() + chrono::Duration::days(1)
}

// ---- Job queue ----------------------------------------------------------------

const KIND: &str = "process_upload";
const LEASE: Duration = Duration::from_secs(30);

fn lease() -> TimeDelta {
    TimeDelta::from_std(LEASE).unwrap()
}

/// A job of `kind` with `max_attempts`, due at `run_at`.
fn job_spec(kind: &'static str, max_attempts: u32, run_at: DateTime<Utc>) -> NewJob {
    NewJob {
        kind,
        max_attempts,
        ..new_job(run_at)
    }
}

/// A tenant with a project to hang uploads (and so jobs) on.
async fn queue_tenant(store: &dyn MetadataStore, slug: &str) -> (TenantId, ProjectId, UserId) {
    let (t, admin) = tenant(store, slug).await;
    let p = project(store, t, admin, "Torre").await;
    (t, p, admin)
}

/// Enqueues `job` the way the port does: with an upload's `UPLOADED`
/// transition.
async fn enqueue(
    store: &dyn MetadataStore,
    (t, p, by): (TenantId, ProjectId, UserId),
    job: &NewJob,
) -> JobId {
    let up = upload(store, t, p, by).await;
    store
        .upload_mark_uploaded(t, up.id, job, now())
        .await
        .unwrap()
        .unwrap();
    job.id
}

async fn claim(store: &dyn MetadataStore, at: DateTime<Utc>, limit: u32) -> Vec<Job> {
    store.job_claim(&[KIND], at, LEASE, limit).await.unwrap()
}

async fn job_of(store: &dyn MetadataStore, t: TenantId, id: JobId) -> Job {
    store.job_get(t, id).await.unwrap().unwrap().0
}

async fn history(store: &dyn MetadataStore, t: TenantId, id: JobId) -> Vec<JobFailure> {
    store.job_get(t, id).await.unwrap().unwrap().1
}

fn job_ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

async fn job_claim_takes_due_jobs_oldest_first(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let second = enqueue(store, tp, &job_spec(KIND, 5, t0 - TimeDelta::seconds(2))).await;
    let first = enqueue(store, tp, &job_spec(KIND, 5, t0 - TimeDelta::seconds(3))).await;
    let third = enqueue(store, tp, &job_spec(KIND, 5, t0 - TimeDelta::seconds(1))).await;
    let future = enqueue(store, tp, &job_spec(KIND, 5, t0 + TimeDelta::hours(1))).await;
    let other = enqueue(
        store,
        tp,
        &job_spec("other_kind", 5, t0 - TimeDelta::hours(1)),
    )
    .await;

    // Oldest `run_at` first, up to the limit; nothing of other kinds.
    let got = claim(store, t0, 2).await;
    assert_eq!(job_ids(&got), [first, second]);
    for j in &got {
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.attempts, 1);
        assert_eq!(j.lease_until, Some(t0 + lease()));
        assert_eq!(j.updated_at, t0);
        assert_eq!(j.tenant_id, tp.0);
        assert!(j.upload_id.is_some());
        assert_eq!(j.kind, KIND);
        assert_eq!(*j, job_of(store, tp.0, j.id).await);
    }
    assert_eq!(job_ids(&claim(store, t0, 10).await), [third]);
    // The future job is not due; claimed jobs are not claimed again.
    assert!(claim(store, t0, 10).await.is_empty());
    assert_eq!(job_of(store, tp.0, future).await.state, JobState::Queued);
    assert_eq!(job_of(store, tp.0, other).await.state, JobState::Queued);
    // Several kinds at once.
    let both = store
        .job_claim(&[KIND, "other_kind"], t0, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(job_ids(&both), [other]);
    assert!(
        store
            .job_claim(&[], t0, LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn job_lease_expiry_reclaims_a_killed_workers_job(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 2, t0)).await;
    assert_eq!(job_ids(&claim(store, t0, 10).await), [id]);
    // The worker dies without a word. Until its lease ends, nobody takes over.
    let end = t0 + lease();
    assert!(claim(store, end - micros(1), 10).await.is_empty());
    let again = claim(store, end, 10).await;
    assert_eq!(job_ids(&again), [id]);
    assert_eq!(again[0].attempts, 2);
    assert_eq!(again[0].lease_until, Some(end + lease()));
    let lost = history(store, tp.0, id).await;
    assert_eq!(lost.len(), 1);
    assert_eq!((lost[0].attempt, lost[0].at), (1, end));
}

/// A job whose worker died on its last attempt is claimed once more, past
/// its limit, with the lost run in its history: the caller decides.
async fn job_lost_on_its_last_attempt_is_claimed_past_its_limit(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 2, t0)).await;
    let mut at = t0;
    for n in 1..=2 {
        let got = claim(store, at, 10).await;
        assert_eq!((got[0].id, got[0].attempts), (id, n));
        at += lease();
    }
    // The second (last) worker dies as well.
    let again = claim(store, at, 10).await;
    assert_eq!(job_ids(&again), [id]);
    let j = &again[0];
    assert_eq!(
        (j.state, j.attempts, j.max_attempts, j.lease_until),
        (JobState::Running, 3, 2, Some(at + lease()))
    );
    assert_eq!(*j, job_of(store, tp.0, id).await);
    let lost = history(store, tp.0, id).await;
    assert_eq!(lost.iter().map(|f| f.attempt).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(lost[1].at, at);
    assert!(lost.iter().all(|f| f.error.starts_with("lease expired")));
}

async fn job_bury_dead_letters_a_poison_job(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 2, t0)).await;
    // Not running: nothing to bury.
    assert!(!store.job_bury(id, 0, t0).await.unwrap());
    let mut at = t0;
    for _ in 1..=3 {
        claim(store, at, 10).await;
        at += lease();
    }
    let held = job_of(store, tp.0, id).await;
    assert_eq!(held.attempts, 3);
    let t1 = held.updated_at + TimeDelta::seconds(1);
    // Fenced: a wrong attempt buries nothing and changes nothing.
    let before = store.job_get(tp.0, id).await.unwrap().unwrap();
    for wrong in [2, 4] {
        assert!(!store.job_bury(id, wrong, t1).await.unwrap());
    }
    assert_eq!(store.job_get(tp.0, id).await.unwrap().unwrap(), before);

    assert!(store.job_bury(id, 3, t1).await.unwrap());
    let dead = job_of(store, tp.0, id).await;
    assert_eq!(
        (dead.state, dead.attempts, dead.lease_until, dead.updated_at),
        (JobState::Dead, 2, None, t1)
    );
    assert!(
        dead.last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("lease expired"))
    );
    // One history row per real attempt, none for the burial.
    let lost = history(store, tp.0, id).await;
    assert_eq!(lost.iter().map(|f| f.attempt).collect::<Vec<_>>(), [1, 2]);
    // Buried once; not claimed again; a retry starts it afresh.
    assert!(!store.job_bury(id, 3, t1).await.unwrap());
    assert!(!store.job_bury(id, 2, t1).await.unwrap());
    assert!(claim(store, at + TimeDelta::days(1), 10).await.is_empty());
    let retried = store.job_retry(tp.0, id, t1).await.unwrap().unwrap();
    assert_eq!((retried.state, retried.attempts), (JobState::Queued, 0));
}

async fn job_calls_for_a_lost_attempt_change_nothing(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 5, t0)).await;
    claim(store, t0, 1).await;
    let t1 = t0 + lease();
    let taken = claim(store, t1, 1).await;
    assert_eq!(taken[0].attempts, 2);
    let before = store.job_get(tp.0, id).await.unwrap().unwrap();

    // The first worker wakes up and carries on: every call is refused.
    let t2 = t1 + TimeDelta::seconds(1);
    assert!(!store.job_heartbeat(id, 1, t2 + lease()).await.unwrap());
    assert!(!store.job_complete(id, 1, t2).await.unwrap());
    assert_eq!(
        store.job_fail(id, 1, "boom", Some(t2), t2).await.unwrap(),
        FailOutcome::Lost
    );
    assert_eq!(
        store.job_fail(id, 1, "boom", None, t2).await.unwrap(),
        FailOutcome::Lost
    );
    assert!(!store.job_defer(id, 1, t2, t2).await.unwrap());
    assert!(!store.job_heartbeat(id, 3, t2 + lease()).await.unwrap());
    assert_eq!(store.job_get(tp.0, id).await.unwrap().unwrap(), before);

    // The holder's calls work; after it completes, nobody's do.
    let renewed = t2 + lease();
    assert!(store.job_heartbeat(id, 2, renewed).await.unwrap());
    assert_eq!(job_of(store, tp.0, id).await.lease_until, Some(renewed));
    // A renewed lease protects the run past its first end.
    assert!(claim(store, t1 + lease(), 1).await.is_empty());
    assert!(store.job_complete(id, 2, t2).await.unwrap());
    let done = job_of(store, tp.0, id).await;
    assert_eq!(
        (done.state, done.attempts, done.lease_until, done.updated_at),
        (JobState::Done, 2, None, t2)
    );
    assert!(!store.job_complete(id, 2, t2).await.unwrap());
    assert!(!store.job_heartbeat(id, 2, renewed).await.unwrap());
    assert_eq!(
        store.job_fail(id, 2, "late", None, t2).await.unwrap(),
        FailOutcome::Lost
    );
    assert!(claim(store, renewed + lease(), 1).await.is_empty());
}

async fn job_transient_failures_end_dead_with_their_history(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let mut at = now();
    let id = enqueue(store, tp, &job_spec(KIND, 3, at)).await;
    let mut outcomes = Vec::new();
    for n in 1..=3u32 {
        let got = claim(store, at, 1).await;
        assert_eq!(job_ids(&got), [id], "attempt {n}");
        assert_eq!(got[0].attempts, n);
        let retry_at = at + TimeDelta::seconds(10);
        outcomes.push(
            store
                .job_fail(id, n, &format!("timeout {n}"), Some(retry_at), at)
                .await
                .unwrap(),
        );
        if n < 3 {
            // Backing off: queued for `retry_at`, not claimable before.
            let queued = job_of(store, tp.0, id).await;
            assert_eq!(
                (queued.state, queued.run_at, queued.lease_until),
                (JobState::Queued, retry_at, None)
            );
            assert!(claim(store, retry_at - micros(1), 1).await.is_empty());
        }
        at = retry_at;
    }
    assert_eq!(
        outcomes,
        [
            FailOutcome::Retrying,
            FailOutcome::Retrying,
            FailOutcome::Dead
        ]
    );
    let dead = job_of(store, tp.0, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.lease_until, None);
    assert_eq!(dead.last_error.as_deref(), Some("timeout 3"));
    let errors = history(store, tp.0, id).await;
    assert_eq!(
        errors
            .iter()
            .map(|f| (f.attempt, f.error.as_str()))
            .collect::<Vec<_>>(),
        [(1, "timeout 1"), (2, "timeout 2"), (3, "timeout 3")]
    );
    assert!(errors.windows(2).all(|w| w[0].at < w[1].at));
    assert!(claim(store, at + TimeDelta::days(1), 1).await.is_empty());
}

async fn job_permanent_failure_is_dead_at_once(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 5, t0)).await;
    claim(store, t0, 1).await;
    assert_eq!(
        store
            .job_fail(id, 1, "not an image", None, t0)
            .await
            .unwrap(),
        FailOutcome::Dead
    );
    let dead = job_of(store, tp.0, id).await;
    assert_eq!((dead.state, dead.attempts), (JobState::Dead, 1));
    assert_eq!(dead.last_error.as_deref(), Some("not an image"));
    assert_eq!(history(store, tp.0, id).await.len(), 1);
}

async fn job_retry_queues_a_dead_job_from_the_start(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 2, t0)).await;
    for n in 1..=2 {
        claim(store, t0, 1).await;
        store.job_fail(id, n, "flaky", Some(t0), t0).await.unwrap();
    }
    assert_eq!(job_of(store, tp.0, id).await.state, JobState::Dead);

    let t1 = t0 + TimeDelta::minutes(5);
    let retried = store.job_retry(tp.0, id, t1).await.unwrap().unwrap();
    assert_eq!(retried.state, JobState::Queued);
    assert_eq!(retried.attempts, 0);
    assert_eq!(retried.run_at, t1);
    assert_eq!(retried.lease_until, None);
    assert_eq!(retried.updated_at, t1);
    assert_eq!(retried.last_error.as_deref(), Some("flaky"));
    assert_eq!(retried, job_of(store, tp.0, id).await);
    assert_eq!(history(store, tp.0, id).await.len(), 2);
    // Claimable at once, with its attempts counted afresh.
    let got = claim(store, t1, 1).await;
    assert_eq!((got[0].id, got[0].attempts), (id, 1));
    // A job that is not dead comes back unchanged.
    let running = job_of(store, tp.0, id).await;
    assert_eq!(store.job_retry(tp.0, id, t1).await.unwrap(), Some(running));
    assert_eq!(store.job_retry(tp.0, JobId::new(), t1).await.unwrap(), None);

    // In bulk: every dead job of the tenant and only those.
    let other = queue_tenant(store, "globex").await;
    let mut dead = Vec::new();
    for _ in 0..3 {
        dead.push(enqueue(store, tp, &job_spec(KIND, 1, t1)).await);
    }
    let foreign = enqueue(store, other, &job_spec(KIND, 1, t1)).await;
    let queued = enqueue(store, tp, &job_spec(KIND, 1, t1 + TimeDelta::hours(1))).await;
    let claimed = claim(store, t1, 10).await;
    assert_eq!(claimed.len(), 4);
    for j in &claimed {
        store.job_fail(j.id, 1, "gone", None, t1).await.unwrap();
    }
    assert_eq!(store.job_retry_dead(tp.0, t1).await.unwrap(), 3);
    for id in &dead {
        let j = job_of(store, tp.0, *id).await;
        assert_eq!((j.state, j.attempts, j.run_at), (JobState::Queued, 0, t1));
    }
    assert_eq!(job_of(store, other.0, foreign).await.state, JobState::Dead);
    assert_eq!(
        job_of(store, tp.0, queued).await.run_at,
        t1 + TimeDelta::hours(1)
    );
    assert_eq!(store.job_retry_dead(tp.0, t1).await.unwrap(), 0);
}

async fn job_defer_gives_the_attempt_back(cx: Ctx) {
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let id = enqueue(store, tp, &job_spec(KIND, 1, t0)).await;
    for _ in 0..3 {
        let got = claim(store, t0, 1).await;
        assert_eq!(got[0].attempts, 1);
        let later = t0 + TimeDelta::seconds(10);
        assert!(!store.job_defer(id, 2, later, t0).await.unwrap());
        assert!(store.job_defer(id, 1, t0, t0).await.unwrap());
        let j = job_of(store, tp.0, id).await;
        assert_eq!(
            (j.state, j.attempts, j.lease_until),
            (JobState::Queued, 0, None)
        );
        assert!(!store.job_defer(id, 1, t0, t0).await.unwrap());
    }
    // Deferred to later: not due before.
    claim(store, t0, 1).await;
    let later = t0 + TimeDelta::seconds(10);
    assert!(store.job_defer(id, 1, later, t0).await.unwrap());
    assert!(claim(store, later - micros(1), 1).await.is_empty());
    assert_eq!(claim(store, later, 1).await[0].attempts, 1);
    assert!(history(store, tp.0, id).await.is_empty());
}

async fn jobs_are_tenant_scoped_and_listed_newest_first(cx: Ctx) {
    let store = &*cx.store;
    let a = queue_tenant(store, "acme").await;
    let b = queue_tenant(store, "globex").await;
    let t0 = now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(enqueue(store, a, &job_spec(KIND, 1, t0)).await);
    }
    let theirs = enqueue(store, b, &job_spec(KIND, 1, t0)).await;
    // Two of acme's die.
    let claimed = claim(store, t0, 2).await;
    for j in &claimed {
        store.job_fail(j.id, 1, "x", None, t0).await.unwrap();
    }
    let dead: Vec<JobId> = job_ids(&claimed);

    let newest_first: Vec<JobId> = ids.iter().rev().copied().collect();
    let page1 = store.job_list(a.0, None, first(3)).await.unwrap();
    assert_eq!(job_ids(&page1), newest_first[..4]);
    let page2 = store
        .job_list(a.0, None, after(3, page1[2].id.as_uuid()))
        .await
        .unwrap();
    assert_eq!(job_ids(&page2), newest_first[3..]);
    let dead_listed = store
        .job_list(a.0, Some(JobState::Dead), first(10))
        .await
        .unwrap();
    let mut expected_dead = dead.clone();
    expected_dead.sort();
    expected_dead.reverse();
    assert_eq!(job_ids(&dead_listed), expected_dead);
    assert_eq!(
        store
            .job_list(a.0, Some(JobState::Queued), first(10))
            .await
            .unwrap()
            .len(),
        3
    );
    assert!(
        store
            .job_list(a.0, Some(JobState::Running), first(10))
            .await
            .unwrap()
            .is_empty()
    );

    // The other tenant sees none of it, and touches none of it.
    let b_list = store.job_list(b.0, None, first(10)).await.unwrap();
    assert_eq!(job_ids(&b_list), [theirs]);
    assert!(store.job_get(b.0, dead[0]).await.unwrap().is_none());
    assert!(store.job_retry(b.0, dead[0], t0).await.unwrap().is_none());
    assert_eq!(store.job_retry_dead(b.0, t0).await.unwrap(), 0);
    assert_eq!(job_of(store, a.0, dead[0]).await.state, JobState::Dead);
    assert!(store.job_get(a.0, theirs).await.unwrap().is_none());
}

async fn job_depth_counts_by_kind_and_state(cx: Ctx) {
    let store = &*cx.store;
    let a = queue_tenant(store, "acme").await;
    let b = queue_tenant(store, "globex").await;
    let t0 = now();
    for tp in [a, b, a] {
        enqueue(store, tp, &job_spec(KIND, 1, t0)).await;
    }
    enqueue(store, b, &job_spec("other_kind", 1, t0)).await;
    let got = claim(store, t0, 2).await;
    store.job_complete(got[0].id, 1, t0).await.unwrap();
    let mut depth: Vec<(String, JobState, u64)> = store
        .job_depth()
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.kind, d.state, d.count))
        .collect();
    depth.sort_by_key(|(k, s, _)| (k.clone(), s.as_str()));
    assert_eq!(
        depth,
        [
            ("other_kind".to_owned(), JobState::Queued, 1),
            (KIND.to_owned(), JobState::Done, 1),
            (KIND.to_owned(), JobState::Queued, 1),
            (KIND.to_owned(), JobState::Running, 1),
        ]
    );
}

/// The job insert and the `UPLOADED` transition commit or fail together.
/// To fail the transaction after the job row is written, a trigger on `jobs`
/// refuses jobs of one kind: on PostgreSQL a deferred constraint trigger,
/// which fires at COMMIT (after every statement of the transaction ran); on
/// SQLite (no deferred triggers) an AFTER INSERT trigger, which aborts the
/// job insert after the row was written, with the upload's UPDATE already
/// done in the same transaction.
async fn job_enqueue_rolls_back_with_its_transaction(cx: Ctx) {
    let store = &*cx.store;
    let (t, p, admin) = queue_tenant(store, "acme").await;
    if cx.backend == "sqlite" {
        with_db!(cx, |conn| sqlx::raw_sql(
            "CREATE TRIGGER doomed_jobs AFTER INSERT ON jobs WHEN NEW.kind = 'doomed' \
             BEGIN SELECT RAISE(ABORT, 'doomed job'); END"
        )
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected());
    } else {
        with_db!(cx, |conn| sqlx::raw_sql(
            "CREATE FUNCTION doom() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'doomed job'; END $$; \
             CREATE CONSTRAINT TRIGGER doomed_jobs AFTER INSERT ON jobs \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.kind = 'doomed') EXECUTE FUNCTION doom();"
        )
        .execute(&mut conn)
        .await
        .unwrap()
        .rows_affected());
    }
    let pending = upload(store, t, p, admin).await;
    let doomed = job_spec("doomed", 5, now());
    let err = store
        .upload_mark_uploaded(t, pending.id, &doomed, now())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert_eq!(get(store, t, pending.id).await, pending);
    assert!(jobs_of(&cx, pending.id).await.is_empty());
    assert!(store.job_get(t, doomed.id).await.unwrap().is_none());
    assert!(
        store
            .job_claim(&["doomed"], now() + TimeDelta::days(1), LEASE, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // The same upload with a job that may be written: both land.
    let job = job_spec(KIND, 5, now());
    let marked = store
        .upload_mark_uploaded(t, pending.id, &job, now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(marked.status, UploadStatus::Uploaded);
    assert_eq!(job_of(store, t, job.id).await.state, JobState::Queued);
}

async fn concurrent_claimers_never_share_a_job(cx: Ctx) {
    const JOBS: usize = 200;
    let store = &*cx.store;
    let tp = queue_tenant(store, "acme").await;
    let t0 = now();
    let mut all = HashSet::new();
    for i in 0..JOBS {
        let at = t0 - TimeDelta::seconds(i64::try_from(i).unwrap());
        all.insert(enqueue(store, tp, &job_spec(KIND, 5, at)).await);
    }
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&cx.store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.job_claim(&[KIND], t0, LEASE, 7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    for j in got {
                        assert!(
                            store.job_complete(j.id, j.attempts, t0).await.unwrap(),
                            "completing a job this task claimed"
                        );
                        mine.push(j.id);
                    }
                }
            })
        })
        .collect();
    let mut claimed = Vec::new();
    let mut busy = 0;
    for task in tasks {
        let mine = task.await.unwrap();
        busy += usize::from(!mine.is_empty());
        claimed.extend(mine);
    }
    let unique: HashSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), JOBS, "a job was claimed twice or not at all");
    assert_eq!(unique, all);
    if cx.backend == "postgres" {
        assert!(busy > 1, "only {busy} claimer got work");
    }
}

/// Waits on `store` until a wait of `quiet` runs its full time, so that the
/// wake-ups of earlier writes (and of the listener connecting) are spent.
async fn drain_wakeups(store: &dyn MetadataStore) {
    let quiet = Duration::from_millis(300);
    for _ in 0..50 {
        let started = std::time::Instant::now();
        store.job_wait(quiet).await;
        if started.elapsed() >= quiet {
            return;
        }
    }
    panic!("job_wait keeps waking up with nothing queued");
}

async fn job_wait_wakes_on_an_enqueue(cx: Ctx) {
    let tp = queue_tenant(&*cx.store, "acme").await;
    // On PostgreSQL the job comes from another pool (as from another
    // replica); on SQLite only this process's writes wake a waiter.
    let writer = if cx.backend == "postgres" {
        connect(&cx.url, &options()).await.unwrap()
    } else {
        Arc::clone(&cx.store)
    };
    let timeout = Duration::from_secs(20);
    for round in 0..2 {
        drain_wakeups(&*cx.store).await;
        let store = Arc::clone(&cx.store);
        let waiter = tokio::spawn(async move {
            let started = std::time::Instant::now();
            store.job_wait(timeout).await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        if round == 0 {
            enqueue(&*writer, tp, &job_spec(KIND, 1, now())).await;
        } else {
            // A re-queue wakes too: a dead job retried.
            let got = writer.job_claim(&[KIND], now(), LEASE, 1).await.unwrap();
            writer
                .job_fail(got[0].id, 1, "x", None, now())
                .await
                .unwrap();
            assert_eq!(writer.job_retry_dead(tp.0, now()).await.unwrap(), 1);
        }
        let waited = waiter.await.unwrap();
        assert!(
            waited >= Duration::from_millis(150) && waited < Duration::from_secs(5),
            "round {round}: woke after {waited:?}"
        );
    }
}

// ---- tus ---------------------------------------------------------------------

fn new_tus(tenant: TenantId, upload: &NewUpload, length: Option<u64>) -> NewTus {
    NewTus {
        length,
        offset: 0,
        metadata: "project_id YWJj,filename Zm9vLmpwZw==".to_owned(),
        staging_key: ObjectKey::tus_staging(tenant, upload.project_id, upload.id),
        multipart: None,
        concat: None,
    }
}

fn part(number: u32, etag: &str, size: u64, digit: char) -> TusPart {
    TusPart {
        number,
        etag: etag.to_owned(),
        size,
        sha256: sha(digit),
    }
}

async fn tus_create_get_round_trip(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (other, _) = tenant(store, "otra").await;
    let p = project(store, t, admin, "Torre").await;

    let plain = new_upload(t, p, admin);
    let tus = new_tus(t, &plain, Some(3 * MIB));
    let upload = store
        .tus_create(t, &plain, &tus, None)
        .await
        .map(created)
        .unwrap();
    assert_eq!(upload.status, UploadStatus::Pending);
    assert_eq!(upload.id, plain.id);
    let got = store.tus_get(t, plain.id).await.unwrap().unwrap();
    assert_eq!(got.length, Some(3 * MIB));
    assert_eq!(got.offset, 0);
    assert_eq!(got.metadata, tus.metadata);
    assert_eq!(got.staging_key, tus.staging_key.as_str());
    assert_eq!(got.multipart, None);
    assert_eq!(got.concat, None);
    // Another tenant sees nothing.
    assert_eq!(store.tus_get(other, plain.id).await.unwrap(), None);

    // Deferred length, on S3, a partial upload.
    let deferred = new_upload(t, p, admin);
    let tus = NewTus {
        multipart: Some(TusMultipart {
            part_size: 8 * MIB,
            upload_id: "2~mp-tus".to_owned(),
        }),
        concat: Some(TusConcat::Partial),
        ..new_tus(t, &deferred, None)
    };
    store
        .tus_create(t, &deferred, &tus, None)
        .await
        .map(created)
        .unwrap();
    let got = store.tus_get(t, deferred.id).await.unwrap().unwrap();
    assert_eq!(got.length, None);
    assert_eq!(got.multipart, tus.multipart);
    assert_eq!(got.concat, Some(TusConcat::Partial));

    // A final upload: whole at creation, its partials in order.
    let fin = new_upload(t, p, admin);
    let partials = vec![deferred.id, plain.id];
    let tus = NewTus {
        offset: 3 * MIB,
        concat: Some(TusConcat::Final(partials.clone())),
        ..new_tus(t, &fin, Some(3 * MIB))
    };
    store
        .tus_create(t, &fin, &tus, None)
        .await
        .map(created)
        .unwrap();
    let got = store.tus_get(t, fin.id).await.unwrap().unwrap();
    assert_eq!(got.offset, 3 * MIB);
    assert_eq!(got.concat, Some(TusConcat::Final(partials)));

    // The upload row and the tus row are written together: a duplicate id
    // writes neither.
    let again = store
        .tus_create(t, &plain, &new_tus(t, &plain, Some(1)), None)
        .await;
    assert!(again.is_err());
    assert_eq!(
        store.tus_get(t, plain.id).await.unwrap().unwrap().length,
        Some(3 * MIB)
    );
}

async fn tus_lease_fences_the_offset(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (other, _) = tenant(store, "otra").await;
    let p = project(store, t, admin, "Torre").await;
    let up = new_upload(t, p, admin);
    store
        .tus_create(t, &up, &new_tus(t, &up, Some(100)), None)
        .await
        .map(created)
        .unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let lease = TimeDelta::seconds(20);
    let at = now();

    assert!(store.tus_lock(t, up.id, a, at + lease, at).await.unwrap());
    // Another token waits; the holder renews; another tenant cannot lock.
    assert!(!store.tus_lock(t, up.id, b, at + lease, at).await.unwrap());
    assert!(
        store
            .tus_lock(t, up.id, a, at + lease * 2, at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .tus_lock(other, up.id, b, at + lease, at)
            .await
            .unwrap()
    );

    // Only the holder, from the current offset, advances it.
    assert!(
        !store
            .tus_advance(t, up.id, b, 0, 10, &[], at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .tus_advance(t, up.id, a, 5, 10, &[], at)
            .await
            .unwrap()
    );
    assert!(
        !store
            .tus_advance(other, up.id, a, 0, 10, &[], at)
            .await
            .unwrap()
    );
    assert!(
        store
            .tus_advance(t, up.id, a, 0, 10, &[], at)
            .await
            .unwrap()
    );
    assert_eq!(store.tus_get(t, up.id).await.unwrap().unwrap().offset, 10);

    // Unlocked by a stranger: nothing; by the holder: free for the next.
    store.tus_unlock(t, up.id, b).await.unwrap();
    assert!(!store.tus_lock(t, up.id, b, at + lease, at).await.unwrap());
    store.tus_unlock(t, up.id, a).await.unwrap();
    assert!(store.tus_lock(t, up.id, b, at + lease, at).await.unwrap());
    // A lease that ran out is taken over, and fences its old holder.
    let later = at + lease * 2;
    assert!(
        store
            .tus_lock(t, up.id, a, later + lease, later)
            .await
            .unwrap()
    );
    assert!(
        !store
            .tus_advance(t, up.id, b, 10, 20, &[], later)
            .await
            .unwrap()
    );
    assert_eq!(store.tus_get(t, up.id).await.unwrap().unwrap().offset, 10);
}

/// A pending upload whose bytes are all stored is found for finishing once
/// its lease is free, and is never expired; an incomplete one is expired.
async fn tus_complete_uploads_are_finished_not_expired(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let complete = new_upload(t, p, admin);
    let partial = new_upload(t, p, admin);
    for up in [&complete, &partial] {
        store
            .tus_create(t, up, &new_tus(t, up, Some(100)), None)
            .await
            .map(created)
            .unwrap();
    }
    let holder = Uuid::now_v7();
    let lease = TimeDelta::seconds(4);
    let at = now();
    assert!(
        store
            .tus_lock(t, complete.id, holder, at + lease, at)
            .await
            .unwrap()
    );
    assert!(
        store
            .tus_advance(t, complete.id, holder, 0, 100, &[], at)
            .await
            .unwrap()
    );
    assert!(
        store
            .tus_lock(t, partial.id, holder, at + lease, at)
            .await
            .unwrap()
    );
    assert!(
        store
            .tus_advance(t, partial.id, holder, 0, 40, &[], at)
            .await
            .unwrap()
    );
    let ids =
        |v: Vec<buildpeer_core::upload::Upload>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();

    // While the holder's lease lives, nothing is due; after, the complete one.
    assert!(store.tus_finish_due(at, 10).await.unwrap().is_empty());
    let later = at + lease * 2;
    assert_eq!(
        ids(store.tus_finish_due(later, 10).await.unwrap()),
        [complete.id]
    );

    // Long past their expiry, only the partial one expires.
    let expired = store
        .uploads_expire_due(at + TimeDelta::days(30), 10)
        .await
        .unwrap();
    assert_eq!(ids(expired), [partial.id]);
    assert_eq!(
        ids(store.tus_finish_due(later, 10).await.unwrap()),
        [complete.id]
    );
}

async fn tus_parts_ledger_records_with_the_offset(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (other, _) = tenant(store, "otra").await;
    let p = project(store, t, admin, "Torre").await;
    let up = new_upload(t, p, admin);
    let tus = NewTus {
        multipart: Some(TusMultipart {
            part_size: 8 * MIB,
            upload_id: "2~mp".to_owned(),
        }),
        ..new_tus(t, &up, Some(20 * MIB))
    };
    store
        .tus_create(t, &up, &tus, None)
        .await
        .map(created)
        .unwrap();
    let token = Uuid::now_v7();
    let at = now();
    assert!(
        store
            .tus_lock(t, up.id, token, at + TimeDelta::seconds(20), at)
            .await
            .unwrap()
    );
    assert_eq!(store.tus_parts(t, up.id).await.unwrap(), vec![]);

    // Recorded in number order, whatever the order given.
    let (p2, p1) = (
        part(2, "\"e2\"", 8 * MIB, 'b'),
        part(1, "\"e1\"", 8 * MIB, 'a'),
    );
    assert!(
        store
            .tus_advance(t, up.id, token, 0, 16 * MIB, &[p2.clone(), p1.clone()], at)
            .await
            .unwrap()
    );
    assert_eq!(
        store.tus_parts(t, up.id).await.unwrap(),
        vec![p1.clone(), p2.clone()]
    );
    // A refused advance records nothing.
    let stray = part(3, "\"x\"", 4 * MIB, 'c');
    assert!(
        !store
            .tus_advance(
                t,
                up.id,
                token,
                0,
                20 * MIB,
                std::slice::from_ref(&stray),
                at
            )
            .await
            .unwrap()
    );
    assert_eq!(store.tus_parts(t, up.id).await.unwrap().len(), 2);
    // A part sent again replaces its record.
    let p2b = part(2, "\"e2b\"", 8 * MIB, 'd');
    let p3 = part(3, "\"e3\"", 4 * MIB, 'e');
    assert!(
        store
            .tus_advance(
                t,
                up.id,
                token,
                16 * MIB,
                20 * MIB,
                &[p2b.clone(), p3.clone()],
                at
            )
            .await
            .unwrap()
    );
    assert_eq!(store.tus_parts(t, up.id).await.unwrap(), vec![p1, p2b, p3]);
    assert_eq!(store.tus_parts(other, up.id).await.unwrap(), vec![]);
}

async fn tus_declare_length_and_terminate(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let (other, _) = tenant(store, "otra").await;
    let p = project(store, t, admin, "Torre").await;
    let up = NewUpload {
        size: 0,
        ..new_upload(t, p, admin)
    };
    store
        .tus_create(t, &up, &new_tus(t, &up, None), None)
        .await
        .map(created)
        .unwrap();
    let at = now();
    assert!(
        !store
            .tus_declare_length(other, up.id, 500, at)
            .await
            .unwrap()
    );
    assert!(store.tus_declare_length(t, up.id, 500, at).await.unwrap());
    assert!(!store.tus_declare_length(t, up.id, 600, at).await.unwrap());
    assert_eq!(
        store.tus_get(t, up.id).await.unwrap().unwrap().length,
        Some(500)
    );
    // The upload row carries the declared size (quota, listings).
    assert_eq!(get(store, t, up.id).await.size, 500);

    assert_eq!(store.tus_terminate(other, up.id, at).await.unwrap(), None);
    let gone = store.tus_terminate(t, up.id, at).await.unwrap().unwrap();
    assert_eq!(gone.status, UploadStatus::Expired);
    // Again: the upload comes back as it is.
    let again = store.tus_terminate(t, up.id, at).await.unwrap().unwrap();
    assert_eq!(again.status, UploadStatus::Expired);
    assert_eq!(
        store.tus_terminate(t, UploadId::new(), at).await.unwrap(),
        None
    );
}

async fn tus_creation_keys_share_the_upload_key_space(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let key = idempotency("tus-1", 1);
    assert_eq!(store.upload_replay(t, admin, &key).await.unwrap(), None);

    let first = new_upload(t, p, admin);
    let original = created(
        store
            .tus_create(t, &first, &new_tus(t, &first, Some(MIB)), Some(&key))
            .await
            .unwrap(),
    );
    let replay = Creation::Replayed {
        existing: original.clone(),
        same_request: true,
    };
    assert_eq!(
        store.upload_replay(t, admin, &key).await.unwrap(),
        Some(replay.clone())
    );
    // A retry with a fresh id writes neither row.
    let retry = new_upload(t, p, admin);
    assert_eq!(
        store
            .tus_create(t, &retry, &new_tus(t, &retry, Some(MIB)), Some(&key))
            .await
            .unwrap(),
        replay
    );
    assert!(store.upload_get(t, retry.id).await.unwrap().is_none());
    assert!(store.tus_get(t, retry.id).await.unwrap().is_none());
    // One key space with signed initiation; another digest is told apart.
    let signed = new_upload(t, p, admin);
    assert_eq!(
        store
            .upload_create(t, &signed, Some(&idempotency("tus-1", 2)))
            .await
            .unwrap(),
        Creation::Replayed {
            existing: original,
            same_request: false,
        }
    );
    // Keys are the user's own.
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    assert_eq!(store.upload_replay(t, ana, &key).await.unwrap(), None);
}

async fn member_keys_replay_what_the_first_request_did(cx: Ctx) {
    let store = &*cx.store;
    let (t, admin) = tenant(store, "acme").await;
    let p = project(store, t, admin, "Torre").await;
    let ana = user(store, t, "ana@acme.mx", Role::Empleado).await;
    let luis = user(store, t, "luis@acme.mx", Role::Empleado).await;
    let key = idempotency("m-1", 1);
    let by = Some((admin, &key));

    // The first request adds; its retry answers the same, and adds nothing.
    assert_eq!(
        store.member_add(t, p, ana, now(), by).await.unwrap(),
        Creation::Created(true)
    );
    let replayed = Creation::Replayed {
        existing: true,
        same_request: true,
    };
    assert_eq!(
        store.member_add(t, p, ana, now(), by).await.unwrap(),
        replayed
    );
    // Even after the member was removed: the retry does not add them back.
    assert!(store.member_remove(t, p, ana).await.unwrap());
    assert_eq!(
        store.member_add(t, p, ana, now(), by).await.unwrap(),
        replayed
    );
    let members = store.member_list(t, p, first(10)).await.unwrap();
    assert!(members.iter().all(|m| m.user_id != ana), "{members:?}");
    // The key with another request is told apart, and writes nothing.
    let other = idempotency("m-1", 2);
    assert_eq!(
        store
            .member_add(t, p, luis, now(), Some((admin, &other)))
            .await
            .unwrap(),
        Creation::Replayed {
            existing: true,
            same_request: false,
        }
    );
    assert!(
        store
            .member_list(t, p, first(10))
            .await
            .unwrap()
            .iter()
            .all(|m| m.user_id != luis)
    );
    // A request that found the member already there records no key.
    assert!(added(
        store.member_add(t, p, luis, now(), None).await.unwrap()
    ));
    let fresh = idempotency("m-2", 3);
    assert_eq!(
        store
            .member_add(t, p, luis, now(), Some((admin, &fresh)))
            .await
            .unwrap(),
        Creation::Created(false)
    );
    assert_eq!(
        store
            .member_add(t, p, luis, now(), Some((admin, &fresh)))
            .await
            .unwrap(),
        Creation::Created(false)
    );
}
