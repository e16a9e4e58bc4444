//! The BuildPeer domain core: identifiers, tenants, users, roles, projects,
//! the permission policy, the ports the outside world implements, and the
//! use-cases over them. It knows no HTTP, no SQL and no file system.

pub mod auth;
pub mod blob;
pub mod cache;
pub mod clock;
pub mod error;
pub mod ids;
pub mod media;
pub mod model;
pub mod pagination;
pub mod policy;
pub mod ports;
pub mod queue;
pub mod service;
pub mod upload;

pub use error::{CoreError, StoreError};
pub use service::{Actor, Service};
