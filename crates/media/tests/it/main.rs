//! The media crate's integration tests, as one test binary: generated
//! inputs (every format, bombs, garbage) and the real photos of
//! shared/testdata/photos.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod hostile;
mod inputs;
mod photos;
