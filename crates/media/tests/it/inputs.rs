//! Generated inputs: sniffing, every format, bombs and garbage.

use crate::common;

use std::io::Cursor;

use buildpeer_media::{DerivativeSpec, Format, Limits, MediaError, default_sizes, process, sniff};
use common::*;

fn encode(img: &image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn gradient(w: u32, h: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x * 255 / w) as u8, (y * 255 / h) as u8, 128, 255])
    })
}

fn small_jpeg() -> Vec<u8> {
    read(&std::path::Path::new(PHOTOS).join("jpeg/orientation/landscape_1.jpg"))
}

/// Fails without panicking or hanging, with the expected code (for the
/// bombs, a code only the checks before decoding give: how fast is for
/// benchmarks to say).
fn fails_fast(bytes: &[u8], code: &str) -> MediaError {
    let bytes = bytes.to_vec();
    let e =
        without_hanging(move || process(&bytes, &default_sizes(), &Limits::default())).unwrap_err();
    assert_eq!(e.code(), code, "{e}");
    assert!(!e.is_retryable());
    assert!(!e.to_string().is_empty());
    e
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A 50,000 × 50,000 RGB PNG of a few KB (its IDAT holds a few rows of zeros).
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&50_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &ihdr);
    let zeros = vec![0u8; 1 << 20];
    png_chunk(
        &mut png,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&zeros, 9),
    );
    png_chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn sniffs_every_format_from_content() {
    let img = image::DynamicImage::ImageRgba8(gradient(32, 16));
    let cases: Vec<(Vec<u8>, Option<Format>)> = vec![
        (small_jpeg(), Some(Format::Jpeg)),
        (encode(&img, image::ImageFormat::Png), Some(Format::Png)),
        (encode(&img, image::ImageFormat::Gif), Some(Format::Gif)),
        (encode(&img, image::ImageFormat::WebP), Some(Format::Webp)),
        (encode(&img, image::ImageFormat::Tiff), Some(Format::Tiff)),
        (b"MM\0*\0\0\0\x08".to_vec(), Some(Format::Tiff)),
        (
            read(&std::path::Path::new(PHOTOS).join("heic/IMG_5195.HEIC")),
            Some(Format::Heif),
        ),
        (
            b"\0\0\0\x18ftypmif1\0\0\0\0mif1heic".to_vec(),
            Some(Format::Heif),
        ),
        (b"\0\0\0\x18ftypavif\0\0\0\0mif1avif".to_vec(), None),
        (b"\0\0\0\x18ftypmif1\0\0\0\0mif1avif".to_vec(), None),
        (b"\0\0\0\x18ftypisom\0\0\0\0isommp41".to_vec(), None),
        (b"%PDF-1.7\n".to_vec(), Some(Format::Pdf)),
        (b"\xEF\xBB\xBF%PDF-1.4\n".to_vec(), Some(Format::Pdf)),
        (b"BM\x36\0\0\0".to_vec(), None),
        (
            b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            None,
        ),
        (b"<html>%PDF-".to_vec(), Some(Format::Pdf)),
        (b"\xFF\xD8".to_vec(), None),
        (Vec::new(), None),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        assert_eq!(sniff(bytes), *want, "case {i}");
    }
    assert_eq!(Format::Jpeg.mime(), "image/jpeg");
    assert_eq!(Format::Heif.mime(), "image/heic");
    assert_eq!(Format::Pdf.mime(), "application/pdf");
    assert_eq!(Format::Webp.mime(), "image/webp");
}

#[test]
fn png_webp_gif_tiff_make_derivatives() {
    let img = image::DynamicImage::ImageRgba8(gradient(600, 300));
    for (format, want) in [
        (image::ImageFormat::Png, Format::Png),
        (image::ImageFormat::WebP, Format::Webp),
        (image::ImageFormat::Gif, Format::Gif),
        (image::ImageFormat::Tiff, Format::Tiff),
    ] {
        let p = process(&encode(&img, format), &default_sizes(), &Limits::default()).unwrap();
        assert_eq!(p.format, want);
        assert_eq!(
            (p.metadata.width, p.metadata.height),
            (Some(600), Some(300))
        );
        let sizes: Vec<(u32, u32)> = p.derivatives.iter().map(|d| (d.width, d.height)).collect();
        // Never upscaled: the preview keeps the source size.
        assert_eq!(sizes, [(256, 128), (600, 300)], "{want:?}");
        for d in &p.derivatives {
            assert_clean_jpeg(&d.jpeg);
        }
    }
}

#[test]
fn sixteen_bit_gray_and_alpha_become_rgb() {
    let luma16 = image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(300, 500, |x, _| {
        image::Luma([(x * 200) as u16])
    }));
    let p = process(
        &encode(&luma16, image::ImageFormat::Png),
        &default_sizes(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        (p.derivatives[0].width, p.derivatives[0].height),
        (154, 256)
    );
    // Fully transparent pixels come out white, not black.
    let clear = image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
        64,
        64,
        image::Rgba([0, 0, 0, 0]),
    ));
    let p = process(
        &encode(&clear, image::ImageFormat::Png),
        &default_sizes(),
        &Limits::default(),
    )
    .unwrap();
    let g = gray16(&p.derivatives[0].jpeg);
    assert!(g.iter().all(|&v| v > 245.0), "{g:?}");
}

#[test]
fn custom_sizes_and_invalid_sizes() {
    let sizes = vec![
        DerivativeSpec::new("a", 100),
        DerivativeSpec::new("b", 50),
        DerivativeSpec::new("c", 400),
    ];
    let p = process(&small_jpeg(), &sizes, &Limits::default()).unwrap();
    let got: Vec<(&str, u32)> = p
        .derivatives
        .iter()
        .map(|d| (d.name.as_str(), d.width.max(d.height)))
        .collect();
    assert_eq!(got, [("a", 100), ("b", 50), ("c", 400)]);
    let e = process(
        &small_jpeg(),
        &[DerivativeSpec::new("z", 0)],
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "invalid_sizes");
    // No sizes: metadata only.
    let p = process(&small_jpeg(), &[], &Limits::default()).unwrap();
    assert!(p.derivatives.is_empty() && p.metadata.width.is_some());
}

#[test]
fn png_bomb_fails_before_allocating() {
    let bomb = png_bomb();
    assert!(bomb.len() < 8 * 1024, "{} bytes", bomb.len());
    fails_fast(&bomb, "image_too_large");
}

#[test]
fn jpeg_header_claiming_60000_square_fails_before_allocating() {
    let mut jpeg = small_jpeg();
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xFF && (0xC0..=0xC2).contains(&w[1]))
        .expect("SOF");
    jpeg[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
    fails_fast(&jpeg, "image_too_large");
}

#[test]
fn lower_limits_are_honoured() {
    let tight = Limits {
        max_pixels: 1000,
        ..Limits::default()
    };
    assert_eq!(
        process(&small_jpeg(), &default_sizes(), &tight)
            .unwrap_err()
            .code(),
        "image_too_large"
    );
    let tight = Limits {
        max_side: 100,
        ..Limits::default()
    };
    assert_eq!(
        process(&small_jpeg(), &default_sizes(), &tight)
            .unwrap_err()
            .code(),
        "image_too_large"
    );
    let tight = Limits {
        max_alloc: 1000,
        ..Limits::default()
    };
    assert_eq!(
        process(&small_jpeg(), &default_sizes(), &tight)
            .unwrap_err()
            .code(),
        "limit_exceeded"
    );
    let png = encode(
        &image::DynamicImage::ImageRgba8(gradient(600, 300)),
        image::ImageFormat::Png,
    );
    assert_eq!(
        process(&png, &default_sizes(), &tight).unwrap_err().code(),
        "limit_exceeded"
    );
}

#[test]
fn truncated_garbage_and_empty_input_fail_cleanly() {
    let jpeg = small_jpeg();
    fails_fast(&jpeg[..100], "corrupt_file"); // inside the header
    fails_fast(&[], "unsupported_type");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fails_fast(&random, "unsupported_type");
    // Random bytes behind each magic number: an error or a picture, never a panic.
    let png = encode(
        &image::DynamicImage::ImageRgba8(gradient(40, 40)),
        image::ImageFormat::Png,
    );
    for magic in [
        &jpeg[..4],
        &png[..8],
        b"GIF89a".as_slice(),
        b"RIFF\0\0\0\0WEBP",
        b"II*\0",
        b"%PDF-1.4",
    ] {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&random[..4096]);
        let _ = without_hanging(move || process(&bytes, &default_sizes(), &Limits::default()));
    }
    // A JPEG cut anywhere after its header: a (partly grey) picture or corrupt_file.
    for cut in [jpeg.len() / 4, jpeg.len() / 2, jpeg.len() - 10] {
        match process(&jpeg[..cut], &default_sizes(), &Limits::default()) {
            Ok(p) => assert_eq!(p.derivatives.len(), 2),
            Err(e) => assert_eq!(e.code(), "corrupt_file"),
        }
    }
    // Each truncated prefix of a PNG fails cleanly.
    for cut in [10, 40, png.len() / 2, png.len() - 13] {
        let e = process(&png[..cut], &default_sizes(), &Limits::default()).unwrap_err();
        assert_eq!(e.code(), "corrupt_file", "cut at {cut}: {e}");
    }
}

fn simple_pdf(pages: usize) -> Vec<u8> {
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
    let mut s = format!(
        "%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [{}] /Count {pages} /Resources << /Font << >> >> >>\nendobj\n",
        kids.join(" ")
    );
    for i in 0..pages {
        s += &format!(
            "{} 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\nendobj\n",
            i + 3
        );
    }
    s += "trailer\n<< /Root 1 0 R >>\n%%EOF\n";
    s.into_bytes()
}

#[test]
fn pdf_page_count_without_derivatives() {
    let p = process(&simple_pdf(3), &default_sizes(), &Limits::default()).unwrap();
    assert_eq!(p.format, Format::Pdf);
    assert_eq!(p.metadata.page_count, Some(3));
    assert!(p.derivatives.is_empty());

    // A page tree whose counts say 12 and hold no page: no count (a count
    // is never taken from `/Count`, only from the pages reached).
    let tree = b"%PDF-1.7\n2 0 obj\n<</Type/Pages/Kids[4 0 R 5 0 R]/Count 12>>\nendobj\n\
        4 0 obj\n<</Type/Pages/Parent 2 0 R/Kids[]/Count 7>>\nendobj\n\
        5 0 obj\n<</Type/Pages/Parent 2 0 R/Kids[]/Count 5>>\nendobj\n%%EOF\n";
    assert_eq!(
        process(tree, &[], &Limits::default())
            .unwrap()
            .metadata
            .page_count,
        None
    );

    // PDF 1.5 object streams: the page tree is compressed, and its one page
    // is counted whatever `/Count` claims.
    let objs =
        b"2 0 3 43\n<< /Type /Pages /Kids [3 0 R] /Count 42 >>\n<< /Type /Page /Parent 2 0 R >>";
    let z = miniz_oxide::deflate::compress_to_vec_zlib(objs, 6);
    let mut pdf = format!(
        "%PDF-1.5\n7 0 obj\n<< /Type /ObjStm /N 2 /First 9 /Filter /FlateDecode /Length {} >>\nstream\n",
        z.len()
    )
    .into_bytes();
    pdf.extend_from_slice(&z);
    pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
    assert_eq!(
        process(&pdf, &[], &Limits::default())
            .unwrap()
            .metadata
            .page_count,
        Some(1)
    );

    // No page tree at all: no count, still a PDF.
    let p = process(b"%PDF-1.4\ngarbage", &[], &Limits::default()).unwrap();
    assert_eq!(p.metadata.page_count, None);

    // A flood of unterminated dictionaries stays fast.
    let mut flood = b"%PDF-1.4\n".to_vec();
    for _ in 0..200_000 {
        flood.extend_from_slice(b"<< /Type /Pages /Count 1 ");
    }
    without_hanging(move || process(&flood, &[], &Limits::default())).unwrap();
}
