//! The `buildpeer` binary's library half: configuration, telemetry set-up and
//! the `App` that wires adapters to the core and the core to its drivers.

pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod media_cli;
pub mod telemetry;

pub use app::App;
pub use config::Config;
