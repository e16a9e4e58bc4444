//! PNG through the `png` crate, row by row into the shrinker: a 100 MP PNG
//! costs its rows and the shrunk image, not 400 MB of pixels. Interlaced
//! (Adam7) files cannot be streamed that way (a row is complete only after
//! the last pass) and are decoded whole; APNG gives its first (default)
//! image.

use std::io::Cursor;

use png::{BitDepth, ColorType, Decoder, Transformations};

use crate::raster::{Layout, Rgb8, row_to_rgb};
use crate::shrink::Shrinker;
use crate::{Limits, MediaError, Probe, check_dimensions};

fn map_err(e: png::DecodingError) -> MediaError {
    match e {
        png::DecodingError::LimitsExceeded => {
            MediaError::LimitExceeded("PNG decoder limit".to_owned())
        }
        other => MediaError::CorruptFile(other.to_string()),
    }
}

fn reader<'a>(
    bytes: &'a [u8],
    limits: &Limits,
) -> Result<png::Reader<Cursor<&'a [u8]>>, MediaError> {
    let mut decoder = Decoder::new_with_limits(
        Cursor::new(bytes),
        png::Limits {
            bytes: usize::try_from(limits.max_alloc).unwrap_or(usize::MAX),
        },
    );
    // 8-bit samples whatever the file: palette and low bit depths expanded,
    // 16 bits cut to their high byte.
    decoder.set_transformations(Transformations::EXPAND | Transformations::STRIP_16);
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let reader = decoder.read_info().map_err(map_err)?;
    let info = reader.info();
    check_dimensions(u64::from(info.width), u64::from(info.height), limits)?;
    Ok(reader)
}

fn layout(color: ColorType) -> Layout {
    match color {
        ColorType::Grayscale => Layout::Gray,
        ColorType::GrayscaleAlpha => Layout::GrayAlpha,
        ColorType::Rgba => Layout::Rgba,
        ColorType::Rgb | ColorType::Indexed => Layout::Rgb,
    }
}

pub(crate) fn probe(bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
    let reader = reader(bytes, limits)?;
    let (w, h) = (reader.info().width, reader.info().height);
    let (color, _) = reader.output_color_type();
    let line = u64::from(w) * layout(color).channels() as u64;
    // Raw rows (current and previous, up to 16 bits a sample before
    // stripping), the output row and its RGB copy, the inflater's window.
    let mut decoder_bytes = line * 2 * 2 + line + u64::from(w) * 3 + (256 << 10);
    if reader.info().interlaced {
        decoder_bytes += line * u64::from(h);
    }
    Ok(Probe::shrunk(w, h, largest, decoder_bytes))
}

pub(crate) fn decode(
    bytes: &[u8],
    largest: u32,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let mut reader = reader(bytes, limits)?;
    let (w, h) = (reader.info().width, reader.info().height);
    let (color, depth) = reader.output_color_type();
    if depth != BitDepth::Eight {
        return Err(MediaError::Internal(format!("PNG output depth {depth:?}")));
    }
    let layout = layout(color);
    let mut shrinker = Shrinker::new(w, h, largest);
    let mut rgb = Vec::with_capacity(w as usize * 3);
    if reader.info().interlaced {
        let size = reader
            .output_buffer_size()
            .ok_or_else(|| MediaError::LimitExceeded("PNG buffer size".to_owned()))?;
        let mut frame = vec![0u8; size];
        let info = reader.next_frame(&mut frame).map_err(map_err)?;
        for row in frame.chunks_exact(info.line_size).take(h as usize) {
            row_to_rgb(layout, row, &mut rgb);
            shrinker.push(&rgb)?;
        }
    } else {
        while let Some(row) = reader.next_row().map_err(map_err)? {
            row_to_rgb(layout, row.data(), &mut rgb);
            shrinker.push(&rgb)?;
        }
    }
    Ok((shrinker.finish()?, w, h))
}
