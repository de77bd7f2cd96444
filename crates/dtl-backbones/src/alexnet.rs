//! AlexNet (Krizhevsky et al. 2012, "ImageNet classification with deep convolutional neural
//! networks") in torchvision's single-tower layout (Krizhevsky 2014, "One weird trick for
//! parallelizing convolutional neural networks"): five convolutions and three fully connected
//! layers, the 8-layer shape whose `fc6` and `fc7` DDC adapts (Tzeng et al. 2014, "Deep domain
//! confusion") and along which Yosinski et al. 2014 counted transferred layers.
//!
//! dtl names the layers as those papers do: `conv1` .. `conv5`, `fc6`, `fc7` (and the classifier's
//! `head`, the papers' `fc8`); [`crate::BackboneKind::translate_external`] maps torchvision's
//! `features.0` .. `classifier.6` onto them when a published checkpoint is loaded.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dtl_core::Backbone;
use dtl_ops::Kernels;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::init::{check_input, dropout, uniform_param, Param};
use crate::{Error, Result};

/// Convolutions of torchvision's AlexNet: `(filters, kernel, stride, padding, max-pool after)`.
const CONVS: [(usize, usize, usize, usize, bool); 5] = [
    (64, 11, 4, 2, true),
    (192, 5, 1, 2, true),
    (384, 3, 1, 1, false),
    (256, 3, 1, 1, false),
    (256, 3, 1, 1, true),
];

/// Side of the grid the last feature map is average-pooled to before `fc6`.
const POOLED: usize = 6;

/// Settings of an [`AlexNet`].
#[derive(Debug, Clone, PartialEq)]
pub struct AlexNetConfig {
    /// Input channels (3 for ImageNet weights).
    pub in_channels: usize,
    /// Input side (square images; 224 for ImageNet weights, at least 63).
    pub input_size: usize,
    /// Width of `fc6` and `fc7` (4096 in the paper; the feature dimension).
    pub fc: usize,
    /// Dropout probability before `fc6` and before `fc7` in training.
    pub dropout: f32,
    /// dtl's kernels or candle's native ops.
    pub kernels: Kernels,
}

impl Default for AlexNetConfig {
    /// 3 x 224 x 224 images, fc 4096, dropout 0.5: torchvision's `alexnet()`.
    fn default() -> Self {
        Self {
            in_channels: 3,
            input_size: 224,
            fc: 4096,
            dropout: 0.5,
            kernels: Kernels::Dtl,
        }
    }
}

/// AlexNet's feature extractor. Layers, in order: `conv1` .. `conv5`, `fc6`, `fc7`; features are
/// the ReLU output of `fc7`.
pub struct AlexNet {
    cfg: AlexNetConfig,
    conv: Vec<Param>,
    fc: Vec<Param>,
    layers: Vec<String>,
    dropout_rng: Mutex<ChaCha8Rng>,
}

/// Output side of a convolution or pooling window.
fn out_side(side: usize, k: usize, stride: usize, padding: usize) -> Option<usize> {
    (side + 2 * padding).checked_sub(k).map(|d| d / stride + 1)
}

/// The side of the last feature map for inputs of side `size`, if the input is large enough.
fn final_side(size: usize) -> Option<usize> {
    let mut s = size;
    for &(_, k, stride, pad, pool) in &CONVS {
        s = out_side(s, k, stride, pad)?;
        if pool {
            s = out_side(s, 3, 2, 0)?;
        }
    }
    (s >= 1).then_some(s)
}

/// PyTorch's `adaptive_avg_pool2d` to `POOLED x POOLED`: cell `i` averages rows
/// `floor(i H / 6) .. ceil((i + 1) H / 6)` (and the same for columns).
fn adaptive_avg_pool(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    if h == POOLED && w == POOLED {
        return Ok(xs.clone());
    }
    let range = |i: usize, n: usize| (i * n / POOLED, ((i + 1) * n).div_ceil(POOLED));
    let mut rows = Vec::with_capacity(POOLED);
    for i in 0..POOLED {
        let (h0, h1) = range(i, h);
        let band = xs.narrow(2, h0, h1 - h0)?.mean_keepdim(2)?;
        let mut cells = Vec::with_capacity(POOLED);
        for j in 0..POOLED {
            let (w0, w1) = range(j, w);
            cells.push(band.narrow(3, w0, w1 - w0)?.mean_keepdim(3)?);
        }
        rows.push(Tensor::cat(&cells, 3)?);
    }
    Tensor::cat(&rows, 2)
}

impl AlexNet {
    /// Creates the network with parameters in `vm`, uniform in `+-1/sqrt(fan_in)` (PyTorch's
    /// default, as torchvision's `alexnet()`), from `rng`; `dropout_seed` drives the dropout masks.
    pub fn new(
        cfg: AlexNetConfig,
        vm: &VarMap,
        rng: &mut ChaCha8Rng,
        dropout_seed: u64,
        device: &Device,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&cfg.dropout) {
            return Err(Error::Core(dtl_core::Error::config(
                "dropout",
                format!("{} is not in [0, 1)", cfg.dropout),
            )));
        }
        if final_side(cfg.input_size).is_none() {
            return Err(Error::Core(dtl_core::Error::config(
                "image-size",
                format!(
                    "alexnet needs inputs of at least 63x63, got {0}x{0}",
                    cfg.input_size
                ),
            )));
        }
        if cfg.fc == 0 || cfg.in_channels == 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "widths",
                "alexnet needs at least one input channel and one fc unit",
            )));
        }
        let mut conv = Vec::new();
        let mut cin = cfg.in_channels;
        for (i, &(c, k, ..)) in CONVS.iter().enumerate() {
            conv.push(uniform_param(
                vm,
                &format!("conv{}", i + 1),
                &[c, cin, k, k],
                rng,
                device,
            )?);
            cin = c;
        }
        let flat = cin * POOLED * POOLED;
        let fc = vec![
            uniform_param(vm, "fc6", &[cfg.fc, flat], rng, device)?,
            uniform_param(vm, "fc7", &[cfg.fc, cfg.fc], rng, device)?,
        ];
        let layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
            .map(String::from)
            .to_vec();
        Ok(Self {
            cfg,
            conv,
            fc,
            layers,
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(dropout_seed)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &AlexNetConfig {
        &self.cfg
    }
}

impl Backbone for AlexNet {
    fn features(&self, xs: &Tensor, train: bool) -> dtl_core::Result<Tensor> {
        self.features_frozen_prefix(xs, train, 0)
    }

    fn features_frozen_prefix(&self, xs: &Tensor, train: bool, n: usize) -> dtl_core::Result<Tensor> {
        check_input("alexnet", xs, self.input_shape())?;
        let cut = |x: Tensor, done: usize| if done == n { x.detach() } else { x };
        let run = || -> Result<Tensor> {
            let k = self.cfg.kernels;
            let mut x = xs.clone();
            for (i, (p, &(_, _, stride, pad, pool))) in self.conv.iter().zip(&CONVS).enumerate() {
                x = k.conv2d(&x, &p.weight, Some(&p.bias), stride, pad)?.relu()?;
                if pool {
                    x = k.max_pool2d(&x, 3, 2, 0)?;
                }
                x = cut(x, i + 1);
            }
            let mut x = adaptive_avg_pool(&x)?.flatten_from(1)?;
            for (j, p) in self.fc.iter().enumerate() {
                // torchvision: Dropout, Linear, ReLU.
                if train {
                    x = dropout(&self.dropout_rng, &x, self.cfg.dropout)?;
                }
                x = p.linear(&x)?.relu()?;
                x = cut(x, self.conv.len() + j + 1);
            }
            Ok(x)
        };
        run().map_err(Error::into_core)
    }

    fn feature_dim(&self) -> usize {
        self.cfg.fc
    }

    fn layers(&self) -> &[String] {
        &self.layers
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (self.cfg.in_channels, self.cfg.input_size, self.cfg.input_size)
    }

    fn name(&self) -> &str {
        "alexnet"
    }

    fn dropout_rng(&self) -> Option<&Mutex<ChaCha8Rng>> {
        Some(&self.dropout_rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_input_is_63() {
        assert_eq!(final_side(224), Some(6));
        assert_eq!(final_side(63), Some(1));
        assert_eq!(final_side(62), None);
    }

    /// Adaptive pooling of a 1x1 map replicates it; of a 13x13 map averages PyTorch's windows.
    #[test]
    fn adaptive_pool_windows() -> candle_core::Result<()> {
        let one = Tensor::new(&[[[[2.0f32]]]], &Device::Cpu)?;
        let p = adaptive_avg_pool(&one)?;
        assert_eq!(p.dims(), &[1, 1, 6, 6]);
        assert!(p.flatten_all()?.to_vec1::<f32>()?.iter().all(|&v| v == 2.0));
        let v: Vec<f32> = (0..13 * 13).map(|i| i as f32).collect();
        let x = Tensor::from_vec(v, (1, 1, 13, 13), &Device::Cpu)?;
        let p = adaptive_avg_pool(&x)?.flatten_all()?.to_vec1::<f32>()?;
        // Cell (0, 0): rows 0..3, columns 0..3 (ceil(13 / 6) = 3).
        let want: f32 = [0, 1, 2, 13, 14, 15, 26, 27, 28]
            .iter()
            .map(|&i| i as f32)
            .sum::<f32>()
            / 9.0;
        assert!((p[0] - want).abs() < 1e-5);
        // Cell (5, 5): rows 10..13, columns 10..13.
        let want: f32 = [10, 11, 12]
            .iter()
            .flat_map(|&r| [10, 11, 12].map(|c| (r * 13 + c) as f32))
            .sum::<f32>()
            / 9.0;
        assert!((p[35] - want).abs() < 1e-4);
        Ok(())
    }
}
