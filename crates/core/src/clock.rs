//! The clock port. Use-cases read time only through it, so tests can pin it.

use chrono::{DateTime, SubsecRound as _, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock, at microsecond precision: what PostgreSQL stores, so a
/// value a use-case echoes equals the one read back later.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}
