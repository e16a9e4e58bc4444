//! A bare axum "hello" server: the floor `bench/api` measures BuildPeer's
//! authenticated, cached status read against, in the same run on the same
//! machine. Same axum and tokio (multi-threaded runtime) as the service, no
//! middleware, no allocator change: what is left of the ratio is the cost of
//! BuildPeer's own work per request (authentication, rate limits, cache,
//! authorization, JSON, telemetry).
//!
//! Usage: `hello [ADDR]` (default 127.0.0.1:0); prints `listening ADDR` on stderr.

use axum::Router;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("listening {}", listener.local_addr()?);
    let app = Router::new().route("/", get(|| async { "hello" }));
    axum::serve(listener, app).await
}
