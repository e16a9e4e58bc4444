//! The hostile-file set (issue 18): decompression bombs in every accepted
//! format, looping and deeply nested structures, polyglots, markup declared
//! as an image, truncated files, zero and one byte. Everything is generated
//! here, the same bytes on every run, from code and from the shared test
//! photos (read in place from `shared/testdata/photos`, never copied into the
//! repository): no binary fixture is committed.
//!
//! Every file carries what processing should make of it ([`Expect`]) once
//! the worker's memory is bounded and PDF metadata is no longer trusted, so
//! the media crate's tests and the server's run the same table. Where more
//! than one outcome is defensible the case says why.
//!
//! The bombs are written without ever holding their decoded form: zlib
//! streams repeat one sync-flushed deflate piece ([`Zlib`]), GIF's LZW is
//! streamed from `io::repeat`, WebP lossless uses prefix codes of a single
//! symbol (zero bits a pixel) and the JPEG's entropy-coded data is two bits a
//! block. The set is built once per process ([`set`]).

use std::fmt;
use std::io::{BufReader, Read as _};
use std::path::Path;
use std::sync::OnceLock;

/// The shared test photos, next to the repository.
const PHOTOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos"
);

/// One hostile file and what should become of it.
#[derive(Debug, Clone)]
pub struct Hostile {
    /// Unique in the set; a file name without extension.
    pub name: String,
    /// What the client claims it is at initiation.
    pub declared_type: &'static str,
    pub bytes: Vec<u8>,
    pub expect: Expect,
}

impl Hostile {
    /// A file name with the declared type's extension (what a client sends).
    pub fn filename(&self) -> String {
        let ext = match self.declared_type {
            "image/jpeg" => "jpg",
            "image/png" => "png",
            "image/gif" => "gif",
            "image/webp" => "webp",
            "image/tiff" => "tif",
            "image/heic" => "heic",
            "application/pdf" => "pdf",
            _ => "bin",
        };
        format!("{}.{ext}", self.name)
    }
}

/// The desired outcome of processing a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Completes with this metadata.
    Completed(Meta),
    /// Fails with this `error.code`.
    Failed(&'static str),
    /// Fails with one of these codes (each is legitimate).
    FailedAny(&'static [&'static str]),
    /// Either completes with this metadata or fails with one of the codes:
    /// undecided until the lead's implementation settles it.
    CompletedOrFailed(Meta, &'static [&'static str]),
}

/// What a completed file's metadata must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Width × height as displayed; `None`: not checked. When given, the
    /// file must also have derivatives, none larger than it.
    pub size: Option<(u32, u32)>,
    pub pages: Pages,
}

impl Meta {
    /// An image of this displayed size (no page count).
    pub const fn image(width: u32, height: u32) -> Self {
        Self {
            size: Some((width, height)),
            pages: Pages::Absent,
        }
    }

    /// A PDF with this page count.
    pub const fn pdf(pages: Pages) -> Self {
        Self { size: None, pages }
    }

    /// Anything, as long as it is a terminal state with metadata.
    pub const ANY: Meta = Meta {
        size: None,
        pages: Pages::Any,
    };
}

/// A PDF's page count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pages {
    /// Not checked.
    Any,
    /// No page count reported.
    Absent,
    Exactly(u32),
}

/// What processing made of a file, as either suite observes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        width: Option<u32>,
        height: Option<u32>,
        page_count: Option<u32>,
        /// Width × height of each derivative, in the order given.
        derivatives: Vec<(u32, u32)>,
    },
    Failed {
        code: String,
    },
}

impl Expect {
    /// `Ok` when `got` is an outcome this expectation accepts, else why not.
    /// `internal_error` is never accepted: no expectation names it.
    pub fn check(&self, got: &Outcome) -> Result<(), String> {
        let fail_codes: &[&str] = match self {
            Expect::Completed(_) => &[],
            Expect::Failed(code) => std::slice::from_ref(code),
            Expect::FailedAny(codes) | Expect::CompletedOrFailed(_, codes) => codes,
        };
        let meta = match self {
            Expect::Completed(m) | Expect::CompletedOrFailed(m, _) => Some(m),
            Expect::Failed(_) | Expect::FailedAny(_) => None,
        };
        match got {
            Outcome::Failed { code } if fail_codes.contains(&code.as_str()) => Ok(()),
            Outcome::Completed {
                width,
                height,
                page_count,
                derivatives,
            } => match meta {
                Some(m) => m.check(*width, *height, *page_count, derivatives),
                None => Err(format!("expected {self}, got {got}")),
            },
            Outcome::Failed { .. } => Err(format!("expected {self}, got {got}")),
        }
    }
}

impl Meta {
    fn check(
        &self,
        width: Option<u32>,
        height: Option<u32>,
        page_count: Option<u32>,
        derivatives: &[(u32, u32)],
    ) -> Result<(), String> {
        if let Some((w, h)) = self.size {
            if (width, height) != (Some(w), Some(h)) {
                return Err(format!(
                    "expected {w}x{h}, got {}x{}",
                    opt(width),
                    opt(height)
                ));
            }
            if derivatives.is_empty() {
                return Err("completed without derivatives".to_owned());
            }
            if let Some((dw, dh)) = derivatives
                .iter()
                .find(|(dw, dh)| dw.max(dh) > &w.max(h) || *dw == 0 || *dh == 0)
            {
                return Err(format!("derivative {dw}x{dh} of a {w}x{h} image"));
            }
        }
        match self.pages {
            Pages::Any => Ok(()),
            Pages::Absent if page_count.is_none() => Ok(()),
            Pages::Exactly(n) if page_count == Some(n) => Ok(()),
            Pages::Absent | Pages::Exactly(_) => Err(format!(
                "expected page_count {}, got {}",
                self.pages,
                opt(page_count)
            )),
        }
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "none".to_owned(), |v| v.to_string())
}

impl fmt::Display for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pages::Any => f.write_str("any"),
            Pages::Absent => f.write_str("none"),
            Pages::Exactly(n) => write!(f, "{n}"),
        }
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("COMPLETED")?;
        if let Some((w, h)) = self.size {
            write!(f, " {w}x{h}")?;
        }
        match self.pages {
            Pages::Any if self.size.is_none() => f.write_str(" (any)"),
            Pages::Any | Pages::Absent if self.size.is_some() => Ok(()),
            pages => write!(f, " pages={pages}"),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Completed(m) => write!(f, "{m}"),
            Expect::Failed(code) => write!(f, "FAILED {code}"),
            Expect::FailedAny(codes) => write!(f, "FAILED {}", codes.join("|")),
            Expect::CompletedOrFailed(m, codes) => {
                write!(f, "{m} or FAILED {}", codes.join("|"))
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Completed {
                width,
                height,
                page_count,
                derivatives,
            } => {
                f.write_str("COMPLETED")?;
                if width.is_some() || height.is_some() {
                    write!(f, " {}x{}", opt(*width), opt(*height))?;
                }
                if let Some(n) = page_count {
                    write!(f, " pages={n}")?;
                }
                if !derivatives.is_empty() {
                    let d: Vec<String> = derivatives
                        .iter()
                        .map(|(w, h)| format!("{w}x{h}"))
                        .collect();
                    write!(f, " [{}]", d.join(","))?;
                }
                Ok(())
            }
            Outcome::Failed { code } => write!(f, "FAILED {code}"),
        }
    }
}

/// The whole set, in a fixed order; built once per process (a second or
/// two: the bombs are streamed, never decoded).
pub fn set() -> Vec<Hostile> {
    static SET: OnceLock<Vec<Hostile>> = OnceLock::new();
    SET.get_or_init(build).clone()
}

/// The variable that narrows [`selected`] to some files.
pub const ONLY_ENV: &str = "BUILDPEER_TEST_HOSTILE";

/// The set, or when `BUILDPEER_TEST_HOSTILE` is set (comma-separated
/// words), only the files whose names contain one of them: to rerun a few
/// cases while working on them.
pub fn selected() -> Vec<Hostile> {
    let only = std::env::var(ONLY_ENV).unwrap_or_default();
    let words: Vec<&str> = only
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let mut all = set();
    if !words.is_empty() {
        all.retain(|h| words.iter().any(|w| h.name.contains(w)));
        assert!(!all.is_empty(), "{ONLY_ENV}={only} selects no hostile file");
    }
    all
}

fn build() -> Vec<Hostile> {
    let mut set = Set(Vec::new());
    jpeg_cases(&mut set);
    png_cases(&mut set);
    gif_cases(&mut set);
    webp_cases(&mut set);
    tiff_cases(&mut set);
    heic_cases(&mut set);
    pdf_cases(&mut set);
    other_cases(&mut set);
    set.0
}

struct Set(Vec<Hostile>);

impl Set {
    fn add(&mut self, name: impl Into<String>, declared: &'static str, bytes: Vec<u8>, e: Expect) {
        let name = name.into();
        assert!(
            self.0.iter().all(|h| h.name != name),
            "two hostile files named {name}"
        );
        self.0.push(Hostile {
            name,
            declared_type: declared,
            bytes,
            expect: e,
        });
    }

    /// `base` cut at each of `cuts` (named by the cut), all expecting `e`.
    fn truncations(
        &mut self,
        prefix: &str,
        declared: &'static str,
        base: &[u8],
        cuts: &[(&str, usize)],
        e: Expect,
    ) {
        for (what, at) in cuts {
            assert!(
                *at < base.len(),
                "{prefix}: cut {what} at {at} is past the end"
            );
            self.add(
                format!("{prefix}_cut_{what}"),
                declared,
                base[..*at].to_vec(),
                e,
            );
        }
    }
}

fn photo(rel: &str) -> Vec<u8> {
    let path = Path::new(PHOTOS).join(rel);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the shared test photos are missing)",
            path.display()
        )
    })
}

const CORRUPT: Expect = Expect::Failed("corrupt_file");
const TOO_LARGE: Expect = Expect::Failed("image_too_large");
const UNSUPPORTED: Expect = Expect::Failed("unsupported_type");

// ---------------------------------------------------------------------------
// Checksums and zlib

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

const CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (ISO 3309), as PNG and ZIP use it.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

const ADLER_MOD: u64 = 65_521;

/// A zlib stream built piece by piece, so that gigabytes of one repeated
/// byte cost one compressed piece repeated: each piece is raw deflate
/// ended by a sync flush (byte-aligned, no final block, no reference before
/// its own start), so copies of it can follow each other.
pub struct Zlib {
    out: Vec<u8>,
    a: u64,
    b: u64,
}

/// The uncompressed size of the piece that [`Zlib::run`] repeats.
const RUN_PIECE: u64 = 1 << 20;

impl Default for Zlib {
    fn default() -> Self {
        Self::new()
    }
}

impl Zlib {
    pub fn new() -> Self {
        // CMF 0x78 (deflate, 32 KiB window), FLG 0xDA (best compression).
        Self {
            out: vec![0x78, 0xDA],
            a: 1,
            b: 0,
        }
    }

    /// Appends `data`.
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        if data.is_empty() {
            return self;
        }
        self.out.extend_from_slice(&deflate_piece(data));
        for &x in data {
            self.a = (self.a + u64::from(x)) % ADLER_MOD;
            self.b = (self.b + self.a) % ADLER_MOD;
        }
        self
    }

    /// Appends `n` copies of `byte` without materialising them.
    pub fn run(&mut self, byte: u8, n: u64) -> &mut Self {
        let whole = n / RUN_PIECE;
        if whole > 0 {
            let piece = deflate_piece(&vec![byte; RUN_PIECE as usize]);
            for _ in 0..whole {
                self.out.extend_from_slice(&piece);
            }
        }
        let rest = (n % RUN_PIECE) as usize;
        if rest > 0 {
            self.out
                .extend_from_slice(&deflate_piece(&vec![byte; rest]));
        }
        // Adler-32 over n equal bytes: a grows by n·byte, b by n·a_before
        // plus byte·n(n+1)/2 (all mod 65521).
        let m = u128::from(ADLER_MOD);
        let (nn, x, a0) = (u128::from(n), u128::from(byte), u128::from(self.a));
        let b = (u128::from(self.b) + nn % m * a0 + x * (nn * (nn + 1) / 2 % m)) % m;
        self.a = ((a0 + nn % m * x) % m) as u64;
        self.b = b as u64;
        self
    }

    /// The finished stream: an empty final block, then the Adler-32.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        // BFINAL=1, BTYPE=01 (fixed Huffman), end-of-block (seven 0 bits).
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&(((self.b << 16) | self.a) as u32).to_be_bytes());
        out
    }
}

/// Raw deflate of `data`, ended by a sync flush.
fn deflate_piece(data: &[u8]) -> Vec<u8> {
    use miniz_oxide::deflate::core::{CompressorOxide, create_comp_flags_from_zip_params};
    use miniz_oxide::{MZFlush, deflate::stream::deflate};
    // Negative window bits: raw deflate, no zlib header of its own.
    let mut c = CompressorOxide::new(create_comp_flags_from_zip_params(9, -15, 0));
    // Room for incompressible input and the flush marker in one call.
    let mut out = vec![0u8; data.len() + data.len() / 8 + 1024];
    let r = deflate(&mut c, data, &mut out, MZFlush::Sync);
    assert!(
        r.status.is_ok() && r.bytes_consumed == data.len() && r.bytes_written < out.len(),
        "deflate: {r:?}"
    );
    out.truncate(r.bytes_written);
    out
}

/// zlib of `n` zero bytes.
fn zlib_zeros(n: u64) -> Vec<u8> {
    Zlib::new().run(0, n).finish()
}

/// A small deterministic pseudo-random sequence (xorshift), for image content
/// that does not compress to nothing.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as u8
    }
}

// ---------------------------------------------------------------------------
// JPEG

/// A baseline grayscale JPEG of `width` × `height`, uniformly mid-grey: one
/// quantisation table, and Huffman tables with a single one-bit code each
/// (DC difference 0, AC end-of-block), so every 8×8 block is two zero bits.
/// 10,000 × 10,000 is 390,625 bytes of entropy-coded data.
pub fn jpeg_gray(width: u16, height: u16) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    jpeg_tables(&mut j, 0xC0, width, height);
    jpeg_segment(&mut j, 0xC4, &huffman_one_code(0x10));
    jpeg_segment(&mut j, 0xDA, &[1, 1, 0x00, 0, 63, 0]);
    let blocks = u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8));
    j.resize(j.len() + (blocks * 2).div_ceil(8) as usize, 0);
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// DQT (all ones), SOF `sof` for one 8-bit component, the DC Huffman table.
fn jpeg_tables(j: &mut Vec<u8>, sof: u8, width: u16, height: u16) {
    let mut dqt = vec![0x00];
    dqt.extend_from_slice(&[1; 64]);
    jpeg_segment(j, 0xDB, &dqt);
    let mut frame = vec![8];
    frame.extend_from_slice(&height.to_be_bytes());
    frame.extend_from_slice(&width.to_be_bytes());
    frame.extend_from_slice(&[1, 1, 0x11, 0]);
    jpeg_segment(j, sof, &frame);
    jpeg_segment(j, 0xC4, &huffman_one_code(0x00));
}

/// A DHT payload of class/id `tc_th` whose only code is `0` for symbol 0.
fn huffman_one_code(tc_th: u8) -> Vec<u8> {
    let mut t = vec![tc_th, 1];
    t.extend_from_slice(&[0; 15]);
    t.push(0x00);
    t
}

fn jpeg_segment(j: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    j.extend_from_slice(&[0xFF, marker]);
    j.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    j.extend_from_slice(payload);
}

/// A progressive 8×8 JPEG with `scans` DC scans (each one block, one byte).
fn jpeg_many_scans(scans: usize) -> Vec<u8> {
    let mut j = vec![0xFF, 0xD8];
    jpeg_tables(&mut j, 0xC2, 8, 8);
    for _ in 0..scans {
        jpeg_segment(&mut j, 0xDA, &[1, 1, 0x00, 0, 0, 0]);
        j.push(0x00);
    }
    j.extend_from_slice(&[0xFF, 0xD9]);
    j
}

/// `jpeg` with an APP1 Exif segment holding `tiff` right after SOI.
fn with_exif(jpeg: &[u8], tiff: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(tiff);
    jpeg_segment(&mut out, 0xE1, &payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Big-endian TIFF (as EXIF is usually written) whose IFD0 names itself as
/// its Exif IFD, its GPS IFD and its next IFD.
fn exif_self_loop() -> Vec<u8> {
    let mut t = b"MM\0*".to_vec();
    t.extend_from_slice(&8u32.to_be_bytes());
    t.extend_from_slice(&3u16.to_be_bytes());
    let data_at = 8 + 2 + 3 * 12 + 4;
    // Make (ASCII, 5 bytes, out of line).
    exif_entry(&mut t, 0x010F, 2, 5, data_at);
    // ExifIFDPointer and GPSInfoIFDPointer: IFD0 itself.
    exif_entry(&mut t, 0x8769, 4, 1, 8);
    exif_entry(&mut t, 0x8825, 4, 1, 8);
    t.extend_from_slice(&8u32.to_be_bytes());
    t.extend_from_slice(b"Acme\0");
    t
}

/// Big-endian TIFF whose IFD0 claims 65,535 entries (two follow) with
/// counts that multiply into gigabytes.
fn exif_huge_counts() -> Vec<u8> {
    let mut t = b"MM\0*".to_vec();
    t.extend_from_slice(&8u32.to_be_bytes());
    t.extend_from_slice(&0xFFFFu16.to_be_bytes());
    exif_entry(&mut t, 0x010F, 2, 0xFFFF_FFF0, 8);
    exif_entry(&mut t, 0x0112, 3, 0x4000_0000, 8);
    exif_entry(&mut t, 0x8769, 4, 1, 0xFFFF_FF00);
    t
}

fn exif_entry(t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32) {
    t.extend_from_slice(&tag.to_be_bytes());
    t.extend_from_slice(&kind.to_be_bytes());
    t.extend_from_slice(&count.to_be_bytes());
    t.extend_from_slice(&value.to_be_bytes());
}

/// The width and height in the first SOF of a JPEG.
fn jpeg_size(jpeg: &[u8]) -> (u32, u32) {
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
        .unwrap_or_else(|| panic!("no SOF in the JPEG"));
    let h = u16::from_be_bytes([jpeg[sof + 5], jpeg[sof + 6]]);
    let w = u16::from_be_bytes([jpeg[sof + 7], jpeg[sof + 8]]);
    (u32::from(w), u32::from(h))
}

/// Where the entropy-coded data starts (just past the first SOS segment).
fn jpeg_scan_start(jpeg: &[u8]) -> usize {
    let mut i = 2;
    while i + 4 <= jpeg.len() {
        assert_eq!(jpeg[i], 0xFF, "JPEG marker expected at {i}");
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if jpeg[i + 1] == 0xDA {
            return i + 2 + len;
        }
        i += 2 + len;
    }
    panic!("no SOS in the JPEG")
}

/// A ZIP archive with one stored file, as if it began at `at` in a larger
/// file (offsets are absolute, so `unzip` reads it appended to a JPEG).
fn zip_stored(name: &str, data: &[u8], at: u32) -> Vec<u8> {
    let crc = crc32(data);
    let size = data.len() as u32;
    let mut z = Vec::new();
    z.extend_from_slice(&0x0403_4B50u32.to_le_bytes());
    for v in [20u16, 0, 0, 0, 0x21] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, size, size] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&(name.len() as u16).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z.extend_from_slice(name.as_bytes());
    z.extend_from_slice(data);
    let central_at = z.len() as u32;
    z.extend_from_slice(&0x0201_4B50u32.to_le_bytes());
    for v in [20u16, 20, 0, 0, 0, 0x21] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    for v in [crc, size, size] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    for v in [name.len() as u16, 0, 0, 0, 0] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&0u32.to_le_bytes());
    z.extend_from_slice(&at.to_le_bytes());
    z.extend_from_slice(name.as_bytes());
    let central_len = z.len() as u32 - central_at;
    z.extend_from_slice(&0x0605_4B50u32.to_le_bytes());
    for v in [0u16, 0, 1, 1] {
        z.extend_from_slice(&v.to_le_bytes());
    }
    z.extend_from_slice(&central_len.to_le_bytes());
    z.extend_from_slice(&(at + central_at).to_le_bytes());
    z.extend_from_slice(&0u16.to_le_bytes());
    z
}

const HTML: &[u8] = b"<!DOCTYPE html><html><head><title>x</title></head>\
    <body><img src=x onerror=\"alert(document.cookie)\"><script>alert(1)</script></body></html>\n";

fn jpeg_cases(set: &mut Set) {
    const J: &str = "image/jpeg";
    let photo = self::photo("jpeg/phone/Reconyx_HC500_Hyperfire.jpg");
    let (pw, ph) = jpeg_size(&photo);

    // Header claims 65,500 × 65,500 (4.3 gigapixels): refused from the header.
    let mut huge = jpeg_gray(64, 48);
    let sof = huge
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap_or_else(|| panic!("no SOF"));
    huge[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xDC, 0xFF, 0xDC]);
    set.add("jpeg_sof_65500x65500", J, huge, TOO_LARGE);

    // A real 100-megapixel JPEG in 390 KB (within the pixel cap).
    set.add(
        "jpeg_gray_10000x10000",
        J,
        jpeg_gray(10_000, 10_000),
        Expect::Completed(Meta::image(10_000, 10_000)),
    );

    // 1,000 progressive scans: libjpeg-turbo's scan limit (256) stops it.
    // libjpeg-turbo's scan limit: the file's fault, so corrupt_file.
    set.add(
        "jpeg_progressive_1000_scans",
        J,
        jpeg_many_scans(1000),
        Expect::Failed("corrupt_file"),
    );

    // EXIF that loops (IFD0 is its own Exif, GPS and next IFD) or claims
    // huge counts: no metadata, never a failure, the picture is fine.
    let small = jpeg_gray(64, 48);
    set.add(
        "jpeg_exif_ifd_self_loop",
        J,
        with_exif(&small, &exif_self_loop()),
        Expect::Completed(Meta::image(64, 48)),
    );
    set.add(
        "jpeg_exif_huge_counts",
        J,
        with_exif(&small, &exif_huge_counts()),
        Expect::Completed(Meta::image(64, 48)),
    );

    // Polyglots: the JPEG is what counts.
    let mut zip = photo.clone();
    zip.extend_from_slice(&zip_stored("payload.html", HTML, photo.len() as u32));
    set.add(
        "jpeg_zip_polyglot",
        J,
        zip,
        Expect::Completed(Meta::image(pw, ph)),
    );
    let mut html = photo[..2].to_vec();
    jpeg_segment(&mut html, 0xFE, HTML);
    html.extend_from_slice(&photo[2..]);
    html.extend_from_slice(HTML);
    set.add(
        "jpeg_html_polyglot",
        J,
        html,
        Expect::Completed(Meta::image(pw, ph)),
    );

    // Truncated: inside the headers it cannot be decoded; once the scan
    // has started libjpeg-turbo fills in the rest (a warning) and the
    // picture is kept, as browsers do.
    let scan = jpeg_scan_start(&photo);
    set.truncations(
        "jpeg",
        J,
        &photo,
        &[("in_exif", 500), ("after_sof", scan - 400)],
        CORRUPT,
    );
    set.truncations(
        "jpeg",
        J,
        &photo,
        &[
            ("scan_start", scan),
            ("half", photo.len() / 2),
            ("no_eoi", photo.len() - 2),
        ],
        Expect::Completed(Meta::image(pw, ph)),
    );
}

// ---------------------------------------------------------------------------
// PNG

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A PNG with this header and zlib stream (split into 256 KiB IDATs, as
/// encoders do).
fn png(width: u32, height: u32, depth: u8, color: u8, interlace: u8, zlib: &[u8]) -> Vec<u8> {
    let mut p = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, interlace]);
    png_chunk(&mut p, b"IHDR", &ihdr);
    for part in zlib.chunks(256 * 1024) {
        png_chunk(&mut p, b"IDAT", part);
    }
    png_chunk(&mut p, b"IEND", &[]);
    p
}

/// Bytes of filtered image data of a `width` × `height` PNG with `bits`
/// bits a pixel: a filter byte and the packed pixels per row, per Adam7
/// pass when interlaced.
fn png_raw_len(width: u64, height: u64, bits: u64, interlaced: bool) -> u64 {
    let row = |w: u64| {
        if w == 0 {
            0
        } else {
            1 + (w * bits).div_ceil(8)
        }
    };
    if !interlaced {
        return height * row(width);
    }
    // (x0, y0, dx, dy) of the seven passes.
    const PASSES: [(u64, u64, u64, u64); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    PASSES
        .iter()
        .map(|&(x0, y0, dx, dy)| {
            let w = width.saturating_sub(x0).div_ceil(dx);
            let h = height.saturating_sub(y0).div_ceil(dy);
            if w == 0 { 0 } else { h * row(w) }
        })
        .sum()
}

/// A PNG whose pixels are all zero (transparent black), never materialised.
pub fn png_zeros(width: u32, height: u32, depth: u8, color: u8, interlaced: bool) -> Vec<u8> {
    let channels = match color {
        0 | 3 => 1,
        2 => 3,
        4 => 2,
        _ => 4,
    };
    let raw = png_raw_len(
        width.into(),
        height.into(),
        u64::from(depth) * channels,
        interlaced,
    );
    png(
        width,
        height,
        depth,
        color,
        u8::from(interlaced),
        &zlib_zeros(raw),
    )
}

fn png_cases(set: &mut Set) {
    const P: &str = "image/png";
    // 400 MB of RGBA in ~390 KB: the most an 8-bit RGBA PNG can inflate to
    // near the pixel cap.
    set.add(
        "png_zeros_10000x10000_rgba8",
        P,
        png_zeros(10_000, 10_000, 8, 6, false),
        Expect::Completed(Meta::image(10_000, 10_000)),
    );
    // IHDR over the side limit; the IDAT is a few rows.
    let mut z = Zlib::new();
    let over = png(100_000, 100_000, 8, 2, 0, &z.run(0, 1 << 20).finish());
    set.add("png_ihdr_100000x100000", P, over, TOO_LARGE);
    // 16 bits a channel: 392 MB decoded.
    set.add(
        "png_zeros_7000x7000_rgba16",
        P,
        png_zeros(7_000, 7_000, 16, 6, false),
        Expect::Completed(Meta::image(7_000, 7_000)),
    );
    // Adam7: rows arrive in seven passes, so a row-by-row decoder has to
    // hold (or accumulate) the whole picture.
    // An interlaced PNG cannot be decoded a row at a time: the media crate
    // alone (no budget) completes it, the worker's default budget cannot
    // hold its 256 MB frame and says image_too_large.
    set.add(
        "png_adam7_8000x8000_rgba8",
        P,
        png_zeros(8_000, 8_000, 8, 6, true),
        Expect::CompletedOrFailed(Meta::image(8_000, 8_000), &["image_too_large"]),
    );

    // Truncations of a real-looking 300 × 200 RGB picture.
    let (w, h) = (300u32, 200u32);
    let mut noise = Noise(0x9E37_79B9_7F4A_7C15);
    let mut raw = Vec::with_capacity((h * (1 + w * 3)) as usize);
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend_from_slice(&[(x % 256) as u8, (y % 256) as u8, noise.next() & 0x3F]);
        }
    }
    let base = png(
        w,
        h,
        8,
        2,
        0,
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    );
    set.truncations(
        "png",
        P,
        &base,
        &[
            ("in_ihdr", 20),
            ("idat_start", 45),
            ("half", base.len() / 2),
            ("idat_crc", base.len() - 13),
        ],
        CORRUPT,
    );
}

// ---------------------------------------------------------------------------
// GIF

/// GIF89a header, logical screen and a four-colour global table.
fn gif_header(width: u16, height: u16) -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&width.to_le_bytes());
    g.extend_from_slice(&height.to_le_bytes());
    // Global table present, 8-bit colour resolution, 2^(1+1) entries.
    g.extend_from_slice(&[0xF1, 0, 0]);
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255, 200, 30, 30, 30, 30, 200]);
    g
}

/// LZW (GIF flavour: LSB first, minimum code size 2) of everything `read`
/// yields, streamed.
fn gif_lzw(read: impl std::io::Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = weezl::encode::Encoder::new(weezl::BitOrder::Lsb, 2);
    let r = encoder
        .into_stream(&mut out)
        .encode_all(BufReader::with_capacity(1 << 16, read));
    if let Err(e) = r.status {
        panic!("LZW: {e}");
    }
    out
}

/// One frame: a graphic control extension (for animations), the image
/// descriptor and the LZW data in sub-blocks.
fn gif_frame(g: &mut Vec<u8>, left: u16, top: u16, width: u16, height: u16, lzw: &[u8]) {
    // Delay 1/100 s, disposal "none".
    g.extend_from_slice(&[0x21, 0xF9, 4, 0x04, 1, 0, 0, 0]);
    g.push(0x2C);
    for v in [left, top, width, height] {
        g.extend_from_slice(&v.to_le_bytes());
    }
    g.push(0);
    g.push(2);
    for block in lzw.chunks(255) {
        g.push(block.len() as u8);
        g.extend_from_slice(block);
    }
    g.push(0);
}

fn gif_pattern(width: u16, height: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(usize::from(width) * usize::from(height));
    for y in 0..height {
        for x in 0..width {
            v.push(((x / 4 + y / 4) % 4) as u8);
        }
    }
    v
}

fn gif_cases(set: &mut Set) {
    const G: &str = "image/gif";
    // Issue 18's reproducer: a 10,000 × 10,000 screen, 2,000 frames of 16 × 16.
    let tile = gif_lzw(&gif_pattern(16, 16)[..]);
    let mut many = gif_header(10_000, 10_000);
    // Loop forever (NETSCAPE2.0), as animations say.
    many.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00");
    for i in 0..2000u32 {
        let left = (i * 37 % 9984) as u16;
        let top = (i * 91 % 9984) as u16;
        gif_frame(&mut many, left, top, 16, 16, &tile);
    }
    many.push(0x3B);
    // The first frame only, on its logical screen, a row at a time.
    set.add(
        "gif_10000x10000_2000_frames",
        G,
        many,
        Expect::Completed(Meta::image(10_000, 10_000)),
    );

    // A 65,535 × 65,535 logical screen (4.3 gigapixels), one small frame.
    let mut screen = gif_header(65_535, 65_535);
    gif_frame(&mut screen, 0, 0, 16, 16, &tile);
    screen.push(0x3B);
    set.add("gif_screen_65535x65535", G, screen, TOO_LARGE);

    // One 10,000 × 10,000 frame of a single colour: 100 M indices in ~70 KB.
    let mut bomb = gif_header(10_000, 10_000);
    let lzw = gif_lzw(std::io::repeat(0).take(100_000_000));
    gif_frame(&mut bomb, 0, 0, 10_000, 10_000, &lzw);
    bomb.push(0x3B);
    set.add(
        "gif_lzw_10000x10000",
        G,
        bomb,
        Expect::Completed(Meta::image(10_000, 10_000)),
    );

    let (w, h) = (300, 200);
    let mut base = gif_header(w, h);
    gif_frame(&mut base, 0, 0, w, h, &gif_lzw(&gif_pattern(w, h)[..]));
    base.push(0x3B);
    set.truncations(
        "gif",
        G,
        &base,
        &[
            ("in_screen", 10),
            ("in_descriptor", 40),
            ("half", base.len() / 2),
            ("before_end", base.len() - 20),
        ],
        CORRUPT,
    );
}

// ---------------------------------------------------------------------------
// WebP

/// Bits written least significant first, as VP8L reads them.
struct Bits {
    out: Vec<u8>,
    acc: u64,
    n: u32,
}

impl Bits {
    fn new() -> Self {
        Self {
            out: Vec::new(),
            acc: 0,
            n: 0,
        }
    }

    fn put(&mut self, value: u32, bits: u32) {
        self.acc |= u64::from(value) << self.n;
        self.n += bits;
        while self.n >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.n -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// The VP8L header and an image stream without transforms, colour cache or
/// meta prefix codes.
fn vp8l_start(width: u32, height: u32) -> Bits {
    let mut b = Bits::new();
    b.put(0x2F, 8);
    b.put(width - 1, 14);
    b.put(height - 1, 14);
    b.put(0, 1); // alpha_is_used
    b.put(0, 3); // version
    b.put(0, 1); // no transform
    b.put(0, 1); // no colour cache
    b.put(0, 1); // no meta prefix codes
    b
}

/// A simple prefix code with one symbol: it costs zero bits to read.
fn vp8l_one_symbol(b: &mut Bits, symbol: u8) {
    b.put(1, 1); // simple code
    b.put(0, 1); // one symbol
    if symbol < 2 {
        b.put(0, 1);
        b.put(u32::from(symbol), 1);
    } else {
        b.put(1, 1);
        b.put(u32::from(symbol), 8);
    }
}

/// A lossless WebP bitstream of one colour: every prefix code has a single
/// symbol, so the pixels take no bits at all.
pub fn vp8l_constant(width: u32, height: u32, [r, g, bl, a]: [u8; 4]) -> Vec<u8> {
    let mut b = vp8l_start(width, height);
    for symbol in [g, r, bl, a, 0] {
        vp8l_one_symbol(&mut b, symbol);
    }
    b.finish()
}

/// A lossless WebP bitstream whose green takes one bit a pixel (two
/// symbols), from a noise pattern: a picture that a cut visibly damages.
fn vp8l_noise(width: u32, height: u32) -> Vec<u8> {
    let mut b = vp8l_start(width, height);
    // Green: symbols 40 and 220, one bit each.
    b.put(1, 1);
    b.put(1, 1);
    b.put(1, 1);
    b.put(40, 8);
    b.put(220, 8);
    for symbol in [90, 160, 255, 0] {
        vp8l_one_symbol(&mut b, symbol);
    }
    let mut noise = Noise(0x2545_F491_4F6C_DD1D);
    for _ in 0..width * height {
        b.put(u32::from(noise.next() & 1), 1);
    }
    b.finish()
}

fn riff_chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], payload: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        out.push(0);
    }
}

fn riff_webp(chunks: &[u8]) -> Vec<u8> {
    let mut w = b"RIFF".to_vec();
    w.extend_from_slice(&(4 + chunks.len() as u32).to_le_bytes());
    w.extend_from_slice(b"WEBP");
    w.extend_from_slice(chunks);
    w
}

fn webp_lossless(vp8l: &[u8]) -> Vec<u8> {
    let mut chunks = Vec::new();
    riff_chunk(&mut chunks, b"VP8L", vp8l);
    riff_webp(&chunks)
}

fn le24(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes()[..3]);
}

/// A VP8X chunk payload: `flags`, then the canvas size.
fn vp8x(flags: u8, width: u32, height: u32) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0];
    le24(&mut p, width - 1);
    le24(&mut p, height - 1);
    p
}

fn webp_cases(set: &mut Set) {
    const W: &str = "image/webp";
    // VP8L's largest size, 268 megapixels, over the cap.
    set.add(
        "webp_vp8l_16383x16383",
        W,
        webp_lossless(&vp8l_constant(16_383, 16_383, [200, 100, 50, 255])),
        TOO_LARGE,
    );
    // 100 megapixels in a few bytes of bitstream.
    // image-webp decodes whole frames, so a worker whose budget cannot hold
    // one says image_too_large (by the rule). The media crate
    // alone, which has no budget, completes it.
    set.add(
        "webp_vp8l_10000x10000",
        W,
        webp_lossless(&vp8l_constant(10_000, 10_000, [200, 100, 50, 255])),
        Expect::CompletedOrFailed(Meta::image(10_000, 10_000), &["image_too_large"]),
    );

    // An extended header whose canvas is 60,000 × 60,000 (3.6 gigapixels)
    // around a 1 × 1 image.
    let mut chunks = Vec::new();
    riff_chunk(&mut chunks, b"VP8X", &vp8x(0, 60_000, 60_000));
    riff_chunk(&mut chunks, b"VP8L", &vp8l_constant(1, 1, [0, 0, 0, 255]));
    set.add(
        "webp_vp8x_canvas_60000x60000",
        W,
        riff_webp(&chunks),
        TOO_LARGE,
    );
    // The largest canvas VP8X can state (2^24 a side); its pixel count
    // overflows 32 bits, which image-webp refuses as a decoding error.
    let mut chunks = Vec::new();
    riff_chunk(&mut chunks, b"VP8X", &vp8x(0, 1 << 24, 1 << 24));
    riff_chunk(&mut chunks, b"VP8L", &vp8l_constant(1, 1, [0, 0, 0, 255]));
    set.add(
        "webp_vp8x_canvas_16777216",
        W,
        riff_webp(&chunks),
        Expect::FailedAny(&["image_too_large", "corrupt_file"]),
    );

    // An animation: a 10,000 × 10,000 canvas and 2,000 frames of 16 × 16
    // (the WebP twin of the GIF above).
    let mut chunks = Vec::new();
    riff_chunk(&mut chunks, b"VP8X", &vp8x(0x02, 10_000, 10_000));
    riff_chunk(&mut chunks, b"ANIM", &[255, 255, 255, 255, 0, 0]);
    let mut frame_data = Vec::new();
    riff_chunk(
        &mut frame_data,
        b"VP8L",
        &vp8l_constant(16, 16, [30, 30, 200, 255]),
    );
    for i in 0..2000u32 {
        let mut anmf = Vec::new();
        // Offsets are stored halved.
        le24(&mut anmf, i * 37 % 4992);
        le24(&mut anmf, i * 91 % 4992);
        le24(&mut anmf, 15);
        le24(&mut anmf, 15);
        le24(&mut anmf, 10);
        anmf.push(0);
        anmf.extend_from_slice(&frame_data);
        riff_chunk(&mut chunks, b"ANMF", &anmf);
    }
    // The first frame on its canvas; image_too_large as above when the
    // canvas cannot be held within the budget.
    set.add(
        "webp_anim_10000x10000_2000_frames",
        W,
        riff_webp(&chunks),
        Expect::CompletedOrFailed(Meta::image(10_000, 10_000), &["image_too_large"]),
    );

    let base = webp_lossless(&vp8l_noise(300, 200));
    set.truncations(
        "webp",
        W,
        &base,
        &[
            ("in_vp8l_header", 24),
            ("in_prefix_codes", 30),
            ("half", base.len() / 2),
            ("last_bytes", base.len() - 40),
        ],
        CORRUPT,
    );
}

// ---------------------------------------------------------------------------
// TIFF

/// A TIFF field value: SHORTs or LONGs.
#[derive(Clone)]
enum Val {
    Short(Vec<u16>),
    Long(Vec<u32>),
}

impl Val {
    fn len(&self) -> usize {
        match self {
            Val::Short(v) => v.len() * 2,
            Val::Long(v) => v.len() * 4,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::Short(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            Val::Long(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
}

/// A little-endian IFD laid out as if it started at offset `at`: the
/// entries, the next-IFD offset, then the values that do not fit in four
/// bytes. Its length does not depend on `at`, `next` or the values.
fn tiff_ifd(entries: &[(u16, Val)], at: u32, next: u32) -> Vec<u8> {
    let mut ifd = Vec::new();
    let mut extra = Vec::new();
    let extra_at = at as usize + 2 + entries.len() * 12 + 4;
    ifd.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for (tag, val) in entries {
        ifd.extend_from_slice(&tag.to_le_bytes());
        let (kind, count) = match val {
            Val::Short(v) => (3u16, v.len()),
            Val::Long(v) => (4u16, v.len()),
        };
        ifd.extend_from_slice(&kind.to_le_bytes());
        ifd.extend_from_slice(&(count as u32).to_le_bytes());
        if val.len() <= 4 {
            let mut inline = Vec::new();
            val.write(&mut inline);
            inline.resize(4, 0);
            ifd.extend_from_slice(&inline);
        } else {
            ifd.extend_from_slice(&((extra_at + extra.len()) as u32).to_le_bytes());
            val.write(&mut extra);
            if extra.len() % 2 == 1 {
                extra.push(0);
            }
        }
    }
    ifd.extend_from_slice(&next.to_le_bytes());
    ifd.extend_from_slice(&extra);
    ifd
}

/// The fields of an 8-bit RGB image in strips.
fn tiff_rgb_fields(
    width: u32,
    height: u32,
    compression: u16,
    rows_per_strip: u32,
    offsets: Vec<u32>,
    counts: Vec<u32>,
) -> Vec<(u16, Val)> {
    vec![
        (256, Val::Long(vec![width])),
        (257, Val::Long(vec![height])),
        (258, Val::Short(vec![8, 8, 8])),
        (259, Val::Short(vec![compression])),
        (262, Val::Short(vec![2])),
        (273, Val::Long(offsets)),
        (277, Val::Short(vec![3])),
        (278, Val::Long(vec![rows_per_strip])),
        (279, Val::Long(counts)),
        (284, Val::Short(vec![1])),
    ]
}

/// A TIFF: header, IFD0 at offset 8, then the strips.
fn tiff(
    width: u32,
    height: u32,
    compression: u16,
    rows_per_strip: u32,
    strips: &[Vec<u8>],
) -> Vec<u8> {
    let n = strips.len();
    let ifd_len = tiff_ifd(
        &tiff_rgb_fields(
            width,
            height,
            compression,
            rows_per_strip,
            vec![0; n],
            vec![0; n],
        ),
        8,
        0,
    )
    .len();
    let mut offsets = Vec::with_capacity(n);
    let mut at = 8 + ifd_len as u32;
    for s in strips {
        offsets.push(at);
        at += s.len() as u32;
    }
    let counts = strips.iter().map(|s| s.len() as u32).collect();
    let fields = tiff_rgb_fields(width, height, compression, rows_per_strip, offsets, counts);
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&tiff_ifd(&fields, 8, 0));
    for s in strips {
        t.extend_from_slice(s);
    }
    t
}

/// An uncompressed 64 × 48 RGB picture in one strip.
fn tiff_small_pixels() -> Vec<u8> {
    let mut noise = Noise(0xD1B5_4A32_D192_ED03);
    (0..64 * 48 * 3).map(|_| noise.next()).collect()
}

/// `count` IFDs of the same 64 × 48 picture (one shared strip), each
/// pointing to the next; with `loop_back`, the last points to the first.
fn tiff_chain(count: u32, loop_back: bool) -> Vec<u8> {
    let pixels = tiff_small_pixels();
    let fields = tiff_rgb_fields(64, 48, 1, 48, vec![8], vec![pixels.len() as u32]);
    let first = 8 + pixels.len() as u32;
    let ifd_len = tiff_ifd(&fields, first, 0).len() as u32;
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&first.to_le_bytes());
    t.extend_from_slice(&pixels);
    for i in 0..count {
        let at = first + i * ifd_len;
        let next = match (i + 1 == count, loop_back) {
            (false, _) => at + ifd_len,
            (true, true) => first,
            (true, false) => 0,
        };
        t.extend_from_slice(&tiff_ifd(&fields, at, next));
    }
    t
}

fn tiff_cases(set: &mut Set) {
    const T: &str = "image/tiff";
    // 300 MB of RGB in ~300 KB: 157 deflate strips of 64 rows of zeros.
    let (w, h, rows) = (10_000u32, 10_000u32, 64u32);
    let full = zlib_zeros(u64::from(rows * w * 3));
    let mut strips = vec![full; (h / rows) as usize];
    strips.push(zlib_zeros(u64::from(h % rows * w * 3)));
    set.add(
        "tiff_deflate_zeros_10000x10000",
        T,
        tiff(w, h, 8, rows, &strips),
        Expect::Completed(Meta::image(10_000, 10_000)),
    );

    // Header over the side limit, one tiny strip.
    set.add(
        "tiff_ifd_100000x100000",
        T,
        tiff(100_000, 100_000, 8, 100_000, &[zlib_zeros(300_000)]),
        TOO_LARGE,
    );

    // IFD chains: two IFDs that point to each other, and 5,000 IFDs. The
    // first image is what counts.
    set.add(
        "tiff_ifd_loop",
        T,
        tiff_chain(2, true),
        Expect::Completed(Meta::image(64, 48)),
    );
    set.add(
        "tiff_5000_ifds",
        T,
        tiff_chain(5000, false),
        Expect::Completed(Meta::image(64, 48)),
    );

    // Strip offset past the end; strip byte count of 4 GB.
    let pixels = tiff_small_pixels();
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    let fields = tiff_rgb_fields(64, 48, 1, 48, vec![0xFFFF_0000], vec![pixels.len() as u32]);
    t.extend_from_slice(&tiff_ifd(&fields, 8, 0));
    t.extend_from_slice(&pixels);
    set.add("tiff_strip_offset_past_end", T, t, CORRUPT);
    let mut t = b"II*\0".to_vec();
    let ifd_at = 8 + pixels.len() as u32;
    t.extend_from_slice(&ifd_at.to_le_bytes());
    t.extend_from_slice(&pixels);
    let fields = tiff_rgb_fields(64, 48, 1, 48, vec![8], vec![0xFFFF_FFF0]);
    t.extend_from_slice(&tiff_ifd(&fields, ifd_at, 0));
    // A byte count the file cannot hold: corrupt_file (checked before the
    // tiff crate sizes a buffer by it).
    set.add(
        "tiff_strip_bytecount_4g",
        T,
        t,
        Expect::Failed("corrupt_file"),
    );

    // An IFD that claims 65,535 entries; three follow, then the file ends.
    let mut t = b"II*\0".to_vec();
    t.extend_from_slice(&8u32.to_le_bytes());
    let ifd = tiff_ifd(
        &tiff_rgb_fields(64, 48, 1, 48, vec![8], vec![9216])[..3],
        8,
        0,
    );
    t.extend_from_slice(&0xFFFFu16.to_le_bytes());
    t.extend_from_slice(&ifd[2..2 + 3 * 12]);
    set.add("tiff_ifd_65535_entries", T, t, CORRUPT);

    // Truncations of an uncompressed 200 × 150 picture (IFD first).
    let (w, h) = (200u32, 150u32);
    let mut noise = Noise(0x0123_4567_89AB_CDEF);
    let strips: Vec<Vec<u8>> = (0..h / 10)
        .map(|_| (0..w * 10 * 3).map(|_| noise.next()).collect())
        .collect();
    let base = tiff(w, h, 1, 10, &strips);
    set.truncations(
        "tiff",
        T,
        &base,
        &[
            ("in_header", 6),
            ("in_ifd", 40),
            ("half", base.len() / 2),
            ("last_byte", base.len() - 1),
        ],
        CORRUPT,
    );
}

// ---------------------------------------------------------------------------
// HEIC

/// Offsets of the width field of every `ispe` property (size 20: the box
/// header, version and flags, width, height).
fn ispe_fields(heic: &[u8]) -> Vec<usize> {
    heic.windows(8)
        .enumerate()
        .filter(|(_, w)| w[..4] == 20u32.to_be_bytes() && &w[4..] == b"ispe")
        .map(|(i, _)| i + 12)
        .collect()
}

/// `heic` with the largest `ispe` (the primary image's, a grid's when the
/// picture is tiled) saying `width` × `height`.
fn patch_ispe(heic: &[u8], width: u32, height: u32) -> Vec<u8> {
    let size = |at: usize| {
        let w = u32::from_be_bytes([heic[at], heic[at + 1], heic[at + 2], heic[at + 3]]);
        let h = u32::from_be_bytes([heic[at + 4], heic[at + 5], heic[at + 6], heic[at + 7]]);
        u64::from(w) * u64::from(h)
    };
    let at = ispe_fields(heic)
        .into_iter()
        .max_by_key(|&at| size(at))
        .unwrap_or_else(|| panic!("no ispe property in the HEIC"));
    let mut out = heic.to_vec();
    out[at..at + 4].copy_from_slice(&width.to_be_bytes());
    out[at + 4..at + 8].copy_from_slice(&height.to_be_bytes());
    out
}

/// (type, start, header length, end) of the ISO-BMFF boxes in
/// `data[from..to]`.
fn bmff_boxes(data: &[u8], from: usize, to: usize) -> Vec<([u8; 4], usize, usize, usize)> {
    let mut boxes = Vec::new();
    let mut at = from;
    while at + 8 <= to {
        let size = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let kind = [data[at + 4], data[at + 5], data[at + 6], data[at + 7]];
        let (len, header) = match size {
            0 => (to - at, 8),
            1 => {
                let mut large = [0u8; 8];
                large.copy_from_slice(&data[at + 8..at + 16]);
                (u64::from_be_bytes(large) as usize, 16)
            }
            n => (n as usize, 8),
        };
        assert!(
            len >= header && at + len <= to,
            "box {kind:?} at {at} overruns"
        );
        boxes.push((kind, at, header, at + len));
        at += len;
    }
    boxes
}

fn bmff_box(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

/// A tiled HEIC turned into a 10,240 × 10,240 grid of 20 × 20 references
/// to its first 512 × 512 tile: 105 megapixels decoded from one coded tile
/// (the HEIC way to inflate a small file up to the pixel cap). The grid's
/// `dimg` references, its descriptor (in `idat`) and its `ispe` are
/// rewritten; so that no offset into `mdat` moves, the original `meta` box
/// becomes a `free` box of the same size and the new `meta` follows `mdat`.
fn heic_grid_bomb(heic: &[u8]) -> Vec<u8> {
    const SIDE: usize = 20;
    const OUT: u16 = 20 * 512;
    let top = bmff_boxes(heic, 0, heic.len());
    let &(_, meta_at, meta_header, meta_end) = top
        .iter()
        .find(|b| &b.0 == b"meta")
        .unwrap_or_else(|| panic!("no meta box"));
    let children_at = meta_at + meta_header + 4;
    let children = bmff_boxes(heic, children_at, meta_end);
    let payload = |kind: &[u8; 4]| {
        let &(_, at, header, end) = children
            .iter()
            .find(|b| &b.0 == kind)
            .unwrap_or_else(|| panic!("no {kind:?} box in meta"));
        &heic[at + header..end]
    };
    let pitm = payload(b"pitm");
    assert_eq!(pitm[0], 0, "pitm version 0 (16-bit item ids)");
    let primary = [pitm[4], pitm[5]];

    let mut meta = heic[meta_at + meta_header..children_at].to_vec();
    for &(kind, at, header, end) in &children {
        let body = &heic[at + header..end];
        match &kind {
            b"iref" => {
                assert_eq!(body[0], 0, "iref version 0 (16-bit item ids)");
                let mut iref = body[..4].to_vec();
                for (kind, at, _, end) in bmff_boxes(body, 4, body.len()) {
                    let r = &body[at + 8..end];
                    if &kind == b"dimg" && r[..2] == primary {
                        let mut dimg = r[..2].to_vec();
                        dimg.extend_from_slice(&((SIDE * SIDE) as u16).to_be_bytes());
                        for _ in 0..SIDE * SIDE {
                            dimg.extend_from_slice(&r[4..6]);
                        }
                        iref.extend_from_slice(&bmff_box(b"dimg", &dimg));
                    } else {
                        iref.extend_from_slice(&body[at..end]);
                    }
                }
                meta.extend_from_slice(&bmff_box(b"iref", &iref));
            }
            b"idat" => {
                // The grid descriptor: version, flags (bit 0 clear: 16-bit
                // sizes), rows - 1, columns - 1, output width and height.
                assert!(body.len() >= 8 && body[1] & 1 == 0, "a 16-bit grid in idat");
                let mut grid = body.to_vec();
                grid[2] = (SIDE - 1) as u8;
                grid[3] = (SIDE - 1) as u8;
                grid[4..6].copy_from_slice(&OUT.to_be_bytes());
                grid[6..8].copy_from_slice(&OUT.to_be_bytes());
                meta.extend_from_slice(&bmff_box(b"idat", &grid));
            }
            _ => meta.extend_from_slice(&heic[at..end]),
        }
    }
    let meta = patch_ispe(&bmff_box(b"meta", &meta), u32::from(OUT), u32::from(OUT));

    let mut out = heic[..meta_at].to_vec();
    out.extend_from_slice(&bmff_box(b"free", &vec![0; meta_end - meta_at - 8]));
    out.extend_from_slice(&heic[meta_end..]);
    out.extend_from_slice(&meta);
    // Not the last box: a reader may stop at the end of the file before
    // keeping the box it just read.
    out.extend_from_slice(&bmff_box(b"free", &[]));
    out
}

fn heic_cases(set: &mut Set) {
    const H: &str = "image/heic";
    // A tiled iPhone picture (2566 × 3313 in 512 × 512 tiles) and a single
    // 640 × 426 image.
    let tiled = photo("heic/IMG_5195.HEIC");
    let single = photo("heic/samplefilehub.heif");

    set.add(
        "heic_ispe_20000x20000",
        H,
        patch_ispe(&tiled, 20_000, 20_000),
        TOO_LARGE,
    );
    // libheif 1.15 decodes a grid whole (no tile API): image_too_large when
    // the budget cannot hold it, completed by the media crate alone.
    set.add(
        "heic_grid_10240x10240_one_tile",
        H,
        heic_grid_bomb(&tiled),
        Expect::CompletedOrFailed(Meta::image(10_240, 10_240), &["image_too_large"]),
    );
    // libheif refuses sizes past its own security limit while reading:
    // corrupt_file then is as fair as image_too_large.
    set.add(
        "heic_ispe_65535x65535",
        H,
        patch_ispe(&single, 65_535, 65_535),
        Expect::FailedAny(&["image_too_large", "corrupt_file"]),
    );
    // Within the cap, but the coded picture is 640 × 426: completed, its
    // size is the decoded one, not the claim.
    set.add(
        "heic_ispe_10000x10000_single",
        H,
        patch_ispe(&single, 10_000, 10_000),
        Expect::CompletedOrFailed(Meta::image(640, 426), &["corrupt_file", "image_too_large"]),
    );

    set.truncations(
        "heic",
        H,
        &tiled,
        &[
            ("in_ftyp", 16),
            ("in_meta", 1000),
            ("half", tiled.len() / 2),
            ("last_kb", tiled.len() - 1000),
        ],
        CORRUPT,
    );
}

// ---------------------------------------------------------------------------
// PDF

/// A PDF with a classic cross-reference table: `objects` (number, body) in
/// that order, `/Root 1 0 R`.
fn pdf(objects: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut p = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let size = objects.iter().map(|(n, _)| *n).max().unwrap_or(0) + 1;
    let mut offsets = vec![None; size as usize];
    for (n, body) in objects {
        offsets[*n as usize] = Some(p.len());
        p.extend_from_slice(format!("{n} 0 obj\n").as_bytes());
        p.extend_from_slice(body);
        p.extend_from_slice(b"\nendobj\n");
    }
    let xref = p.len();
    p.extend_from_slice(format!("xref\n0 {size}\n").as_bytes());
    for o in offsets {
        let entry = match o {
            Some(at) => format!("{at:010} 00000 n \n"),
            None => "0000000000 65535 f \n".to_owned(),
        };
        p.extend_from_slice(entry.as_bytes());
    }
    p.extend_from_slice(
        format!("trailer\n<< /Size {size} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n").as_bytes(),
    );
    p
}

fn obj(s: impl Into<String>) -> Vec<u8> {
    s.into().into_bytes()
}

fn catalog() -> (u32, Vec<u8>) {
    (1, obj("<< /Type /Catalog /Pages 2 0 R >>"))
}

fn page(n: u32, parent: u32) -> (u32, Vec<u8>) {
    (
        n,
        obj(format!(
            "<< /Type /Page /Parent {parent} 0 R /MediaBox [0 0 612 792] >>"
        )),
    )
}

fn stream_obj(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut o = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    o.extend_from_slice(data);
    o.extend_from_slice(b"\nendstream");
    o
}

/// The gigabyte of spaces the object-stream bombs inflate to.
const PDF_BOMB: u64 = 1 << 30;

/// A PDF 1.5 whose page tree (objects 2 and 3) is only inside a FlateDecode
/// object stream (object 4) that goes on to inflate to a gigabyte of
/// spaces, found through a cross-reference stream (object 5).
fn pdf_tree_in_bomb() -> Vec<u8> {
    let objects = b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\n";
    let second = objects
        .iter()
        .position(|&c| c == b'\n')
        .map_or(0, |i| i + 1);
    let header = format!("2 0 3 {second} ");
    let z = Zlib::new()
        .bytes(header.as_bytes())
        .bytes(objects)
        .run(b' ', PDF_BOMB)
        .finish();
    let mut p = b"%PDF-1.5\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut at = [0usize; 6];
    at[1] = p.len();
    p.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
    at[4] = p.len();
    p.extend_from_slice(b"4 0 obj\n");
    p.extend_from_slice(&stream_obj(
        &format!(
            "/Type /ObjStm /N 2 /First {} /Filter /FlateDecode",
            header.len()
        ),
        &z,
    ));
    p.extend_from_slice(b"\nendobj\n");
    at[5] = p.len();
    // Entries of 1 + 4 + 2 bytes: type, offset or stream number, generation
    // or index.
    let mut xref = Vec::new();
    let mut entry = |kind: u8, field: usize, index: u16| {
        xref.push(kind);
        xref.extend_from_slice(&(field as u32).to_be_bytes());
        xref.extend_from_slice(&index.to_be_bytes());
    };
    entry(0, 0, 0xFFFF);
    entry(1, at[1], 0);
    entry(2, 4, 0);
    entry(2, 4, 1);
    entry(1, at[4], 0);
    entry(1, at[5], 0);
    p.extend_from_slice(b"5 0 obj\n");
    p.extend_from_slice(&stream_obj(
        "/Type /XRef /Size 6 /W [1 4 2] /Root 1 0 R",
        &xref,
    ));
    p.extend_from_slice(format!("\nendobj\nstartxref\n{}\n%%EOF\n", at[5]).as_bytes());
    p
}

fn pdf_cases(set: &mut Set) {
    const D: &str = "application/pdf";
    let pages = |n| Expect::Completed(Meta::pdf(Pages::Exactly(n)));

    // /Count is a lie; one real page.
    set.add(
        "pdf_count_4294967295",
        D,
        pdf(&[
            catalog(),
            (2, obj("<< /Type /Pages /Kids [3 0 R] /Count 4294967295 >>")),
            page(3, 2),
        ]),
        pages(1),
    );

    // A page tree that loops back to its root: two distinct pages.
    set.add(
        "pdf_page_tree_loop",
        D,
        pdf(&[
            catalog(),
            (2, obj("<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 3 >>")),
            page(3, 2),
            (
                4,
                obj("<< /Type /Pages /Parent 2 0 R /Kids [5 0 R 2 0 R] /Count 2 >>"),
            ),
            page(5, 4),
        ]),
        pages(2),
    );

    // One page listed 100,000 times: one page.
    let kids = "3 0 R ".repeat(100_000);
    set.add(
        "pdf_kids_same_page_100000",
        D,
        pdf(&[
            catalog(),
            (
                2,
                obj(format!("<< /Type /Pages /Kids [{kids}] /Count 100000 >>")),
            ),
            page(3, 2),
        ]),
        pages(1),
    );

    // A page tree 100,000 levels deep with one page at the bottom.
    // The walk's depth limit (256) stops it before the page: no count.
    const DEPTH: u32 = 100_000;
    let mut deep = vec![
        catalog(),
        (2, obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")),
    ];
    for n in 3..DEPTH + 2 {
        deep.push((
            n,
            obj(format!(
                "<< /Type /Pages /Parent {} 0 R /Kids [{} 0 R] /Count 1 >>",
                n - 1,
                n + 1
            )),
        ));
    }
    deep.push(page(DEPTH + 2, DEPTH + 1));
    set.add(
        "pdf_page_tree_100000_deep",
        D,
        pdf(&deep),
        Expect::Completed(Meta::pdf(Pages::Absent)),
    );

    // Dictionaries nested 100,000 deep inside the root page-tree node: a
    // recursive parser's stack overflow (an abort, not a panic).
    let nested = format!(
        "<< /Type /Pages /Kids [3 0 R] /Count 1 /Junk {}1{} >>",
        "<< /A ".repeat(100_000),
        " >>".repeat(100_000)
    );
    // The walker skips what it does not need: one page.
    set.add(
        "pdf_nested_dicts_100000",
        D,
        pdf(&[catalog(), (2, obj(nested)), page(3, 2)]),
        Expect::CompletedOrFailed(
            Meta::pdf(Pages::Exactly(1)),
            &["corrupt_file", "limit_exceeded"],
        ),
    );

    // A FlateDecode object stream inflating to 1 GiB next to a plain page tree.
    let mut z = Zlib::new();
    let bomb = z
        .bytes(b"9 0 << /Type /Junk >>")
        .run(b' ', PDF_BOMB)
        .finish();
    set.add(
        "pdf_objstm_bomb_tree_plain",
        D,
        pdf(&[
            catalog(),
            (2, obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>")),
            page(3, 2),
            (
                4,
                stream_obj("/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode", &bomb),
            ),
        ]),
        pages(1),
    );
    // The page tree only inside such a stream, before the gigabyte.
    // The walker reads the objects it needs from the start of the stream,
    // within its inflate cap: one page.
    set.add(
        "pdf_objstm_bomb_tree_inside",
        D,
        pdf_tree_in_bomb(),
        Expect::CompletedOrFailed(Meta::pdf(Pages::Any), &["corrupt_file", "limit_exceeded"]),
    );

    // No page tree at all.
    // A tree that reaches no page: no count (every PDF has a page).
    set.add(
        "pdf_no_page_tree",
        D,
        pdf(&[(1, obj("<< /Type /Catalog >>"))]),
        Expect::Completed(Meta::pdf(Pages::Absent)),
    );

    // Truncations of a plain three-page PDF.
    // Any prefix with %PDF- completes, with the pages its objects reach (the
    // object index is found by scanning, no cross-reference table needed).
    let base = pdf(&[
        catalog(),
        (
            2,
            obj("<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>"),
        ),
        page(3, 2),
        page(4, 2),
        page(5, 2),
    ]);
    set.truncations(
        "pdf",
        D,
        &base,
        &[
            ("in_first_object", 20),
            ("half", base.len() / 2),
            ("no_xref", base.len() - 150),
        ],
        Expect::CompletedOrFailed(Meta::pdf(Pages::Any), &["corrupt_file"]),
    );
}

// ---------------------------------------------------------------------------
// Markup, archives, empty

fn other_cases(set: &mut Set) {
    set.add("html_as_jpeg", "image/jpeg", HTML.to_vec(), UNSUPPORTED);
    let svg = b"<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10000\" height=\"10000\">\
        <script>alert(1)</script><rect width=\"100%\" height=\"100%\"/></svg>\n";
    set.add("svg_as_png", "image/png", svg.to_vec(), UNSUPPORTED);
    let laughs = {
        let mut s = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE svg [<!ENTITY a \"lol\">");
        for i in 1..10 {
            let prev = (b'a' + i - 1) as char;
            let this = (b'a' + i) as char;
            s += &format!("<!ENTITY {this} \"{}\">", format!("&{prev};").repeat(10));
        }
        s += "]>\n<svg xmlns=\"http://www.w3.org/2000/svg\"><text>&j;</text></svg>\n";
        s.into_bytes()
    };
    set.add("svg_entity_bomb_as_jpeg", "image/jpeg", laughs, UNSUPPORTED);
    // A PDF header within the first KB makes it a PDF (as readers take it).
    // A PDF header within the first KiB is a PDF (as readers accept it);
    // recorded so a change in sniffing is noticed.
    let mut html_pdf = b"<html><body><!-- ".to_vec();
    html_pdf.extend_from_slice(b"%PDF-1.4 -->");
    html_pdf.extend_from_slice(HTML);
    set.add(
        "html_pdf_polyglot_as_jpeg",
        "image/jpeg",
        html_pdf,
        Expect::Completed(Meta::pdf(Pages::Absent)),
    );
    set.add(
        "zip_as_jpeg",
        "image/jpeg",
        zip_stored("photo.jpg", HTML, 0),
        UNSUPPORTED,
    );
    // Refused at initiation by the API (size 0); the media crate calls it
    // unsupported.
    set.add("zero_bytes", "image/jpeg", Vec::new(), UNSUPPORTED);
    set.add("one_byte", "image/jpeg", vec![0xFF], UNSUPPORTED);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8], format: image::ImageFormat) -> image::DynamicImage {
        image::load_from_memory_with_format(bytes, format).unwrap()
    }

    #[test]
    fn zlib_pieces_inflate_to_what_they_say() {
        let z = Zlib::new()
            .bytes(b"head ")
            .run(7, 3 * RUN_PIECE + 12_345)
            .bytes(b" tail")
            .finish();
        let out = miniz_oxide::inflate::decompress_to_vec_zlib(&z).unwrap();
        assert_eq!(out.len() as u64, 10 + 3 * RUN_PIECE + 12_345);
        assert!(out.starts_with(b"head \x07") && out.ends_with(b"\x07 tail"));
        assert_eq!(zlib_zeros(0).len(), 8);
        assert!(
            miniz_oxide::inflate::decompress_to_vec_zlib(&zlib_zeros(0))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn small_versions_of_the_bombs_decode() {
        for (depth, color, interlaced) in
            [(8, 6, false), (16, 6, false), (8, 6, true), (8, 2, true)]
        {
            let img = decode(
                &png_zeros(37, 21, depth, color, interlaced),
                image::ImageFormat::Png,
            );
            assert_eq!((img.width(), img.height()), (37, 21));
        }
        let img = decode(
            &webp_lossless(&vp8l_constant(50, 30, [200, 100, 50, 255])),
            image::ImageFormat::WebP,
        );
        assert_eq!((img.width(), img.height()), (50, 30));
        assert_eq!(img.to_rgba8().get_pixel(49, 29).0, [200, 100, 50, 255]);
        let img = decode(
            &webp_lossless(&vp8l_noise(30, 20)),
            image::ImageFormat::WebP,
        );
        let greens: std::collections::BTreeSet<u8> =
            img.to_rgba8().pixels().map(|p| p.0[1]).collect();
        assert_eq!(greens.into_iter().collect::<Vec<_>>(), [40, 220]);

        let mut gif = gif_header(40, 30);
        gif_frame(
            &mut gif,
            0,
            0,
            40,
            30,
            &gif_lzw(std::io::repeat(1).take(1200)),
        );
        gif.push(0x3B);
        let img = decode(&gif, image::ImageFormat::Gif).to_rgba8();
        assert_eq!(img.get_pixel(39, 29).0, [255, 255, 255, 255]);

        let strips = vec![zlib_zeros(40 * 16 * 3), zlib_zeros(40 * 4 * 3)];
        let img = decode(&tiff(40, 20, 8, 16, &strips), image::ImageFormat::Tiff);
        assert_eq!((img.width(), img.height()), (40, 20));
        let img = decode(&tiff_chain(3, true), image::ImageFormat::Tiff);
        assert_eq!((img.width(), img.height()), (64, 48));
    }

    #[test]
    fn the_set_is_deterministic_unique_and_in_proportion() {
        let a = set();
        let b = set();
        assert_eq!(a.len(), b.len());
        let mut seen = std::collections::HashSet::new();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.name, &x.bytes), (&y.name, &y.bytes));
            // Uploads are deduplicated by content: each must differ.
            assert!(
                seen.insert(x.bytes.clone()),
                "{} repeats another file",
                x.name
            );
            assert!(
                x.bytes.len() < 16 << 20,
                "{}: {} bytes",
                x.name,
                x.bytes.len()
            );
        }
        let total: usize = a.iter().map(|h| h.bytes.len()).sum();
        assert!(total < 64 << 20, "{total} bytes in all");
    }

    #[test]
    fn expectations_accept_and_refuse() {
        let done = Outcome::Completed {
            width: Some(100),
            height: Some(50),
            page_count: None,
            derivatives: vec![(100, 50)],
        };
        assert!(Expect::Completed(Meta::image(100, 50)).check(&done).is_ok());
        assert!(
            Expect::Completed(Meta::image(50, 100))
                .check(&done)
                .is_err()
        );
        assert!(Expect::Failed("corrupt_file").check(&done).is_err());
        let failed = Outcome::Failed {
            code: "internal_error".into(),
        };
        assert!(
            Expect::CompletedOrFailed(Meta::ANY, &["corrupt_file"])
                .check(&failed)
                .is_err()
        );
        let pdf = Outcome::Completed {
            width: None,
            height: None,
            page_count: Some(2),
            derivatives: vec![],
        };
        assert!(
            Expect::Completed(Meta::pdf(Pages::Exactly(2)))
                .check(&pdf)
                .is_ok()
        );
        assert!(
            Expect::Completed(Meta::pdf(Pages::Absent))
                .check(&pdf)
                .is_err()
        );
    }
}
