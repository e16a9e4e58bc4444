//! Row-by-row block shrinking: the first, integer step of making a small
//! image from a large one, done while the decoder produces rows so the full
//! image never exists in memory.
//!
//! The source is cut into `k × k` blocks and each becomes one pixel, their
//! mean (a box filter: blocks never overlap, so every source pixel counts
//! once, and the accumulator is one output row of `u32`). `k` leaves the
//! result at least 1.5 times the largest derivative (JPEG's DCT scaling
//! leaves at least 1), and the Lanczos3 resize that follows does the rest:
//! the same split as libvips (`shrink`, then `reduce`), whose thumbnails
//! are the benchmark. Blocks at the right and
//! bottom edges may be partial and are averaged over the pixels they have.

use crate::MediaError;
use crate::raster::{Rgb8, fit};

/// The block side for a `width × height` source whose largest derivative
/// fits `largest`: the result stays at least 1.5 times the derivative.
pub(crate) fn factor(width: u32, height: u32, largest: u32) -> u32 {
    let (tw, th) = fit(width, height, largest.max(1));
    let k = |side: u32, target: u32| u64::from(side) * 2 / (3 * u64::from(target.max(1)));
    u32::try_from(k(width, tw).min(k(height, th)))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// The size of the shrunk image.
pub(crate) fn shrunk_size(width: u32, height: u32, largest: u32) -> (u32, u32) {
    let k = factor(width, height, largest);
    (width.div_ceil(k), height.div_ceil(k))
}

/// Takes RGB rows of the source, top to bottom, and keeps only the shrunk
/// image and one accumulator row.
pub(crate) struct Shrinker {
    width: u32,
    height: u32,
    k: u32,
    out_width: u32,
    acc: Vec<u32>,
    /// Source rows in the current block row.
    rows_in_block: u32,
    rows_seen: u32,
    out: Vec<u8>,
}

impl Shrinker {
    pub fn new(width: u32, height: u32, largest: u32) -> Self {
        let k = factor(width, height, largest);
        let (out_width, out_height) = (width.div_ceil(k), height.div_ceil(k));
        let acc = if k == 1 {
            Vec::new()
        } else {
            vec![0; out_width as usize * 3]
        };
        Self {
            width,
            height,
            k,
            out_width,
            acc,
            rows_in_block: 0,
            rows_seen: 0,
            out: Vec::with_capacity(out_width as usize * out_height as usize * 3),
        }
    }

    /// One source row of `width` RGB pixels. Rows past the height are ignored.
    pub fn push(&mut self, row: &[u8]) -> Result<(), MediaError> {
        if self.rows_seen >= self.height {
            return Ok(());
        }
        if row.len() != self.width as usize * 3 {
            return Err(MediaError::Internal("a row of the wrong length".to_owned()));
        }
        self.rows_seen += 1;
        if self.k == 1 {
            self.out.extend_from_slice(row);
            return Ok(());
        }
        let k = self.k as usize;
        for (block, pixels) in row.chunks(k * 3).enumerate() {
            let acc = &mut self.acc[block * 3..block * 3 + 3];
            for px in pixels.chunks_exact(3) {
                acc[0] += u32::from(px[0]);
                acc[1] += u32::from(px[1]);
                acc[2] += u32::from(px[2]);
            }
        }
        self.rows_in_block += 1;
        if self.rows_in_block == self.k || self.rows_seen == self.height {
            self.emit();
        }
        Ok(())
    }

    /// A row of one colour (a GIF's background, say).
    pub fn push_fill(&mut self, rgb: [u8; 3], row: &mut Vec<u8>) -> Result<(), MediaError> {
        row.clear();
        for _ in 0..self.width {
            row.extend_from_slice(&rgb);
        }
        self.push(row)
    }

    fn emit(&mut self) {
        let k = self.k;
        let rows = self.rows_in_block;
        for block in 0..self.out_width {
            let cols = (self.width - block * k).min(k);
            let n = cols * rows;
            for c in 0..3 {
                let i = block as usize * 3 + c;
                let v = (self.acc[i] + n / 2) / n;
                self.out.push(v as u8);
                self.acc[i] = 0;
            }
        }
        self.rows_in_block = 0;
    }

    /// The shrunk image; a source that ended early is corrupt.
    pub fn finish(self) -> Result<Rgb8, MediaError> {
        if self.rows_seen < self.height {
            return Err(MediaError::CorruptFile(format!(
                "the image ends after {} of its {} rows",
                self.rows_seen, self.height
            )));
        }
        Rgb8::new(self.out_width, self.height.div_ceil(self.k), self.out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn factor_keeps_one_and_a_half_times_the_derivative() {
        assert_eq!(factor(10_000, 10_000, 1280), 5);
        assert_eq!(factor(4032, 3024, 1280), 2);
        assert_eq!(factor(2000, 1500, 1280), 1);
        assert_eq!(factor(100, 100, 256), 1);
        assert_eq!(factor(65_535, 1, 256), 1);
        let (w, h) = shrunk_size(10_000, 7_500, 1280);
        assert!(w >= 1920 && h >= 1440, "{w}x{h}");
    }

    #[test]
    fn averages_blocks_including_partial_edges() {
        // 5 × 3 source, k = 2 when the target is 1 px: 3 × 2 blocks.
        let mut s = Shrinker::new(5, 3, 1);
        assert_eq!(factor(5, 3, 1), 2);
        assert_eq!(s.k, 2);
        for y in 0..3u8 {
            let row: Vec<u8> = (0..5u8).flat_map(|x| [x * 10 + y, 0, 255]).collect();
            s.push(&row).expect("row");
        }
        let out = s.finish().expect("finished");
        assert_eq!((out.width, out.height), (3, 2));
        // Block (0,0): x 0..2, y 0..2 → mean of 0,10,1,11 = 5.5 → 6.
        assert_eq!(&out.data[0..3], &[6, 0, 255]);
        // Block (2,1): x 4, y 2 → 42.
        assert_eq!(&out.data[15..18], &[42, 0, 255]);
    }

    #[test]
    fn a_short_image_is_corrupt() {
        let mut s = Shrinker::new(4, 4, 1);
        s.push(&[0; 12]).expect("row");
        assert_eq!(
            s.finish().map(|_| ()).map_err(|e| e.code()),
            Err("corrupt_file")
        );
    }
}
