//! TIFF through the `tiff` crate, one strip (or one row of tiles) at a time
//! into the shrinker: only the first image (IFD) is read, so a chain of
//! thousands of IFDs, or one that loops, costs nothing. 8- and 16-bit gray,
//! RGB(A) and CMYK, chunky (interleaved) samples; anything else is
//! `corrupt_file` ("unsupported variant"), as with the decoders before.

use std::io::Cursor;

use tiff::ColorType;
use tiff::decoder::{ChunkType, Decoder, DecodingResult};
use tiff::tags::Tag;

use crate::raster::{Layout, Rgb8, row_to_rgb};
use crate::shrink::Shrinker;
use crate::{Limits, MediaError, Probe, check_dimensions};

fn map_err(e: tiff::TiffError) -> MediaError {
    match e {
        tiff::TiffError::LimitsExceeded => {
            MediaError::LimitExceeded("TIFF decoder limit".to_owned())
        }
        tiff::TiffError::UnsupportedError(u) => {
            MediaError::CorruptFile(format!("unsupported variant: {u}"))
        }
        other => MediaError::CorruptFile(other.to_string()),
    }
}

fn unsupported(what: String) -> MediaError {
    MediaError::CorruptFile(format!("unsupported variant: {what}"))
}

struct Image<'a> {
    decoder: Decoder<Cursor<&'a [u8]>>,
    width: u32,
    height: u32,
    layout: Layout,
    bytes_per_sample: u64,
    /// The (full, unclipped) size of a strip or tile.
    chunk: (u32, u32),
}

fn open<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Image<'a>, MediaError> {
    let mut tiff_limits = tiff::decoder::Limits::default();
    tiff_limits.decoding_buffer_size = usize::try_from(limits.max_alloc).unwrap_or(usize::MAX);
    let mut decoder = Decoder::new(Cursor::new(bytes))
        .map_err(map_err)?
        .with_limits(tiff_limits);
    let (width, height) = decoder.dimensions().map_err(map_err)?;
    check_dimensions(u64::from(width), u64::from(height), limits)?;
    let color = decoder.colortype().map_err(map_err)?;
    let (layout, depth) = match color {
        ColorType::Gray(d) => (Layout::Gray, d),
        ColorType::GrayA(d) => (Layout::GrayAlpha, d),
        ColorType::RGB(d) => (Layout::Rgb, d),
        ColorType::RGBA(d) => (Layout::Rgba, d),
        ColorType::CMYK(d) => (Layout::Cmyk, d),
        other => return Err(unsupported(format!("{other:?}"))),
    };
    if depth != 8 && depth != 16 {
        return Err(unsupported(format!("{depth}-bit samples")));
    }
    let planar = decoder
        .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
        .map_err(map_err)?
        .unwrap_or(1);
    if planar != 1 && layout.channels() > 1 {
        return Err(unsupported("separate colour planes".to_owned()));
    }
    // Strips or tiles the file cannot hold: corrupt, not a limit to raise.
    let (offsets, counts) = match decoder.get_chunk_type() {
        ChunkType::Strip => (Tag::StripOffsets, Tag::StripByteCounts),
        ChunkType::Tile => (Tag::TileOffsets, Tag::TileByteCounts),
    };
    let offsets = decoder.get_tag_u64_vec(offsets).map_err(map_err)?;
    let counts = decoder.get_tag_u64_vec(counts).map_err(map_err)?;
    let len = bytes.len() as u64;
    if offsets
        .iter()
        .zip(&counts)
        .any(|(&o, &c)| o.checked_add(c).is_none_or(|end| end > len))
    {
        return Err(MediaError::CorruptFile(
            "a strip or tile lies past the end of the file".to_owned(),
        ));
    }
    let chunk = decoder.chunk_dimensions();
    Ok(Image {
        decoder,
        width,
        height,
        layout,
        bytes_per_sample: u64::from(depth / 8),
        chunk,
    })
}

pub(crate) fn probe(bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
    let image = open(bytes, limits)?;
    let (w, h) = (image.width, image.height);
    let channels = image.layout.channels() as u64;
    let sample = image.bytes_per_sample;
    let (cw, ch) = (u64::from(image.chunk.0), u64::from(image.chunk.1));
    // One chunk decoded (and, 16-bit, its 8-bit copy), its compressed bytes;
    // with tiles, a band of a tile's height across the image; RGB rows.
    let chunk_bytes = cw * ch * channels * sample;
    let mut decoder_bytes = chunk_bytes * 3 + u64::from(w) * 3 * 2 + (256 << 10);
    if image.decoder.get_chunk_type() == ChunkType::Tile {
        decoder_bytes += u64::from(w) * ch * channels;
    }
    Ok(Probe::shrunk(w, h, largest, decoder_bytes))
}

/// A chunk's samples as 8 bits (16-bit ones by their high byte).
fn eight_bit(result: DecodingResult) -> Result<Vec<u8>, MediaError> {
    match result {
        DecodingResult::U8(v) => Ok(v),
        DecodingResult::U16(v) => Ok(v.into_iter().map(|s| (s >> 8) as u8).collect()),
        _ => Err(unsupported("sample format".to_owned())),
    }
}

pub(crate) fn decode(
    bytes: &[u8],
    largest: u32,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let mut image = open(bytes, limits)?;
    let (w, h) = (image.width, image.height);
    let channels = image.layout.channels();
    let mut shrinker = Shrinker::new(w, h, largest);
    let mut rgb = Vec::with_capacity(w as usize * 3);
    let short = || MediaError::CorruptFile("a strip or tile shorter than it says".to_owned());
    match image.decoder.get_chunk_type() {
        ChunkType::Strip => {
            let strips = image.decoder.strip_count().map_err(map_err)?;
            for i in 0..strips {
                let (sw, sh) = image.decoder.chunk_data_dimensions(i);
                let data = eight_bit(image.decoder.read_chunk(i).map_err(map_err)?)?;
                let row_len = sw as usize * channels;
                if sw != w || data.len() < row_len * sh as usize {
                    return Err(short());
                }
                for row in data.chunks_exact(row_len).take(sh as usize) {
                    row_to_rgb(image.layout, row, &mut rgb);
                    shrinker.push(&rgb)?;
                }
            }
        }
        ChunkType::Tile => {
            let (tw, th) = image.chunk;
            if tw == 0 || th == 0 {
                return Err(short());
            }
            let across = w.div_ceil(tw);
            let down = h.div_ceil(th);
            let row_len = w as usize * channels;
            let mut band = Vec::new();
            for ty in 0..down {
                let band_rows = th.min(h - ty * th) as usize;
                band.clear();
                band.resize(row_len * band_rows, 0);
                for tx in 0..across {
                    let i = ty * across + tx;
                    let (dw, dh) = image.decoder.chunk_data_dimensions(i);
                    let data = eight_bit(image.decoder.read_chunk(i).map_err(map_err)?)?;
                    let tile_row = dw as usize * channels;
                    if data.len() < tile_row * dh as usize || (dh as usize) < band_rows {
                        return Err(short());
                    }
                    let x0 = (tx * tw) as usize * channels;
                    let width = tile_row.min(row_len - x0);
                    for (y, src) in data.chunks_exact(tile_row).take(band_rows).enumerate() {
                        let at = y * row_len + x0;
                        band[at..at + width].copy_from_slice(&src[..width]);
                    }
                }
                for row in band.chunks_exact(row_len) {
                    row_to_rgb(image.layout, row, &mut rgb);
                    shrinker.push(&rgb)?;
                }
            }
        }
    }
    Ok((shrinker.finish()?, w, h))
}
