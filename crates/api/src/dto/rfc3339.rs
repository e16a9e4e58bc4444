//! Timestamps on the wire, written the way chrono's `Serialize` writes them
//! (RFC 3339, UTC as `Z`, 0, 3, 6 or 9 fraction digits: the fewest that
//! keep the value) but without going through `fmt`.
//!
//! chrono serializes with `collect_str`, which runs its formatter character
//! by character through serde_json's escaping adapter: an upload carries up
//! to five timestamps, and formatting them was about half the cost of
//! serializing it (profile of the cached status read). Here the text is
//! built in a stack buffer and written once. Out-of-range values (years
//! outside 0000-9999, leap seconds) are left to chrono.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// `#[serde(serialize_with = "rfc3339::serialize")]`
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match format(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => t.serialize(s),
    }
}

/// `#[serde(serialize_with = "rfc3339::option")]`: `null` for `None`.
pub fn option<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z` into `buf`, or `None`
/// where chrono's own formatting must decide.
fn format<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
    // The naive value once: `DateTime`'s own accessors apply the offset on
    // every call.
    let t = t.naive_utc();
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let nanos = t.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    put(&mut buf[0..4], year);
    buf[4] = b'-';
    put(&mut buf[5..7], t.month());
    buf[7] = b'-';
    put(&mut buf[8..10], t.day());
    buf[10] = b'T';
    put(&mut buf[11..13], t.hour());
    buf[13] = b':';
    put(&mut buf[14..16], t.minute());
    buf[16] = b':';
    put(&mut buf[17..19], t.second());
    let mut end = 19;
    let (digits, fraction) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (3, nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        (6, nanos / 1_000)
    } else {
        (9, nanos)
    };
    if digits > 0 {
        buf[end] = b'.';
        put(&mut buf[end + 1..end + 1 + digits], fraction);
        end += 1 + digits;
    }
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).ok()
}

/// `n` in decimal, zero-padded to fill `out` (its high digits dropped if it
/// does not fit, which the callers' ranges rule out).
fn put(out: &mut [u8], mut n: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{TimeZone, Utc};

    #[derive(serde::Serialize)]
    struct Ours(#[serde(serialize_with = "super::serialize")] chrono::DateTime<Utc>);

    #[test]
    fn writes_what_chrono_writes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut checked = 0;
        for i in 0..20_000 {
            let secs = i64::try_from(next() % 400_000_000_000).unwrap() - 70_000_000_000;
            let nanos = match i % 5 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                3 => (next() % 1_000_000_000) as u32,
                // A leap second: chrono's own path.
                _ => 1_000_000_000 + (next() % 1_000_000) as u32 * 1_000,
            };
            let Some(t) = Utc.timestamp_opt(secs, nanos).single() else {
                continue;
            };
            assert_eq!(
                serde_json::to_string(&Ours(t)).unwrap(),
                serde_json::to_string(&t).unwrap(),
                "{secs} {nanos}"
            );
            checked += 1;
        }
        assert!(checked > 15_000);
        // The edges: the first and last instants written here, and either
        // side of them (chrono's path).
        for t in [
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(-1, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
        ] {
            assert_eq!(
                serde_json::to_string(&Ours(t)).unwrap(),
                serde_json::to_string(&t).unwrap()
            );
        }
    }
}
