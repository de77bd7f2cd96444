//! LeNet as ADDA uses it (Tzeng et al. 2017, "Adversarial discriminative domain adaptation", after
//! LeCun et al. 1998): conv 20 5x5, max-pool 2, ReLU, conv 50 5x5, channel dropout, max-pool 2,
//! ReLU, fc 500, ReLU.

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dtl_core::Backbone;
use dtl_ops::Kernels;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::init::{check_input, dropout_mask, uniform_param, Param};
use crate::{Error, Result};

/// Settings of a [`LeNet`].
#[derive(Debug, Clone, PartialEq)]
pub struct LeNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input side (square images).
    pub input_size: usize,
    /// Filters of the first convolution.
    pub conv1: usize,
    /// Filters of the second convolution.
    pub conv2: usize,
    /// Width of the fully connected layer (the feature dimension).
    pub fc: usize,
    /// Probability of zeroing a channel after the second convolution in training (as
    /// `torch.nn.Dropout2d`).
    pub dropout: f32,
    /// dtl's kernels or candle's native ops.
    pub kernels: Kernels,
}

impl LeNetConfig {
    /// The width of `fc1`'s input: the second convolution's maps after two 5x5 convolutions and
    /// two 2x2 poolings of the input, flattened. Inputs below 16x16 leave nothing.
    pub fn flat_features(&self) -> Result<usize> {
        let s2 = self
            .input_size
            .checked_sub(4)
            .map(|s| s / 2)
            .and_then(|s| s.checked_sub(4))
            .map(|s| s / 2)
            .filter(|&s| s > 0);
        match s2 {
            Some(s2) => Ok(self.conv2 * s2 * s2),
            None => Err(Error::Core(dtl_core::Error::config(
                "image-size",
                format!(
                    "LeNet needs inputs of at least 16x16, got {0}x{0}",
                    self.input_size
                ),
            ))),
        }
    }
}

impl Default for LeNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 1,
            input_size: 28,
            conv1: 20,
            conv2: 50,
            fc: 500,
            dropout: 0.5,
            kernels: Kernels::Dtl,
        }
    }
}

/// ADDA's LeNet encoder. Layers, in order: `conv1`, `conv2`, `fc1`; features are the 500-wide ReLU
/// output of `fc1`.
pub struct LeNet {
    cfg: LeNetConfig,
    conv1: Param,
    conv2: Param,
    fc1: Param,
    flat: usize,
    layers: Vec<String>,
    dropout_rng: Mutex<ChaCha8Rng>,
}

impl LeNet {
    /// Creates a LeNet with parameters in `vm`, initialised as PyTorch initialises `Conv2d` and
    /// `Linear` (uniform in `+-1/sqrt(fan_in)`) from `rng`; `dropout_seed` drives the dropout masks.
    pub fn new(
        cfg: LeNetConfig,
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
        let flat = cfg.flat_features()?;
        let conv1 = uniform_param(vm, "conv1", &[cfg.conv1, cfg.in_channels, 5, 5], rng, device)?;
        let conv2 = uniform_param(vm, "conv2", &[cfg.conv2, cfg.conv1, 5, 5], rng, device)?;
        let fc1 = uniform_param(vm, "fc1", &[cfg.fc, flat], rng, device)?;
        Ok(Self {
            cfg,
            conv1,
            conv2,
            fc1,
            flat,
            layers: vec!["conv1".into(), "conv2".into(), "fc1".into()],
            dropout_rng: Mutex::new(ChaCha8Rng::seed_from_u64(dropout_seed)),
        })
    }

    /// The settings.
    pub fn config(&self) -> &LeNetConfig {
        &self.cfg
    }

    /// Channel dropout: zero whole channels with probability `p`, scale the rest by `1/(1-p)`.
    fn dropout2d(&self, xs: &Tensor) -> Result<Tensor> {
        let p = self.cfg.dropout;
        if p == 0.0 {
            return Ok(xs.clone());
        }
        let (b, c, _, _) = xs.dims4()?;
        let mask = dropout_mask(&self.dropout_rng, b * c, p);
        let mask = Tensor::from_vec(mask, (b, c, 1, 1), xs.device())?;
        Ok(xs.broadcast_mul(&mask)?)
    }
}

impl Backbone for LeNet {
    fn features(&self, xs: &Tensor, train: bool) -> dtl_core::Result<Tensor> {
        self.features_frozen_prefix(xs, train, 0)
    }

    fn features_frozen_prefix(&self, xs: &Tensor, train: bool, n: usize) -> dtl_core::Result<Tensor> {
        check_input("lenet", xs, self.input_shape())?;
        // The output of layer `done` (1-based), detached when it closes the frozen prefix.
        let cut = |x: Tensor, done: usize| if done == n { x.detach() } else { x };
        let run = || -> Result<Tensor> {
            let k = self.cfg.kernels;
            let x = cut(self.conv1.conv2d_max_pool2_relu(xs, k)?, 1);
            // Channel dropout acts between the second convolution and its pooling, which the
            // fused block has no place for.
            let x = if train && self.cfg.dropout > 0.0 {
                let x = self.dropout2d(&self.conv2.conv2d(&x, k)?)?;
                k.max_pool2d(&x, 2, 2, 0)?.relu()?
            } else {
                self.conv2.conv2d_max_pool2_relu(&x, k)?
            };
            let x = cut(x, 2);
            let x = x.flatten_from(1)?;
            debug_assert_eq!(x.dim(1)?, self.flat);
            Ok(cut(self.fc1.linear(&x)?.relu()?, 3))
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
        "lenet"
    }

    fn dropout_rng(&self) -> Option<&Mutex<ChaCha8Rng>> {
        Some(&self.dropout_rng)
    }
}
