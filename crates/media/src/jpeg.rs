//! JPEG through libjpeg-turbo 3 (bundled, static): DCT-domain scaled
//! decoding and the encoder of every derivative.

use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

use crate::raster::{self, Rgb8};
use crate::{Limits, MediaError, check_alloc, check_dimensions};

/// The JPEG quality of derivatives.
pub(crate) const QUALITY: i32 = 82;

/// Progressive JPEGs with more scans than this are refused: a few KB of
/// crafted scans can otherwise keep a decoder busy for minutes. Real
/// encoders write about 10.
const MAX_SCANS: u32 = 256;

fn corrupt(e: turbojpeg::Error) -> MediaError {
    MediaError::CorruptFile(e.to_string())
}

/// libjpeg's warnings (JWRN_*): the image was decoded (damaged parts are
/// filled in), so it is kept, as browsers and vips do. Anything else is fatal.
fn is_warning(msg: &str) -> bool {
    const WARNINGS: [&str; 7] = [
        "Corrupt JPEG data",
        "Premature end of JPEG file",
        "Warning:",
        "Inconsistent progression sequence",
        "Invalid SOS parameters for sequential JPEG",
        "Unknown Adobe color transform code",
        "Application transferred too many scanlines",
    ];
    WARNINGS.iter().any(|w| msg.contains(w))
}

/// Decodes at the smallest DCT scale (1/8, 1/4, 1/2, 1) whose longest side
/// is still at least `target` (or the full size, if that is smaller).
/// Returns the pixels and the full stored size.
pub(crate) fn decode(
    bytes: &[u8],
    target: u32,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let mut d = Decompressor::new().map_err(|e| MediaError::Internal(e.to_string()))?;
    let header = d.read_header(bytes).map_err(corrupt)?;
    let (full_w, full_h) = (header.width as u64, header.height as u64);
    check_dimensions(full_w, full_h, limits)?;
    let (full_w, full_h) = (full_w as u32, full_h as u32);

    let longest = full_w.max(full_h) as usize;
    let want = (target as usize).min(longest);
    let factor = [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(|f| f.scale(longest) >= want)
    .unwrap_or(ScalingFactor::ONE);
    d.set_scaling_factor(factor).map_err(corrupt)?;
    d.set_scan_limit(MAX_SCANS).map_err(corrupt)?;
    let scaled = header.scaled(factor);
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let format = if cmyk {
        PixelFormat::CMYK
    } else {
        PixelFormat::RGB
    };
    let bpp = format.size();
    check_alloc(
        scaled.width as u64,
        scaled.height as u64,
        bpp as u64,
        limits,
    )?;

    let mut pixels = vec![0u8; scaled.width * scaled.height * bpp];
    let image = Image {
        pixels: pixels.as_mut_slice(),
        width: scaled.width,
        pitch: scaled.width * bpp,
        height: scaled.height,
        format,
    };
    if let Err(e) = d.decompress(bytes, image) {
        let msg = e.to_string();
        if !is_warning(&msg) {
            return Err(MediaError::CorruptFile(msg));
        }
    }
    let (w, h) = (scaled.width as u32, scaled.height as u32);
    let rgb = if cmyk {
        raster::cmyk_to_rgb(w, h, &pixels)?
    } else {
        Rgb8::new(w, h, pixels)?
    };
    Ok((rgb, full_w, full_h))
}

/// Baseline JPEG, 4:2:0, only the JFIF header: no EXIF, XMP, ICC or comment.
pub(crate) fn encode(img: &Rgb8) -> Result<Vec<u8>, MediaError> {
    let err = |e: turbojpeg::Error| MediaError::Internal(format!("JPEG encoder: {e}"));
    let mut c = Compressor::new().map_err(err)?;
    c.set_quality(QUALITY).map_err(err)?;
    c.set_subsamp(Subsamp::Sub2x2).map_err(err)?;
    let image = Image {
        pixels: img.data.as_slice(),
        width: img.width as usize,
        pitch: img.width as usize * 3,
        height: img.height as usize,
        format: PixelFormat::RGB,
    };
    c.compress_to_vec(image).map_err(err)
}
