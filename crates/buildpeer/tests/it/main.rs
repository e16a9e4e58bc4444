//! The buildpeer crate's integration tests, as one test binary: each module
//! below used to be a binary of its own, each linking the whole app, which
//! made building the tests take far longer than running them. Test names
//! keep the module path (`tus_edge::sweeper_expires_tus_upload::postgres`).
//!
//! `common` boots the app in-process and drives the compiled binary;
//! `../interop` holds the scripts the real tus clients run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// First, so that its `scenarios!` macro is in scope in every module below.
#[macro_use]
mod common;

mod auth;
mod bad_input;
mod binary;
mod cache;
mod concurrency;
mod contract;
mod hostile;
mod isolation;
mod jobs;
mod layering;
mod logs;
mod monitoring;
mod ops;
mod pagination;
mod poison_job;
mod processing;
mod readme;
mod replica_crash;
mod resilience;
mod retries;
mod roles;
mod storage_faults;
mod tus;
mod tus_edge;
mod tus_interop;
mod uploads;
mod worker_process;
