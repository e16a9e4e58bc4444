//! EXIF metadata (kamadak-exif ≥ 0.6.2: earlier versions could allocate
//! without bound on looping IFDs). A missing or malformed tag is `None`.

use exif::{In, Tag, Value};

use crate::{Gps, Metadata};

/// Reads what it can; never fails.
pub(crate) fn read(bytes: &[u8]) -> Metadata {
    let mut cursor = std::io::Cursor::new(bytes);
    let Ok(exif) = exif::Reader::new().read_from_container(&mut cursor) else {
        return Metadata::default();
    };
    let field = |tag: Tag| exif.get_field(tag, In::PRIMARY).map(|f| &f.value);
    let ascii = |tag: Tag| -> Option<String> {
        let Some(Value::Ascii(parts)) = field(tag) else {
            return None;
        };
        let raw = parts.first()?;
        let s = String::from_utf8_lossy(raw);
        let s = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
        (!s.is_empty()).then(|| s.to_owned())
    };

    let orientation = field(Tag::Orientation)
        .and_then(|v| v.get_uint(0))
        .and_then(|o| u16::try_from(o).ok())
        .filter(|o| (1..=8).contains(o));

    let taken_at = match field(Tag::DateTimeOriginal) {
        Some(Value::Ascii(parts)) => parts.first().and_then(|raw| {
            let offset = match field(Tag::OffsetTimeOriginal) {
                Some(Value::Ascii(o)) => o.first().map(|v| v.as_slice()),
                _ => None,
            };
            format_datetime(raw, offset)
        }),
        _ => None,
    };

    Metadata {
        taken_at,
        gps: gps(&exif),
        camera_make: ascii(Tag::Make),
        camera_model: ascii(Tag::Model),
        orientation,
        ..Metadata::default()
    }
}

/// `YYYY:MM:DD HH:MM:SS` (+ `±HH:MM`) → RFC 3339 with offset, or naive.
fn format_datetime(raw: &[u8], offset: Option<&[u8]>) -> Option<String> {
    let mut dt = exif::DateTime::from_ascii(raw).ok()?;
    let valid = (1..=9999).contains(&dt.year)
        && (1..=12).contains(&dt.month)
        && (1..=31).contains(&dt.day)
        && dt.hour <= 23
        && dt.minute <= 59
        && dt.second <= 60;
    if !valid {
        return None;
    }
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second
    );
    if let Some(off) = offset
        && dt.parse_offset(off).is_ok()
        && let Some(minutes) = dt.offset
        && minutes.abs() < 24 * 60
    {
        let sign = if minutes < 0 { '-' } else { '+' };
        let m = minutes.unsigned_abs();
        return Some(format!("{base}{sign}{:02}:{:02}", m / 60, m % 60));
    }
    Some(base)
}

fn rationals(exif: &exif::Exif, tag: Tag) -> Option<Vec<f64>> {
    match &exif.get_field(tag, In::PRIMARY)?.value {
        Value::Rational(v) => v
            .iter()
            .map(|r| (r.denom != 0).then(|| f64::from(r.num) / f64::from(r.denom)))
            .collect(),
        // Some phones (e.g. Nokia 8.3) write signed rationals.
        Value::SRational(v) => v
            .iter()
            .map(|r| (r.denom != 0).then(|| f64::from(r.num) / f64::from(r.denom)))
            .collect(),
        _ => None,
    }
}

fn dms(exif: &exif::Exif, tag: Tag) -> Option<f64> {
    let v = rationals(exif, tag)?;
    let deg = *v.first()?;
    let min = v.get(1).copied().unwrap_or(0.0);
    let sec = v.get(2).copied().unwrap_or(0.0);
    let d = deg + min / 60.0 + sec / 3600.0;
    d.is_finite().then_some(d)
}

fn reference(exif: &exif::Exif, tag: Tag) -> Option<u8> {
    match &exif.get_field(tag, In::PRIMARY)?.value {
        Value::Ascii(parts) => parts.first()?.first().map(|c| c.to_ascii_uppercase()),
        _ => None,
    }
}

fn gps(exif: &exif::Exif) -> Option<Gps> {
    let mut lat = dms(exif, Tag::GPSLatitude)?;
    let mut lon = dms(exif, Tag::GPSLongitude)?;
    if reference(exif, Tag::GPSLatitudeRef) == Some(b'S') {
        lat = -lat;
    }
    if reference(exif, Tag::GPSLongitudeRef) == Some(b'W') {
        lon = -lon;
    }
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        return None;
    }
    let altitude = rationals(exif, Tag::GPSAltitude)
        .and_then(|v| v.first().copied())
        .filter(|a| a.is_finite())
        .map(|a| {
            let below = exif
                .get_field(Tag::GPSAltitudeRef, In::PRIMARY)
                .and_then(|f| f.value.get_uint(0))
                == Some(1);
            if below { -a } else { a }
        });
    Some(Gps {
        latitude: lat,
        longitude: lon,
        altitude,
    })
}
