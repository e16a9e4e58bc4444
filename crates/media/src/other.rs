//! PNG, WebP, GIF (first frame) and TIFF through the `image` crate, with
//! explicit limits (its default sets no width/height cap).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::raster::{self, Rgb8};
use crate::{Format, Limits, MediaError, check_alloc, check_dimensions};

fn map_err(e: image::ImageError) -> MediaError {
    match e {
        image::ImageError::Limits(l) => MediaError::LimitExceeded(l.to_string()),
        image::ImageError::Unsupported(u) => {
            MediaError::CorruptFile(format!("unsupported variant: {u}"))
        }
        other => MediaError::CorruptFile(other.to_string()),
    }
}

pub(crate) fn decode(
    bytes: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<(Rgb8, u32, u32), MediaError> {
    let image_format = match format {
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
        Format::Gif => ImageFormat::Gif,
        Format::Tiff => ImageFormat::Tiff,
        _ => return Err(MediaError::UnsupportedType),
    };
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    image_limits.max_alloc = Some(limits.max_alloc);

    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    reader.limits(image_limits);
    // The header first: dimensions and buffer size before any pixel memory.
    let decoder = reader.into_decoder().map_err(map_err)?;
    let (w, h) = decoder.dimensions();
    check_dimensions(u64::from(w), u64::from(h), limits)?;
    check_alloc(
        u64::from(w),
        u64::from(h),
        decoder.color_type().bytes_per_pixel().into(),
        limits,
    )?;

    let img = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    let rgb = if img.color().has_alpha() {
        let rgba = img.into_rgba8();
        raster::flatten_rgba(w, h, rgba.as_raw())?
    } else {
        Rgb8::new(w, h, img.into_rgb8().into_raw())?
    };
    Ok((rgb, w, h))
}
