//! Batch normalisation (Ioffe & Szegedy 2015) in training mode, with its backward pass.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::sync::{Arc, OnceLock};

use crate::contiguous_f32;

/// `(B, C, S)` view of a `(B, C, ...)` layout: batch, channels, spatial size.
fn bcs(layout: &Layout, what: &str) -> Result<(usize, usize, usize)> {
    let d = layout.shape().dims();
    if d.len() < 2 {
        candle_core::bail!("{what} must be (B, C, ...), found shape {d:?}");
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Per-channel mean and biased variance, two-pass for accuracy.
fn channel_moments(x: &[f32], b: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    let n = (b * s) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..b).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s]);
            let mean = planes()
                .map(|p| p.iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>()
                / n;
            let var = planes()
                .map(|p| p.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / n;
            (mean, var)
        })
        .collect()
}

/// Per-channel mean and `1 / sqrt(var + eps)` from [`channel_moments`].
fn with_inverse_std(moments: &[(f64, f64)], eps: f64) -> Vec<(f64, f64)> {
    moments
        .iter()
        .map(|&(mean, var)| (mean, 1.0 / (var + eps).sqrt()))
        .collect()
}

/// The running-statistics row `(2, C)`: batch means and *unbiased* variances as f32.
fn running_stats(moments: &[(f64, f64)], n: f64) -> Vec<f32> {
    let c = moments.len();
    let mut out = vec![0f32; 2 * c];
    for (ch, (mean, inv)) in with_inverse_std(moments, 0.0).into_iter().enumerate() {
        out[ch] = mean as f32;
        // inv = 1 / sqrt(biased variance): back to the unbiased variance (through `inv`, as
        // before the moments were shared, so that the running statistics keep their bits).
        let biased = if inv.is_finite() { 1.0 / (inv * inv) } else { 0.0 };
        out[c + ch] = (biased * n / (n - 1.0)) as f32;
    }
    out
}

/// `y = x * scale[c] + shift[c]` over `(B, C, S)` data, planes in parallel; then ReLU if `relu`.
fn channel_affine(x: &[f32], c: usize, s: usize, scale: &[f32], shift: &[f32], relu: bool) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let (a, b) = (scale[p % c], shift[p % c]);
            if relu {
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = crate::relu::relu(v * a + b);
                }
            } else {
                for (o, &v) in yp.iter_mut().zip(xp) {
                    *o = v * a + b;
                }
            }
        });
    y
}

/// `y = x * scale[c] + shift[c]` per channel (batch norm in evaluation mode), `(x, scale, shift)`.
struct ChannelAffine;

impl CustomOp3 for ChannelAffine {
    fn name(&self) -> &'static str {
        "dtl-channel-affine"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ss: &CpuStorage,
        sl: &Layout,
        hs: &CpuStorage,
        hl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, c, s) = bcs(xl, "batch_norm input")?;
        let x = contiguous_f32(xs, xl, "batch_norm input")?;
        let scale = contiguous_f32(ss, sl, "batch_norm scale")?;
        let shift = contiguous_f32(hs, hl, "batch_norm shift")?;
        let y = channel_affine(x, c, s, scale, shift, false);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _shift: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = scale.elem_count();
        let mut bshape = vec![1usize; x.rank()];
        bshape[1] = c;
        let reduce: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let dx = grad.broadcast_mul(&scale.reshape(bshape.as_slice())?)?;
        let dscale = (grad * x)?.sum(reduce.as_slice())?;
        let dshift = grad.sum(reduce.as_slice())?;
        Ok((Some(dx), Some(dscale), Some(dshift)))
    }
}

/// Batch norm in training mode, `(x, gamma, beta)`, followed by a ReLU if `relu`. The forward
/// pass leaves the batch's per-channel moments in `moments`, where the caller reads the running
/// statistics and the backward pass finds them instead of recomputing them (two passes over the
/// input saved in each direction).
struct BatchNorm {
    eps: f64,
    relu: bool,
    moments: Arc<OnceLock<Vec<(f64, f64)>>>,
}

impl CustomOp3 for BatchNorm {
    fn name(&self) -> &'static str {
        "dtl-batch-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, s) = bcs(xl, "batch_norm input")?;
        let x = contiguous_f32(xs, xl, "batch_norm input")?;
        let gamma = contiguous_f32(gs, gl, "batch_norm weight")?;
        let beta = contiguous_f32(bs, bl, "batch_norm bias")?;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!(
                "batch_norm: weight and bias need {c} entries, found {} and {}",
                gamma.len(),
                beta.len()
            );
        }
        let moments = channel_moments(x, b, c, s);
        let stats = with_inverse_std(&moments, self.eps);
        // Set once: an op instance runs its forward pass once.
        let _ = self.moments.set(moments);
        let (scale, shift): (Vec<f32>, Vec<f32>) = stats
            .iter()
            .zip(gamma.iter().zip(beta))
            .map(|(&(mean, inv), (&g, &bt))| {
                (
                    (g as f64 * inv) as f32,
                    (bt as f64 - mean * g as f64 * inv) as f32,
                )
            })
            .unzip();
        let y = channel_affine(x, c, s, &scale, &shift, self.relu);
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = if self.relu {
            crate::relu::relu_grad(res, grad)?
        } else {
            grad.contiguous()?
        };
        let c = gamma.elem_count();
        let n = x.elem_count();
        let moments = self.moments.get().cloned().ok_or_else(|| {
            candle_core::Error::Msg("batch_norm backward: the forward pass left no statistics".into())
        })?;
        let backward = BatchNormBackward {
            eps: self.eps,
            moments,
        };
        let packed = x.apply_op3_no_bwd(gamma, &grad, &backward)?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, n, c)?.reshape(gamma.shape())?;
        let dbeta = packed.narrow(0, n + c, c)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Gradients of [`BatchNorm`]: `dx`, `dgamma`, `dbeta` packed into one flat tensor, from the
/// forward pass's moments.
struct BatchNormBackward {
    eps: f64,
    moments: Vec<(f64, f64)>,
}

impl CustomOp3 for BatchNormBackward {
    fn name(&self) -> &'static str {
        "dtl-batch-norm-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (b, c, s) = bcs(xl, "batch_norm input")?;
        let x = contiguous_f32(xs, xl, "batch_norm input")?;
        let gamma = contiguous_f32(gs, gl, "batch_norm weight")?;
        let dy = contiguous_f32(dys, dyl, "batch_norm output gradient")?;
        if self.moments.len() != c {
            candle_core::bail!(
                "batch_norm backward: {} channel statistics for {c} channels",
                self.moments.len()
            );
        }
        let stats = with_inverse_std(&self.moments, self.eps);
        let n = (b * s) as f64;
        // Per channel: sum(dy) and sum(dy * xhat).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mean, inv) = stats[ch];
                let (mut sd, mut sdx) = (0f64, 0f64);
                for i in 0..b {
                    let r = (i * c + ch) * s..(i * c + ch + 1) * s;
                    for (&g, &v) in dy[r.clone()].iter().zip(&x[r]) {
                        sd += g as f64;
                        sdx += g as f64 * (v as f64 - mean) * inv;
                    }
                }
                (sd, sdx)
            })
            .collect();
        let mut out = vec![0f32; x.len() + 2 * c];
        let (dx, rest) = out.split_at_mut(x.len());
        dx.par_chunks_mut(s)
            .zip(x.par_chunks(s).zip(dy.par_chunks(s)))
            .enumerate()
            .for_each(|(p, (dxp, (xp, dyp)))| {
                let ch = p % c;
                let (mean, inv) = stats[ch];
                let (sd, sdx) = sums[ch];
                let k = gamma[ch] as f64 * inv;
                for ((o, &v), &g) in dxp.iter_mut().zip(xp).zip(dyp) {
                    let xhat = (v as f64 - mean) * inv;
                    *o = (k * (g as f64 - sd / n - xhat * sdx / n)) as f32;
                }
            });
        for ch in 0..c {
            rest[ch] = sums[ch].1 as f32;
            rest[c + ch] = sums[ch].0 as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(x.len() + 2 * c)))
    }
}

/// Batch normalisation in training mode (Ioffe & Szegedy 2015, "Batch normalization: accelerating
/// deep network training by reducing internal covariate shift"): normalise each channel of `xs`
/// `(B, C, ...)` with the batch's mean and biased variance, then scale by `gamma` and shift by
/// `beta` (both `(C,)`), as PyTorch's `batch_norm(training=True)`.
///
/// Returns the output and the batch's per-channel mean and *unbiased* variance (detached, for the
/// running statistics, as PyTorch updates them). On the CPU (f32) forward and backward are dtl's
/// kernels (one statistics pass, one normalisation pass; the backward recomputes the statistics
/// instead of storing them); elsewhere the same formula in candle's differentiable tensor ops.
pub fn batch_norm_train(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_with(xs, gamma, beta, eps, false)
}

/// [`batch_norm_train`] followed by a ReLU, as one op on the CPU: the ReLU is applied in the
/// normalisation pass, and its gradient (`g * (y > 0)`, as PyTorch's) in one parallel pass before
/// batch norm's backward, instead of candle's three.
pub fn batch_norm_train_relu(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    batch_norm_train_with(xs, gamma, beta, eps, true)
}

fn batch_norm_train_with(
    xs: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = xs.dims().to_vec();
    if dims.len() < 2 || gamma.dims() != [dims[1]] || beta.dims() != [dims[1]] {
        candle_core::bail!(
            "batch_norm: input {:?} needs weight and bias of shape [{}], found {:?} and {:?}",
            dims,
            dims.get(1).copied().unwrap_or(0),
            gamma.dims(),
            beta.dims()
        );
    }
    if xs.elem_count() / dims[1] < 2 {
        candle_core::bail!(
            "batch_norm in training mode needs more than one value per channel, input {dims:?}"
        );
    }
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        let xs = xs.contiguous()?;
        let moments = Arc::new(OnceLock::new());
        let op = BatchNorm {
            eps,
            relu,
            moments: moments.clone(),
        };
        let y = xs.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        let c = dims[1];
        let n = (xs.elem_count() / c) as f64;
        let m = moments.get().ok_or_else(|| {
            candle_core::Error::Msg("batch_norm: the forward pass left no statistics".into())
        })?;
        let stats = Tensor::from_vec(running_stats(m, n), (2, c), xs.device())?;
        return Ok((y, stats.get(0)?, stats.get(1)?));
    }
    let (mean, var) = batch_stats_composed(xs)?;
    let y = batch_norm_composed(xs, gamma, beta, eps)?;
    Ok((if relu { y.relu()? } else { y }, mean, var))
}

/// Per-channel mean and unbiased variance of `xs` `(B, C, ...)` in candle's tensor ops, detached
/// from the graph (the running statistics of [`batch_norm_composed`]).
pub fn batch_stats_composed(xs: &Tensor) -> Result<(Tensor, Tensor)> {
    let (b, c) = (xs.dim(0)?, xs.dim(1)?);
    let n = xs.elem_count() / c;
    let flat = xs
        .detach()
        .reshape((b, c, n / b))?
        .transpose(0, 1)?
        .reshape((c, n))?;
    let mean = flat.mean(D::Minus1)?;
    let var_unbiased = (flat.broadcast_sub(&mean.unsqueeze(1)?)?.sqr()?.sum(D::Minus1)? / (n as f64 - 1.0))?;
    Ok((mean, var_unbiased))
}

/// Batch normalisation in training mode written in candle's differentiable tensor ops (the path
/// for non-CPU devices, and the reference the CPU kernel is tested against).
pub fn batch_norm_composed(xs: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let dims = xs.dims().to_vec();
    let c = dims[1];
    let mut bshape = vec![1usize; dims.len()];
    bshape[1] = c;
    let reduce: Vec<usize> = (0..dims.len()).filter(|&d| d != 1).collect();
    let mean = xs.mean_keepdim(reduce.as_slice())?;
    let centred = xs.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(reduce.as_slice())?;
    let xhat = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(&gamma.reshape(bshape.as_slice())?)?
        .broadcast_add(&beta.reshape(bshape.as_slice())?)
}

/// Batch normalisation in evaluation mode: `(x - mean) / sqrt(var + eps) * gamma + beta` with the
/// running statistics `mean` and `var` (`(C,)` each), in differentiable tensor ops.
pub fn batch_norm_eval(
    xs: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f64,
) -> Result<Tensor> {
    let dims = xs.dims();
    let mut bshape = vec![1usize; dims.len()];
    bshape[1] = dims[1];
    let scale = (gamma / (var + eps)?.sqrt()?)?;
    let shift = (beta - (mean * &scale)?)?;
    if xs.device().is_cpu() && xs.dtype() == DType::F32 && dims.len() >= 2 {
        return xs
            .contiguous()?
            .apply_op3(&scale.contiguous()?, &shift.contiguous()?, ChannelAffine);
    }
    xs.broadcast_mul(&scale.reshape(bshape.as_slice())?)?
        .broadcast_add(&shift.reshape(bshape.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_vec(rng: &mut rand_chacha::ChaCha8Rng, n: usize, scale: f32, shift: f32) -> Vec<f32> {
        (0..n)
            .map(|_| rng.random_range(-1.0f32..1.0) * scale + shift)
            .collect()
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max) / scale
    }

    /// The kernel against the composed formula (candle's autograd through primitive ops).
    #[test]
    fn kernel_matches_composed_ops_forward_and_backward() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for dims in [vec![4usize, 3, 5, 5], vec![8, 6], vec![2, 4, 3, 1]] {
            let c = dims[1];
            let n: usize = dims.iter().product();
            let xv = rand_vec(&mut rng, n, 2.0, 0.7);
            let x = Var::from_vec(xv, dims.as_slice(), &Device::Cpu)?;
            let g = Var::from_vec(rand_vec(&mut rng, c, 1.0, 1.0), c, &Device::Cpu)?;
            let bt = Var::from_vec(rand_vec(&mut rng, c, 1.0, 0.0), c, &Device::Cpu)?;
            let w = Tensor::from_vec(rand_vec(&mut rng, n, 1.0, 0.0), dims.as_slice(), &Device::Cpu)?;
            let f = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (_, mean, var) = batch_norm_train(x.as_tensor(), g.as_tensor(), bt.as_tensor(), 1e-5)?;
            // Plain and followed by a ReLU (fused here, candle's `relu` after the composed ops).
            for relu in [false, true] {
                let (y1, _, _) = if relu {
                    batch_norm_train_relu(x.as_tensor(), g.as_tensor(), bt.as_tensor(), 1e-5)?
                } else {
                    batch_norm_train(x.as_tensor(), g.as_tensor(), bt.as_tensor(), 1e-5)?
                };
                let y2 = batch_norm_composed(x.as_tensor(), g.as_tensor(), bt.as_tensor(), 1e-5)?;
                let y2 = if relu { y2.relu()? } else { y2 };
                if relu {
                    let zeros = f(&y1).iter().filter(|v| **v == 0.0).count();
                    assert!(zeros > n / 5 && zeros < 4 * n / 5, "{zeros} of {n} clipped");
                }
                assert!(max_rel(&f(&y1), &f(&y2)) < 1e-5, "forward {dims:?} relu {relu}");
                let g1 = (y1 * &w)?.sum_all()?.backward()?;
                let g2 = (y2 * &w)?.sum_all()?.backward()?;
                for (name, v) in [("x", &x), ("gamma", &g), ("beta", &bt)] {
                    let a = f(g1.get(v).unwrap());
                    let b = f(g2.get(v).unwrap());
                    assert!(
                        max_rel(&a, &b) < 1e-4,
                        "d{name} {dims:?} relu {relu}: {a:?} vs {b:?}"
                    );
                }
            }
            // Running statistics: channel mean and unbiased variance.
            let xs = f(x.as_tensor());
            let s: usize = dims[2..].iter().product();
            for ch in 0..c {
                let vals: Vec<f64> = (0..dims[0])
                    .flat_map(|i| xs[(i * c + ch) * s..(i * c + ch + 1) * s].to_vec())
                    .map(|v| v as f64)
                    .collect();
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (vals.len() - 1) as f64;
                assert!((mean.to_vec1::<f32>()?[ch] as f64 - m).abs() < 1e-5);
                assert!((var.to_vec1::<f32>()?[ch] as f64 - v).abs() < 1e-4);
            }
        }
        Ok(())
    }

    /// Central finite differences in f64 of the loss `sum(w * bn(x))` against the kernel's gradient.
    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let dims = [3usize, 2, 2, 2];
        let n = 24;
        let xv = rand_vec(&mut rng, n, 1.0, 0.3);
        let gv = rand_vec(&mut rng, 2, 0.5, 1.0);
        let bv = rand_vec(&mut rng, 2, 0.5, 0.0);
        let wv = rand_vec(&mut rng, n, 1.0, 0.0);
        let loss64 = |xv: &[f64]| -> f64 {
            let mut total = 0.0;
            for ch in 0..2 {
                let idx: Vec<usize> = (0..3)
                    .flat_map(|i| ((i * 2 + ch) * 4)..((i * 2 + ch) * 4 + 4))
                    .collect();
                let m = idx.iter().map(|&i| xv[i]).sum::<f64>() / 12.0;
                let v = idx.iter().map(|&i| (xv[i] - m).powi(2)).sum::<f64>() / 12.0;
                for &i in &idx {
                    total += wv[i] as f64 * ((xv[i] - m) / (v + 1e-5).sqrt() * gv[ch] as f64 + bv[ch] as f64);
                }
            }
            total
        };
        let x = Var::from_vec(xv.clone(), &dims, &Device::Cpu)?;
        let g = Tensor::from_vec(gv.clone(), 2, &Device::Cpu)?;
        let b = Tensor::from_vec(bv.clone(), 2, &Device::Cpu)?;
        let w = Tensor::from_vec(wv.clone(), &dims, &Device::Cpu)?;
        let (y, _, _) = batch_norm_train(x.as_tensor(), &g, &b, 1e-5)?;
        let grads = (y * w)?.sum_all()?.backward()?;
        let dx = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        let x64: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
        let h = 1e-6;
        for i in 0..n {
            let mut p = x64.clone();
            p[i] += h;
            let mut m = x64.clone();
            m[i] -= h;
            let fd = (loss64(&p) - loss64(&m)) / (2.0 * h);
            assert!(
                (dx[i] as f64 - fd).abs() < 1e-3 * fd.abs().max(1.0),
                "dx[{i}] {} vs {fd}",
                dx[i]
            );
        }
        Ok(())
    }

    #[test]
    fn eval_mode_matches_its_formula_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_vec(
            (0..24).map(|i| i as f32 * 0.1 - 1.0).collect::<Vec<_>>(),
            (2, 3, 2, 2),
            &dev,
        )?;
        let mean = Tensor::new(&[0.1f32, -0.2, 0.3], &dev)?;
        let var = Tensor::new(&[1.5f32, 0.5, 2.0], &dev)?;
        let g = Var::new(&[1.0f32, 2.0, -0.5], &dev)?;
        let b = Var::new(&[0.0f32, 0.1, 0.2], &dev)?;
        let y = batch_norm_eval(x.as_tensor(), &mean, &var, g.as_tensor(), b.as_tensor(), 1e-5)?;
        let yv = y.flatten_all()?.to_vec1::<f32>()?;
        let xv = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let (m, v, gv, bv) = (
            [0.1f32, -0.2, 0.3],
            [1.5f32, 0.5, 2.0],
            [1.0f32, 2.0, -0.5],
            [0.0f32, 0.1, 0.2],
        );
        for i in 0..24 {
            let c = (i / 4) % 3;
            let want = (xv[i] - m[c]) / (v[c] + 1e-5).sqrt() * gv[c] + bv[c];
            assert!((yv[i] - want).abs() < 1e-5, "y[{i}] {} vs {want}", yv[i]);
        }
        let grads = y.sum_all()?.backward()?;
        let dx = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        let dg = grads.get(&g).unwrap().to_vec1::<f32>()?;
        let db = grads.get(&b).unwrap().to_vec1::<f32>()?;
        for (i, d) in dx.iter().enumerate() {
            let c = (i / 4) % 3;
            assert!((d - gv[c] / (v[c] + 1e-5).sqrt()).abs() < 1e-5);
        }
        for c in 0..3 {
            let xs: f32 = (0..24)
                .filter(|i| (i / 4) % 3 == c)
                .map(|i| (xv[i] - m[c]) / (v[c] + 1e-5).sqrt())
                .sum();
            assert!((dg[c] - xs).abs() < 1e-4, "dgamma[{c}] {} vs {xs}", dg[c]);
            assert!((db[c] - 8.0).abs() < 1e-5);
        }
        Ok(())
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros((2, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
        let g = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
        let err = batch_norm_train(&x, &g, &g, 1e-5).unwrap_err().to_string();
        assert!(err.contains("[2, 3, 4, 4]") && err.contains("[4]"), "{err}");
        let one = Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap();
        let g3 = Tensor::ones(3, DType::F32, &Device::Cpu).unwrap();
        assert!(batch_norm_train(&one, &g3, &g3, 1e-5).is_err());
    }
}
