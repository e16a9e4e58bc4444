//! Route handlers: thin drivers that parse, call one use-case, and shape the answer.

pub mod admin;
pub mod auth;
pub mod blobs;
pub mod ops;
pub mod projects;
pub mod tus;
pub mod uploads;
pub mod users;
