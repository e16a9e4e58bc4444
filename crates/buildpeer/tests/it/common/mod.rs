//! Shared test infrastructure: the real app booted in-process on a random
//! port against a fresh database (SQLite in a temp dir, or a PostgreSQL
//! database created for the test and dropped afterwards) and its object
//! storage (`sqlite`: files in the temp dir, the embedded default;
//! `postgres`: the S3 server of `BUILDPEER_TEST_S3_URL`, as in production),
//! an HTTP client bound to it, fixtures (tenants, users of each role) and
//! assertions on problem documents. `process` drives the compiled binary as
//! a child; `postgres_server` runs a PostgreSQL server of the test's own.
//!
//! What a test needs from outside the build (the PostgreSQL and S3 servers
//! of scripts/test, tools) it asks `buildpeer_testkit` for: missing, the test
//! skips, or fails under `CI=true`.

pub mod haproxy;
pub mod postgres_server;
pub mod process;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use buildpeer::Config;
use buildpeer::app::{App, connect_store};
use buildpeer_core::Service;
use buildpeer_core::auth::TokenKeys;
use buildpeer_core::blob::BlobStore;
use buildpeer_core::clock::SystemClock;
use buildpeer_core::ports::MetadataStore;
use buildpeer_core::service::{CreateTenantInput, Deps};
use buildpeer_db::testing;
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret as _, SecretSlice, SecretString};
use serde_json::{Value, json};
use uuid::Uuid;

/// The environment variable naming the PostgreSQL server to create test
/// databases on (an admin URL, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
pub const PG_URL_ENV: &str = "BUILDPEER_TEST_POSTGRES_URL";
/// Prefix of every test database name (lets scripts/test drop leftovers).
pub const PG_PREFIX_ENV: &str = "BUILDPEER_TEST_DB_PREFIX";
/// The S3 storage URL the `postgres` variants store objects in
/// (`s3://BUCKET?endpoint=…&region=…`, credentials in `AWS_ACCESS_KEY_ID`
/// and `AWS_SECRET_ACCESS_KEY`); scripts/test starts a Garage and sets it.
/// Object keys hold fresh UUIDv7s, so every test shares the one bucket.
pub const S3_URL_ENV: &str = "BUILDPEER_TEST_S3_URL";
/// Upper bound for one scenario, set-up and tear-down included.
pub const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for one HTTP exchange.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// The password every fixture user gets.
pub const PASSWORD: &str = "correct-horse-battery";
/// The roles, as the API spells them.
pub const ROLES: [&str; 4] = ["admin", "supervisor", "empleado", "viewer"];

/// The two deployments every scenario runs on: `Sqlite` is SQLite with
/// objects on the local disk (the embedded default), `Postgres` is
/// PostgreSQL with objects on S3 (production; local disk when
/// `BUILDPEER_TEST_S3_URL` is unset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The S3 URL for the `postgres` variants, if configured (under `CI=true`
/// it must be).
pub fn s3_url() -> Option<String> {
    buildpeer_testkit::required_env(S3_URL_ENV)
}

/// Turns each `async fn scenario(backend: Backend)` into a module with two
/// tests, `scenario::sqlite` and `scenario::postgres`.
macro_rules! scenarios {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    $crate::common::run_scenario($crate::common::Backend::Sqlite, super::$name)
                        .await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    $crate::common::run_scenario($crate::common::Backend::Postgres, super::$name)
                        .await;
                }
            }
        )+
    };
}

/// Runs a scenario within [`SCENARIO_TIMEOUT`]; PostgreSQL variants are
/// skipped (and say so) when no server is configured, or fail under
/// `CI=true`.
pub async fn run_scenario<F, Fut>(backend: Backend, scenario: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: Future<Output = ()>,
{
    if backend == Backend::Postgres && buildpeer_testkit::required_env(PG_URL_ENV).is_none() {
        return;
    }
    tokio::time::timeout(SCENARIO_TIMEOUT, scenario(backend))
        .await
        .unwrap_or_else(|_| panic!("scenario on {} timed out", backend.name()));
}

// ---- PostgreSQL test databases ---------------------------------------------

/// A database created for one test; dropped (connections and all) when this
/// value is dropped, even while a failed assertion unwinds.
pub struct PgDatabase {
    /// The server's admin URL (`BUILDPEER_TEST_POSTGRES_URL`).
    pub admin_url: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    /// On the server of `BUILDPEER_TEST_POSTGRES_URL`, which the caller
    /// has checked is set.
    pub async fn create() -> Self {
        let admin_url = std::env::var(PG_URL_ENV).expect("BUILDPEER_TEST_POSTGRES_URL");
        // Optional: scripts/test sets a prefix of its own run, to drop what
        // a killed run leaves behind.
        let prefix = std::env::var(PG_PREFIX_ENV).unwrap_or_else(|_| "bpt_".to_owned());
        let name = format!("{prefix}{}", Uuid::now_v7().simple()).to_lowercase();
        let url = testing::create_database(&admin_url, &name)
            .await
            .expect("creating the test database");
        Self {
            admin_url,
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs on a runtime worker and cannot await: a helper thread
        // with its own runtime does the async work, bounded in time.
        let dropped = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let work = testing::drop_database(&admin_url, &name);
                match tokio::time::timeout(Duration::from_secs(15), work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => eprintln!("could not drop test database {name}: {e}"),
                    Err(_) => eprintln!("dropping test database {name} timed out"),
                }
            });
        });
        let _ = dropped.join();
    }
}

// ---- The app under test ----------------------------------------------------

/// A `Service` on the app's database and the app's own blob store (its
/// circuit breaker included, as the in-process worker sees it). Tokens are
/// signed with the app's JWT secret (the configured one, or the one the app
/// generated in the data dir).
async fn second_service(config: &Config, blobs: Arc<dyn BlobStore>) -> Service {
    let store = connect_store(&config.database, &config.data_dir)
        .await
        .expect("second store handle");
    let secret = match &config.jwt_secret {
        Some(s) => s.expose_secret().as_bytes().to_vec(),
        None => std::fs::read_to_string(config.data_dir.join("jwt_secret"))
            .expect("the app's generated JWT secret")
            .trim()
            .as_bytes()
            .to_vec(),
    };
    let secret = SecretSlice::from(secret);
    Service::new(Deps {
        store,
        blobs,
        media: buildpeer::app::media(&config.processing),
        clock: Arc::new(SystemClock),
        tokens: TokenKeys::new(&secret).expect("token keys"),
        uploads: config.uploads.clone(),
    })
}

/// The real app, serving on 127.0.0.1 on a random port until dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base_url: String,
    pub client: reqwest::Client,
    pub config: Config,
    /// A second handle on the same database and object storage (with the
    /// app's upload settings and link-signing secret), for operator actions
    /// the API does not offer (creating tenants, setting limits, sweeping)
    /// and for looking at stored objects.
    pub service: Service,
    /// The app's metadata store and object storage, below the service: for
    /// setting up states the API cannot reach and looking at what was stored.
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    counter: AtomicUsize,
    // Dropped last, after the server is told to stop.
    pg: Option<PgDatabase>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    /// Spawns with a configuration adjusted by `tweak`.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("buildpeer-test-")
            .tempdir()
            .expect("temp dir");
        let mut config = Config::embedded(dir.path());
        config.bootstrap = false;
        config.database.max_connections = 5;
        // Tests that process uploads turn the worker on; the others look at
        // uploads as `complete` leaves them.
        config.run_worker = false;
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = PgDatabase::create().await;
                config.database.url = SecretString::from(db.url.clone());
                match s3_url() {
                    Some(url) => config.storage_url = Some(url),
                    None => eprintln!("note: {S3_URL_ENV} unset: postgres keeps local storage"),
                }
                Some(db)
            }
        };
        tweak(&mut config);
        let app = App::build(config.clone()).await.expect("App::build");
        let addr = app.local_addr().expect("local_addr");
        // The operator handle shares the app's cache, so its writes (sweeps)
        // invalidate what the app cached.
        let caching = Arc::clone(app.service().caching());
        let store = Arc::clone(app.store());
        let blobs = Arc::clone(app.blobs());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let service = second_service(&config, Arc::clone(&blobs))
            .await
            .with_cache(caching);
        // Redirects are answers to look at (the download's 307), not to follow.
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .expect("HTTP client");
        Self {
            addr,
            base_url: format!("http://{addr}"),
            client,
            config,
            service,
            store,
            blobs,
            shutdown: Some(tx),
            server,
            counter: AtomicUsize::new(0),
            pg,
            _dir: dir,
        }
    }

    /// Whether objects live on S3 (rather than the local disk).
    pub fn on_s3(&self) -> bool {
        self.config
            .storage_url
            .as_deref()
            .is_some_and(|u| u.starts_with("s3:"))
    }

    /// The upload's processing jobs, counted straight from the app's
    /// database (SQLite file or PostgreSQL test database).
    pub async fn count_jobs_of_upload(&self, upload: Uuid) -> i64 {
        testing::count_jobs_of_upload(self.config.database.url.expose_secret(), upload)
            .await
            .expect("counting the upload's jobs")
    }

    /// The test's PostgreSQL database, on that backend.
    pub fn pg_database(&self) -> Option<&PgDatabase> {
        self.pg.as_ref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A number unique within this app, for e-mails, codes and names.
    pub fn next_n(&self) -> usize {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A request builder for `path`, with a bearer token when given.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Resp {
        let req = rb.build().expect("request");
        let what = format!("{} {}", req.method(), req.url().path());
        let resp = self
            .client
            .execute(req)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        Resp {
            what,
            status,
            headers,
            text,
        }
    }

    /// One JSON request (or a bodiless one when `body` is `None`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut rb = self.request(method, path, token);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.send(rb).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Resp {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.call(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str) -> Resp {
        self.call(Method::PUT, path, Some(token), None).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    // ---- Auth ----------------------------------------------------------

    pub async fn login(&self, tenant: &str, email: &str, password: &str) -> Resp {
        let body = json!({ "tenant": tenant, "email": email, "password": password });
        self.post("/v1/auth/login", None, &body).await
    }

    /// Logs in and returns the token pair; fails the test otherwise.
    pub async fn login_ok(&self, tenant: &str, email: &str, password: &str) -> Tokens {
        let resp = self.login(tenant, email, password).await;
        resp.assert_status(200);
        Tokens::from_json(&resp.json())
    }

    pub async fn refresh(&self, refresh_token: &str) -> Resp {
        let body = json!({ "refresh_token": refresh_token });
        self.post("/v1/auth/refresh", None, &body).await
    }

    // ---- Fixtures ------------------------------------------------------

    /// Creates a tenant the way an operator does (the core's use-case, as
    /// the CLI runs it), then logs its admin in over HTTP.
    pub async fn create_tenant(&self, slug: &str) -> TestTenant {
        let email = format!("admin@{slug}.test");
        let (tenant, admin) = self
            .service
            .create_tenant(CreateTenantInput {
                slug: slug.to_owned(),
                name: format!("Constructora {slug}"),
                admin_email: email.clone(),
                admin_name: "Admin".to_owned(),
                admin_password: PASSWORD.to_owned(),
            })
            .await
            .expect("create_tenant");
        let tokens = self.login_ok(slug, &email, PASSWORD).await;
        TestTenant {
            id: tenant.id.as_uuid(),
            slug: slug.to_owned(),
            admin: TestUser {
                id: admin.id.as_uuid(),
                email,
                role: "admin".to_owned(),
                tokens,
            },
        }
    }

    /// Creates a user of `role` over the API (as the tenant's admin) and logs it in.
    pub async fn create_user(&self, tenant: &TestTenant, role: &str) -> TestUser {
        let email = format!("{role}{}@{}.test", self.next_n(), tenant.slug);
        let resp = self
            .post(
                "/v1/users",
                Some(tenant.admin.token()),
                &json!({ "email": email, "password": PASSWORD, "name": format!("{role} user"), "role": role }),
            )
            .await;
        resp.assert_status(201);
        let body = resp.json();
        assert_eq!(body["role"], role);
        assert_eq!(body["tenant_id"], tenant.id.to_string());
        let tokens = self.login_ok(&tenant.slug, &email, PASSWORD).await;
        TestUser {
            id: uuid(&body["id"]),
            email,
            role: role.to_owned(),
            tokens,
        }
    }

    /// Creates a project over the API with `token` and returns its id.
    pub async fn create_project(&self, token: &str, name: &str) -> Uuid {
        let resp = self
            .post("/v1/projects", Some(token), &json!({ "name": name }))
            .await;
        resp.assert_status(201);
        uuid(&resp.json()["id"])
    }

    /// Adds `user` to `project`; fails unless the answer is 201 or 204.
    pub async fn add_member(&self, token: &str, project: Uuid, user: Uuid) {
        let resp = self
            .put(&format!("/v1/projects/{project}/members/{user}"), token)
            .await;
        assert!(
            resp.status == StatusCode::CREATED || resp.status == StatusCode::NO_CONTENT,
            "{resp}"
        );
    }

    /// Follows `next_cursor` from the first page of `path` (a list route),
    /// returning the items of each page.
    pub async fn pages(&self, path: &str, token: &str, limit: u32) -> Vec<Vec<Value>> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let url = match &cursor {
                None => format!("{path}{sep}limit={limit}"),
                Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            };
            let resp = self.get(&url, token).await;
            resp.assert_status(200);
            let body = resp.json();
            let items = body["items"].as_array().expect("items").clone();
            pages.push(items);
            match &body["next_cursor"] {
                Value::Null => break,
                Value::String(c) => cursor = Some(c.clone()),
                other => panic!("next_cursor is {other}"),
            }
            assert!(pages.len() <= 100, "pagination does not end");
        }
        pages
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
    }
}

/// An access and refresh token pair.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

impl Tokens {
    pub fn from_json(body: &Value) -> Self {
        Self {
            access: body["access_token"]
                .as_str()
                .expect("access_token")
                .to_owned(),
            refresh: body["refresh_token"]
                .as_str()
                .expect("refresh_token")
                .to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub tokens: Tokens,
}

impl TestUser {
    pub fn token(&self) -> &str {
        &self.tokens.access
    }
}

#[derive(Debug, Clone)]
pub struct TestTenant {
    pub id: Uuid,
    pub slug: String,
    pub admin: TestUser,
}

// ---- Responses and assertions ----------------------------------------------

/// A whole HTTP answer.
pub struct Resp {
    /// `METHOD /path`, for failure messages.
    pub what: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
}

impl std::fmt::Display for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}: {}", self.what, self.status, self.text)
    }
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{self}: not JSON: {e}"))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{self}");
    }

    /// Asserts a problem document: status, `application/problem+json`, and
    /// the stable `code`; returns the body.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> Value {
        self.assert_status(status);
        assert_eq!(
            self.header(CONTENT_TYPE.as_str()),
            Some("application/problem+json"),
            "{self}"
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{self}");
        assert_eq!(body["status"], status, "{self}");
        assert_eq!(
            body["type"],
            format!("urn:buildpeer:problem:{code}"),
            "{self}"
        );
        assert!(body["title"].is_string(), "{self}");
        assert!(body["detail"].is_string(), "{self}");
        body
    }

    /// Asserts the outcome of an authorised call: a 401, 403 or 404 must be
    /// the matching problem document; anything else just the status.
    #[track_caller]
    pub fn assert_outcome(&self, status: u16) {
        match status {
            401 => drop(self.assert_problem(401, "unauthorized")),
            403 => drop(self.assert_problem(403, "forbidden")),
            404 => drop(self.assert_problem(404, "not_found")),
            _ => self.assert_status(status),
        }
    }

    /// Asserts a `422 validation_failed` whose `errors` name `field` with
    /// `code`; returns the body.
    #[track_caller]
    pub fn assert_invalid_field(&self, field: &str, code: &str) -> Value {
        let body = self.assert_problem(422, "validation_failed");
        let errors = body["errors"].as_array().cloned().unwrap_or_default();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["code"] == code),
            "expected errors[] to have {{field: {field}, code: {code}}}: {self}"
        );
        body
    }
}

/// A UUID from a JSON string.
#[track_caller]
pub fn uuid(v: &Value) -> Uuid {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a UUID: {v}"))
}

/// The ids of a list of JSON objects.
pub fn ids(items: &[Value], key: &str) -> Vec<Uuid> {
    items.iter().map(|i| uuid(&i[key])).collect()
}
