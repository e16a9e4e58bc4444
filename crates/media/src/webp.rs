//! WebP through `image-webp`, which decodes a whole frame into one buffer
//! (it has no row or region output): the plan counts that buffer and the
//! decoder's own planes. Only the first frame of an animation is decoded.
//! The frame goes to the shrinker row by row, so no second full-size copy
//! (RGB, alpha flattened) is made.

use std::io::Cursor;

use image_webp::WebPDecoder;

use crate::raster::{Layout, Rgb8, row_to_rgb};
use crate::shrink::Shrinker;
use crate::{Limits, MediaError, Probe, check_alloc, check_dimensions};

fn map_err(e: image_webp::DecodingError) -> MediaError {
    match e {
        image_webp::DecodingError::MemoryLimitExceeded => {
            MediaError::LimitExceeded("WebP decoder limit".to_owned())
        }
        other => MediaError::CorruptFile(other.to_string()),
    }
}

type Decoder<'a> = WebPDecoder<Cursor<&'a [u8]>>;

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<(Decoder<'a>, u32, u32), MediaError> {
    let mut decoder = WebPDecoder::new(Cursor::new(bytes)).map_err(map_err)?;
    decoder.set_memory_limit(usize::try_from(limits.max_alloc).unwrap_or(usize::MAX));
    let (w, h) = decoder.dimensions();
    check_dimensions(u64::from(w), u64::from(h), limits)?;
    Ok((decoder, w, h))
}

pub(crate) fn probe(bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
    let (mut decoder, w, h) = open(bytes, limits)?;
    let pixels = u64::from(w) * u64::from(h);
    let bpp: u64 = if decoder.has_alpha() { 4 } else { 3 };
    // The output frame; a lossy frame's YUV planes (1.5 bytes a pixel, in
    // tenths) or a lossless one's ARGB words (4); an animation's canvas
    // besides.
    let inner_tenths = if decoder.is_lossy() { 15 } else { 40 };
    let mut decoder_bytes = pixels * bpp + pixels * inner_tenths / 10 + (256 << 10);
    if decoder.is_animated() {
        decoder_bytes += pixels * 4;
    }
    check_alloc(u64::from(w), u64::from(h), bpp, limits)?;
    Ok(Probe::shrunk(w, h, largest, decoder_bytes))
}

pub(crate) fn decode(
    bytes: &[u8],
    largest: u32,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let (mut decoder, w, h) = open(bytes, limits)?;
    let layout = if decoder.has_alpha() {
        Layout::Rgba
    } else {
        Layout::Rgb
    };
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| MediaError::LimitExceeded("WebP buffer size".to_owned()))?;
    let mut frame = vec![0u8; size];
    decoder.read_image(&mut frame).map_err(map_err)?;
    let mut shrinker = Shrinker::new(w, h, largest);
    let mut rgb = Vec::with_capacity(w as usize * 3);
    for row in frame.chunks_exact(w as usize * layout.channels()) {
        row_to_rgb(layout, row, &mut rgb);
        shrinker.push(&rgb)?;
    }
    Ok((shrinker.finish()?, w, h))
}
