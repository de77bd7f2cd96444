//! 2-d convolution on the CPU: im2col and one GEMM per image straight into its `(O, OH*OW)` output
//! plane (bias folded in), or one GEMM per group of images side by side when an image has few
//! output pixels (`group_size`); the backward pass computes the weight and bias gradients (and
//! the input gradient only when the input needs one) in a single pass over the batch.
//!
//! candle 0.11's CPU convolution computes its input gradient through `conv_transpose2d` (8-33x
//! slower than a GEMM), always computes it, and adds the bias as a separate broadcast op whose
//! gradient costs two more passes over the output.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::{contiguous_f32, dims4};

pub(crate) mod gemm;
mod im2col;
mod pooled;

pub use pooled::conv2d_max_pool2_relu;

use gemm::{backward, forward};
use im2col::Geometry;

/// The convolution op; `Conv` is applied as a two-argument op without bias and a three-argument op
/// with it.
#[derive(Debug, Clone, Copy)]
struct Conv {
    stride: usize,
    pad: usize,
    /// A ReLU applied to the output (while it is in cache), and its gradient before the backward.
    relu: bool,
}

impl Conv {
    fn fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let xd = dims4(xl, "conv2d input")?;
        let wd = dims4(wl, "conv2d weight")?;
        let g = Geometry::new(xd, wd, self.stride, self.pad)?;
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let w = contiguous_f32(ws, wl, "conv2d weight")?;
        let y = forward(g, x, w, bias, xd.0, self.relu);
        Ok((CpuStorage::F32(y), Shape::from((xd.0, g.o, g.oh, g.ow))))
    }

    fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let grad = if self.relu {
            crate::relu::relu_grad(res, grad)?
        } else {
            grad.contiguous()?
        };
        self.grads_from(x, w, &grad)
    }

    /// `(dx if `x` needs one, dw, db)` for the gradient `grad` of the convolution's output (before
    /// any fused ReLU), contiguous.
    fn grads_from(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Tensor, Tensor)> {
        let want_dx = x.track_op();
        let packed = x.apply_op3_no_bwd(w, grad, &ConvBackward { conv: *self, want_dx })?;
        let (nx, nw, o) = (
            if want_dx { x.elem_count() } else { 0 },
            w.elem_count(),
            w.dim(0)?,
        );
        let dx = if want_dx {
            Some(packed.narrow(0, 0, nx)?.reshape(x.shape())?)
        } else {
            None
        };
        let dw = packed.narrow(0, nx, nw)?.reshape(w.shape())?;
        let db = packed.narrow(0, nx + nw, o)?;
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "dtl-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.fwd(xs, xl, ws, wl, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = self.grads(x, w, res, grad)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "dtl-conv2d-bias"
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
        let bias = contiguous_f32(bs, bl, "conv2d bias")?;
        self.fwd(xs, xl, ws, wl, Some(bias))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = self.grads(x, w, res, grad)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// `(x, w, dy)` to `[dx (if wanted), dw, db]` packed into one flat tensor.
struct ConvBackward {
    conv: Conv,
    want_dx: bool,
}

impl CustomOp3 for ConvBackward {
    fn name(&self) -> &'static str {
        "dtl-conv2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let xd = dims4(xl, "conv2d input")?;
        let g = Geometry::new(xd, dims4(wl, "conv2d weight")?, self.conv.stride, self.conv.pad)?;
        let x = contiguous_f32(xs, xl, "conv2d input")?;
        let w = contiguous_f32(ws, wl, "conv2d weight")?;
        let dy = contiguous_f32(gs, gl, "conv2d output gradient")?;
        if dy.len() != xd.0 * g.o * g.l() {
            candle_core::bail!(
                "conv2d backward: gradient has {} values, expected {}",
                dy.len(),
                xd.0 * g.o * g.l()
            );
        }
        let (mut dx, dw, db) = backward(g, x, w, dy, xd.0, self.want_dx);
        dx.extend_from_slice(&dw);
        dx.extend_from_slice(&db);
        let n = dx.len();
        Ok((CpuStorage::F32(dx), Shape::from(n)))
    }
}

/// 2-d convolution of `xs` `(B, C, H, W)` with a square kernel `w` `(O, C, k, k)`, stride and
/// symmetric zero padding, plus an optional `bias` `(O,)`: PyTorch's
/// `conv2d(xs, w, bias, stride=stride, padding=padding)`.
///
/// On the CPU (f32) this is dtl's kernel (see the module docs); the input gradient is computed only
/// when `xs` needs one (not for the images entering the first layer). On other devices it is
/// candle's `conv2d` plus a broadcast bias.
pub fn conv2d_bias(
    xs: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_with(xs, w, bias, stride, padding, false)
}

/// [`conv2d_bias`] followed by a ReLU, fused on the CPU: the ReLU is applied to each group of
/// output planes right after its GEMM wrote them, and its gradient (`g * (y > 0)`, as PyTorch's)
/// in one parallel pass before the convolution's backward.
pub fn conv2d_bias_relu(
    xs: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    conv2d_with(xs, w, bias, stride, padding, true)
}

fn conv2d_with(
    xs: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    relu: bool,
) -> Result<Tensor> {
    let xd = xs.dims4()?;
    let wd = w.dims4()?;
    Geometry::new(xd, wd, stride, padding)?;
    if let Some(b) = bias {
        if b.dims() != [wd.0] {
            candle_core::bail!(
                "conv2d: bias of shape {:?} does not fit {} filters",
                b.dims(),
                wd.0
            );
        }
    }
    let on_cpu = xs.device().is_cpu() && xs.dtype() == DType::F32 && w.dtype() == DType::F32;
    if !on_cpu {
        let y = xs.conv2d(w, padding, stride, 1, 1)?;
        let y = match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, wd.0, 1, 1))?)?,
            None => y,
        };
        return if relu { y.relu() } else { Ok(y) };
    }
    let op = Conv {
        stride,
        pad: padding,
        relu,
    };
    let (xs, w) = (xs.contiguous()?, w.contiguous()?);
    match bias {
        Some(b) => xs.apply_op3(&w, &b.contiguous()?, op),
        None => xs.apply_op2(&w, op),
    }
}

/// [`conv2d_bias`] without bias.
pub fn conv2d(xs: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_bias(xs, w, None, stride, padding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_vec(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Forward and all gradients against a direct six-loop convolution written out here.
    #[test]
    fn conv2d_matches_direct_loops() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for &(b, c, h, w, o, k, s, p) in &[
            (2, 3, 7, 6, 4, 3, 1, 1),
            (1, 2, 9, 9, 3, 5, 2, 2),
            (3, 1, 8, 8, 2, 5, 1, 0),
            (2, 4, 6, 6, 3, 1, 2, 0),
            (1, 2, 7, 7, 3, 3, 2, 1),
            (1, 3, 11, 10, 2, 7, 2, 3),
            // Grouped GEMMs: 16 pixels (jobs and GEMMs of 16 and 3 images), 1 pixel (one job of
            // 11; jobs of 16, 16 and 3), 100 pixels (groups of 3, 3, 2 and 2 in jobs of 8 and 2),
            // and 324 pixels (one image per GEMM).
            (19, 2, 4, 4, 5, 3, 1, 1),
            (11, 1, 3, 3, 2, 3, 1, 0),
            (35, 2, 3, 3, 4, 3, 1, 0),
            (10, 2, 10, 10, 3, 3, 1, 1),
            (2, 1, 18, 18, 2, 3, 1, 1),
            // Outputs of 32 and more columns take the row-wise im2col, 8 to 31 the phase planes,
            // narrower ones the table (10 and 18 above: phases of stride 1).
            (2, 2, 5, 40, 3, 3, 1, 1),
            (1, 2, 6, 70, 2, 3, 2, 1),
            (2, 1, 4, 34, 2, 3, 1, 0),
            // Phase planes of strides 3 and 2 with odd sides and padding not a multiple of the
            // stride (8 and 11 columns), ResNet's stem (16 columns); the table at strides 3 and 2.
            (1, 2, 20, 25, 2, 4, 3, 1),
            (2, 2, 17, 19, 3, 3, 2, 2),
            (2, 3, 32, 32, 2, 7, 2, 3),
            (2, 2, 10, 11, 3, 4, 3, 1),
            (1, 2, 5, 3, 2, 3, 2, 0),
            // Taps that read only padding are left out of the GEMM: a 3x3 kernel over 1x1 inputs
            // (the centre tap alone: ResNet's last stage at 32x32), stride 2 from 2x2 to 1x1 (4 of 9
            // taps), a 1x3 input (one kernel row), a 5x5 kernel with padding 2 over 2x2 inputs.
            (20, 3, 1, 1, 4, 3, 1, 1),
            (17, 2, 2, 2, 3, 3, 2, 1),
            (3, 2, 1, 3, 2, 3, 1, 1),
            (4, 2, 2, 2, 3, 5, 1, 2),
            // The table for narrow outputs that use every tap: 4x4 to 2x2 at stride 2 (ResNet's
            // third stage), 3 columns, 2 columns at stride 1.
            (5, 3, 4, 4, 4, 3, 2, 1),
            (3, 2, 3, 3, 2, 3, 1, 1),
            (20, 2, 2, 2, 3, 3, 1, 1),
            // 3x3 kernels over 8-wide planes at stride 1 (registers of two rows): ResNet's 8x8
            // stage, an odd height, a single row, 12 rows.
            (3, 2, 8, 8, 3, 3, 1, 1),
            (2, 2, 7, 8, 2, 3, 1, 1),
            (2, 1, 1, 8, 2, 3, 1, 1),
            (1, 3, 12, 8, 2, 3, 1, 1),
        ] {
            let xv = rand_vec(&mut rng, b * c * h * w);
            let wv = rand_vec(&mut rng, o * c * k * k);
            let bv = rand_vec(&mut rng, o);
            let x = Var::from_vec(xv.clone(), (b, c, h, w), &Device::Cpu)?;
            let wt = Var::from_vec(wv.clone(), (o, c, k, k), &Device::Cpu)?;
            let bt = Var::from_vec(bv.clone(), o, &Device::Cpu)?;
            let y = conv2d_bias(x.as_tensor(), wt.as_tensor(), Some(bt.as_tensor()), s, p)?;
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            assert_eq!(y.dims(), &[b, o, oh, ow]);
            let gy = rand_vec(&mut rng, b * o * oh * ow);
            let loss =
                (y.clone() * Tensor::from_vec(gy.clone(), (b, o, oh, ow), &Device::Cpu)?)?.sum_all()?;
            let grads = loss.backward()?;
            let yv = y.flatten_all()?.to_vec1::<f32>()?;
            let gx = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let gw = grads.get(&wt).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let gb = grads.get(&bt).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let mut ey = vec![0f32; yv.len()];
            let mut egx = vec![0f32; gx.len()];
            let mut egw = vec![0f32; gw.len()];
            let mut egb = vec![0f32; o];
            for n in 0..b {
                for f in 0..o {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let yi = ((n * o + f) * oh + oy) * ow + ox;
                            ey[yi] += bv[f];
                            egb[f] += gy[yi];
                            for ch in 0..c {
                                for dy in 0..k {
                                    for dx in 0..k {
                                        let iy = (oy * s + dy) as isize - p as isize;
                                        let ix = (ox * s + dx) as isize - p as isize;
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let xi = ((n * c + ch) * h + iy as usize) * w + ix as usize;
                                        let wi = ((f * c + ch) * k + dy) * k + dx;
                                        ey[yi] += xv[xi] * wv[wi];
                                        egx[xi] += gy[yi] * wv[wi];
                                        egw[wi] += gy[yi] * xv[xi];
                                    }
                                }
                            }
                        }
                    }
                }
            }
            for (name, got, want) in [
                ("y", &yv, &ey),
                ("dx", &gx, &egx),
                ("dw", &gw, &egw),
                ("db", &gb, &egb),
            ] {
                for (i, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g - e).abs() < 1e-4 * e.abs().max(1.0),
                        "{name}[{i}]: {g} vs {e} (case b{b} c{c} {h}x{w} o{o} k{k} s{s} p{p})"
                    );
                }
            }
            // Without bias: the same as with a zero bias.
            let y0 = conv2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            let yz = conv2d_bias(
                x.as_tensor(),
                wt.as_tensor(),
                Some(&bt.as_tensor().zeros_like()?),
                s,
                p,
            )?;
            assert_eq!(
                y0.flatten_all()?.to_vec1::<f32>()?,
                yz.flatten_all()?.to_vec1::<f32>()?
            );
        }
        Ok(())
    }

    #[test]
    fn no_input_gradient_for_plain_inputs() -> Result<()> {
        let x = Tensor::ones((2, 1, 5, 5), DType::F32, &Device::Cpu)?;
        let w = Var::ones((2, 1, 3, 3), DType::F32, &Device::Cpu)?;
        let grads = conv2d(&x, w.as_tensor(), 1, 0)?.sum_all()?.backward()?;
        assert!(grads.get(&x).is_none());
        // Each weight sees 2 images x 9 output cells of ones.
        assert_eq!(
            grads.get(&w).unwrap().flatten_all()?.to_vec1::<f32>()?,
            vec![18.0; 18]
        );
        Ok(())
    }

    #[test]
    fn conv2d_shape_errors_name_the_shapes() {
        let x = Tensor::zeros((1, 2, 5, 5), DType::F32, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let err = conv2d(&x, &w, 1, 0).unwrap_err().to_string();
        assert!(
            err.contains("[3, 1, 3, 3]") && err.contains("[1, 2, 5, 5]"),
            "{err}"
        );
        let w = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        let err = conv2d_bias(&x, &w, Some(&b), 1, 0).unwrap_err().to_string();
        assert!(err.contains("bias"), "{err}");
    }
}
