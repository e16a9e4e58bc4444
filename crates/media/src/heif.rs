//! HEIC/HEIF through the system libheif (Debian 12: 1.15, via libheif-rs
//! 0.20). libheif applies the container's rotation and mirroring (`irot`,
//! `imir`) while decoding, so the result is already upright.

use crate::raster::Rgb8;
use crate::{Limits, MediaError};

#[cfg(feature = "heif")]
pub(crate) fn decode(bytes: &[u8], limits: &Limits) -> Result<(Rgb8, u32, u32), MediaError> {
    use libheif_rs::{ColorSpace, HeifContext, LibHeif, RgbChroma};

    use crate::{check_alloc, check_dimensions, raster};

    let corrupt = |e: libheif_rs::HeifError| MediaError::CorruptFile(e.to_string());
    let mut ctx = HeifContext::read_from_bytes(bytes).map_err(corrupt)?;
    // One thread, like every other path: the worker runs images in parallel.
    ctx.set_max_decoding_threads(1);
    let handle = ctx.primary_image_handle().map_err(corrupt)?;
    let (w, h) = (handle.width(), handle.height());
    check_dimensions(u64::from(w), u64::from(h), limits)?;
    let alpha = handle.has_alpha_channel();
    let (chroma, bpp) = if alpha {
        (RgbChroma::Rgba, 4)
    } else {
        (RgbChroma::Rgb, 3)
    };
    // libheif allocates the decoded image (plus its YCbCr planes) itself.
    check_alloc(u64::from(w), u64::from(h), bpp * 2, limits)?;
    let image = LibHeif::new()
        .decode(&handle, ColorSpace::Rgb(chroma), None)
        .map_err(corrupt)?;
    let planes = image.planes();
    let plane = planes
        .interleaved
        .ok_or_else(|| MediaError::CorruptFile("no interleaved plane".to_owned()))?;
    let (pw, ph) = (plane.width, plane.height);
    let row = pw as usize * bpp as usize;
    let mut packed = Vec::with_capacity(row * ph as usize);
    for y in 0..ph as usize {
        let start = y * plane.stride;
        let line = plane
            .data
            .get(start..start + row)
            .ok_or_else(|| MediaError::CorruptFile("short image plane".to_owned()))?;
        packed.extend_from_slice(line);
    }
    let rgb = if alpha {
        raster::flatten_rgba(pw, ph, &packed)?
    } else {
        Rgb8::new(pw, ph, packed)?
    };
    Ok((rgb, pw, ph))
}

#[cfg(not(feature = "heif"))]
pub(crate) fn decode(_bytes: &[u8], _limits: &Limits) -> Result<(Rgb8, u32, u32), MediaError> {
    Err(MediaError::HeicUnavailable)
}
