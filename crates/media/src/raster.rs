//! 8-bit RGB buffers: fitting, resizing (fast_image_resize, SIMD) and EXIF
//! orientation.

use fast_image_resize as fir;

use crate::MediaError;

/// Interleaved 8-bit sRGB, no padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rgb8 {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Rgb8 {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self, MediaError> {
        if data.len() != width as usize * height as usize * 3 {
            return Err(MediaError::Internal(
                "pixel buffer of the wrong size".to_owned(),
            ));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}

/// The size that fits `max_side` on the longest side, keeping the aspect
/// ratio; never larger than the source.
pub(crate) fn fit(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side || longest == 0 {
        return (width, height);
    }
    let scale = |side: u32| -> u32 {
        let v =
            (u64::from(side) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest);
        u32::try_from(v).unwrap_or(max_side).clamp(1, max_side)
    };
    if width >= height {
        (max_side, scale(height))
    } else {
        (scale(width), max_side)
    }
}

/// Lanczos3 resizing; keeps its scratch buffers between calls.
pub(crate) struct Resizer {
    inner: fir::Resizer,
    options: fir::ResizeOptions,
}

impl Resizer {
    pub fn new() -> Self {
        Self {
            inner: fir::Resizer::new(),
            options: fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3)),
        }
    }

    pub fn resize(&mut self, src: &Rgb8, width: u32, height: u32) -> Result<Rgb8, MediaError> {
        let err = |e: &dyn std::fmt::Display| MediaError::Internal(format!("resize: {e}"));
        // Typed to RGB8 rather than through `Resizer::resize`, which
        // dispatches on the pixel type at run time and so compiles every
        // pixel type's convolutions for every SIMD level: the typed call
        // makes this crate's release build about three times quicker, with
        // the same code running.
        let src_view = fir::images::TypedImageRef::<fir::pixels::U8x3>::from_buffer(
            src.width, src.height, &src.data,
        )
        .map_err(|e| err(&e))?;
        let mut out = vec![0u8; width as usize * height as usize * 3];
        let mut dst =
            fir::images::TypedImage::<fir::pixels::U8x3>::from_buffer(width, height, &mut out)
                .map_err(|e| err(&e))?;
        self.inner
            .resize_typed(&src_view, &mut dst, &self.options)
            .map_err(|e| err(&e))?;
        Rgb8::new(width, height, out)
    }
}

/// Applies EXIF orientation `o` (1..=8; anything else is 1).
pub(crate) fn orient(src: &Rgb8, o: u16) -> Rgb8 {
    if !(2..=8).contains(&o) {
        return src.clone();
    }
    let (w, h) = (src.width as usize, src.height as usize);
    let (ow, oh) = if o >= 5 { (h, w) } else { (w, h) };
    let mut out = vec![0u8; w * h * 3];
    for y in 0..oh {
        for x in 0..ow {
            // Where the output pixel (x, y) comes from in the stored image.
            let (sx, sy) = match o {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x), // 8
            };
            let s = (sy * w + sx) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&src.data[s..s + 3]);
        }
    }
    Rgb8 {
        width: ow as u32,
        height: oh as u32,
        data: out,
    }
}

/// How the 8-bit samples of a decoder's row are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    Gray,
    GrayAlpha,
    Rgb,
    Rgba,
    /// Ink amounts (0 = no ink), as TIFF stores them.
    Cmyk,
}

impl Layout {
    pub fn channels(self) -> usize {
        match self {
            Layout::Gray => 1,
            Layout::GrayAlpha => 2,
            Layout::Rgb => 3,
            Layout::Rgba | Layout::Cmyk => 4,
        }
    }
}

/// One row of `layout` samples as RGB in `out` (cleared first); alpha is
/// composited on white.
pub(crate) fn row_to_rgb(layout: Layout, src: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let on_white = |c: u8, a: u8| -> u8 {
        let (c, a) = (u16::from(c), u16::from(a));
        ((c * a + 255 * (255 - a) + 127) / 255) as u8
    };
    match layout {
        Layout::Rgb => out.extend_from_slice(src),
        Layout::Gray => {
            for &g in src {
                out.extend_from_slice(&[g, g, g]);
            }
        }
        Layout::GrayAlpha => {
            for px in src.chunks_exact(2) {
                let g = on_white(px[0], px[1]);
                out.extend_from_slice(&[g, g, g]);
            }
        }
        Layout::Rgba => {
            for px in src.chunks_exact(4) {
                out.extend_from_slice(&[
                    on_white(px[0], px[3]),
                    on_white(px[1], px[3]),
                    on_white(px[2], px[3]),
                ]);
            }
        }
        Layout::Cmyk => {
            for px in src.chunks_exact(4) {
                let k = 255 - u16::from(px[3]);
                for &c in &px[..3] {
                    out.push((((255 - u16::from(c)) * k + 127) / 255) as u8);
                }
            }
        }
    }
}

/// CMYK (as libjpeg-turbo returns it: Adobe's inverted convention, where
/// 255 means no ink) to RGB, the naive way without a profile.
pub(crate) fn cmyk_to_rgb(width: u32, height: u32, cmyk: &[u8]) -> Result<Rgb8, MediaError> {
    let mut out = Vec::with_capacity(width as usize * height as usize * 3);
    for px in cmyk.chunks_exact(4) {
        let k = u16::from(px[3]);
        for &c in &px[..3] {
            out.push(((u16::from(c) * k + 127) / 255) as u8);
        }
    }
    Rgb8::new(width, height, out)
}
