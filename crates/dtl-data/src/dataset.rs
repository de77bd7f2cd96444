//! In-memory labelled image sets, resizing, and conversion to tensors.

use candle_core::{Device, Tensor};

use crate::formats::RawImages;
use crate::{Error, Result};

/// Labelled images in memory: `(C, H, W)` images, `f32` in `[0, 1]`, one `u32` label each.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pixels: Vec<f32>,
    labels: Vec<u32>,
    shape: (usize, usize, usize),
    num_classes: usize,
}

impl Dataset {
    /// Builds a data set, checking that pixels, labels and shape agree.
    pub fn new(
        pixels: Vec<f32>,
        labels: Vec<u32>,
        shape: (usize, usize, usize),
        num_classes: usize,
    ) -> Result<Self> {
        let per = shape.0 * shape.1 * shape.2;
        if per == 0 || pixels.len() != labels.len() * per {
            return Err(Error::Msg(format!(
                "data set: {} pixels do not make {} images of shape {shape:?}",
                pixels.len(),
                labels.len()
            )));
        }
        if let Some(i) = labels.iter().position(|&l| l as usize >= num_classes) {
            return Err(Error::Msg(format!(
                "data set: label {} of sample {i} is outside the {num_classes} classes 0..{num_classes}",
                labels[i]
            )));
        }
        Ok(Self {
            pixels,
            labels,
            shape,
            num_classes,
        })
    }

    /// A one-channel data set from decoded images and their labels.
    pub fn from_raw(raw: RawImages, labels: Vec<u32>, num_classes: usize) -> Result<Self> {
        if raw.n != labels.len() {
            return Err(Error::Msg(format!(
                "{} images but {} labels",
                raw.n,
                labels.len()
            )));
        }
        Self::new(raw.pixels, labels, (1, raw.height, raw.width), num_classes)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set has no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Image shape `(C, H, W)`.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        self.shape
    }

    /// Number of classes (labels are `0..num_classes`).
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// All pixels, image after image.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.shape.0 * self.shape.1 * self.shape.2;
        &self.pixels[i * per..(i + 1) * per]
    }

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// Pixels and labels of the samples at `indices`, in that order.
    fn gather(&self, indices: &[usize]) -> Result<(Vec<f32>, Vec<u32>)> {
        let per = self.shape.0 * self.shape.1 * self.shape.2;
        let mut pixels = Vec::with_capacity(indices.len() * per);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.len() {
                return Err(Error::Msg(format!(
                    "sample index {i} outside a data set of {}",
                    self.len()
                )));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok((pixels, labels))
    }

    /// This set's samples followed by `other`'s; the image shapes and class counts must agree.
    pub fn concat(&self, other: &Dataset) -> Result<Self> {
        if self.shape != other.shape || self.num_classes != other.num_classes {
            return Err(Error::Msg(format!(
                "cannot join data sets of images {:?} and {} classes with images {:?} and {} classes",
                self.shape, self.num_classes, other.shape, other.num_classes
            )));
        }
        let mut pixels = Vec::with_capacity(self.pixels.len() + other.pixels.len());
        pixels.extend_from_slice(&self.pixels);
        pixels.extend_from_slice(&other.pixels);
        let mut labels = self.labels.clone();
        labels.extend_from_slice(&other.labels);
        Ok(Self {
            pixels,
            labels,
            shape: self.shape,
            num_classes: self.num_classes,
        })
    }

    /// The samples at `indices`, in that order; an index out of range is an error.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let (pixels, labels) = self.gather(indices)?;
        Ok(Self {
            pixels,
            labels,
            shape: self.shape,
            num_classes: self.num_classes,
        })
    }

    /// The samples of `classes` only, relabelled by their position in `classes` (label
    /// `classes[k]` becomes `k`). Errors name an empty or repeated list and a class outside the set.
    pub fn with_classes(&self, classes: &[u32]) -> Result<Self> {
        check_classes(classes, self.num_classes)?;
        let keep: Vec<usize> = (0..self.len())
            .filter(|&i| classes.contains(&self.labels[i]))
            .collect();
        let (pixels, labels) = self.gather(&keep)?;
        let labels = labels
            .into_iter()
            .map(|l| classes.iter().position(|&c| c == l).expect("kept") as u32)
            .collect();
        Ok(Self {
            pixels,
            labels,
            shape: self.shape,
            num_classes: classes.len(),
        })
    }

    /// The same samples with label `l` renamed `map[l]`, in a set of `num_classes` classes.
    pub fn relabelled(&self, map: &[u32], num_classes: usize) -> Result<Self> {
        if map.len() != self.num_classes || map.iter().any(|&m| m as usize >= num_classes) {
            return Err(Error::Msg(format!(
                "relabelling {} classes with {map:?} into {num_classes} classes",
                self.num_classes
            )));
        }
        Ok(Self {
            pixels: self.pixels.clone(),
            labels: self.labels.iter().map(|&l| map[l as usize]).collect(),
            shape: self.shape,
            num_classes,
        })
    }

    /// Images `(B, C, H, W)` and labels `(B,)` of the samples at `indices`, on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let (pixels, labels) = self.gather(indices)?;
        let (c, h, w) = self.shape;
        let xs = Tensor::from_vec(pixels, (indices.len(), c, h, w), device)?;
        let ys = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((xs, ys))
    }

    /// [`Dataset::batch`] with each image augmented by `augment`, drawing from `rng`.
    pub fn batch_augmented(
        &self,
        indices: &[usize],
        device: &Device,
        augment: &crate::augment::Augment,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Result<(Tensor, Tensor)> {
        let (mut pixels, labels) = self.gather(indices)?;
        augment.apply(&mut pixels, self.shape, rng)?;
        let (c, h, w) = self.shape;
        let xs = Tensor::from_vec(pixels, (indices.len(), c, h, w), device)?;
        let ys = Tensor::from_vec(labels, indices.len(), device)?;
        Ok((xs, ys))
    }

    /// Places every image on a `size x size` canvas, following `placement`.
    pub fn placed(&self, size: usize, placement: Placement) -> Self {
        let (c, h, w) = self.shape;
        let (inner_h, inner_w) = match placement {
            Placement::Fill => (size, size),
            Placement::Box => {
                let b = ((size as f64) * 20.0 / 28.0).round() as usize;
                (b, b)
            }
        };
        if (h, w) == (size, size) && (inner_h, inner_w) == (size, size) {
            return self.clone();
        }
        let top = (size - inner_h) / 2;
        let left = (size - inner_w) / 2;
        let mut pixels = Vec::with_capacity(self.len() * c * size * size);
        let mut plane = vec![0f32; inner_h * inner_w];
        for i in 0..self.len() {
            let img = self.image(i);
            for ch in 0..c {
                resize_bilinear(
                    &img[ch * h * w..(ch + 1) * h * w],
                    h,
                    w,
                    &mut plane,
                    inner_h,
                    inner_w,
                );
                let start = pixels.len();
                pixels.resize(start + size * size, 0.0);
                for y in 0..inner_h {
                    let row = start + (top + y) * size + left;
                    pixels[row..row + inner_w].copy_from_slice(&plane[y * inner_w..(y + 1) * inner_w]);
                }
            }
        }
        Self {
            pixels,
            labels: self.labels.clone(),
            shape: (c, size, size),
            num_classes: self.num_classes,
        }
    }
}

/// How a domain's images are placed on the common canvas.
///
/// MNIST digits sit in a 20x20 box centred in 28x28 with a margin; USPS and optdigits digits fill
/// their frame. `Fill` resizes every image to the whole canvas; `Box` resizes images that fill their
/// frame into a centred box of 20/28 of the canvas and pads with background, as MNIST was made.
/// MNIST at its native size is left as it is in both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// Resize to the whole canvas.
    #[default]
    Fill,
    /// Resize into a centred box of 20/28 of the canvas and pad.
    Box,
}

impl Placement {
    /// The name used in configs and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            Placement::Fill => "fill",
            Placement::Box => "box",
        }
    }
}

/// In configs by [`Placement::as_str`]'s name, the one the command line parses.
impl serde::Serialize for Placement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Placement {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Placement {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fill" => Ok(Placement::Fill),
            "box" => Ok(Placement::Box),
            _ => Err(Error::Config {
                field: "placement".into(),
                message: format!("`{s}` is not one of fill, box"),
            }),
        }
    }
}

/// Bilinear resize of one `h x w` plane into `out` (`oh x ow`), with half-pixel centres and edge
/// clamping: the convention of PyTorch's `interpolate(mode="bilinear", align_corners=False)`
/// without antialiasing.
pub fn resize_bilinear(src: &[f32], h: usize, w: usize, out: &mut [f32], oh: usize, ow: usize) {
    debug_assert_eq!(src.len(), h * w);
    debug_assert_eq!(out.len(), oh * ow);
    let sy = h as f32 / oh as f32;
    let sx = w as f32 / ow as f32;
    let coord = |o: usize, scale: f32, n: usize| -> (usize, usize, f32) {
        let f = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (f.floor() as usize).min(n - 1);
        let i1 = (i0 + 1).min(n - 1);
        (i0, i1, f - i0 as f32)
    };
    for y in 0..oh {
        let (y0, y1, fy) = coord(y, sy, h);
        for x in 0..ow {
            let (x0, x1, fx) = coord(x, sx, w);
            let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let bot = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out[y * ow + x] = top * (1.0 - fy) + bot * fy;
        }
    }
}

/// Checks a class selection against `num_classes`.
pub(crate) fn check_classes(classes: &[u32], num_classes: usize) -> Result<()> {
    let bad = |m: String| {
        Err(Error::Config {
            field: "classes".into(),
            message: m,
        })
    };
    if classes.is_empty() {
        return bad("no class selected".into());
    }
    for (i, &c) in classes.iter().enumerate() {
        if c as usize >= num_classes {
            return bad(format!("class {c} outside 0..{num_classes}"));
        }
        if classes[..i].contains(&c) {
            return bad(format!("class {c} selected twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn class_selection_keeps_and_relabels_in_the_order_given() {
        // Labels 0..5 twice; pixel value = 10 * label + copy.
        let labels: Vec<u32> = (0..10).map(|i| i % 5).collect();
        let pixels: Vec<f32> = (0..10).map(|i| (10 * (i % 5) + i / 5) as f32).collect();
        let d = Dataset::new(pixels, labels, (1, 1, 1), 5).unwrap();
        let b = d.with_classes(&[3, 1]).unwrap();
        assert_eq!(b.num_classes(), 2);
        assert_eq!(b.labels(), &[1, 0, 1, 0]);
        assert_eq!(b.pixels(), &[10.0, 30.0, 11.0, 31.0]);
        for bad in [&[][..], &[1, 1], &[5]] {
            let err = d.with_classes(bad).unwrap_err().to_string();
            assert!(err.contains("classes"), "{err}");
        }
    }

    use super::*;

    #[test]
    fn resize_keeps_constants_and_linear_ramps() {
        let src = vec![0.3f32; 64];
        let mut out = vec![0f32; 28 * 28];
        resize_bilinear(&src, 8, 8, &mut out, 28, 28);
        assert!(out.iter().all(|&v| (v - 0.3).abs() < 1e-6));
        // A ramp v(x) = x over pixel centres is reproduced exactly away from the clamped border:
        // output centre x_o maps to (x_o + 0.5) * 8/28 - 0.5 in input coordinates.
        let ramp: Vec<f32> = (0..64).map(|i| (i % 8) as f32).collect();
        resize_bilinear(&ramp, 8, 8, &mut out, 28, 28);
        for x in 2..26 {
            let expect = (x as f32 + 0.5) * 8.0 / 28.0 - 0.5;
            assert!((out[5 * 28 + x] - expect).abs() < 1e-5, "x={x}");
        }
        // Identity at the same size.
        let mut same = vec![0f32; 64];
        resize_bilinear(&ramp, 8, 8, &mut same, 8, 8);
        assert_eq!(same, ramp);
    }

    #[test]
    fn box_placement_pads_with_background() {
        let ds = Dataset::new(vec![1.0; 16], vec![3], (1, 4, 4), 10).unwrap();
        let placed = ds.placed(28, Placement::Box);
        assert_eq!(placed.image_shape(), (1, 28, 28));
        let img = placed.image(0);
        let ink: f32 = img.iter().sum();
        assert_eq!(ink, 400.0);
        assert_eq!(img[0], 0.0);
        assert_eq!(img[4 * 28 + 4], 1.0);
        assert_eq!(img[3 * 28 + 4], 0.0);
    }

    #[test]
    fn bad_shapes_and_labels_are_errors() {
        assert!(Dataset::new(vec![0.0; 5], vec![0], (1, 2, 2), 10).is_err());
        let err = Dataset::new(vec![0.0; 4], vec![10], (1, 2, 2), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 10"), "{err}");
    }
}
