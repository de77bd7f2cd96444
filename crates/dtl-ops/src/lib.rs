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

pub mod allocator;
mod conv;
mod kernels;
mod linear;
mod norm;
pub mod optim;
mod pool;
mod relu;
mod scratch;
#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
mod simd;
mod transpose;

pub use conv::{conv2d, conv2d_bias, conv2d_bias_relu, conv2d_max_pool2_relu};
pub use kernels::Kernels;
pub use linear::linear;
pub use norm::{
    batch_norm_composed, batch_norm_eval, batch_norm_train, batch_norm_train_relu, batch_stats_composed,
};
pub use pool::max_pool2d;
pub use relu::add_relu;

/// Keeps candle's elementwise ops on the calling thread: sets `CANDLE_NUM_THREADS=1` unless the
/// environment already sets it, and returns the value in force.
///
/// candle 0.11 runs elementwise ops of 64k values or more on its own thread pool, whose workers
/// spin for up to 25,000 iterations after every op before they park. Between dtl's kernels (on
/// rayon's pool) that spinning takes cores away from them: on the 2-core development machine the
/// `W3` benchmark spent 19% of its samples in candle's barrier, and setting this cut its CPU time
/// by a third (`docs/performance.md`). Binaries call it first thing in `main`, before any tensor
/// op and before any other thread starts (candle reads the variable once, at its first parallel
/// op). GEMMs and dtl's kernels keep all cores either way.
pub fn keep_candle_elementwise_on_caller() -> String {
    const VAR: &str = "CANDLE_NUM_THREADS";
    match std::env::var(VAR) {
        Ok(v) if !v.is_empty() => v,
        _ => {
            std::env::set_var(VAR, "1");
            "1".into()
        }
    }
}

/// Runs `f` on a worker thread of a rayon pool of one thread per core (`RAYON_NUM_THREADS` if set)
/// and returns its result; `f` itself on the calling thread if the pool cannot be built.
///
/// dtl's kernels parallelise each op with rayon. Called from a thread outside the pool, every op
/// wakes the workers and puts the caller to sleep until they finish: thousands of context
/// switches per training step (35,000 in 22 steps of the `W3` benchmark on 2 cores). From a
/// worker thread the caller takes part in the work and nothing sleeps in between: 3,000 context
/// switches, and `W3` 33 -> 28 ms, `W1` 52 -> 44 ms per step (`docs/performance.md`). Binaries wrap
/// their work in it, after [`keep_candle_elementwise_on_caller`]. Workers get 64 MiB stacks
/// (candle's backward pass walks the graph recursively; the main thread has 8 MiB).
pub fn in_worker_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("dtl-worker-{i}"))
        .stack_size(64 << 20)
        .build()
    {
        Ok(pool) => pool.install(f),
        Err(_) => f(),
    }
}

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

pub(crate) fn contiguous_f32_mut<'a>(
    s: &'a mut CpuStorage,
    layout: &Layout,
    what: &str,
) -> Result<&'a mut [f32]> {
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))?;
    match s {
        CpuStorage::F32(d) => Ok(&mut d[a..b]),
        other => candle_core::bail!("{what} must be f32, found {:?}", other.dtype()),
    }
}
