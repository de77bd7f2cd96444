//! Training-time augmentation of loaded images: torchvision's `RandomResizedCrop` (Szegedy et al.
//! 2015, "Going deeper with convolutions": crops of 8%-100% of the area at aspect ratios 3/4-4/3,
//! the standard ImageNet training transform) and `RandomHorizontalFlip`, and for digits the small
//! shifts and rotations the self-ensembling and SHOT digit experiments train with (French et al.
//! 2018, Liang et al. 2020): torchvision's `RandomCrop(size, padding)` (a shift of up to `pad`
//! pixels each way, zeros shifted in) and `RandomRotation(degrees)` (bilinear, zeros outside),
//! applied to a batch of canvases as it is drawn. [`Augment::digits`] is that preset.
//!
//! The random draws come from the caller's seeded stream, in image order, before the images are
//! transformed in parallel (rayon): a run repeats exactly whatever the number of threads.
//!
//! ```
//! use dtl_data::augment::Augment;
//! use rand::SeedableRng;
//!
//! // Crops of the whole area at the image's own aspect ratio (3 wide, 1 high): only flips remain.
//! let aug = Augment { crop_scale: (1.0, 1.0), crop_ratio: (3.0, 3.0), flip: true, ..Augment::default() };
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
    /// Shift by up to this many pixels each way (torchvision's `RandomCrop` with this padding);
    /// 0: none.
    pub pad: usize,
    /// Rotate by an angle drawn uniformly from `[-rotate, rotate]` degrees; 0: none.
    pub rotate: f64,
}

impl Default for Augment {
    /// torchvision's ImageNet defaults: area 0.08-1, ratio 3/4-4/3, flips; no shift or rotation.
    fn default() -> Self {
        Self {
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
            pad: 0,
            rotate: 0.0,
        }
    }
}

impl Augment {
    /// The digits preset: shifts of up to 2 pixels and rotations of up to 10 degrees, no resized
    /// crop (a digit cut in half is another digit) and no flip (a mirrored 2 is not a 2).
    pub fn digits() -> Self {
        Self {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip: false,
            pad: 2,
            rotate: 10.0,
        }
    }

    /// The faces preset, for small images of a centred subject (portraits, expression crops):
    /// mirror half the time (a mirrored face keeps its expression), scale jitter by crops of
    /// 80%-100% of the area at ratios 0.9-1.1 resized back (zooms of up to about 12%, where
    /// ImageNet's crops may keep 8% of a face), shifts of up to 2 pixels and rotations of up to
    /// 10 degrees (the small-shift, small-rotation, flip augmentation of facial-expression CNNs,
    /// e.g. Kim et al. 2016 on FER-2013).
    pub fn faces() -> Self {
        Self {
            crop_scale: (0.8, 1.0),
            crop_ratio: (0.9, 1.0 / 0.9),
            flip: true,
            pad: 2,
            rotate: 10.0,
        }
    }

    /// A preset by name: `imagenet` ([`Augment::default`]), `digits` ([`Augment::digits`]) or
    /// `faces` ([`Augment::faces`]).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "imagenet" => Ok(Self::default()),
            "digits" => Ok(Self::digits()),
            "faces" => Ok(Self::faces()),
            _ => Err(Error::Config {
                field: "augment".into(),
                message: format!("`{name}` is not a preset: imagenet, digits or faces"),
            }),
        }
    }
}

/// One image's draw: the crop window `(top, left, height, width)`, whether to flip, and the shift
/// and rotation applied after them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Crop window `(top, left, height, width)` on the canvas.
    pub window: (usize, usize, usize, usize),
    /// Mirror left-right.
    pub flip: bool,
    /// Shift `(down, right)` in pixels.
    pub shift: (i64, i64),
    /// Rotation in degrees (counter-clockwise).
    pub angle: f64,
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
        if self.pad > dtl_core::MAX_IMAGE_SIDE {
            return Err(Error::Config {
                field: "augment.pad".into(),
                message: format!(
                    "{} is above the largest image side {}",
                    self.pad,
                    dtl_core::MAX_IMAGE_SIDE
                ),
            });
        }
        if !(0.0..=180.0).contains(&self.rotate) {
            return Err(Error::Config {
                field: "augment.rotate".into(),
                message: format!("{} is not an angle in [0, 180] degrees", self.rotate),
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
        // Drawn only when asked for, so that runs without them keep their streams.
        let shift = if self.pad > 0 {
            let p = self.pad as i64;
            (rng.random_range(-p..=p), rng.random_range(-p..=p))
        } else {
            (0, 0)
        };
        let angle = if self.rotate > 0.0 {
            rng.random_range(-self.rotate..=self.rotate)
        } else {
            0.0
        };
        Draw {
            window,
            flip,
            shift,
            angle,
        }
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
        if per == 0 || !pixels.len().is_multiple_of(per) {
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
        if d.shift != (0, 0) || d.angle != 0.0 {
            let moved = shift_rotate(plane, h, w, d.shift, d.angle);
            plane.copy_from_slice(&moved);
        }
    }
}

/// The `h x w` plane shifted by `(down, right)` pixels and rotated by `angle` degrees
/// counter-clockwise about its centre, sampled bilinearly, zero outside: output pixel `(y, x)`
/// reads the input at `R(angle)^-1 ((y, x) - c) + c - shift`.
fn shift_rotate(plane: &[f32], h: usize, w: usize, (dy, dx): (i64, i64), angle: f64) -> Vec<f32> {
    let (s, c) = angle.to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    let at = |y: i64, x: i64| -> f64 {
        if y < 0 || x < 0 || y >= h as i64 || x >= w as i64 {
            0.0
        } else {
            plane[y as usize * w + x as usize] as f64
        }
    };
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let (ry, rx) = (y as f64 - cy, x as f64 - cx);
            // Inverse rotation (image rows point down: a counter-clockwise turn on screen).
            let sy = c * ry + s * rx + cy - dy as f64;
            let sx = -s * ry + c * rx + cx - dx as f64;
            let (y0, x0) = (sy.floor(), sx.floor());
            let (fy, fx) = (sy - y0, sx - x0);
            let (y0, x0) = (y0 as i64, x0 as i64);
            let v = at(y0, x0) * (1.0 - fy) * (1.0 - fx)
                + at(y0, x0 + 1) * (1.0 - fy) * fx
                + at(y0 + 1, x0) * fy * (1.0 - fx)
                + at(y0 + 1, x0 + 1) * fy * fx;
            out[y * w + x] = v as f32;
        }
    }
    out
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

    /// The faces preset keeps most of the face: every crop holds at least 80% of the area (up to
    /// rounding) at a ratio within 0.9-1.1 of the 48x48 canvas, shifts stay within 2 pixels,
    /// angles within 10 degrees, and about half the draws mirror.
    #[test]
    fn the_faces_preset_keeps_most_of_the_face() {
        let aug = Augment::preset("faces").unwrap();
        aug.validate().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut flips = 0;
        for _ in 0..2000 {
            let d = aug.draw(48, 48, &mut rng);
            let (t, l, ch, cw) = d.window;
            assert!(t + ch <= 48 && l + cw <= 48);
            let share = (ch * cw) as f64 / (48.0 * 48.0);
            assert!((0.76..=1.0).contains(&share), "{share}");
            let ratio = cw as f64 / ch as f64;
            assert!((0.86..=1.16).contains(&ratio), "{ratio}");
            assert!(d.shift.0.abs() <= 2 && d.shift.1.abs() <= 2);
            assert!(d.angle.abs() <= 10.0);
            flips += d.flip as usize;
        }
        assert!((900..1100).contains(&flips), "{flips}");
        assert!(Augment::preset("portraits")
            .unwrap_err()
            .to_string()
            .contains("faces"));
    }

    /// A full-size window with a flip mirrors each row; the same seed repeats the batch.
    #[test]
    fn flip_mirrors_and_seed_repeats() {
        let aug = Augment {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            flip: true,
            ..Augment::default()
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
                shift: (0, 0),
                angle: 0.0,
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

    /// A shift moves the picture by whole pixels with zeros shifted in; a quarter turn permutes
    /// the pixels (a 3x3 turned counter-clockwise); the digits preset draws within its ranges and
    /// leaves the ImageNet draws' stream as it was.
    #[test]
    fn shifts_and_rotations_move_pixels_where_they_should() {
        let img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let shifted = shift_rotate(&img, 3, 3, (1, -1), 0.0);
        assert_eq!(shifted, [0.0, 0.0, 0.0, 2.0, 3.0, 0.0, 5.0, 6.0, 0.0]);
        let turned = shift_rotate(&img, 3, 3, (0, 0), 90.0);
        let expected = [3.0, 6.0, 9.0, 2.0, 5.0, 8.0, 1.0, 4.0, 7.0];
        for (a, b) in turned.iter().zip(expected) {
            assert!((a - b).abs() < 1e-5, "{turned:?}");
        }
        let aug = Augment::digits();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for _ in 0..500 {
            let d = aug.draw(28, 28, &mut rng);
            assert_eq!(d.window, (0, 0, 28, 28));
            assert!(!d.flip && d.shift.0.abs() <= 2 && d.shift.1.abs() <= 2 && d.angle.abs() <= 10.0);
        }
        // Without shifts or rotations nothing more is drawn.
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
        Augment::default().draw(28, 28, &mut a);
        Augment::default().draw(28, 28, &mut b);
        assert_eq!(a.random::<u64>(), b.random::<u64>());
        assert!(Augment {
            rotate: 200.0,
            ..Augment::digits()
        }
        .validate()
        .unwrap_err()
        .to_string()
        .contains("augment.rotate"));
        assert!(Augment::preset("photos")
            .unwrap_err()
            .to_string()
            .contains("imagenet, digits or faces"));
    }
}
