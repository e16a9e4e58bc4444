//! HEIC/HEIF through the system libheif (Debian 12: 1.15, via libheif-rs
//! 0.20). libheif applies the container's rotation and mirroring (`irot`,
//! `imir`) while decoding, so the result is already upright.
//!
//! libheif 1.15 decodes the whole primary image (it has no region or scaled
//! decoding), so the plan counts its buffers. It is asked for the planes as
//! they are (`ColorSpace::Undefined`): YCbCr, or planar RGB when libheif
//! had to convert (it does when the container's colour profile differs
//! from the bitstream's, as in iPhone photos), and they are turned into RGB
//! here a row at a time, into the shrinker. Asking for interleaved RGB
//! would add a second full-size copy; asking for YCbCr, a round trip
//! through RGB.

use crate::raster::Rgb8;
use crate::{Limits, MediaError, Probe};

#[cfg(feature = "heif")]
pub(crate) use imp::{decode, exif_block, probe};

#[cfg(not(feature = "heif"))]
pub(crate) fn probe(_bytes: &[u8], _largest: u32, _limits: &Limits) -> Result<Probe, MediaError> {
    Err(MediaError::HeicUnavailable)
}

#[cfg(not(feature = "heif"))]
pub(crate) fn decode(
    _bytes: &[u8],
    _largest: u32,
    _limits: &Limits,
) -> Result<(Rgb8, u32, u32, u16), MediaError> {
    Err(MediaError::HeicUnavailable)
}

#[cfg(not(feature = "heif"))]
pub(crate) fn exif_block(_bytes: &[u8]) -> Option<Vec<u8>> {
    None
}

#[cfg(feature = "heif")]
mod imp {
    use std::borrow::Cow;

    use libheif_rs::{ColorSpace, DecodingOptions, HeifContext, ImageHandle, LibHeif, Plane};

    use super::{Limits, MediaError, Probe, Rgb8};
    use crate::check_dimensions;
    use crate::raster::{Layout, row_to_rgb};
    use crate::shrink::Shrinker;

    /// libheif's and libde265's fixed allocations (a grid tile's picture,
    /// tables, the bitstream).
    const FIXED: u64 = 16 << 20;

    /// Bytes per pixel, in tenths, of the YCbCr image libheif decodes into,
    /// from the HEVC configurations (`hvcC`: chroma format and bit depths)
    /// in the file's first MiB: the most any of them needs, 4:4:4 at 16 bits
    /// if none is found.
    fn ycbcr_tenths(bytes: &[u8]) -> u64 {
        let head = &bytes[..bytes.len().min(1 << 20)];
        let mut most = 0;
        let mut from = 0;
        while let Some(at) = head
            .get(from..)
            .and_then(|h| h.windows(4).position(|w| w == b"hvcC"))
        {
            let config = from + at + 4;
            from = config;
            let (Some(&format), Some(&luma), Some(&chroma)) = (
                head.get(config + 16),
                head.get(config + 17),
                head.get(config + 18),
            ) else {
                break;
            };
            // Samples of a pixel, in tenths: 4:0:0, 4:2:0, 4:2:2, 4:4:4.
            let samples = [10, 15, 20, 30][usize::from(format & 3)];
            let wide = (luma & 7) > 0 || (chroma & 7) > 0;
            most = most.max(if wide { samples * 2 } else { samples });
        }
        if most == 0 { 60 } else { most }
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct Matrix {
        r_cr: f32,
        g_cb: f32,
        g_cr: f32,
        b_cb: f32,
        full_range: bool,
    }

    impl Matrix {
        /// libheif's default when no profile says otherwise: BT.601, full range.
        const DEFAULT: Self = Self::new(0.299, 0.114, true);

        const fn new(kr: f32, kb: f32, full_range: bool) -> Self {
            let kg = 1.0 - kr - kb;
            Self {
                r_cr: 2.0 * (1.0 - kr),
                g_cb: -2.0 * kb * (1.0 - kb) / kg,
                g_cr: -2.0 * kr * (1.0 - kr) / kg,
                b_cb: 2.0 * (1.0 - kb),
                full_range,
            }
        }

        /// The matrices libheif converts with; `None` for others.
        fn from_nclx(matrix: libheif_rs::MatrixCoefficients, full_range: bool) -> Option<Self> {
            use libheif_rs::MatrixCoefficients as M;
            let (kr, kb) = match matrix {
                M::ITU_R_BT_709_5 => (0.2126, 0.0722),
                M::ITU_R_BT_601_6 | M::ITU_R_BT_470_6_System_B_G | M::Unspecified => (0.299, 0.114),
                M::ITU_R_BT_2020_2_NonConstantLuminance => (0.2627, 0.0593),
                _ => return None,
            };
            Some(Self::new(kr, kb, full_range))
        }

        fn rgb(&self, y: u8, cb: u8, cr: u8) -> [u8; 3] {
            let (mut y, mut cb, mut cr) =
                (f32::from(y), f32::from(cb) - 128.0, f32::from(cr) - 128.0);
            if !self.full_range {
                y = (y - 16.0) * (255.0 / 219.0);
                cb *= 255.0 / 224.0;
                cr *= 255.0 / 224.0;
            }
            let clamp = |v: f32| v.round().clamp(0.0, 255.0) as u8;
            [
                clamp(y + self.r_cr * cr),
                clamp(y + self.g_cb * cb + self.g_cr * cr),
                clamp(y + self.b_cb * cb),
            ]
        }
    }

    /// What the container says about the primary image.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Primary {
        /// A grid of tiles (iPhones write 512 × 512 tiles): the HEVC decoder
        /// then holds one tile's picture, not the image's.
        grid: bool,
        /// Its rotation (`irot`), as an EXIF orientation (1: none).
        rotation: u16,
        /// A mirror (`imir`) or a crop (`clap`): left to libheif.
        other_transforms: bool,
    }

    /// The boxes in `data`: (type, body).
    fn boxes(mut data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
        std::iter::from_fn(move || {
            let size = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
            let kind = data.get(4..8)?;
            let (start, size) = match size {
                1 => {
                    let large = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
                    (16, usize::try_from(large).ok()?)
                }
                0 => (8, data.len()),
                n => (8, n),
            };
            let body = data.get(start..size)?;
            data = data.get(size..)?;
            Some((kind, body))
        })
    }

    /// A big-endian number of 1 to 4 bytes.
    fn be(bytes: Option<&[u8]>) -> Option<u32> {
        bytes.map(|b| b.iter().fold(0u32, |v, &x| (v << 8) | u32::from(x)))
    }

    /// Read from the `meta` box (`pitm`, `iinf`, `iprp`); what cannot be
    /// read counts as "not a grid" and "libheif transforms".
    fn primary(bytes: &[u8]) -> Primary {
        let unknown = Primary {
            grid: false,
            rotation: 1,
            other_transforms: true,
        };
        let Some((_, meta)) = boxes(bytes).find(|(k, _)| *k == b"meta") else {
            return unknown;
        };
        let mut id = None;
        let mut grids = Vec::new();
        let mut properties: Vec<(&[u8], &[u8])> = Vec::new();
        let mut associations = Vec::new();
        for (kind, body) in boxes(meta.get(4..).unwrap_or(&[])) {
            match kind {
                b"pitm" => {
                    let len = if body.first() == Some(&0) { 2 } else { 4 };
                    id = be(body.get(4..4 + len));
                }
                b"iinf" => {
                    let skip = if body.first() == Some(&0) { 6 } else { 8 };
                    for (kind, infe) in boxes(body.get(skip..).unwrap_or(&[])).take(65_536) {
                        let (item, at) = match (kind, infe.first()) {
                            (b"infe", Some(2)) => (be(infe.get(4..6)), 8),
                            (b"infe", Some(3)) => (be(infe.get(4..8)), 10),
                            _ => continue,
                        };
                        if let (Some(item), Some(b"grid")) = (item, infe.get(at..at + 4)) {
                            grids.push(item);
                        }
                    }
                }
                b"iprp" => {
                    for (kind, body) in boxes(body) {
                        match kind {
                            b"ipco" => properties = boxes(body).take(65_536).collect(),
                            b"ipma" => associations.push(body),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        let Some(id) = id else { return unknown };
        // The primary's property indices (1-based into `ipco`), in order.
        let mut indices = Vec::new();
        for ipma in associations {
            let version = ipma.first().copied().unwrap_or(0);
            let wide = ipma.get(3).is_some_and(|flags| flags & 1 == 1);
            let (id_len, step) = (if version < 1 { 2 } else { 4 }, if wide { 2 } else { 1 });
            let Some(count) = be(ipma.get(4..8)) else {
                continue;
            };
            let mut at = 8;
            for _ in 0..count.min(65_536) {
                let item = be(ipma.get(at..at + id_len));
                let Some(&n) = ipma.get(at + id_len) else {
                    break;
                };
                at += id_len + 1;
                for a in 0..usize::from(n) {
                    let Some(v) = be(ipma.get(at + a * step..at + (a + 1) * step)) else {
                        break;
                    };
                    if item == Some(id) {
                        indices.push((v & if wide { 0x7FFF } else { 0x7F }) as usize);
                    }
                }
                at += usize::from(n) * step;
            }
        }
        let mut found = Primary {
            grid: grids.contains(&id),
            rotation: 1,
            other_transforms: false,
        };
        for index in indices {
            match index.checked_sub(1).and_then(|i| properties.get(i)) {
                // Anti-clockwise quarter turns that display the image.
                Some((b"irot", body)) => {
                    found.rotation = match body.first().map(|b| b & 3) {
                        Some(1) => 8,
                        Some(2) => 3,
                        Some(3) => 6,
                        _ => 1,
                    };
                }
                Some((b"imir" | b"clap", _)) => found.other_transforms = true,
                _ => {}
            }
        }
        found
    }

    fn corrupt(e: libheif_rs::HeifError) -> MediaError {
        MediaError::CorruptFile(e.to_string())
    }

    fn open<'a>(
        bytes: &'a [u8],
        limits: &Limits,
    ) -> Result<(HeifContext<'a>, u32, u32), MediaError> {
        let mut ctx = HeifContext::read_from_bytes(bytes).map_err(corrupt)?;
        // One thread, like every other path: the worker runs images in parallel.
        ctx.set_max_decoding_threads(1);
        let handle = ctx.primary_image_handle().map_err(corrupt)?;
        let (w, h) = (handle.width(), handle.height());
        check_dimensions(u64::from(w), u64::from(h), limits)?;
        Ok((ctx, w, h))
    }

    /// The decoded image (YCbCr, or planar RGB that libheif converted it
    /// to); for an image that is not a grid, the HEVC decoder's picture
    /// and the YCbCr image beside the conversion; a copy when libheif
    /// mirrors or crops it; an alpha plane.
    pub(crate) fn probe(bytes: &[u8], largest: u32, limits: &Limits) -> Result<Probe, MediaError> {
        let (ctx, w, h) = open(bytes, limits)?;
        let handle = ctx.primary_image_handle().map_err(corrupt)?;
        let pixels = u64::from(w) * u64::from(h);
        let ycbcr = ycbcr_tenths(bytes);
        let wide = handle.luma_bits_per_pixel() > 8 || handle.chroma_bits_per_pixel() > 8;
        let sample = if wide { 20 } else { 10 };
        let primary = primary(bytes);
        // Decoded (a grid's tiles are turned to RGB one by one), possibly
        // converted to planar RGB; rotated by libheif, a second copy.
        let mut tenths = ycbcr.max(3 * sample);
        if !primary.grid {
            tenths += ycbcr + ycbcr;
        }
        if primary.other_transforms {
            tenths += 3 * sample;
        }
        if handle.has_alpha_channel() {
            tenths += sample;
        }
        Ok(Probe::shrunk(
            w,
            h,
            largest,
            pixels * tenths / 10 + u64::from(w) * 3 * 4 + FIXED,
        ))
    }

    /// Row `y` of a plane as 8-bit samples (wider ones by their high bits).
    fn row<'p>(
        plane: &'p Plane<&[u8]>,
        y: usize,
        samples: usize,
    ) -> Result<Cow<'p, [u8]>, MediaError> {
        let short = || MediaError::CorruptFile("short image plane".to_owned());
        let wide = plane.storage_bits_per_pixel > 8;
        let len = if wide { samples * 2 } else { samples };
        let at = y.checked_mul(plane.stride).ok_or_else(short)?;
        let data = plane.data.get(at..at + len).ok_or_else(short)?;
        if !wide {
            return Ok(Cow::Borrowed(data));
        }
        let shift = u32::from(plane.bits_per_pixel.clamp(8, 16)) - 8;
        Ok(Cow::Owned(
            data.chunks_exact(2)
                .map(|s| (u16::from_le_bytes([s[0], s[1]]) >> shift) as u8)
                .collect(),
        ))
    }

    /// Composites `alpha` over white in place.
    fn over_white(rgb: &mut [u8], alpha: &[u8]) {
        for (px, &a) in rgb.chunks_exact_mut(3).zip(alpha) {
            let a = u16::from(a);
            for c in px {
                *c = ((u16::from(*c) * a + 255 * (255 - a) + 127) / 255) as u8;
            }
        }
    }

    /// The image as stored and the EXIF orientation that displays it: a
    /// rotation (`irot`) is left to the derivatives (libheif would rotate a
    /// full-size copy), a mirror or a crop is done by libheif.
    pub(crate) fn decode(
        bytes: &[u8],
        largest: u32,
        limits: &Limits,
    ) -> Result<(Rgb8, u32, u32, u16), MediaError> {
        let (ctx, _, _) = open(bytes, limits)?;
        let handle = ctx.primary_image_handle().map_err(corrupt)?;
        let primary = primary(bytes);
        let (options, rotation) = if primary.other_transforms {
            (None, 1)
        } else {
            let mut options = DecodingOptions::new()
                .ok_or_else(|| MediaError::Internal("libheif decoding options".to_owned()))?;
            options.set_ignore_transformations(true);
            (Some(options), primary.rotation)
        };
        let image = LibHeif::new()
            .decode(&handle, ColorSpace::Undefined, options)
            .map_err(corrupt)?;
        let matrix = image
            .color_profile_nclx()
            .or_else(|| handle.color_profile_nclx())
            .map_or(Some(Matrix::DEFAULT), |p| {
                Matrix::from_nclx(p.matrix_coefficients(), p.full_range_flag() != 0)
            });
        let planes = image.planes();
        let unsupported =
            |what: &str| MediaError::CorruptFile(format!("unsupported variant: {what}"));
        let (width, height) = (image.width(), image.height());
        let n = width as usize;
        let mut shrinker = Shrinker::new(width, height, largest);
        let mut rgb = Vec::with_capacity(n * 3);
        for y in 0..height as usize {
            rgb.clear();
            match (&planes.y, &planes.r, &planes.interleaved) {
                (Some(luma), _, _) => {
                    let matrix = matrix.ok_or_else(|| unsupported("YCbCr matrix"))?;
                    let l = row(luma, y, n)?;
                    match (&planes.cb, &planes.cr) {
                        (Some(cb), Some(cr)) => {
                            let dx = if cb.width < width { 2 } else { 1 };
                            let dy = if cb.height < height { 2 } else { 1 };
                            let m = n.div_ceil(dx);
                            let (b, r) = (row(cb, y / dy, m)?, row(cr, y / dy, m)?);
                            for (x, &v) in l.iter().enumerate() {
                                rgb.extend_from_slice(&matrix.rgb(v, b[x / dx], r[x / dx]));
                            }
                        }
                        _ => {
                            for &v in l.iter() {
                                rgb.extend_from_slice(&matrix.rgb(v, 128, 128));
                            }
                        }
                    }
                }
                (None, Some(red), _) => {
                    let (Some(green), Some(blue)) = (&planes.g, &planes.b) else {
                        return Err(unsupported("RGB without all its planes"));
                    };
                    let (r, g, b) = (row(red, y, n)?, row(green, y, n)?, row(blue, y, n)?);
                    for x in 0..n {
                        rgb.extend_from_slice(&[r[x], g[x], b[x]]);
                    }
                }
                (None, None, Some(interleaved)) => {
                    let layout = match image.color_space() {
                        Some(ColorSpace::Rgb(libheif_rs::RgbChroma::Rgb)) => Layout::Rgb,
                        Some(ColorSpace::Rgb(libheif_rs::RgbChroma::Rgba)) => Layout::Rgba,
                        other => return Err(unsupported(&format!("{other:?}"))),
                    };
                    let samples = row(interleaved, y, n * layout.channels())?;
                    row_to_rgb(layout, &samples, &mut rgb);
                }
                _ => return Err(unsupported("no image plane")),
            }
            if let Some(alpha) = &planes.a {
                over_white(&mut rgb, &row(alpha, y, n)?);
            }
            shrinker.push(&rgb)?;
        }
        Ok((shrinker.finish()?, width, height, rotation))
    }

    /// The primary image's EXIF block (without the 4-byte offset libheif
    /// keeps in front of it).
    pub(crate) fn exif_block(bytes: &[u8]) -> Option<Vec<u8>> {
        let ctx = HeifContext::read_from_bytes(bytes).ok()?;
        let handle: ImageHandle = ctx.primary_image_handle().ok()?;
        let mut ids = [0; 1];
        if handle.metadata_block_ids(&mut ids, b"Exif") == 0 {
            return None;
        }
        let data = handle.metadata(ids[0]).ok()?;
        let skip = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
        data.get(4usize.checked_add(skip)?..).map(<[u8]>::to_vec)
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used, clippy::expect_used)]
        use super::*;

        const PHOTOS: &str = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/photos/heic"
        );

        /// libheif's own RGB conversion of the whole image.
        fn libheif_rgb(bytes: &[u8]) -> Vec<u8> {
            use libheif_rs::{ColorSpace, LibHeif, RgbChroma};
            let ctx = libheif_rs::HeifContext::read_from_bytes(bytes).expect("context");
            let handle = ctx.primary_image_handle().expect("handle");
            let image = LibHeif::new()
                .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), None)
                .expect("decoded");
            let plane = image.planes().interleaved.expect("interleaved");
            let row = plane.width as usize * 3;
            (0..plane.height as usize)
                .flat_map(|y| plane.data[y * plane.stride..y * plane.stride + row].to_vec())
                .collect()
        }

        #[test]
        fn own_ycbcr_conversion_matches_libheif() {
            let mut checked = 0;
            for entry in std::fs::read_dir(PHOTOS).expect("the shared HEIC photos") {
                let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
                // No shrinking: the full image both ways.
                let (ours, _, _, rotation) =
                    decode(&bytes, u32::MAX, &Limits::default()).expect("decoded");
                let ours = crate::raster::orient(&ours, rotation);
                let theirs = libheif_rgb(&bytes);
                assert_eq!(ours.data.len(), theirs.len());
                let diff: u64 = ours
                    .data
                    .iter()
                    .zip(&theirs)
                    .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                    .sum();
                let mean = diff as f64 / theirs.len() as f64;
                assert!(mean < 1.0, "mean difference {mean}");
                checked += 1;
            }
            assert_eq!(checked, 3, "the three shared HEIC photos");
        }

        #[test]
        fn iphone_photos_are_rotated_grids() {
            let bytes = std::fs::read(format!("{PHOTOS}/iphone_13_pro_max.HEIC")).expect("read");
            let found = primary(&bytes);
            assert!(found.grid && !found.other_transforms, "{found:?}");
            assert_eq!(found.rotation, 6);
            assert!(primary(b"\0\0\0\x10ftypheic\0\0\0\0").other_transforms);
        }
    }
}
