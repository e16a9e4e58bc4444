//! The HTTP API. The only crate that knows HTTP: it turns requests into calls
//! of `buildpeer_core::Service` and their results into JSON or problem
//! documents. It holds no state of its own, so any number of replicas can run.

mod drain;
mod dto;
mod error;
mod extract;
mod linger;
mod openapi;
mod ratelimit;
mod retry;
mod routes;
mod telemetry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::routing::get;
use buildpeer_core::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, Problem};
pub use openapi::openapi;
pub use telemetry::REQUEST_ID;

/// What every handler can reach. One `Arc`: axum clones the state for every
/// extractor and middleware of every request, and cloning the service's
/// dozen `Arc`s each time showed up in profiles (contended reference counts).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub service: Service,
    pub metrics: PrometheusHandle,
    /// The OpenAPI document, rendered once at start-up.
    openapi: Bytes,
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The JSON API, documented by the handlers' annotations. The routes
/// [`router`] adds beside it are documented in `openapi::Unrouted`.
fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(routes::auth::login))
        .routes(routes!(routes::auth::refresh))
        .routes(routes!(routes::auth::logout))
        .routes(routes!(routes::auth::me))
        .routes(routes!(routes::users::create, routes::users::list))
        .routes(routes!(routes::users::get, routes::users::update))
        .routes(routes!(routes::projects::create, routes::projects::list))
        .routes(routes!(
            routes::projects::get,
            routes::projects::update,
            routes::projects::archive
        ))
        .routes(routes!(routes::projects::members))
        .routes(routes!(
            routes::projects::add_member,
            routes::projects::remove_member
        ))
        .routes(routes!(routes::uploads::initiate, routes::uploads::list))
        .routes(routes!(routes::uploads::complete))
        .routes(routes!(routes::uploads::get, routes::uploads::trash))
        .routes(routes!(routes::uploads::content))
        .routes(routes!(routes::uploads::thumbnail))
        .routes(routes!(routes::uploads::restore))
        .routes(routes!(routes::admin::list_jobs))
        .routes(routes!(routes::admin::get_job))
        .routes(routes!(routes::admin::retry_job))
        .routes(routes!(routes::admin::retry_dead_jobs))
}

/// The HTTP application, ready to serve on a bound listener.
pub struct Api(Router);

impl Api {
    pub fn new(service: Service, metrics: PrometheusHandle) -> Self {
        Self(router(service, metrics))
    }

    /// Only the operational endpoints (`/healthz`, `/readyz`, `/metrics`),
    /// for a process that serves no API: `buildpeer worker`, so that its
    /// own metrics (jobs, storage breaker, database pool) can be scraped
    /// and its health probed.
    pub fn ops_only(service: Service, metrics: PrometheusHandle) -> Self {
        Self(layered(
            ops_routes(Router::new()),
            app_state(service, metrics),
        ))
    }

    /// Serves until `shutdown` completes; then stops accepting and returns
    /// once in-flight requests are done (idle connections are closed, busy
    /// ones after their current response).
    ///
    /// This is `axum::serve` with one setting it does not expose: the cap on
    /// an HTTP/1 connection's read buffer, chosen per connection (see
    /// [`read_buffer_max`]).
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let builder = auto::Builder::new(TokioExecutor::new());
        let open = Arc::new(AtomicUsize::new(0));
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                self.0.clone(),
                ratelimit::with_peer(peer),
            ));
            let counted = OpenConnection::new(&open);
            let mut builder = builder.clone();
            builder.http1().max_buf_size(read_buffer_max(counted.open));
            let conn = builder
                .serve_connection(TokioIo::new(linger::Lingering::new(stream)), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::trace!(error = %e, "connection ended with an error");
                }
                drop(counted);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        Ok(())
    }
}

/// The most an HTTP/1 connection buffers from its socket (hyper's default is
/// about 400 KiB), and so the largest request body chunk, for a connection
/// opened while `open` connections (itself included) are open.
///
/// Chunks stay allocated until storage has written them, so with many uploads
/// at once this sets most of the memory they take (100 uploads with hyper's
/// default peaked over 300 MiB); but each chunk is a hand-off to the writer
/// thread, so small chunks cost a lone upload throughput (64 KiB made it
/// 20-30% slower than 128 KiB; 512 KiB brought signed-PUT ingest from ~0.65x
/// to ~0.9x of `dd` in bench/ingest). Hence large buffers while few connections are open
/// and small ones under a crowd: 100 concurrent uploads stay within the
/// memory goal, a lone one runs at disk speed. A connection keeps the size it
/// started with. It also caps a request's header block, which stays far above
/// what any client sends.
fn read_buffer_max(open: usize) -> usize {
    const KIB: usize = 1024;
    match open {
        0..=2 => 512 * KIB,
        3..=8 => 256 * KIB,
        _ => 128 * KIB,
    }
}

/// Counts a connection as open until dropped.
struct OpenConnection {
    counter: Arc<AtomicUsize>,
    /// Open connections when this one was counted, itself included.
    open: usize,
}

impl OpenConnection {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        let open = counter.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            counter: Arc::clone(counter),
            open,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// As `axum::serve` (and hyper 0.14 before it) handles a failed accept: a
/// connection that went away before it was accepted is nothing; anything else
/// (such as too many open files) is logged, and accepting pauses a second so
/// that connections can close rather than the loop spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
}

fn app_state(service: Service, metrics: PrometheusHandle) -> AppState {
    let openapi = openapi().to_json().unwrap_or_else(|_| "{}".to_owned());
    AppState(Arc::new(Shared {
        service,
        metrics,
        openapi: Bytes::from(openapi),
    }))
}

/// Liveness, readiness and metrics: none needs a token.
fn ops_routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/healthz", get(routes::ops::healthz))
        .route("/readyz", get(routes::ops::readyz))
        .route("/metrics", get(routes::ops::metrics))
}

/// Every route. Those outside [`api_routes`] are documented in
/// `openapi::Unrouted`: keep the two in step.
fn router(service: Service, metrics: PrometheusHandle) -> Router {
    let (api, _) = api_routes().split_for_parts();
    let routes = ops_routes(api)
        .route("/openapi.json", get(routes::ops::openapi))
        .route("/docs", get(routes::ops::docs))
        .merge(
            Router::new()
                .route(
                    "/v1/tus",
                    axum::routing::post(routes::tus::create).options(routes::tus::options),
                )
                .route("/v1/tus/{id}", axum::routing::any(routes::tus::upload))
                .layer(axum::middleware::from_fn(routes::tus::resumable)),
        )
        .route(
            "/v1/blobs/{*key}",
            get(routes::blobs::handle).put(routes::blobs::handle),
        );
    layered(routes, app_state(service, metrics))
}

/// What every router gets around its routes: problem documents for unknown
/// routes and methods, the route layer, a 500 problem for a panic, the
/// request's telemetry, and outermost the reading of what a refused request
/// still sends (`drain.rs`).
fn layered(routes: Router<AppState>, state: AppState) -> Router {
    let route_layer = axum::middleware::from_fn_with_state(state.clone(), per_route);
    routes
        .fallback(|| async { ApiError::RouteNotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .route_layer(route_layer)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("request handler panicked");
                axum::response::IntoResponse::into_response(ApiError::Panic)
            },
        ))
        .layer(axum::middleware::from_fn(telemetry::track))
        .layer(axum::middleware::from_fn(drain::refused_bodies))
        .with_state(state)
}

/// What every routed request passes before its handler, outermost first:
/// its route on the span (`telemetry::mark_route`), the rate limits
/// (`ratelimit::enforce`), retries of transient database errors
/// (`retry::transient`). One layer rather than three, because axum clones a
/// layer's inner service (a boxed route) for each request, and each layer's
/// share showed in profiles of the cached status read.
async fn per_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    telemetry::mark_route(&state, req, async |req| {
        ratelimit::enforce(&state, req, async |req| retry::transient(req, next).await).await
    })
    .await
}
