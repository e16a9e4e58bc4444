//! GIF through the `gif` crate: the first frame only (the rest of an
//! animation is never decoded), row by row into the shrinker, on the
//! logical screen's canvas with the background white (as a viewer shows the
//! first frame of a transparent GIF on a white page). An interlaced frame's
//! rows arrive out of order, so it is decoded whole, at one byte a pixel.

use std::io::Cursor;

use gif::{ColorOutput, DecodeOptions, MemoryLimit};

use crate::raster::Rgb8;
use crate::shrink::Shrinker;
use crate::{Limits, MediaError, Probe, check_dimensions};

const WHITE: [u8; 3] = [255, 255, 255];

fn map_err(e: gif::DecodingError) -> MediaError {
    MediaError::CorruptFile(e.to_string())
}

type Decoder<'a> = gif::Decoder<Cursor<&'a [u8]>>;

/// The decoder positioned at the first frame, with the canvas size.
fn first_frame<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<(Decoder<'a>, u32, u32), MediaError> {
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::Indexed);
    if let Some(cap) = std::num::NonZeroU64::new(limits.max_alloc) {
        options.set_memory_limit(MemoryLimit::Bytes(cap));
    }
    let mut decoder = options.read_info(Cursor::new(bytes)).map_err(map_err)?;
    let (w, h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    check_dimensions(u64::from(w), u64::from(h), limits)?;
    if decoder.next_frame_info().map_err(map_err)?.is_none() {
        return Err(MediaError::CorruptFile("a GIF without a frame".to_owned()));
    }
    Ok((decoder, w, h))
}

pub(crate) fn probe(bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
    let (decoder, w, h) = first_frame(bytes, limits)?;
    let frame = decoder
        .current_frame_info()
        .ok_or_else(|| MediaError::CorruptFile("no frame".to_owned()))?;
    let (fw, fh) = (u64::from(frame.width), u64::from(frame.height));
    // A row of indices, an RGB row; an interlaced frame whole; the LZW table.
    let mut decoder_bytes = fw + u64::from(w) * 3 + (64 << 10);
    if frame.interlaced {
        decoder_bytes += fw * fh;
    }
    Ok(Probe::shrunk(w, h, largest, decoder_bytes))
}

pub(crate) fn decode(
    bytes: &[u8],
    largest: u32,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let (mut decoder, w, h) = first_frame(bytes, limits)?;
    let (left, top, fw, fh, interlaced, transparent) = {
        let f = decoder
            .current_frame_info()
            .ok_or_else(|| MediaError::CorruptFile("no frame".to_owned()))?;
        (
            u32::from(f.left),
            u32::from(f.top),
            u32::from(f.width),
            u32::from(f.height),
            f.interlaced,
            f.transparent,
        )
    };
    let palette: Vec<u8> = decoder.palette().map_err(map_err)?.to_vec();
    let mut shrinker = Shrinker::new(w, h, largest);
    let mut rgb = Vec::with_capacity(w as usize * 3);

    // The frame's indices, a row at a time (or all of them, interlaced).
    let mut whole = Vec::new();
    if interlaced {
        whole = vec![0u8; fw as usize * fh as usize];
        decoder.read_into_buffer(&mut whole).map_err(map_err)?;
    }
    let mut line = vec![0u8; fw as usize];
    let mut frame_rows_done = 0u32;
    for y in 0..h {
        let inside = y >= top && y - top < fh;
        if !inside || fw == 0 {
            shrinker.push_fill(WHITE, &mut rgb)?;
            continue;
        }
        let indices: &[u8] = if interlaced {
            let start = (y - top) as usize * fw as usize;
            &whole[start..start + fw as usize]
        } else {
            if !decoder.fill_buffer(&mut line).map_err(map_err)? {
                return Err(MediaError::CorruptFile(format!(
                    "the first frame ends after {frame_rows_done} of its {fh} rows"
                )));
            }
            &line
        };
        frame_rows_done += 1;
        rgb.clear();
        for x in 0..w {
            let px = if x >= left && x - left < fw {
                let i = indices[(x - left) as usize];
                if Some(i) == transparent {
                    WHITE
                } else {
                    let at = usize::from(i) * 3;
                    palette
                        .get(at..at + 3)
                        .map_or([0, 0, 0], |c| [c[0], c[1], c[2]])
                }
            } else {
                WHITE
            };
            rgb.extend_from_slice(&px);
        }
        shrinker.push(&rgb)?;
    }
    Ok((shrinker.finish()?, w, h))
}
