//! The media processing core of the worker: what an upload is, what it says
//! about itself, and its JPEG derivatives (thumbnails). Pure CPU: no I/O, no
//! async, no threads; the caller hands in the bytes and decides where the
//! results go and how many images run at once.
//!
//! # Design
//!
//! * **The content decides the type.** [`sniff`] reads magic bytes only; a
//!   declared MIME type or a file name is never trusted. Anything outside the
//!   allowlist (JPEG, PNG, WebP, HEIC/HEIF, GIF, TIFF, PDF) is
//!   `unsupported_type`.
//! * **Limits before allocation.** Every decoder is first asked for the
//!   header only; width, height, pixel count ([`Limits::max_pixels`],
//!   [`Limits::max_side`]) and the size of the one pixel buffer that will be
//!   allocated ([`Limits::max_alloc`]) are checked before any pixel memory
//!   exists, so a 50,000 × 50,000 PNG of a few KB or a JPEG header claiming
//!   60000x60000 fails in microseconds with `image_too_large`. The format
//!   decoders also get explicit allocation limits, and the whole pipeline
//!   runs under
//!   [`std::panic::catch_unwind`] as a last line: a decoder bug becomes
//!   `internal_error`, not a dead worker. The PDF page counter walks the
//!   page tree over a bounded object index (`pdf.rs`), not a full parser.
//! * **Memory is planned.** [`plan`] says, from the header alone, what
//!   [`process`] will allocate for a file (decoder buffers, the image the
//!   derivatives come from, the derivatives, the EXIF reader's copy); the
//!   worker takes that from its memory budget before decoding. Only the
//!   first frame of an animation (GIF, WebP, APNG) and the first image of a
//!   TIFF are ever decoded.
//! * **Decode once, as small as possible.** The pixels are decoded one time,
//!   at the smallest resolution that still serves the largest derivative.
//!   For JPEG (by far the most common upload) that is libjpeg-turbo's
//!   DCT-domain scaling: at 1/2, 1/4 or 1/8 the inverse DCT produces the
//!   smaller image directly, so a 12 MP photo for a 1280 px preview costs a
//!   quarter of the IDCT, colour conversion and memory of a full decode.
//!   PNG, GIF and TIFF are decoded a row (a strip, a band of tiles) at a
//!   time into a block shrinker (`shrink.rs`), so the full-size image never
//!   exists; WebP and HEIC decoders produce whole frames, which go to the
//!   shrinker row by row without a second full-size copy.
//!   The rest is done by `fast_image_resize` (SIMD convolution, Lanczos3).
//!   The derivatives are made largest first and each smaller one from the
//!   previous larger one (1280 → 256 touches 1.6 MP instead of the source's
//!   millions), which is both faster and, with a proper filter, as good.
//!   (vipsthumbnail, the benchmark we compare with, has to decode the file
//!   again for every size.)
//! * **Orientation last.** EXIF orientation (all eight) is applied to each
//!   finished derivative, the cheapest place to rotate or flip. Width and
//!   height in [`Metadata`] are the displayed size, after orientation. HEIF
//!   carries its rotation in the container (`irot`), applied the same way
//!   (a mirror or crop, `imir`/`clap`, is left to libheif); its EXIF tag is
//!   reported but not applied again.
//! * **Clean, plain output.** Derivatives are baseline JPEG (quality 82,
//!   4:2:0) written by libjpeg-turbo from 8-bit sRGB pixels: CMYK/YCCK,
//!   grayscale, 16-bit and alpha (composited on white) are converted first,
//!   and the output carries no EXIF, XMP, ICC profile or comment (only the
//!   JFIF header). Embedded ICC profiles are not applied: pixels are taken
//!   as sRGB, which is right for almost all photos and close (slightly
//!   desaturated, never garbage) for Display P3 or Adobe RGB ones.
//!
//! Every [`MediaError`] is permanent: the same bytes fail the same way, so a
//! job that failed should not be retried. [`MediaError::code`] is a stable
//! machine code, `Display` a message for people.

mod exif_meta;
mod gif;
mod heif;
mod jpeg;
mod pdf;
mod png;
mod raster;
mod shrink;
mod sniff;
mod tiff;
mod webp;

use std::panic::{AssertUnwindSafe, catch_unwind};

pub use sniff::sniff;

use raster::Rgb8;

/// Bounds checked from the header before anything is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest width × height of the source image.
    pub max_pixels: u64,
    /// Largest width or height of the source image.
    pub max_side: u32,
    /// Largest single pixel buffer the pipeline may allocate, in bytes.
    pub max_alloc: u64,
}

impl Default for Limits {
    /// 120 MP (a 100+ MP medium-format camera passes; a decompression bomb
    /// does not), 65,535 px a side (JPEG's own maximum), 1 GiB per buffer
    /// (a 120 MP RGBA buffer is 480 MB, so legitimate input stays well under).
    fn default() -> Self {
        Self {
            max_pixels: 120_000_000,
            max_side: 65_535,
            max_alloc: 1 << 30,
        }
    }
}

/// A derivative to produce: the longest side fits `max_side` (never upscaled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivativeSpec {
    pub name: String,
    pub max_side: u32,
}

impl DerivativeSpec {
    pub fn new(name: impl Into<String>, max_side: u32) -> Self {
        Self {
            name: name.into(),
            max_side,
        }
    }
}

/// `thumb` (256 px) and `preview` (1280 px).
pub fn default_sizes() -> Vec<DerivativeSpec> {
    vec![
        DerivativeSpec::new("thumb", 256),
        DerivativeSpec::new("preview", 1280),
    ]
}

/// The allowlisted content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
    Gif,
    Tiff,
    Heif,
    Pdf,
}

impl Format {
    pub fn mime(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
            Format::Tiff => "image/tiff",
            Format::Heif => "image/heic",
            Format::Pdf => "application/pdf",
        }
    }
}

/// A GPS position in signed decimal degrees (south and west negative);
/// altitude in metres, negative below sea level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gps {
    pub latitude: f64,
    pub longitude: f64,
    pub altitude: Option<f64>,
}

/// What a file says about itself. Everything is optional: a missing or
/// malformed tag is `None`, never an error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// Displayed width (after EXIF orientation).
    pub width: Option<u32>,
    /// Displayed height (after EXIF orientation).
    pub height: Option<u32>,
    /// EXIF DateTimeOriginal: RFC 3339 with the offset when OffsetTimeOriginal
    /// is present, else naive `YYYY-MM-DDTHH:MM:SS`.
    pub taken_at: Option<String>,
    pub gps: Option<Gps>,
    pub camera_make: Option<String>,
    pub camera_model: Option<String>,
    /// EXIF orientation, 1..=8.
    pub orientation: Option<u16>,
    /// PDFs only.
    pub page_count: Option<u32>,
}

/// One JPEG derivative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derivative {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
}

/// The result of [`process`].
#[derive(Debug, Clone, PartialEq)]
pub struct Processed {
    pub format: Format,
    pub metadata: Metadata,
    /// In the order of the requested sizes; empty for PDFs.
    pub derivatives: Vec<Derivative>,
}

/// Why a file could not be processed. All are permanent.
#[derive(thiserror::Error, Debug)]
pub enum MediaError {
    #[error("the content is not a supported image or PDF")]
    UnsupportedType,
    #[error("HEIC/HEIF support is not available in this build")]
    HeicUnavailable,
    #[error("the file is corrupt or truncated: {0}")]
    CorruptFile(String),
    #[error(
        "the image is too large: {width}x{height} (limits: {max_pixels} pixels, {max_side} px a side)"
    )]
    ImageTooLarge {
        width: u64,
        height: u64,
        max_pixels: u64,
        max_side: u32,
    },
    #[error("a processing limit was exceeded: {0}")]
    LimitExceeded(String),
    #[error("invalid derivative sizes: {0}")]
    InvalidSizes(String),
    #[error("internal error while processing: {0}")]
    Internal(String),
}

impl MediaError {
    /// A stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            MediaError::UnsupportedType => "unsupported_type",
            MediaError::HeicUnavailable => "heic_unavailable",
            MediaError::CorruptFile(_) => "corrupt_file",
            MediaError::ImageTooLarge { .. } => "image_too_large",
            MediaError::LimitExceeded(_) => "limit_exceeded",
            MediaError::InvalidSizes(_) => "invalid_sizes",
            MediaError::Internal(_) => "internal_error",
        }
    }

    /// Always `false`: the same bytes fail the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Largest derivative side accepted in a [`DerivativeSpec`].
pub const MAX_DERIVATIVE_SIDE: u32 = 16_384;

/// Sniffs, reads the metadata and makes the derivatives of one file.
pub fn process(
    bytes: &[u8],
    sizes: &[DerivativeSpec],
    limits: &Limits,
) -> Result<Processed, MediaError> {
    check_sizes(sizes)?;
    guarded(|| process_inner(bytes, sizes, limits))
}

fn process_inner(
    bytes: &[u8],
    sizes: &[DerivativeSpec],
    limits: &Limits,
) -> Result<Processed, MediaError> {
    let format = sniff(bytes).ok_or(MediaError::UnsupportedType)?;
    if format == Format::Pdf {
        let metadata = Metadata {
            page_count: pdf::page_count(bytes),
            ..Metadata::default()
        };
        return Ok(Processed {
            format,
            metadata,
            derivatives: Vec::new(),
        });
    }

    let mut metadata = exif_meta::read(format, bytes);
    let largest = largest(sizes);

    // Decode once, at the smallest size that serves `largest`.
    let (decoded, full_w, full_h, orientation) = match format {
        // HEIF carries its rotation in the container (the EXIF tag is
        // reported, not applied).
        Format::Heif => heif::decode(bytes, largest, limits)?,
        other => {
            let (decoded, w, h) = match other {
                Format::Jpeg => jpeg::decode(bytes, largest, limits)?,
                Format::Png => png::decode(bytes, largest, limits)?,
                Format::Gif => gif::decode(bytes, largest, limits)?,
                Format::Tiff => tiff::decode(bytes, largest, limits)?,
                Format::Webp => webp::decode(bytes, largest, limits)?,
                Format::Heif | Format::Pdf => return Err(MediaError::UnsupportedType),
            };
            (decoded, w, h, metadata.orientation.unwrap_or(1))
        }
    };
    let swap = orientation >= 5;
    let (disp_w, disp_h) = if swap {
        (full_h, full_w)
    } else {
        (full_w, full_h)
    };
    metadata.width = Some(disp_w);
    metadata.height = Some(disp_h);

    // Largest first; each smaller one from the previous larger one.
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sizes[i].max_side));
    let mut made: Vec<Option<Derivative>> = vec![None; sizes.len()];
    let mut source: Option<Rgb8> = None; // the last stored-orientation result
    let mut resizer = raster::Resizer::new();
    for i in order {
        let (tw, th) = raster::fit(full_w, full_h, sizes[i].max_side);
        let from = match &source {
            Some(s) if s.width >= tw && s.height >= th => s,
            _ => &decoded,
        };
        let resized = if from.width == tw && from.height == th {
            from.clone()
        } else {
            resizer.resize(from, tw, th)?
        };
        let oriented = raster::orient(&resized, orientation);
        let jpeg = jpeg::encode(&oriented)?;
        made[i] = Some(Derivative {
            name: sizes[i].name.clone(),
            width: oriented.width,
            height: oriented.height,
            jpeg,
        });
        source = Some(resized);
    }
    Ok(Processed {
        format,
        metadata,
        derivatives: made.into_iter().flatten().collect(),
    })
}

/// What counting a PDF's pages may allocate: its object index and the
/// inflated object streams it keeps, and the parser's stack.
const PDF_MEMORY: u64 = pdf::MEMORY as u64 + (8 << 20);

/// The side the largest derivative fits.
fn largest(sizes: &[DerivativeSpec]) -> u32 {
    sizes.iter().map(|s| s.max_side).max().unwrap_or(0)
}

/// What a decoder learns from the header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The stored size.
    pub width: u32,
    pub height: u32,
    /// The size of the image the derivatives are made from: DCT-scaled
    /// (JPEG) or block-shrunk (the others).
    pub source: (u32, u32),
    /// What the decoder allocates besides that image: its own buffers,
    /// frames, planes and rows.
    pub decoder_bytes: u64,
}

impl Probe {
    /// A probe for a decoder whose rows go through the block shrinker.
    pub(crate) fn shrunk(width: u32, height: u32, largest: u32, decoder_bytes: u64) -> Self {
        Self {
            width,
            height,
            source: shrink::shrunk_size(width, height, largest),
            decoder_bytes,
        }
    }
}

fn probe(format: Format, bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
    match format {
        Format::Jpeg => jpeg::probe(bytes, largest, limits),
        Format::Heif => heif::probe(bytes, largest, limits),
        Format::Png => png::probe(bytes, largest, limits),
        Format::Gif => gif::probe(bytes, largest, limits),
        Format::Tiff => tiff::probe(bytes, largest, limits),
        Format::Webp => webp::probe(bytes, largest, limits),
        Format::Pdf => Err(MediaError::UnsupportedType),
    }
}

/// The bytes [`process`] will allocate for `bytes` beyond `bytes` itself,
/// from the header only (nothing is decoded): the decoder's buffers, the
/// image the derivatives are made from, the derivatives (resized, rotated,
/// encoded) and the resizer's scratch, and the EXIF reader's copy. An
/// image over the [`Limits`] fails here as it would in [`process`].
///
/// The figure is an upper bound of what the pipeline allocates itself;
/// the worker takes it from its memory budget before decoding.
pub fn plan(bytes: &[u8], sizes: &[DerivativeSpec], limits: &Limits) -> Result<u64, MediaError> {
    check_sizes(sizes)?;
    guarded(|| {
        let format = sniff(bytes).ok_or(MediaError::UnsupportedType)?;
        if format == Format::Pdf {
            return Ok(PDF_MEMORY);
        }
        let exif = exif_meta::memory(format, bytes.len());
        let probe = probe(format, bytes, largest(sizes), limits)?;
        let (sw, sh) = probe.source;
        let source = u64::from(sw) * u64::from(sh) * 3;
        let mut derivatives = 0u64;
        let mut scratch = 0u64;
        for s in sizes {
            let (tw, th) = raster::fit(probe.width, probe.height, s.max_side);
            let (tw, th) = (u64::from(tw), u64::from(th));
            // Resized, rotated and encoded (a JPEG is smaller than its pixels).
            derivatives += tw * th * 3 * 3;
            // The convolution's intermediate image: one pass done, at most
            // the target width by the source height (or the other way).
            scratch = scratch.max((tw * u64::from(sh)).max(u64::from(sw) * th) * 3);
        }
        Ok(probe
            .decoder_bytes
            .saturating_add(source)
            .saturating_add(derivatives)
            .saturating_add(scratch)
            .saturating_add(exif))
    })
}

/// Runs `f` catching a decoder's panic as `internal_error`.
fn guarded<T>(f: impl FnOnce() -> Result<T, MediaError>) -> Result<T, MediaError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "decoder panicked".to_owned());
            Err(MediaError::Internal(msg))
        }
    }
}

fn check_sizes(sizes: &[DerivativeSpec]) -> Result<(), MediaError> {
    for s in sizes {
        if s.max_side == 0 || s.max_side > MAX_DERIVATIVE_SIDE {
            return Err(MediaError::InvalidSizes(format!(
                "{}: max_side must be 1..={MAX_DERIVATIVE_SIDE}",
                s.name
            )));
        }
    }
    Ok(())
}

/// Checks header dimensions against the limits: before anything is allocated.
pub(crate) fn check_dimensions(width: u64, height: u64, limits: &Limits) -> Result<(), MediaError> {
    if width == 0 || height == 0 {
        return Err(MediaError::CorruptFile("zero width or height".to_owned()));
    }
    if width.saturating_mul(height) > limits.max_pixels
        || width > u64::from(limits.max_side)
        || height > u64::from(limits.max_side)
    {
        return Err(MediaError::ImageTooLarge {
            width,
            height,
            max_pixels: limits.max_pixels,
            max_side: limits.max_side,
        });
    }
    Ok(())
}

/// Checks the size of a pixel buffer about to be allocated.
pub(crate) fn check_alloc(
    width: u64,
    height: u64,
    bytes_per_pixel: u64,
    limits: &Limits,
) -> Result<(), MediaError> {
    let need = width.saturating_mul(height).saturating_mul(bytes_per_pixel);
    if need > limits.max_alloc {
        return Err(MediaError::LimitExceeded(format!(
            "decoding needs a {need}-byte buffer, the cap is {}",
            limits.max_alloc
        )));
    }
    Ok(())
}
