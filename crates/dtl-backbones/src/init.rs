//! Seeded parameter initialisation and the weight + bias layers the backbones are made of.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use dtl_ops::Kernels;

use crate::Result;

/// A layer's weight and bias, stored in a [`VarMap`] as `{layer}.weight` and `{layer}.bias`.
#[derive(Debug, Clone)]
pub struct Param {
    /// `{layer}.weight`: `(out, in)` for linear layers, `(out, in, kh, kw)` for convolutions.
    pub weight: Tensor,
    /// `{layer}.bias`: `(out,)`.
    pub bias: Tensor,
}

impl Param {
    /// `xs W^T + b` for `xs` of shape `(B, in)` ([`dtl_ops::linear`]).
    pub fn linear(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        dtl_ops::linear(xs, &self.weight, &self.bias)
    }

    /// A stride-1, unpadded convolution plus bias, for `xs` of shape `(B, C, H, W)`.
    pub fn conv2d(&self, xs: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
        kernels.conv2d(xs, &self.weight, Some(&self.bias), 1, 0)
    }

    /// [`Param::conv2d`] followed by 2x2 max-pooling with stride 2 and a ReLU, fused with dtl's
    /// kernels ([`Kernels::conv2d_max_pool2_relu`]).
    pub fn conv2d_max_pool2_relu(&self, xs: &Tensor, kernels: Kernels) -> candle_core::Result<Tensor> {
        kernels.conv2d_max_pool2_relu(xs, &self.weight, &self.bias, 1, 0)
    }
}

/// Creates `{layer}.weight` of `shape` and `{layer}.bias` of `(shape[0],)` in `vm`, both uniform in
/// `+-1/sqrt(fan_in)` with `fan_in = shape[1..].product()`: PyTorch's default initialisation of
/// `nn.Linear` and `nn.Conv2d` (Kaiming uniform with `a = sqrt(5)`), drawn from `rng` so that a run
/// repeats exactly.
pub fn uniform_param(
    vm: &VarMap,
    layer: &str,
    shape: &[usize],
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Param> {
    let fan_in: usize = shape[1..].iter().product();
    let bound = 1.0 / (fan_in as f32).sqrt();
    let w = Tensor::from_vec(uniform(rng, shape.iter().product(), bound), shape, device)?;
    let b = Tensor::from_vec(uniform(rng, shape[0], bound), shape[0], device)?;
    insert_param(vm, layer, w, b)
}

/// Stores `w` and `b` as `{layer}.weight` and `{layer}.bias` in `vm`.
fn insert_param(vm: &VarMap, layer: &str, w: Tensor, b: Tensor) -> Result<Param> {
    let weight = dtl_core::params::insert(vm, &format!("{layer}.weight"), w)?;
    let bias = dtl_core::params::insert(vm, &format!("{layer}.bias"), b)?;
    Ok(Param {
        weight: weight.as_tensor().clone(),
        bias: bias.as_tensor().clone(),
    })
}

/// Creates `{layer}.weight` of `shape`, uniform in `+-sqrt(6 / fan_in)` (He et al. 2015's
/// initialisation for ReLU networks, PyTorch's `kaiming_uniform_(nonlinearity="relu")`), and a zero
/// `{layer}.bias`, drawn from `rng`. Deep plain ReLU stacks need it: with PyTorch's default bound
/// `1/sqrt(fan_in)` each layer shrinks the signal's variance about sixfold.
pub fn kaiming_param(
    vm: &VarMap,
    layer: &str,
    shape: &[usize],
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Param> {
    let fan_in: usize = shape[1..].iter().product();
    let w = uniform(rng, shape.iter().product(), (6.0 / fan_in as f32).sqrt());
    let w = Tensor::from_vec(w, shape, device)?;
    let b = Tensor::zeros(shape[0], candle_core::DType::F32, device)?;
    insert_param(vm, layer, w, b)
}

/// Creates a tensor of `shape` uniform in `+-1/sqrt(fan_in)` (PyTorch's default for convolution
/// weights) as parameter `name` in `vm`.
pub fn uniform_weight(
    vm: &VarMap,
    name: &str,
    shape: &[usize],
    rng: &mut ChaCha8Rng,
    device: &Device,
) -> Result<Tensor> {
    let fan_in: usize = shape[1..].iter().product();
    let v = uniform(rng, shape.iter().product(), 1.0 / (fan_in as f32).sqrt());
    let var = dtl_core::params::insert(vm, name, Tensor::from_vec(v, shape, device)?)?;
    Ok(var.as_tensor().clone())
}

/// `n` draws uniform in `[-bound, bound)`.
fn uniform(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

/// A dropout mask of `n` entries: 0 with probability `p`, else `1/(1-p)` (inverted dropout, so
/// that evaluation needs no rescaling), drawn from the shared `rng`.
pub fn dropout_mask(rng: &std::sync::Mutex<ChaCha8Rng>, n: usize, p: f32) -> Vec<f32> {
    let keep = 1.0 / (1.0 - p);
    let mut rng = rng.lock().unwrap_or_else(|e| e.into_inner());
    (0..n)
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect()
}

/// Inverted dropout of every unit of `xs` with probability `p` (masks from [`dropout_mask`]);
/// `p = 0` returns `xs` as it is.
pub fn dropout(rng: &std::sync::Mutex<ChaCha8Rng>, xs: &Tensor, p: f32) -> Result<Tensor> {
    if p == 0.0 {
        return Ok(xs.clone());
    }
    let mask = dropout_mask(rng, xs.elem_count(), p);
    Ok((xs * Tensor::from_vec(mask, xs.shape(), xs.device())?)?)
}

/// Checks that `xs` is a batch `(B, C, H, W)` of images of `shape = (C, H, W)`; the error names
/// the backbone's input and both shapes.
pub fn check_input(backbone: &str, xs: &Tensor, shape: (usize, usize, usize)) -> dtl_core::Result<()> {
    let (c, h, w) = shape;
    let dims = xs.dims();
    if dims.len() != 4 || dims[1..] != [c, h, w] {
        return Err(dtl_core::Error::Shape {
            name: format!("{backbone} input"),
            expected: vec![dims.first().copied().unwrap_or(0), c, h, w],
            found: dims.to_vec(),
        });
    }
    Ok(())
}
