//! Content sniffing: magic bytes only.

use crate::Format;

/// The format of a file from its first bytes (16 are enough for the images;
/// a PDF header may start anywhere in the first 1024 bytes), or `None` if it
/// is not on the allowlist.
pub fn sniff(head: &[u8]) -> Option<Format> {
    if head.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some(Format::Jpeg);
    }
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some(Format::Png);
    }
    if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        return Some(Format::Gif);
    }
    if head.len() >= 12 && &head[0..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some(Format::Webp);
    }
    // Classic TIFF and BigTIFF, both byte orders.
    if head.starts_with(b"II*\0")
        || head.starts_with(b"MM\0*")
        || head.starts_with(b"II+\0")
        || head.starts_with(b"MM\0+")
    {
        return Some(Format::Tiff);
    }
    if is_heif(head) {
        return Some(Format::Heif);
    }
    let window = &head[..head.len().min(1024)];
    if window.windows(5).any(|w| w == b"%PDF-") {
        return Some(Format::Pdf);
    }
    None
}

/// An ISO-BMFF `ftyp` box whose brands say HEIF with HEVC (not AVIF).
fn is_heif(head: &[u8]) -> bool {
    if head.len() < 12 || &head[4..8] != b"ftyp" {
        return false;
    }
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !(16..=4096).contains(&size) {
        return false;
    }
    let major = &head[8..12];
    const HEVC: [&[u8; 4]; 6] = [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis"];
    if HEVC.iter().any(|b| &b[..] == major) {
        return true;
    }
    if major != b"mif1" && major != b"msf1" {
        return false;
    }
    // Generic HEIF major brand: look at the compatible brands we can see.
    let end = size.min(head.len());
    let compat: Vec<&[u8]> = head.get(16..end).unwrap_or(&[]).chunks_exact(4).collect();
    if compat.iter().any(|b| *b == b"avif" || *b == b"avis") {
        return false;
    }
    true
}
