//! JPEG through libjpeg-turbo 3 (bundled, static): DCT-domain scaled
//! decoding and the encoder of every derivative.

use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

use crate::raster::{self, Rgb8};
use crate::{Limits, MediaError, Probe, check_alloc, check_dimensions};

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

/// The frame's layout, from its markers.
struct Frame {
    /// Sampling factors (h, v) of each component.
    sampling: Vec<(u8, u8)>,
    /// Progressive, or sequential in more than one scan: libjpeg then keeps
    /// every DCT coefficient of the whole (unscaled) image until the end.
    buffered: bool,
}

/// Walks the markers (skipping entropy-coded data): a linear scan that
/// allocates nothing but the component list.
fn frame(bytes: &[u8]) -> Option<Frame> {
    let mut i = 2;
    let mut sampling = Vec::new();
    let mut progressive = false;
    let mut scans = 0u32;
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            i += 1;
            continue;
        }
        let marker = bytes[i + 1];
        i += 2;
        match marker {
            0xFF => i -= 1,
            0x00 | 0x01 | 0xD0..=0xD8 => {}
            0xD9 => break,
            _ => {
                let len = usize::from(u16::from_be_bytes([*bytes.get(i)?, *bytes.get(i + 1)?]));
                let body = bytes.get(i + 2..i + len)?;
                let sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
                if sof && sampling.is_empty() {
                    progressive = matches!(marker, 0xC2 | 0xC6 | 0xCA);
                    let n = usize::from(*body.get(5)?);
                    for c in 0..n {
                        let f = *body.get(6 + c * 3 + 1)?;
                        sampling.push(((f >> 4).max(1), (f & 15).max(1)));
                    }
                }
                if marker == 0xDA {
                    scans += 1;
                    if progressive || scans > 1 {
                        break;
                    }
                }
                i += len;
            }
        }
    }
    (!sampling.is_empty()).then_some(Frame {
        sampling,
        buffered: progressive || scans > 1,
    })
}

/// The DCT scale for a `longest`-pixel side serving a `target`-pixel one.
fn scale_for(longest: usize, target: u32) -> ScalingFactor {
    let want = (target as usize).min(longest);
    [
        ScalingFactor::ONE_EIGHTH,
        ScalingFactor::ONE_QUARTER,
        ScalingFactor::ONE_HALF,
    ]
    .into_iter()
    .find(|f| f.scale(longest) >= want)
    .unwrap_or(ScalingFactor::ONE)
}

/// What decoding at the scale for `target` allocates: the scaled output
/// (and its RGB copy for CMYK), libjpeg's rows, and, for a progressive or
/// multi-scan file, the whole image's coefficients (2 bytes each, 64 a
/// block, whatever the output scale).
pub(crate) fn probe(bytes: &[u8], target: u32, limits: &Limits) -> Result<Probe, MediaError> {
    let mut d = Decompressor::new().map_err(|e| MediaError::Internal(e.to_string()))?;
    let header = d.read_header(bytes).map_err(corrupt)?;
    let (w, h) = (header.width as u64, header.height as u64);
    check_dimensions(w, h, limits)?;
    let factor = scale_for(header.width.max(header.height), target);
    let scaled = header.scaled(factor);
    let cmyk = matches!(header.colorspace, Colorspace::CMYK | Colorspace::YCCK);
    let out = (scaled.width * scaled.height) as u64;
    let mut decoder_bytes = out * if cmyk { 4 + 3 } else { 3 } + w * 16 * 4 + (1 << 20);
    let frame = frame(bytes).ok_or_else(|| MediaError::CorruptFile("no JPEG frame".to_owned()))?;
    if frame.buffered {
        let hmax = u64::from(frame.sampling.iter().map(|s| s.0).max().unwrap_or(1));
        let vmax = u64::from(frame.sampling.iter().map(|s| s.1).max().unwrap_or(1));
        let blocks: u64 = frame
            .sampling
            .iter()
            .map(|&(hs, vs)| {
                let cw = (w * u64::from(hs)).div_ceil(hmax);
                let ch = (h * u64::from(vs)).div_ceil(vmax);
                // Padded to whole MCUs.
                cw.div_ceil(8 * u64::from(hs))
                    * u64::from(hs)
                    * ch.div_ceil(8 * u64::from(vs))
                    * u64::from(vs)
            })
            .sum();
        decoder_bytes += blocks * 128;
    }
    Ok(Probe {
        width: header.width as u32,
        height: header.height as u32,
        source: (scaled.width as u32, scaled.height as u32),
        decoder_bytes,
    })
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

    let factor = scale_for(full_w.max(full_h) as usize, target);
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
