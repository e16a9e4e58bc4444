//! Shared helpers: the test photos, JPEG structure checks, a hang guard.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub const PHOTOS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/photos"
);

pub fn photos(sub: &str) -> Vec<PathBuf> {
    let dir = Path::new(PHOTOS).join(sub);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the shared test photos are missing)",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no files in {}", dir.display());
    v
}

/// How long one `process` call may take before the test calls it hung: far
/// beyond any honest run, debug builds on a loaded machine included.
const HANG: Duration = Duration::from_secs(60);

/// Runs `f` on a thread of its own and returns what it returns; fails the
/// test if it panics or is still running after [`HANG`] (a decompression
/// bomb being decoded, a parser looping: the thread is left behind). A
/// guard against hangs, not a speed claim.
pub fn without_hanging<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after {HANG:?}"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(worker.join().expect_err("the worker panicked"))
        }
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The marker codes before the first SOS of a JPEG, checking its structure.
pub fn jpeg_markers(jpeg: &[u8]) -> Vec<u8> {
    assert!(jpeg.starts_with(&[0xFF, 0xD8]), "no SOI");
    assert!(jpeg.ends_with(&[0xFF, 0xD9]), "no EOI");
    let mut markers = Vec::new();
    let mut i = 2;
    loop {
        assert_eq!(jpeg[i], 0xFF, "bad marker at {i}");
        let m = jpeg[i + 1];
        markers.push(m);
        if m == 0xDA {
            break;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        i += 2 + len;
    }
    markers
}

/// A valid JPEG with no metadata segments; returns its decoded size.
pub fn assert_clean_jpeg(jpeg: &[u8]) -> (usize, usize) {
    let markers = jpeg_markers(jpeg);
    for m in markers {
        assert!(
            !matches!(m, 0xE1 | 0xE2 | 0xFE) && !(0xE3..=0xEF).contains(&m),
            "derivative has metadata segment 0xFF{m:02X}"
        );
    }
    let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("derivative decodes");
    (img.width, img.height)
}

/// 16×16 grayscale of a JPEG, for "looks alike" comparisons.
pub fn gray16(jpeg: &[u8]) -> Vec<f64> {
    let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::GRAY).expect("decodes");
    let (w, h) = (img.width, img.height);
    let mut out = vec![0.0; 256];
    for by in 0..16 {
        for bx in 0..16 {
            let (x0, x1) = (bx * w / 16, ((bx + 1) * w / 16).max(bx * w / 16 + 1));
            let (y0, y1) = (by * h / 16, ((by + 1) * h / 16).max(by * h / 16 + 1));
            let mut sum = 0.0;
            for y in y0..y1 {
                for x in x0..x1 {
                    sum += f64::from(img.pixels[y * img.pitch + x]);
                }
            }
            out[by * 16 + bx] = sum / ((x1 - x0) * (y1 - y0)) as f64;
        }
    }
    out
}

pub fn mean_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>() / a.len() as f64
}
