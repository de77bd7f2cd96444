//! CPU kernels with autograd for dtl, as candle custom ops.
//!
//! candle 0.11's `max_pool2d` routes gradients wrongly on the CPU: its backward scales the incoming
//! gradient by (number of maxima in the window) / (k * k) instead of sending it to the maximum, and
//! it has no padding. [`max_pool2d`] here keeps PyTorch's semantics: padding with `-inf`, and the
//! whole gradient of a window goes to its first maximum in row-major order.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//!
//! let x = Var::from_vec(vec![1f32, 3., 2., 0.], (1, 1, 2, 2), &Device::Cpu)?;
//! let y = dtl_ops::max_pool2d(x.as_tensor(), 2, 2, 0)?;
//! assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [3.]);
//! let grads = y.sum_all()?.backward()?;
//! let g = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
//! assert_eq!(g, [0., 1., 0., 0.]);
//! # Ok::<(), candle_core::Error>(())
//! ```
#![deny(missing_docs)]

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

mod conv;
mod kernels;
mod norm;
mod pool;

pub use conv::{conv2d, conv2d_bias};
pub use kernels::Kernels;
pub use norm::{batch_norm_composed, batch_norm_eval, batch_norm_train, batch_stats_composed};
pub use pool::max_pool2d;

pub(crate) fn dims4(layout: &Layout, what: &str) -> Result<(usize, usize, usize, usize)> {
    match layout.shape().dims() {
        &[b, c, h, w] => Ok((b, c, h, w)),
        d => candle_core::bail!("{what} must be (B, C, H, W), found shape {d:?}"),
    }
}

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(d) => d,
        _ => candle_core::bail!("{what} must be f32, found {:?}", s.dtype()),
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{what} must be contiguous"),
    }
}
