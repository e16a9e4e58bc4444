//! EXIF metadata (kamadak-exif ≥ 0.6.2: earlier versions could allocate
//! without bound on looping IFDs). A missing or malformed tag is `None`.
//!
//! The EXIF block is taken out of its container here and checked before
//! kamadak-exif sees it: kamadak keeps an entry for every field of up to
//! 32 IFDs, and turns a text field into one vector per NUL when it is read,
//! so a small block with overlapping IFDs of 65,535 fields, or a `Make` of a
//! million NULs, costs hundreds of MB. A block with more fields than any
//! camera writes, or a field we read whose count is more than such a field
//! can hold, is not read at all: no EXIF metadata, the image is processed.

use std::io::Cursor;

use exif::{In, Tag, Value};

use crate::{Format, Gps, Metadata};

/// More fields than this in the IFDs we walk: not a camera's EXIF.
const MAX_FIELDS: usize = 4096;
/// The largest count a field we read may have (the longest is a text:
/// a camera model or a date).
const MAX_COUNT: u32 = 1024;

/// What reading the EXIF may allocate for a `len`-byte file: its block
/// (a TIFF's is the whole file; a JPEG's one segment) and the fields.
pub(crate) fn memory(format: Format, len: usize) -> u64 {
    let block = if format == Format::Jpeg {
        64 << 10
    } else {
        len as u64
    };
    block + MAX_FIELDS as u64 * 128 + (64 << 10)
}

/// The EXIF block (a TIFF structure) of a file, out of its container.
fn block(format: Format, bytes: &[u8]) -> Option<Vec<u8>> {
    match format {
        Format::Jpeg => exif::get_exif_attr_from_jpeg(&mut Cursor::new(bytes)).ok(),
        Format::Tiff => Some(bytes.to_vec()),
        Format::Png => png_chunk(bytes),
        Format::Webp => riff_chunk(bytes),
        Format::Heif => crate::heif::exif_block(bytes),
        Format::Gif | Format::Pdf => None,
    }
}

/// A PNG's `eXIf` chunk.
fn png_chunk(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut i = 8;
    while i + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[i..i + 4].try_into().ok()?) as usize;
        let kind = &bytes[i + 4..i + 8];
        let data = bytes.get(i + 8..(i + 8).checked_add(len)?)?;
        match kind {
            b"eXIf" => return Some(data.to_vec()),
            b"IDAT" | b"IEND" => return None,
            _ => i += 12 + len,
        }
    }
    None
}

/// A WebP's `EXIF` chunk (some writers keep the JPEG `Exif\0\0` prefix).
fn riff_chunk(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let kind = &bytes[i..i + 4];
        let len = u32::from_le_bytes(bytes[i + 4..i + 8].try_into().ok()?) as usize;
        let data = bytes.get(i + 8..(i + 8).checked_add(len)?)?;
        if kind == b"EXIF" {
            let data = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
            return Some(data.to_vec());
        }
        i += 8 + len + (len & 1);
    }
    None
}

/// The tags `read` looks at.
const READ: [u16; 11] = [
    0x010F, 0x0110, 0x0112, 0x9003,
    0x9011, // Make, Model, Orientation, DateTimeOriginal, OffsetTimeOriginal
    0x0001, 0x0002, 0x0003, 0x0004, 0x0005, 0x0006, // GPS
];

/// Walks IFD0 (and the IFDs chained after it, as kamadak does, up to 8)
/// with its Exif, GPS and Interop IFDs, checking field counts; `false` if
/// the block is not worth reading. Every IFD is visited once.
fn sane(block: &[u8]) -> bool {
    let le = match block.get(0..2) {
        Some(b"II") => true,
        Some(b"MM") => false,
        _ => return false,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = block.get(at..at + 2)?.try_into().ok()?;
        Some(if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = block.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let Some(first) = u32_at(4) else { return false };
    let mut pending = vec![first as usize];
    let mut seen = std::collections::HashSet::new();
    let mut fields = 0usize;
    let mut chained = 0;
    while let Some(ifd) = pending.pop() {
        if ifd == 0 || !seen.insert(ifd) || seen.len() > 32 {
            continue;
        }
        let Some(n) = u16_at(ifd) else { continue };
        fields += usize::from(n);
        if fields > MAX_FIELDS {
            return false;
        }
        for e in 0..usize::from(n) {
            let at = ifd + 2 + e * 12;
            let (Some(tag), Some(count), Some(value)) =
                (u16_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                break;
            };
            match tag {
                0x8769 | 0x8825 | 0xA005 => pending.push(value as usize),
                t if READ.contains(&t) && count > MAX_COUNT => return false,
                _ => {}
            }
        }
        if chained < 8
            && let Some(next) = u32_at(ifd + 2 + usize::from(n) * 12)
        {
            chained += 1;
            pending.push(next as usize);
        }
    }
    true
}

/// Reads what it can; never fails.
pub(crate) fn read(format: Format, bytes: &[u8]) -> Metadata {
    let Some(block) = block(format, bytes).filter(|b| sane(b)) else {
        return Metadata::default();
    };
    let Ok(exif) = exif::Reader::new().read_raw(block) else {
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
