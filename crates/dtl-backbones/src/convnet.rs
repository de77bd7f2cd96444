//! An 8-layer convolutional network for digits, deep enough to repeat Yosinski et al.'s layer-by-
//! layer transfer experiment (2014, "How transferable are features in deep neural networks?") with
//! n = 1..7 transferred layers as on their 8-layer ImageNet network: five 3x3 convolutions (padding
//! 1, ReLU; 2x2 max-pooling after the 2nd, 4th and 5th), two fully connected ReLU layers with
//! dropout, then the classifier head (the 8th layer, added by `Classifier`).

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dtl_core::Backbone;
use dtl_ops::Kernels;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::init::{check_input, dropout, kaiming_param, Param};
use crate::{Error, Result};

/// Settings of a [`ConvNet8`].
#[derive(Debug, Clone, PartialEq)]
pub struct ConvNet8Config {
    /// Input channels.
    pub in_channels: usize,
    /// Input side (square images).
    pub input_size: usize,
    /// Filters of `conv1` .. `conv5`.
    pub conv: [usize; 5],
    /// Widths of `fc6` and `fc7` (the feature dimension is the second).
    pub fc: [usize; 2],
    /// Dropout probability after `fc6` and `fc7` in training.
    pub dropout: f32,
    /// dtl's kernels or candle's native ops.
    pub kernels: Kernels,
}

impl ConvNet8Config {
    /// The width of `fc6`'s input: `conv5`'s maps after three 2x2 poolings, flattened.
    pub fn flat_features(&self) -> usize {
        let side = self.input_size / 8;
        self.conv[4] * side * side
    }
}

impl Default for ConvNet8Config {
    /// 1 x 28 x 28 digits, filters 16-32-32-64-64, fc 256-256, dropout 0.5.
    fn default() -> Self {
        Self {
            in_channels: 1,
            input_size: 28,
            conv: [16, 32, 32, 64, 64],
            fc: [256, 256],
            dropout: 0.5,
            kernels: Kernels::Dtl,
        }
    }
}

/// The 8-layer network's feature extractor. Layers, in order: `conv1` .. `conv5`, `fc6`, `fc7`;
/// features are the ReLU output of `fc7`.
pub struct ConvNet8 {
    cfg: ConvNet8Config,
    conv: Vec<Param>,
    fc: Vec<Param>,
    layers: Vec<String>,
    dropout_rng: Mutex<ChaCha8Rng>,
}

/// Pooling follows these convolutions (0-based).
const POOL_AFTER: [usize; 3] = [1, 3, 4];

impl ConvNet8 {
    /// Creates the network with parameters in `vm`, weights He-initialised and biases zero, from
    /// `rng`; `dropout_seed` drives the dropout masks.
    pub fn new(
        cfg: ConvNet8Config,
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
        if cfg.input_size < 8 {
            return Err(Error::Core(dtl_core::Error::config(
                "image-size",
                format!(
                    "convnet8 pools three times and needs inputs of at least 8x8, got {0}x{0}",
                    cfg.input_size
                ),
            )));
        }
        if let Some(i) = cfg.conv.iter().chain(&cfg.fc).position(|&w| w == 0) {
            return Err(Error::Core(dtl_core::Error::config(
                "widths",
                format!("layer {} has width 0", i + 1),
            )));
        }
        let mut conv = Vec::new();
        let mut cin = cfg.in_channels;
        for (i, &c) in cfg.conv.iter().enumerate() {
            conv.push(kaiming_param(
                vm,
                &format!("conv{}", i + 1),
                &[c, cin, 3, 3],
                rng,
                device,
            )?);
            cin = c;
        }
        let flat = cfg.flat_features();
        let fc = vec![
            kaiming_param(vm, "fc6", &[cfg.fc[0], flat], rng, device)?,
            kaiming_param(vm, "fc7", &[cfg.fc[1], cfg.fc[0]], rng, device)?,
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
    pub fn config(&self) -> &ConvNet8Config {
        &self.cfg
    }
}

impl Backbone for ConvNet8 {
    fn features(&self, xs: &Tensor, train: bool) -> dtl_core::Result<Tensor> {
        self.features_frozen_prefix(xs, train, 0)
    }

    fn features_frozen_prefix(&self, xs: &Tensor, train: bool, n: usize) -> dtl_core::Result<Tensor> {
        check_input("convnet8", xs, self.input_shape())?;
        // The output of layer `done` (1-based), detached when it closes the frozen prefix.
        let cut = |x: Tensor, done: usize| if done == n { x.detach() } else { x };
        let run = || -> Result<Tensor> {
            let k = self.cfg.kernels;
            let mut x = xs.clone();
            for (i, p) in self.conv.iter().enumerate() {
                x = k.conv2d(&x, &p.weight, Some(&p.bias), 1, 1)?.relu()?;
                if POOL_AFTER.contains(&i) {
                    x = k.max_pool2d(&x, 2, 2, 0)?;
                }
                x = cut(x, i + 1);
            }
            let mut x = x.flatten_from(1)?;
            for (j, p) in self.fc.iter().enumerate() {
                x = p.linear(&x)?.relu()?;
                if train {
                    x = dropout(&self.dropout_rng, &x, self.cfg.dropout)?;
                }
                x = cut(x, self.conv.len() + j + 1);
            }
            Ok(x)
        };
        run().map_err(Error::into_core)
    }

    fn feature_dim(&self) -> usize {
        self.cfg.fc[1]
    }

    fn layers(&self) -> &[String] {
        &self.layers
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (self.cfg.in_channels, self.cfg.input_size, self.cfg.input_size)
    }

    fn name(&self) -> &str {
        "convnet8"
    }

    fn dropout_rng(&self) -> Option<&Mutex<ChaCha8Rng>> {
        Some(&self.dropout_rng)
    }
}
