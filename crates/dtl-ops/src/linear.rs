//! The fully connected layer `xs W^T + b` (PyTorch's `F.linear`) on the CPU.
//!
//! Candle computes it as `xs.matmul(&w.t())`: both operands of that GEMM are contiguous along the
//! contracted dimension, which the `gemm` crate packs one strided float at a time (3% of the `W1`
//! benchmark's samples, for LeNet's 1024 -> 500 layer alone). Here both are transposed first by
//! 8x8 blocks and the GEMM packs contiguous runs. The backward pass's GEMMs (`dY W`, `dY^T X`)
//! already read their operands in `gemm`'s preferred order.
//!
//! `gemm` orders its sums by the operands' layout, so the values are those of the composed ops
//! within f32 rounding, not bit for bit: fixed-seed runs through fully connected layers changed
//! when this op replaced the composition (README's quick Yosinski table).

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::contiguous_f32;
use crate::conv::gemm::{matmul_with, Mat};
use crate::scratch::scratch;
use crate::transpose::transpose;

fn threads() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.shape().dims() {
        &[a, b] => Ok((a, b)),
        d => candle_core::bail!("{what} must be 2-d, found shape {d:?}"),
    }
}

struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "dtl-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, i) = dims2(xl, "linear input")?;
        let (o, _) = dims2(wl, "linear weight")?;
        let x = contiguous_f32(xs, xl, "linear input")?;
        let w = contiguous_f32(ws, wl, "linear weight")?;
        let b = contiguous_f32(bs, bl, "linear bias")?;
        // Both entirely written by the transposes.
        let (mut xt, mut wt) = (scratch(i * n), scratch(i * o));
        transpose(x, n, i, &mut xt);
        transpose(w, o, i, &mut wt);
        let mut y = vec![0f32; n * o];
        // y (N x O) = x (N x I) W^T (I x O), the bias added after the GEMM as a broadcast add
        // would (adding it inside the GEMM would round differently across its k blocks).
        matmul_with(
            &mut y,
            Mat::new(&xt, i, n).t(),
            Mat::new(&wt, i, o),
            false,
            threads(),
        );
        for row in y.chunks_exact_mut(o.max(1)) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = grad.contiguous()?;
        // dX = dY W and dW = dY^T X: the operands as candle's matmul backward reads them.
        let dx = if x.track_op() { Some(dy.matmul(w)?) } else { None };
        let dw = dy.t()?.matmul(x)?;
        let db = dy.sum(0)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `xs W^T + b` for `xs` `(N, in)`, `w` `(out, in)`, `b` `(out,)`: PyTorch's `F.linear`.
///
/// On the CPU (f32) the forward GEMM runs on transposed copies of both operands (see the module
/// docs); elsewhere, and for other shapes, it is candle's `matmul` plus a broadcast add.
pub fn linear(xs: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let cpu_f32 = xs.device().is_cpu()
        && [xs.dtype(), w.dtype(), b.dtype()]
            .iter()
            .all(|&d| d == DType::F32);
    let fits = xs.rank() == 2 && w.rank() == 2 && b.rank() == 1;
    if !(cpu_f32 && fits) {
        return xs.matmul(&w.t()?)?.broadcast_add(b);
    }
    let ((_, i), (o, wi)) = (xs.dims2()?, w.dims2()?);
    if wi != i || b.dims() != [o] {
        candle_core::bail!(
            "linear: weight {:?} and bias {:?} do not fit input {:?}",
            w.dims(),
            b.dims(),
            xs.dims()
        );
    }
    xs.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Output and all three gradients against candle's composed `matmul(w.t()) + b`: ragged 8x8
    /// blocks, a discriminator's single output, a classifier head, LeNet's 1024 -> 500 layer.
    /// Within f32 rounding, not bit for bit: `gemm` orders its sums by the operands' layout.
    #[test]
    fn linear_matches_composed_ops() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for &(n, i, o) in &[
            (3, 5, 2),
            (16, 24, 8),
            (33, 70, 13),
            (1, 9, 1),
            (256, 500, 1),
            (128, 500, 10),
            (64, 1024, 500),
            (256, 500, 500),
        ] {
            let mut r =
                |len: usize| -> Vec<f32> { (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let x = Var::from_vec(r(n * i), (n, i), &Device::Cpu)?;
            let w = Var::from_vec(r(o * i), (o, i), &Device::Cpu)?;
            let b = Var::from_vec(r(o), o, &Device::Cpu)?;
            let gy = Tensor::from_vec(r(n * o), (n, o), &Device::Cpu)?;
            let ours = linear(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
            let composed = x
                .as_tensor()
                .matmul(&w.as_tensor().t()?)?
                .broadcast_add(b.as_tensor())?;
            let g1 = (ours.clone() * &gy)?.sum_all()?.backward()?;
            let g2 = (composed.clone() * &gy)?.sum_all()?.backward()?;
            let close = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
                let (a, b) = (
                    a.flatten_all()?.to_vec1::<f32>()?,
                    b.flatten_all()?.to_vec1::<f32>()?,
                );
                assert_eq!(a.len(), b.len(), "{what}");
                // A sum of `i` products of values below 1 in magnitude: its rounding is within
                // `i` ulps of the largest partial sum.
                let tol = 4.0 * f32::EPSILON * i as f32;
                for (k, (u, v)) in a.iter().zip(&b).enumerate() {
                    assert!(
                        (u - v).abs() <= tol * v.abs().max(1.0),
                        "{what}[{k}]: {u} vs {v} ({n}x{i} -> {o})"
                    );
                }
                Ok(())
            };
            close(&ours, &composed, "y")?;
            for (v, what) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
                close(g1.get(v).unwrap(), g2.get(v).unwrap(), what)?;
            }
        }
        Ok(())
    }

    /// No input gradient is computed for an input that is not tracked.
    #[test]
    fn plain_inputs_get_no_gradient() -> Result<()> {
        let x = Tensor::ones((2, 3), DType::F32, &Device::Cpu)?;
        let w = Var::ones((4, 3), DType::F32, &Device::Cpu)?;
        let b = Var::zeros(4, DType::F32, &Device::Cpu)?;
        let y = linear(&x, w.as_tensor(), b.as_tensor())?;
        assert_eq!(y.to_vec2::<f32>()?, vec![vec![3.0f32; 4]; 2]);
        let g = y.sum_all()?.backward()?;
        assert!(g.get(&x).is_none());
        // Each weight sees two rows of ones; each bias two ones.
        assert_eq!(g.get(&w).unwrap().to_vec2::<f32>()?, vec![vec![2.0f32; 3]; 4]);
        assert_eq!(g.get(&b).unwrap().to_vec1::<f32>()?, vec![2.0f32; 4]);
        Ok(())
    }

    #[test]
    fn shape_errors_name_the_shapes() {
        let x = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((4, 5), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let err = linear(&x, &w, &b).unwrap_err().to_string();
        assert!(err.contains("[4, 5]") && err.contains("[2, 3]"), "{err}");
    }
}
