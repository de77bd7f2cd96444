//! LeNet's block, convolution + bias, 2x2 max-pooling with stride 2, ReLU, as one op.
//!
//! Composed, the block hands candle's backward pass two large intermediate gradients (the
//! convolution's output, `B x O x OH x OW`, and the pooling's): candle accumulates each into a
//! freshly zeroed tensor with an addition pass. Fused, the convolution's output stays inside the
//! op (kept for the backward pass, which routes the pooled gradient straight into the buffer the
//! convolution's backward reads) and only the pooled output enters the graph. Values and
//! gradients are those of the composed ops bit for bit (a test holds them equal).

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::forward;
use super::im2col::Geometry;
use super::Conv;
use crate::pool::Pool;
use crate::{contiguous_f32, dims4};

/// The fused op; `conv_out` keeps the convolution's output from the forward pass.
struct ConvPoolRelu {
    conv: Conv,
    conv_out: Arc<OnceLock<Vec<f32>>>,
}

impl CustomOp3 for ConvPoolRelu {
    fn name(&self) -> &'static str {
        "dtl-conv2d-maxpool2-relu"
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
        let xd = dims4(xl, "conv2d input")?;
        let g = Geometry::new(xd, dims4(wl, "conv2d weight")?, self.conv.stride, self.conv.pad)?;
        let (x, w) = (
            contiguous_f32(xs, xl, "conv2d input")?,
            contiguous_f32(ws, wl, "conv2d weight")?,
        );
        let bias = contiguous_f32(bs, bl, "conv2d bias")?;
        let y = forward(g, x, w, Some(bias), xd.0, false);
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        let mut out = vec![0f32; xd.0 * g.o * ph * pw];
        out.par_chunks_mut(ph * pw)
            .zip(y.par_chunks(g.oh * g.ow))
            .for_each(|(o, plane)| {
                Pool::max_2x2(plane, g.ow, o, pw);
                // candle's ReLU, `max(v, 0)`, as the composed block applies it.
                for v in o.iter_mut() {
                    *v = v.max(0f32);
                }
            });
        // A second forward pass of the same op value (not done by candle) would find the
        // buffer set; the backward pass reads the output of the forward pass that made it.
        let _ = self.conv_out.set(y);
        Ok((CpuStorage::F32(out), Shape::from((xd.0, g.o, ph, pw))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(y) = self.conv_out.get() else {
            candle_core::bail!("conv2d_max_pool2_relu: backward pass before the forward pass");
        };
        let (b, _, h, wd) = x.dims4()?;
        let g = Geometry::new((b, x.dim(1)?, h, wd), w.dims4()?, self.conv.stride, self.conv.pad)?;
        let (ph, pw) = (g.oh / 2, g.ow / 2);
        let grad = grad.contiguous()?;
        // Read in place: the pooled gradient is a quarter of the convolution's output.
        let (storage, layout) = grad.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            candle_core::bail!("conv2d_max_pool2_relu backward: gradient not on the CPU");
        };
        let dp = contiguous_f32(cpu, layout, "conv2d_max_pool2_relu output gradient")?;
        if dp.len() != b * g.o * ph * pw {
            candle_core::bail!(
                "conv2d_max_pool2_relu backward: gradient has {} values, expected {}",
                dp.len(),
                b * g.o * ph * pw
            );
        }
        // The pooled gradient through candle's ReLU backward (`g * (v >= 0)`, added into a
        // zero gradient) and routed to each window's first maximum, as the composed ops do.
        let mut dy = vec![0f32; y.len()];
        dy.par_chunks_mut(g.oh * g.ow)
            .zip(y.par_chunks(g.oh * g.ow).zip(dp.par_chunks(ph * pw)))
            .for_each(|(d, (plane, gp))| {
                Pool::route_2x2_with(plane, g.ow, gp, pw, d, |pooled, gv| {
                    0.0 + gv * if pooled >= 0.0 { 1.0 } else { 0.0 }
                });
            });
        drop(storage);
        let dy = Tensor::from_vec(dy, (b, g.o, g.oh, g.ow), x.device())?;
        let (dx, dw, db) = self.conv.grads_from(x, w, &dy)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `relu(max_pool2d(conv2d_bias(xs, w, bias, stride, padding), 2, 2, 0))`: LeNet's block as one
/// op on the CPU (f32), see the module docs; composed from [`super::conv2d_bias`] and
/// [`crate::max_pool2d`] elsewhere. The convolution's output must be at least 2x2.
pub fn conv2d_max_pool2_relu(
    xs: &Tensor,
    w: &Tensor,
    bias: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let g = Geometry::new(xs.dims4()?, w.dims4()?, stride, padding)?;
    if g.oh < 2 || g.ow < 2 {
        candle_core::bail!(
            "conv2d_max_pool2_relu: a {}x{} convolution output is too small for 2x2 pooling",
            g.oh,
            g.ow
        );
    }
    if bias.dims() != [g.o] {
        candle_core::bail!(
            "conv2d: bias of shape {:?} does not fit {} filters",
            bias.dims(),
            g.o
        );
    }
    let on_cpu = xs.device().is_cpu()
        && [xs.dtype(), w.dtype(), bias.dtype()]
            .iter()
            .all(|&d| d == DType::F32);
    if !on_cpu {
        return crate::max_pool2d(&super::conv2d_bias(xs, w, Some(bias), stride, padding)?, 2, 2, 0)?.relu();
    }
    let op = ConvPoolRelu {
        conv: Conv {
            stride,
            pad: padding,
            relu: false,
        },
        conv_out: Arc::new(OnceLock::new()),
    };
    xs.contiguous()?
        .apply_op3(&w.contiguous()?, &bias.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Output and every gradient equal to the composed ops' bit for bit: LeNet's two blocks, odd
    /// output sides (the last row and column are left out of the pooling), stride and padding,
    /// quantised values (ties in the pooling, exact zeros at the ReLU), an untracked input.
    #[test]
    fn fused_block_matches_composed_ops_bit_for_bit() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for &(b, c, h, w, o, k, s, p, quantised) in &[
            (3, 1, 28, 28, 4, 5, 1, 0, false),
            (2, 4, 12, 12, 6, 5, 1, 0, false),
            (2, 2, 9, 8, 3, 3, 1, 1, true),
            (3, 2, 11, 13, 2, 3, 2, 1, true),
        ] {
            let mut r = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| {
                        if quantised {
                            rng.random_range(-2i32..3) as f32 * 0.5
                        } else {
                            rng.random_range(-1.0f32..1.0)
                        }
                    })
                    .collect()
            };
            let x = Var::from_vec(r(b * c * h * w), (b, c, h, w), &Device::Cpu)?;
            let wt = Var::from_vec(r(o * c * k * k), (o, c, k, k), &Device::Cpu)?;
            let bt = Var::from_vec(r(o), o, &Device::Cpu)?;
            let fused = conv2d_max_pool2_relu(x.as_tensor(), wt.as_tensor(), bt.as_tensor(), s, p)?;
            let composed = crate::max_pool2d(
                &super::super::conv2d_bias(x.as_tensor(), wt.as_tensor(), Some(bt.as_tensor()), s, p)?,
                2,
                2,
                0,
            )?
            .relu()?;
            let bits = |t: &Tensor| -> Result<Vec<u32>> {
                Ok(t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|v| v.to_bits())
                    .collect())
            };
            let case = format!("b{b} c{c} {h}x{w} o{o} k{k} s{s} p{p}");
            assert_eq!(bits(&fused)?, bits(&composed)?, "output, {case}");
            let gy = Tensor::from_vec(r(fused.elem_count()), fused.shape(), &Device::Cpu)?;
            let g1 = (fused * &gy)?.sum_all()?.backward()?;
            let g2 = (composed * &gy)?.sum_all()?.backward()?;
            for (v, what) in [(&x, "dx"), (&wt, "dw"), (&bt, "db")] {
                assert_eq!(
                    bits(g1.get(v).unwrap())?,
                    bits(g2.get(v).unwrap())?,
                    "{what}, {case}"
                );
            }
        }
        // An input that is not tracked gets no gradient; the filters still do.
        let x = Tensor::ones((1, 1, 6, 6), DType::F32, &Device::Cpu)?;
        let wt = Var::ones((2, 1, 3, 3), DType::F32, &Device::Cpu)?;
        let bt = Var::zeros(2, DType::F32, &Device::Cpu)?;
        let g = conv2d_max_pool2_relu(&x, wt.as_tensor(), bt.as_tensor(), 1, 0)?
            .sum_all()?
            .backward()?;
        assert!(g.get(&x).is_none());
        // 4x4 outputs of 9 each, pooled to 2x2: each of the 4 windows routes 1 to its first cell,
        // which saw nine ones.
        assert_eq!(
            g.get(&wt).unwrap().flatten_all()?.to_vec1::<f32>()?,
            vec![4.0; 18]
        );
        Ok(())
    }

    #[test]
    fn too_small_outputs_are_errors() {
        let x = Tensor::zeros((1, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((2, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        let err = conv2d_max_pool2_relu(&x, &w, &b, 1, 0).unwrap_err().to_string();
        assert!(err.contains("too small"), "{err}");
    }
}
