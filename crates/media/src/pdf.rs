//! PDF page count: a bounded linear scan, not a full parser.
//!
//! The page count is the `/Count` of the root `/Type /Pages` dictionary (the
//! one without `/Parent`; the last one in the file wins, as incremental
//! updates append). Dictionaries are looked for in the raw bytes and, for
//! PDF 1.5+ files that keep their objects in compressed object streams, in
//! the inflated `/Type /ObjStm` streams. Every step is capped: matches
//! inspected, bytes per dictionary, streams inflated and bytes inflated, so
//! a crafted file costs at most a few hundred milliseconds and a few MB.
//! Encrypted object streams cannot be read: such files get `None`.

/// At most this many `/Type /Pages` matches are inspected per buffer.
const MAX_MATCHES: usize = 4096;
/// A dictionary is looked for within this many bytes of its `/Type`.
const DICT_WINDOW: usize = 16 * 1024;
/// At most this many object streams are inflated...
const MAX_STREAMS: usize = 1024;
/// ...each to at most this many bytes...
const MAX_STREAM_OUT: usize = 8 << 20;
/// ...and all of them together to at most this many.
const MAX_TOTAL_OUT: usize = 64 << 20;

pub(crate) fn page_count(bytes: &[u8]) -> Option<u32> {
    if let Some(n) = root_count(bytes) {
        return Some(n);
    }
    let mut total = 0usize;
    let mut found = None;
    for stream in object_streams(bytes).take(MAX_STREAMS) {
        let Ok(out) =
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(stream, MAX_STREAM_OUT)
        else {
            continue;
        };
        total += out.len();
        if let Some(n) = root_count(&out) {
            found = Some(n);
        }
        if total > MAX_TOTAL_OUT {
            break;
        }
    }
    found.or_else(|| leaf_count(bytes))
}

fn is_delim(c: u8) -> bool {
    c.is_ascii_whitespace() || b"()<>[]{}/%".contains(&c)
}

/// Positions of the name `/Type` followed by the name `wanted` (`/Pages`).
fn type_positions<'a>(buf: &'a [u8], wanted: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    find_all(buf, b"/Type")
        .filter(move |&p| {
            let mut i = p + 5;
            while i < buf.len() && buf[i].is_ascii_whitespace() {
                i += 1;
            }
            buf[i..].starts_with(wanted) && buf.get(i + wanted.len()).is_none_or(|&c| is_delim(c))
        })
        .take(MAX_MATCHES)
}

fn find_all<'a>(buf: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let mut from = 0;
    std::iter::from_fn(move || {
        let hit = buf
            .get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)?;
        let pos = from + hit;
        from = pos + needle.len();
        Some(pos)
    })
}

/// The `<< ... >>` around `pos`, if found within the window.
fn enclosing_dict(buf: &[u8], pos: usize) -> Option<&[u8]> {
    let lo = pos.saturating_sub(DICT_WINDOW);
    let mut depth = 0i32;
    let mut start = None;
    let mut i = pos.min(buf.len().saturating_sub(1));
    while i > lo && i >= 1 {
        if &buf[i - 1..=i] == b">>" {
            depth += 1;
            i = i.saturating_sub(2);
            continue;
        }
        if &buf[i - 1..=i] == b"<<" {
            if depth == 0 {
                start = Some(i - 1);
                break;
            }
            depth -= 1;
            i = i.saturating_sub(2);
            continue;
        }
        i -= 1;
    }
    let start = start?;
    let hi = (pos + DICT_WINDOW).min(buf.len());
    let mut depth = 0i32;
    let mut j = start + 2;
    while j + 1 < hi {
        match &buf[j..j + 2] {
            b"<<" => {
                depth += 1;
                j += 2;
            }
            b">>" if depth == 0 => return Some(&buf[start..j + 2]),
            b">>" => {
                depth -= 1;
                j += 2;
            }
            _ => j += 1,
        }
    }
    None
}

fn count_in(dict: &[u8]) -> Option<u32> {
    let p = find_all(dict, b"/Count").next()?;
    let rest = &dict[p + 6..];
    let digits: Vec<u8> = rest
        .iter()
        .skip_while(|c| c.is_ascii_whitespace())
        .take_while(|c| c.is_ascii_digit())
        .copied()
        .take(10)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// The `/Count` of the last root page-tree node in `buf` (or, with no root
/// seen, the largest count of any node).
fn root_count(buf: &[u8]) -> Option<u32> {
    let mut root = None;
    let mut largest = None;
    for pos in type_positions(buf, b"/Pages") {
        let Some(dict) = enclosing_dict(buf, pos) else {
            continue;
        };
        let Some(n) = count_in(dict) else { continue };
        if find_all(dict, b"/Parent").next().is_none() {
            root = Some(n);
        }
        largest = largest.max(Some(n));
    }
    root.or(largest)
}

/// Fallback: the number of `/Type /Page` leaves.
fn leaf_count(buf: &[u8]) -> Option<u32> {
    let n = type_positions(buf, b"/Page").count();
    (n > 0).then(|| u32::try_from(n).unwrap_or(u32::MAX))
}

/// The raw (still compressed) data of `/Type /ObjStm` streams with
/// `/FlateDecode`.
fn object_streams(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    type_positions(buf, b"/ObjStm").filter_map(move |pos| {
        let dict = enclosing_dict(buf, pos)?;
        find_all(dict, b"/FlateDecode").next()?;
        let dict_end = dict.as_ptr() as usize - buf.as_ptr() as usize + dict.len();
        let after = buf.get(dict_end..)?;
        let s = find_all(&after[..after.len().min(64)], b"stream").next()?;
        let mut start = dict_end + s + 6;
        if buf.get(start) == Some(&b'\r') {
            start += 1;
        }
        if buf.get(start) == Some(&b'\n') {
            start += 1;
        }
        let body = buf.get(start..)?;
        let body = &body[..body.len().min(MAX_STREAM_OUT)];
        let end = find_all(body, b"endstream").next().unwrap_or(body.len());
        Some(&body[..end])
    })
}
