//! A switch between dtl's CPU kernels and candle's own ops, so that a model can be run (and
//! benchmarked, and checked) both ways with the same weights.

use candle_core::{Result, Tensor};

/// Which implementation of the convolution, pooling and normalisation layers a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// dtl's kernels ([`crate::conv2d`], [`crate::max_pool2d`], [`crate::batch_norm_train`]); on
    /// non-CPU devices these defer to candle themselves.
    #[default]
    Dtl,
    /// candle's native ops: `Tensor::conv2d` (its CPU backward goes through `conv_transpose2d`),
    /// max-pooling as a reshape and max reduction (candle's `max_pool2d` backward mis-scales the
    /// gradient, see the crate docs) or shifted slices with `-inf` padding, and batch norm in
    /// differentiable tensor ops.
    Candle,
}

impl Kernels {
    /// `conv2d(xs, w, bias, stride, padding)`.
    pub fn conv2d(
        &self,
        xs: &Tensor,
        w: &Tensor,
        bias: Option<&Tensor>,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        match self {
            Kernels::Dtl => crate::conv2d_bias(xs, w, bias, stride, padding),
            Kernels::Candle => {
                let y = xs.conv2d(w, padding, stride, 1, 1)?;
                match bias {
                    Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
                    None => Ok(y),
                }
            }
        }
    }

    /// A convolution without bias followed by batch norm in evaluation mode, as one convolution:
    /// the normalisation is folded into the filters, `w * s` with `s = gamma / sqrt(var + eps)`
    /// per output channel, and a bias `beta - mean * s` (Ioffe & Szegedy 2015, "Batch
    /// normalization", section 3.2: at inference the transform is linear and can be composed with
    /// the layer before it). Same values as `batch_norm_eval(conv2d(xs, w))` up to f32 rounding,
    /// and gradients for `xs`, `w`, `gamma` and `beta` through candle's autograd, with one pass over
    /// the output instead of two. `mean` and `var` are the running statistics, `(O,)` each. With
    /// `relu`, a ReLU follows, fused into the convolution ([`crate::conv2d_bias_relu`]).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_batch_norm_eval(
        &self,
        xs: &Tensor,
        w: &Tensor,
        stride: usize,
        padding: usize,
        mean: &Tensor,
        var: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<Tensor> {
        let o = w.dim(0)?;
        let scale = (gamma / (var + eps)?.sqrt()?)?;
        let shift = (beta - (mean * &scale)?)?;
        let wf = w.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
        match (self, relu) {
            (Kernels::Dtl, true) => crate::conv2d_bias_relu(xs, &wf, Some(&shift), stride, padding),
            (_, true) => self.conv2d(xs, &wf, Some(&shift), stride, padding)?.relu(),
            (_, false) => self.conv2d(xs, &wf, Some(&shift), stride, padding),
        }
    }

    /// Batch norm in training mode followed by a ReLU (output, batch mean, unbiased batch variance).
    pub fn batch_norm_train_relu(
        &self,
        xs: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Kernels::Dtl => crate::batch_norm_train_relu(xs, gamma, beta, eps),
            Kernels::Candle => {
                let (y, mean, var) = self.batch_norm_train(xs, gamma, beta, eps)?;
                Ok((y.relu()?, mean, var))
            }
        }
    }

    /// `relu(a + b)`.
    pub fn add_relu(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        match self {
            Kernels::Dtl => crate::add_relu(a, b),
            Kernels::Candle => (a + b)?.relu(),
        }
    }

    /// `relu(max_pool2d(conv2d(xs, w, bias, stride, padding), 2, 2, 0))`: LeNet's block, one
    /// fused op with dtl's kernels ([`crate::conv2d_max_pool2_relu`]).
    pub fn conv2d_max_pool2_relu(
        &self,
        xs: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        stride: usize,
        padding: usize,
    ) -> Result<Tensor> {
        match self {
            Kernels::Dtl => crate::conv2d_max_pool2_relu(xs, w, bias, stride, padding),
            Kernels::Candle => self
                .max_pool2d(&self.conv2d(xs, w, Some(bias), stride, padding)?, 2, 2, 0)?
                .relu(),
        }
    }

    /// Square max-pooling.
    pub fn max_pool2d(&self, xs: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
        match self {
            Kernels::Dtl => crate::max_pool2d(xs, k, stride, padding),
            Kernels::Candle => candle_max_pool2d(xs, k, stride, padding),
        }
    }

    /// Batch norm in training mode: output, batch mean, unbiased batch variance.
    pub fn batch_norm_train(
        &self,
        xs: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        match self {
            Kernels::Dtl => crate::batch_norm_train(xs, gamma, beta, eps),
            Kernels::Candle => {
                let (mean, var) = crate::batch_stats_composed(xs)?;
                Ok((crate::batch_norm_composed(xs, gamma, beta, eps)?, mean, var))
            }
        }
    }
}

/// Max-pooling in candle's differentiable tensor ops.
fn candle_max_pool2d(xs: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, w) = xs.dims4()?;
    if k == stride && padding == 0 && h.is_multiple_of(k) && w.is_multiple_of(k) {
        return xs.reshape((b, c, h / k, k, w / k, k))?.max(5)?.max(3);
    }
    let xs = if padding > 0 {
        let fill = |dims: (usize, usize, usize, usize)| {
            Tensor::full(f32::NEG_INFINITY, dims, xs.device())?.to_dtype(xs.dtype())
        };
        let side = fill((b, c, h, padding))?;
        let mid = Tensor::cat(&[&side, xs, &side], 3)?;
        let top = fill((b, c, padding, w + 2 * padding))?;
        Tensor::cat(&[&top, &mid, &top], 2)?
    } else {
        xs.clone()
    };
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < k || wp < k {
        candle_core::bail!("max_pool2d: kernel {k} does not fit an input of {h}x{w} with padding {padding}");
    }
    let (oh, ow) = ((hp - k) / stride + 1, (wp - k) / stride + 1);
    let mut out: Option<Tensor> = None;
    for dy in 0..k {
        for dx in 0..k {
            // Rows dy, dy + stride, ...: a strided view through reshape of a narrowed tensor.
            let rows = xs.narrow(2, dy, (oh - 1) * stride + 1)?;
            let cols = rows.narrow(3, dx, (ow - 1) * stride + 1)?;
            let picked = if stride == 1 {
                cols
            } else {
                let idx_h =
                    Tensor::arange_step(0u32, ((oh - 1) * stride + 1) as u32, stride as u32, xs.device())?;
                let idx_w =
                    Tensor::arange_step(0u32, ((ow - 1) * stride + 1) as u32, stride as u32, xs.device())?;
                cols.contiguous()?
                    .index_select(&idx_h, 2)?
                    .index_select(&idx_w, 3)?
            };
            out = Some(match out {
                None => picked,
                Some(m) => m.maximum(&picked)?,
            });
        }
    }
    Ok(out.expect("k >= 1"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// On inputs without ties both implementations give the same outputs and gradients.
    #[test]
    fn both_kernel_sets_agree() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let xv: Vec<f32> = (0..2 * 3 * 9 * 9)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let wv: Vec<f32> = (0..4 * 3 * 3 * 3)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let mut results = Vec::new();
        for k in [Kernels::Dtl, Kernels::Candle] {
            let x = Var::from_vec(xv.clone(), (2, 3, 9, 9), &Device::Cpu)?;
            let w = Var::from_vec(wv.clone(), (4, 3, 3, 3), &Device::Cpu)?;
            let g = Var::from_vec(vec![1.0f32, 0.5, 2.0, 1.5], 4, &Device::Cpu)?;
            let b = Var::from_vec(vec![0.1f32, -0.2, 0.0, 0.3], 4, &Device::Cpu)?;
            let y = k.conv2d(x.as_tensor(), w.as_tensor(), None, 2, 1)?;
            let (y, _, _) = k.batch_norm_train(&y, g.as_tensor(), b.as_tensor(), 1e-5)?;
            let y = k.max_pool2d(&y.relu()?, 3, 2, 1)?;
            let loss = (y.sqr()?.sum_all()? + y.sum_all()?)?;
            let grads = loss.backward()?;
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            results.push((
                flat(&y),
                flat(grads.get(&x).unwrap()),
                flat(grads.get(&w).unwrap()),
                flat(grads.get(&g).unwrap()),
            ));
        }
        let (a, b) = (&results[0], &results[1]);
        assert_close(a, b);
        Ok(())
    }

    type Results = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

    fn assert_close(a: &Results, b: &Results) {
        for (name, u, v) in [
            ("y", &a.0, &b.0),
            ("dx", &a.1, &b.1),
            ("dw", &a.2, &b.2),
            ("dgamma", &a.3, &b.3),
        ] {
            let scale = v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
            for (p, q) in u.iter().zip(v.iter()) {
                assert!((p - q).abs() <= 1e-4 * scale, "{name}: {p} vs {q}");
            }
        }
    }

    /// The folded evaluation-mode convolution and batch norm against the two layers one after the
    /// other (and candle's ReLU after them): values and the gradients of input, filters, scale and
    /// shift, for both kernel sets.
    #[test]
    fn folded_batch_norm_matches_the_two_layers() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut v =
            |n: usize, lo: f32, hi: f32| -> Vec<f32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
        let (xv, wv) = (v(2 * 3 * 9 * 9, -1.0, 1.0), v(4 * 3 * 3 * 3, -1.0, 1.0));
        let (gv, bv) = (v(4, 0.5, 2.0), v(4, -0.5, 0.5));
        let (mv, vv) = (v(4, -0.3, 0.3), v(4, 0.2, 3.0));
        let dev = &Device::Cpu;
        for (k, relu) in [Kernels::Dtl, Kernels::Candle]
            .into_iter()
            .flat_map(|k| [(k, false), (k, true)])
        {
            let run = |folded: bool| -> Result<Results> {
                let x = Var::from_vec(xv.clone(), (2, 3, 9, 9), dev)?;
                let w = Var::from_vec(wv.clone(), (4, 3, 3, 3), dev)?;
                let g = Var::from_vec(gv.clone(), 4, dev)?;
                let b = Var::from_vec(bv.clone(), 4, dev)?;
                let (m, var) = (Tensor::new(mv.as_slice(), dev)?, Tensor::new(vv.as_slice(), dev)?);
                let y = if folded {
                    k.conv2d_batch_norm_eval(
                        x.as_tensor(),
                        w.as_tensor(),
                        2,
                        1,
                        &m,
                        &var,
                        g.as_tensor(),
                        b.as_tensor(),
                        1e-5,
                        relu,
                    )?
                } else {
                    let y = k.conv2d(x.as_tensor(), w.as_tensor(), None, 2, 1)?;
                    let y = crate::batch_norm_eval(&y, &m, &var, g.as_tensor(), b.as_tensor(), 1e-5)?;
                    if relu {
                        y.relu()?
                    } else {
                        y
                    }
                };
                if relu {
                    let clipped = y
                        .flatten_all()?
                        .to_vec1::<f32>()?
                        .iter()
                        .filter(|v| **v == 0.0)
                        .count();
                    assert!(clipped > 20 && clipped < 180, "{clipped} of 200 clipped");
                }
                // Weights that differ per output cell, so that every gradient is non-trivial.
                let loss = (y.sqr()?.sum_all()? + y.sum_all()?)?;
                let grads = loss.backward()?;
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let gb = flat(grads.get(&b).unwrap());
                assert!(gb.iter().all(|d| d.abs() > 0.0), "dbeta {gb:?}");
                Ok((
                    flat(&y),
                    flat(grads.get(&x).unwrap()),
                    flat(grads.get(&w).unwrap()),
                    flat(grads.get(&g).unwrap()),
                ))
            };
            assert_close(&run(true)?, &run(false)?);
        }
        Ok(())
    }
}
