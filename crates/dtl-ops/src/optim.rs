//! Fused, multi-threaded optimizer updates in place: SGD with momentum (PyTorch's form, Nesterov
//! optional; Sutskever et al. 2013, "On the importance of initialization and momentum in deep
//! learning") and Adam (Kingma & Ba 2015, "Adam: a method for stochastic optimization"), each
//! with L2 weight decay added to the gradient.
//!
//! Written as candle's elementwise ops, one update is six to fifteen passes over the parameter,
//! each a fresh allocation on one thread. Here it is one to three passes, in parallel chunks,
//! writing the parameter and its moments where they are. Every value is computed with the same f32
//! operations in the same order as the composed ops (`v * mul + add` for a scalar product, as
//! candle's `affine`), so the results are bit for bit those of the composed form, which
//! `dtl-strategies`' optimizer keeps for other devices and dtypes.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor};
use rayon::prelude::*;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// The constants of one SGD update, as f32 (how candle's scalar ops apply them).
#[derive(Debug, Clone, Copy)]
pub struct SgdStep {
    /// Learning rate of the parameter's group.
    pub lr: f64,
    /// Momentum factor (0: no buffer).
    pub momentum: f64,
    /// L2 weight decay added to the gradient (0: none).
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// The constants of one Adam update.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    /// Learning rate of the parameter's group.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 weight decay added to the gradient (0: none).
    pub weight_decay: f64,
    /// The step number, from 1 (bias correction).
    pub t: i32,
}

/// Whether the fused updates apply: f32 tensors on the CPU, stored contiguously.
pub fn fusable<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> bool {
    tensors
        .into_iter()
        .all(|t| t.device().is_cpu() && t.dtype() == candle_core::DType::F32 && t.is_contiguous())
}

/// `g + p * wd` as the composed ops round it (`g` alone without decay).
#[inline(always)]
fn decayed(g: f32, p: f32, wd: Option<f32>) -> f32 {
    match wd {
        Some(wd) => g + (p * wd + 0.0),
        None => g,
    }
}

/// An in-place elementwise update of `dst` from two sources of the same length.
struct Update2<F: Fn(&mut f32, f32, f32) + Sync> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&mut f32, f32, f32) + Sync> InplaceOp3 for Update2<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        a: &CpuStorage,
        a_l: &Layout,
        b: &CpuStorage,
        b_l: &Layout,
    ) -> Result<()> {
        let d = crate::contiguous_f32_mut(dst, dst_l, self.name)?;
        let a = crate::contiguous_f32(a, a_l, self.name)?;
        let b = crate::contiguous_f32(b, b_l, self.name)?;
        if a.len() != d.len() || b.len() != d.len() {
            candle_core::bail!(
                "{}: lengths {}, {} and {} differ",
                self.name,
                d.len(),
                a.len(),
                b.len()
            );
        }
        let f = &self.f;
        let run = |(d, (a, b)): (&mut [f32], (&[f32], &[f32]))| {
            for ((d, &a), &b) in d.iter_mut().zip(a).zip(b) {
                f(d, a, b);
            }
        };
        if d.len() <= CHUNK {
            run((d, (a, b)));
        } else {
            d.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(run);
        }
        Ok(())
    }
}

/// An in-place elementwise update of `dst` from one source of the same length.
struct Update1<F: Fn(&mut f32, f32) + Sync> {
    name: &'static str,
    f: F,
}

impl<F: Fn(&mut f32, f32) + Sync> InplaceOp2 for Update1<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, a: &CpuStorage, a_l: &Layout) -> Result<()> {
        let d = crate::contiguous_f32_mut(dst, dst_l, self.name)?;
        let a = crate::contiguous_f32(a, a_l, self.name)?;
        if a.len() != d.len() {
            candle_core::bail!("{}: lengths {} and {} differ", self.name, d.len(), a.len());
        }
        let f = &self.f;
        let run = |(d, a): (&mut [f32], &[f32])| {
            for (d, &a) in d.iter_mut().zip(a) {
                f(d, a);
            }
        };
        if d.len() <= CHUNK {
            run((d, a));
        } else {
            d.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(run);
        }
        Ok(())
    }
}

/// One SGD update of `param` in place from its gradient `grad`: `g = grad + wd p`,
/// `b = m b + g` (`b = g` at the first step, when `buf` is `None`), `p -= lr (g + m b)` with
/// Nesterov, else `p -= lr b`. Returns the momentum buffer to keep (`None` without momentum).
/// The caller checks [`fusable`] first.
pub fn sgd_step(param: &Tensor, grad: &Tensor, buf: Option<Tensor>, c: SgdStep) -> Result<Option<Tensor>> {
    let wd = (c.weight_decay > 0.0).then_some(c.weight_decay as f32);
    let lr = c.lr as f32;
    let m = c.momentum as f32;
    if c.momentum == 0.0 {
        param.inplace_op2(
            grad,
            &Update1 {
                name: "dtl-sgd",
                f: move |p: &mut f32, g: f32| {
                    let g = decayed(g, *p, wd);
                    *p -= g * lr + 0.0;
                },
            },
        )?;
        return Ok(None);
    }
    let buf = match buf {
        Some(b) => {
            b.inplace_op3(
                grad,
                param,
                &Update2 {
                    name: "dtl-sgd-buffer",
                    f: move |b: &mut f32, g: f32, p: f32| *b = (*b * m + 0.0) + decayed(g, p, wd),
                },
            )?;
            b
        }
        None => {
            let b = grad.zeros_like()?;
            b.inplace_op3(
                grad,
                param,
                &Update2 {
                    name: "dtl-sgd-buffer",
                    f: move |b: &mut f32, g: f32, p: f32| *b = decayed(g, p, wd),
                },
            )?;
            b
        }
    };
    let nesterov = c.nesterov;
    param.inplace_op3(
        grad,
        &buf,
        &Update2 {
            name: "dtl-sgd",
            f: move |p: &mut f32, g: f32, b: f32| {
                let u = if nesterov {
                    decayed(g, *p, wd) + (b * m + 0.0)
                } else {
                    b
                };
                *p -= u * lr + 0.0;
            },
        },
    )?;
    Ok(Some(buf))
}

/// One Adam update of `param` in place: `g = grad + wd p`, `m = b1 m + (1 - b1) g`,
/// `v = b2 v + (1 - b2) g^2` (zero moments before the first step), then
/// `p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`. Returns the moments to keep. The
/// caller checks [`fusable`] first.
pub fn adam_step(
    param: &Tensor,
    grad: &Tensor,
    moments: Option<(Tensor, Tensor)>,
    c: AdamStep,
) -> Result<(Tensor, Tensor)> {
    let wd = (c.weight_decay > 0.0).then_some(c.weight_decay as f32);
    let (b1, b2) = (c.beta1 as f32, c.beta2 as f32);
    let (k1, k2) = ((1.0 - c.beta1) as f32, (1.0 - c.beta2) as f32);
    // Zero moments before the first step give that step's values bit for bit: `x + 0.0` is never
    // -0, so `0 + (x + 0.0)` is exactly `x + 0.0`, the composed ops' first-step `g (1 - b1)`.
    let (m, v) = match moments {
        Some(mv) => mv,
        None => (grad.zeros_like()?, grad.zeros_like()?),
    };
    m.inplace_op3(
        grad,
        param,
        &Update2 {
            name: "dtl-adam-m",
            f: move |m: &mut f32, g: f32, p: f32| {
                let g = decayed(g, p, wd);
                *m = (*m * b1 + 0.0) + (g * k1 + 0.0);
            },
        },
    )?;
    v.inplace_op3(
        grad,
        param,
        &Update2 {
            name: "dtl-adam-v",
            f: move |v: &mut f32, g: f32, p: f32| {
                let g = decayed(g, p, wd);
                *v = (*v * b2 + 0.0) + ((g * g) * k2 + 0.0);
            },
        },
    )?;
    let c1 = (1.0 / (1.0 - c.beta1.powi(c.t))) as f32;
    let c2 = (1.0 / (1.0 - c.beta2.powi(c.t))) as f32;
    let (eps, lr) = (c.eps as f32, c.lr as f32);
    param.inplace_op3(
        &m,
        &v,
        &Update2 {
            name: "dtl-adam",
            f: move |p: &mut f32, m: f32, v: f32| {
                let mhat = m * c1 + 0.0;
                let denom = (v * c2 + 0.0).sqrt() * 1.0 + eps;
                *p -= (mhat / denom) * lr + 0.0;
            },
        },
    )?;
    Ok((m, v))
}
