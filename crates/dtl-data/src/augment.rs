//! Training-time augmentation of loaded images: torchvision's `RandomResizedCrop` (Szegedy et al.
//! 2015, "Going deeper with convolutions": crops of 8%-100% of the area at aspect ratios 3/4-4/3,
//! the standard ImageNet training transform) and `RandomHorizontalFlip`, applied to a batch of
//! canvases as it is drawn.
//!
//! The random draws come from the caller's seeded stream, in image order, before the images are
//! transformed in parallel (rayon): a run repeats exactly whatever the number of threads.
//!
//! ```
//! use dtl_data::augment::Augment;
//! use rand::SeedableRng;
//!
//! // Crops of the whole area at the image's own aspect ratio (3 wide, 1 high): only flips remain.
//! let aug = Augment { crop_scale: (1.0, 1.0), crop_ratio: (3.0, 3.0), flip: true };
//! let mut px = vec![0.0, 0.5, 1.0];
//! aug.apply(&mut px, (1, 1, 3), &mut rand_chacha::ChaCha8Rng::seed_from_u64(0))?;
//! assert!(px == [0.0, 0.5, 1.0] || px == [1.0, 0.5, 0.0]);
//! # Ok::<(), dtl_data::Error>(())
//! ```

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::dataset::resize_bilinear;
use crate::{Error, Result};

/// A random resized crop and a random horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Range of the crop's share of the image's area (torchvision: 0.08 to 1); `(1, 1)`: no crop.
    pub crop_scale: (f64, f64),
    /// Range of the crop's aspect ratio width / height, drawn log-uniformly (torchvision: 3/4 to
    /// 4/3).
    pub crop_ratio: (f64, f64),
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Default for Augment {
    /// torchvision's defaults: area 0.08-1, ratio 3/4-4/3, flips.
    fn default() -> Self {
        Self {
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
        }
    }
}

/// One image's draw: the crop window `(top, left, height, width)` and whether to flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Draw {
    /// Crop window `(top, left, height, width)` on the canvas.
    pub window: (usize, usize, usize, usize),
    /// Mirror left-right.
    pub flip: bool,
}

impl Augment {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let (a, b) = self.crop_scale;
        if !(a > 0.0 && a <= b && b <= 1.0) {
            return Err(Error::Config {
                field: "augment.crop-scale".into(),
                message: format!("({a}, {b}) is not a range within (0, 1]"),
            });
        }
        let (r0, r1) = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(Error::Config {
                field: "augment.crop-ratio".into(),
                message: format!("({r0}, {r1}) is not a range of positive ratios"),
            });
        }
        Ok(())
    }

    /// The draw for one `h x w` image, as torchvision's `RandomResizedCrop.get_params`: up to 10
    /// tries for a window of the drawn area and ratio that fits, else the central crop at the
    /// nearest allowed ratio.
    pub fn draw(&self, h: usize, w: usize, rng: &mut ChaCha8Rng) -> Draw {
        let area = (h * w) as f64;
        let (lr0, lr1) = (self.crop_ratio.0.ln(), self.crop_ratio.1.ln());
        let mut window = None;
        for _ in 0..10 {
            let target = area * rng.random_range(self.crop_scale.0..=self.crop_scale.1);
            let ratio = if lr0 < lr1 {
                rng.random_range(lr0..lr1).exp()
            } else {
                lr0.exp()
            };
            let cw = (target * ratio).sqrt().round() as usize;
            let ch = (target / ratio).sqrt().round() as usize;
            if (1..=w).contains(&cw) && (1..=h).contains(&ch) {
                let top = rng.random_range(0..=h - ch);
                let left = rng.random_range(0..=w - cw);
                window = Some((top, left, ch, cw));
                break;
            }
        }
        let window = window.unwrap_or_else(|| {
            let in_ratio = w as f64 / h as f64;
            let (ch, cw) = if in_ratio < self.crop_ratio.0 {
                (((w as f64) / self.crop_ratio.0).round() as usize, w)
            } else if in_ratio > self.crop_ratio.1 {
                (h, ((h as f64) * self.crop_ratio.1).round() as usize)
            } else {
                (h, w)
            };
            let (ch, cw) = (ch.clamp(1, h), cw.clamp(1, w));
            ((h - ch) / 2, (w - cw) / 2, ch, cw)
        });
        let flip = self.flip && rng.random_bool(0.5);
        Draw { window, flip }
    }

    /// Augments a batch of images `pixels` (`n` images of `shape = (C, H, W)`, back to back) in
    /// place: each is cropped to its drawn window, resized back to `H x W` (bilinear) and maybe
    /// mirrored. Draws come from `rng` in image order.
    pub fn apply(
        &self,
        pixels: &mut [f32],
        shape: (usize, usize, usize),
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        self.validate()?;
        let (c, h, w) = shape;
        let per = c * h * w;
        if per == 0 || pixels.len() % per != 0 {
            return Err(Error::Msg(format!(
                "augment: {} values are not whole images of shape {shape:?}",
                pixels.len()
            )));
        }
        let draws: Vec<Draw> = (0..pixels.len() / per).map(|_| self.draw(h, w, rng)).collect();
        pixels
            .par_chunks_mut(per)
            .zip(draws.par_iter())
            .for_each(|(img, d)| apply_one(img, (c, h, w), d));
        Ok(())
    }
}

/// Crops, resizes and flips one image in place.
fn apply_one(img: &mut [f32], (_, h, w): (usize, usize, usize), d: &Draw) {
    let (top, left, ch, cw) = d.window;
    let full = (top, left, ch, cw) == (0, 0, h, w);
    for plane in img.chunks_mut(h * w) {
        if !full {
            let window: Vec<f32> = (top..top + ch)
                .flat_map(|r| plane[r * w + left..r * w + left + cw].iter().copied())
                .collect();
            resize_bilinear(&window, ch, cw, plane, h, w);
        }
        if d.flip {
            for row in plane.chunks_mut(w) {
                row.reverse();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Every draw's window lies inside the image with an area and ratio within the ranges (up to
    /// rounding), and flips come about half the time.
    #[test]
    fn draws_respect_the_ranges() {
        let aug = Augment::default();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut flips = 0;
        for _ in 0..2000 {
            let d = aug.draw(32, 48, &mut rng);
            let (t, l, ch, cw) = d.window;
            assert!(t + ch <= 32 && l + cw <= 48 && ch >= 1 && cw >= 1);
            let share = (ch * cw) as f64 / (32.0 * 48.0);
            assert!((0.08 * 0.8..=1.0).contains(&share), "{share}");
            flips += d.flip as usize;
        }
        assert!((900..1100).contains(&flips), "{flips}");
    }

    /// A full-size window with a flip mirrors each row; the same seed repeats the batch.
    #[test]
    fn flip_mirrors_and_seed_repeats() {
        let aug = Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip: true,
        };
        let base: Vec<f32> = (0..2 * 4 * 4).map(|i| i as f32).collect();
        let mut a = base.clone();
        aug.apply(&mut a, (2, 4, 4), &mut ChaCha8Rng::seed_from_u64(9))
            .unwrap();
        let row0 = &a[..4];
        assert!(row0 == [0.0, 1.0, 2.0, 3.0] || row0 == [3.0, 2.0, 1.0, 0.0]);
        // Both channels of the image get the same treatment.
        assert_eq!(row0[0] == 3.0, a[16] == 19.0);
        let mut b = base.clone();
        aug.apply(&mut b, (2, 4, 4), &mut ChaCha8Rng::seed_from_u64(9))
            .unwrap();
        assert_eq!(a, b);
    }

    /// A crop of the left half of an image whose left half is 0 and right half 1 is all 0.
    #[test]
    fn crop_reads_its_window() {
        let mut img: Vec<f32> = (0..8 * 8).map(|i| if i % 8 < 4 { 0.0 } else { 1.0 }).collect();
        apply_one(
            &mut img,
            (1, 8, 8),
            &Draw {
                window: (2, 0, 4, 4),
                flip: false,
            },
        );
        assert!(img.iter().all(|&v| v == 0.0));
        let err = Augment {
            crop_scale: (0.5, 2.0),
            ..Augment::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("augment.crop-scale"), "{err}");
    }
}
