//! Images without labels: what label-free model selection may see of the target domain.
//!
//! An [`Unlabelled`] set is made from a [`Dataset`] by dropping its labels
//! ([`Dataset::without_labels`]); nothing converts it back. Code that takes an `&Unlabelled` for the
//! target domain cannot read the target's labels, by type: passing a labelled split there does not
//! compile.
//!
//! ```compile_fail
//! fn score(target: &dtl_data::Unlabelled) -> usize { target.len() }
//! let labelled = dtl_data::Dataset::new(vec![0.0; 4], vec![0], (1, 2, 2), 1).unwrap();
//! score(&labelled); // a Dataset is not an Unlabelled set
//! ```

use candle_core::{Device, Tensor};

use crate::{Dataset, Error, Result};

/// `(C, H, W)` images, `f32` in `[0, 1]`, and no labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Unlabelled {
    pixels: Vec<f32>,
    shape: (usize, usize, usize),
    n: usize,
}

impl Dataset {
    /// The images alone: their labels are dropped.
    pub fn without_labels(&self) -> Unlabelled {
        Unlabelled {
            pixels: self.pixels().to_vec(),
            shape: self.image_shape(),
            n: self.len(),
        }
    }
}

impl Unlabelled {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The shape `(C, H, W)` of one image.
    pub fn image_shape(&self) -> (usize, usize, usize) {
        self.shape
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let per = self.shape.0 * self.shape.1 * self.shape.2;
        &self.pixels[i * per..(i + 1) * per]
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let per = self.shape.0 * self.shape.1 * self.shape.2;
        let mut pixels = Vec::with_capacity(indices.len() * per);
        for &i in indices {
            if i >= self.n {
                return Err(Error::Msg(format!(
                    "image {i} asked of an unlabelled set of {}",
                    self.n
                )));
            }
            pixels.extend_from_slice(self.image(i));
        }
        Ok(Self {
            pixels,
            shape: self.shape,
            n: indices.len(),
        })
    }

    /// Images `(B, C, H, W)` at `indices`, on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let sub = self.subset(indices)?;
        let (c, h, w) = self.shape;
        Ok(Tensor::from_vec(sub.pixels, (indices.len(), c, h, w), device)?)
    }

    /// Builds a set from raw pixels (`n` images of `shape`), for images that never had labels.
    pub fn new(pixels: Vec<f32>, shape: (usize, usize, usize)) -> Result<Self> {
        let per = shape.0 * shape.1 * shape.2;
        if per == 0 || !pixels.len().is_multiple_of(per) {
            return Err(Error::Msg(format!(
                "unlabelled set: {} pixels do not make whole images of shape {shape:?}",
                pixels.len()
            )));
        }
        Ok(Self {
            n: pixels.len() / per,
            pixels,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_labels_keeps_the_images_in_order() {
        let d = Dataset::new((0..12).map(|v| v as f32).collect(), vec![1, 0, 1], (1, 2, 2), 2).unwrap();
        let u = d.without_labels();
        assert_eq!(u.len(), 3);
        assert_eq!(u.image(2), d.image(2));
        let b = u.batch(&[2, 0], &Device::Cpu).unwrap();
        assert_eq!(b.dims(), &[2, 1, 2, 2]);
        assert_eq!(
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]
        );
        assert!(u.subset(&[3]).is_err());
    }
}
