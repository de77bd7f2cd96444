//! ResNet (He et al. 2016, "Deep residual learning for image recognition") with basic blocks
//! (ResNet-18, -34) or bottleneck blocks (ResNet-50, torchvision's "v1.5" with the stride on the
//! 3x3 convolution), in torchvision's layout and parameter names (`conv1`, `bn1`, `layer1.0.conv1`,
//! ..., `layer2.0.downsample.0`), which timm's ResNets share, with configurable widths.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use dtl_core::Backbone;
use dtl_ops::Kernels;
use rand_chacha::ChaCha8Rng;
use std::sync::Mutex;

use crate::init::{check_input, uniform_weight};
use crate::{Error, Result};

/// Settings of a [`ResNet`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Input side (square images).
    pub input_size: usize,
    /// Channels of the four stages (torchvision's ResNet-18: 64, 128, 256, 512).
    pub widths: [usize; 4],
    /// Blocks per stage (ResNet-18: 2, 2, 2, 2; ResNet-34 and -50: 3, 4, 6, 3).
    pub blocks: [usize; 4],
    /// Bottleneck blocks (1x1, 3x3, 1x1 with 4x wider output, ResNet-50) instead of basic ones.
    pub bottleneck: bool,
    /// dtl's kernels or candle's native ops.
    pub kernels: Kernels,
}

impl ResNetConfig {
    /// ResNet-18's topology with stage widths `widths`.
    pub fn resnet18(widths: [usize; 4], in_channels: usize, input_size: usize) -> Self {
        Self {
            in_channels,
            input_size,
            widths,
            blocks: [2, 2, 2, 2],
            bottleneck: false,
            kernels: Kernels::Dtl,
        }
    }

    /// torchvision's ResNet-`depth` (18, 34 or 50) at widths 64, 128, 256, 512.
    pub fn torchvision(depth: usize, in_channels: usize, input_size: usize) -> Result<Self> {
        let (blocks, bottleneck) = match depth {
            18 => ([2, 2, 2, 2], false),
            34 => ([3, 4, 6, 3], false),
            50 => ([3, 4, 6, 3], true),
            _ => {
                return Err(Error::Core(dtl_core::Error::config(
                    "backbone",
                    format!("ResNet-{depth} is not built here (18, 34, 50 are)"),
                )))
            }
        };
        Ok(Self {
            in_channels,
            input_size,
            widths: [64, 128, 256, 512],
            blocks,
            bottleneck,
            kernels: Kernels::Dtl,
        })
    }

    /// How many times wider a block's output is than its stage's width (4 for bottlenecks).
    fn expansion(&self) -> usize {
        if self.bottleneck {
            4
        } else {
            1
        }
    }
}

/// Batch normalisation with running statistics (momentum 0.1, eps 1e-5, as PyTorch).
struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

impl BatchNorm {
    fn new(vm: &VarMap, name: &str, c: usize, device: &Device) -> Result<Self> {
        let ins = |suffix: &str, t: Tensor| dtl_core::params::insert(vm, &format!("{name}.{suffix}"), t);
        Ok(Self {
            weight: ins("weight", Tensor::ones(c, DType::F32, device)?)?
                .as_tensor()
                .clone(),
            bias: ins("bias", Tensor::zeros(c, DType::F32, device)?)?
                .as_tensor()
                .clone(),
            running_mean: ins("running_mean", Tensor::zeros(c, DType::F32, device)?)?,
            running_var: ins("running_var", Tensor::ones(c, DType::F32, device)?)?,
        })
    }

    const EPS: f64 = 1e-5;

    /// Batch norm in training mode (batch statistics; the running ones updated), followed by a
    /// ReLU if `relu`, fused with it. Evaluation mode folds the normalisation into the
    /// convolution before it ([`ConvBn::forward_with`]).
    fn forward_train(&self, xs: &Tensor, relu: bool, k: Kernels) -> candle_core::Result<Tensor> {
        const MOMENTUM: f64 = 0.1;
        let (y, mean, var) = if relu {
            k.batch_norm_train_relu(xs, &self.weight, &self.bias, Self::EPS)?
        } else {
            k.batch_norm_train(xs, &self.weight, &self.bias, Self::EPS)?
        };
        let rm = self.running_mean.as_tensor().detach();
        let rv = self.running_var.as_tensor().detach();
        self.running_mean
            .set(&((rm * (1.0 - MOMENTUM))? + (mean * MOMENTUM)?)?)?;
        self.running_var
            .set(&((rv * (1.0 - MOMENTUM))? + (var * MOMENTUM)?)?)?;
        Ok(y)
    }
}

struct ConvBn {
    weight: Tensor,
    bn: BatchNorm,
    stride: usize,
    padding: usize,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn new(
        vm: &VarMap,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            weight: uniform_weight(vm, &format!("{conv}.weight"), &[cout, cin, k, k], rng, device)?,
            bn: BatchNorm::new(vm, bn, cout, device)?,
            stride,
            padding: k / 2,
        })
    }

    fn forward(&self, xs: &Tensor, train: bool, relu: bool, k: Kernels) -> candle_core::Result<Tensor> {
        self.forward_with(xs, &self.weight, train, relu, k)
    }

    /// The convolution with filters `weight` (this layer's own, or a detached copy), then the
    /// batch norm and a ReLU if `relu`; in evaluation mode as one convolution with the
    /// normalisation folded in.
    fn forward_with(
        &self,
        xs: &Tensor,
        weight: &Tensor,
        train: bool,
        relu: bool,
        k: Kernels,
    ) -> candle_core::Result<Tensor> {
        if train {
            let y = k.conv2d(xs, weight, None, self.stride, self.padding)?;
            return self.bn.forward_train(&y, relu, k);
        }
        let bn = &self.bn;
        k.conv2d_batch_norm_eval(
            xs,
            weight,
            self.stride,
            self.padding,
            &bn.running_mean.as_tensor().detach(),
            &bn.running_var.as_tensor().detach(),
            &bn.weight,
            &bn.bias,
            BatchNorm::EPS,
            relu,
        )
    }
}

/// A basic block (`convs` = 3x3, 3x3) or a bottleneck block (1x1, 3x3, 1x1), with ReLU between
/// the convolutions and after the residual sum.
struct Block {
    convs: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl Block {
    fn forward(&self, xs: &Tensor, train: bool, k: Kernels) -> candle_core::Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = xs.clone();
        for (i, c) in self.convs.iter().enumerate() {
            y = c.forward(&y, train, i < last, k)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(xs, train, false, k)?,
            None => xs.clone(),
        };
        k.add_relu(&y, &identity)
    }
}

/// A ResNet: 7x7/2 stem convolution, batch norm, ReLU, 3x3/2 max-pool with padding 1, four
/// stages, global average pooling. Layers: `conv1`, `bn1`, `layer1` .. `layer4`.
pub struct ResNet {
    cfg: ResNetConfig,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    layers: Vec<String>,
    name: String,
}

impl ResNet {
    /// Creates a ResNet with parameters in `vm`: convolutions uniform in `+-1/sqrt(fan_in)` from
    /// `rng`, batch-norm scales 1 and shifts 0.
    pub fn new(cfg: ResNetConfig, vm: &VarMap, rng: &mut ChaCha8Rng, device: &Device) -> Result<Self> {
        if cfg.input_size < 32 {
            return Err(Error::Core(dtl_core::Error::config(
                "image-size",
                format!(
                    "ResNet needs inputs of at least 32x32, got {0}x{0}",
                    cfg.input_size
                ),
            )));
        }
        let stem = ConvBn::new(
            vm,
            "conv1",
            "bn1",
            cfg.in_channels,
            cfg.widths[0],
            7,
            2,
            rng,
            device,
        )?;
        let mut cin = cfg.widths[0];
        let mut stages = Vec::new();
        for (s, (&w, &n)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
            let mut blocks = Vec::new();
            for i in 0..n {
                let stride = if s > 0 && i == 0 { 2 } else { 1 };
                let p = format!("layer{}.{i}", s + 1);
                let out = w * cfg.expansion();
                // (input, output, kernel, stride) of conv1, conv2 (and conv3).
                let shapes: Vec<(usize, usize, usize, usize)> = if cfg.bottleneck {
                    vec![(cin, w, 1, 1), (w, w, 3, stride), (w, out, 1, 1)]
                } else {
                    vec![(cin, w, 3, stride), (w, w, 3, 1)]
                };
                let convs = shapes
                    .into_iter()
                    .enumerate()
                    .map(|(j, (ci, co, ks, st))| {
                        ConvBn::new(
                            vm,
                            &format!("{p}.conv{}", j + 1),
                            &format!("{p}.bn{}", j + 1),
                            ci,
                            co,
                            ks,
                            st,
                            rng,
                            device,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let downsample = if stride != 1 || cin != out {
                    let d = format!("{p}.downsample");
                    Some(ConvBn::new(
                        vm,
                        &format!("{d}.0"),
                        &format!("{d}.1"),
                        cin,
                        out,
                        1,
                        stride,
                        rng,
                        device,
                    )?)
                } else {
                    None
                };
                blocks.push(Block { convs, downsample });
                cin = out;
            }
            stages.push(blocks);
        }
        let layers = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
            .map(String::from)
            .to_vec();
        let convs_per_block = if cfg.bottleneck { 3 } else { 2 };
        let depth = 2 + convs_per_block * cfg.blocks.iter().sum::<usize>();
        let name = if cfg.widths == [64, 128, 256, 512] {
            format!("resnet{depth}")
        } else {
            format!("resnet{depth}-{}", cfg.widths.map(|w| w.to_string()).join("-"))
        };
        Ok(Self {
            cfg,
            stem,
            stages,
            layers,
            name,
        })
    }
}

impl Backbone for ResNet {
    fn features(&self, xs: &Tensor, train: bool) -> dtl_core::Result<Tensor> {
        self.features_frozen_prefix(xs, train, 0)
    }

    fn features_frozen_prefix(&self, xs: &Tensor, train: bool, n: usize) -> dtl_core::Result<Tensor> {
        check_input(&self.name, xs, self.input_shape())?;
        let k = self.cfg.kernels;
        // The output of layer `done` (1-based: conv1, bn1, layer1 ..), detached when it closes
        // the frozen prefix.
        let cut = |x: Tensor, done: usize| if done == n { x.detach() } else { x };
        let run = || -> candle_core::Result<Tensor> {
            let x = if train {
                let x = k.conv2d(xs, &self.stem.weight, None, self.stem.stride, self.stem.padding)?;
                self.stem.bn.forward_train(&cut(x, 1), true, k)?
            } else if n == 1 {
                // Folded: a frozen conv1 is the detached filters (and input) instead of a
                // detached output.
                self.stem
                    .forward_with(&xs.detach(), &self.stem.weight.detach(), train, true, k)?
            } else {
                self.stem.forward(xs, train, true, k)?
            };
            let mut x = cut(k.max_pool2d(&x, 3, 2, 1)?, 2);
            for (s, stage) in self.stages.iter().enumerate() {
                for block in stage {
                    x = block.forward(&x, train, k)?;
                }
                x = cut(x, 3 + s);
            }
            x.flatten_from(2)?.mean(D::Minus1)
        };
        Ok(run()?)
    }

    fn feature_dim(&self) -> usize {
        self.cfg.widths[3] * self.cfg.expansion()
    }

    fn layers(&self) -> &[String] {
        &self.layers
    }

    fn input_shape(&self) -> (usize, usize, usize) {
        (self.cfg.in_channels, self.cfg.input_size, self.cfg.input_size)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn dropout_rng(&self) -> Option<&Mutex<ChaCha8Rng>> {
        None
    }
}
