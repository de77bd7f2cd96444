//! 2-d convolution as im2col plus one matrix product, with a col2im backward.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::{contiguous_f32, dims4};

/// Geometry of a 2-d convolution's patches: square kernel `k`, stride, symmetric padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Patches {
    k: usize,
    stride: usize,
    pad: usize,
    /// Input `(C, H, W)`.
    c: usize,
    h: usize,
    w: usize,
}

impl Patches {
    fn out(&self) -> Result<(usize, usize)> {
        let side = |n: usize| -> Result<usize> {
            let padded = n + 2 * self.pad;
            if self.k == 0 || self.stride == 0 || padded < self.k {
                candle_core::bail!(
                    "conv2d: kernel {} stride {} padding {} does not fit an input side of {n}",
                    self.k,
                    self.stride,
                    self.pad
                );
            }
            Ok((padded - self.k) / self.stride + 1)
        };
        Ok((side(self.h)?, side(self.w)?))
    }

    /// Columns of one image: row `oy * OW + ox` holds the `C * k * k` inputs of that output cell
    /// (channel-major, then kernel row, then kernel column: the order of a `(O, C, k, k)` weight).
    fn im2col(&self, img: &[f32], cols: &mut [f32], oh: usize, ow: usize) {
        let (k, ckk) = (self.k, self.c * self.k * self.k);
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &mut cols[(oy * ow + ox) * ckk..(oy * ow + ox + 1) * ckk];
                let y0 = (oy * self.stride) as isize - self.pad as isize;
                let x0 = (ox * self.stride) as isize - self.pad as isize;
                for ch in 0..self.c {
                    let plane = &img[ch * self.h * self.w..(ch + 1) * self.h * self.w];
                    for dy in 0..k {
                        let y = y0 + dy as isize;
                        let dst = &mut row[(ch * k + dy) * k..(ch * k + dy + 1) * k];
                        if y < 0 || y >= self.h as isize {
                            dst.fill(0.0);
                            continue;
                        }
                        let line = &plane[y as usize * self.w..(y as usize + 1) * self.w];
                        if x0 >= 0 && x0 as usize + k <= self.w {
                            dst.copy_from_slice(&line[x0 as usize..x0 as usize + k]);
                        } else {
                            for (dx, d) in dst.iter_mut().enumerate() {
                                let x = x0 + dx as isize;
                                *d = if x < 0 || x >= self.w as isize {
                                    0.0
                                } else {
                                    line[x as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adjoint of [`Patches::im2col`]: adds each column entry back to the input cell it came from.
    fn col2im(&self, cols: &[f32], img: &mut [f32], oh: usize, ow: usize) {
        let (k, ckk) = (self.k, self.c * self.k * self.k);
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &cols[(oy * ow + ox) * ckk..(oy * ow + ox + 1) * ckk];
                let y0 = (oy * self.stride) as isize - self.pad as isize;
                let x0 = (ox * self.stride) as isize - self.pad as isize;
                for ch in 0..self.c {
                    for dy in 0..k {
                        let y = y0 + dy as isize;
                        if y < 0 || y >= self.h as isize {
                            continue;
                        }
                        let base = ch * self.h * self.w + y as usize * self.w;
                        let src = &row[(ch * k + dy) * k..(ch * k + dy + 1) * k];
                        for (dx, &v) in src.iter().enumerate() {
                            let x = x0 + dx as isize;
                            if x >= 0 && x < self.w as isize {
                                img[base + x as usize] += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

impl CustomOp1 for Patches {
    fn name(&self) -> &'static str {
        "dtl-im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, _, _, _) = dims4(layout, "conv2d input")?;
        let x = contiguous_f32(s, layout, "conv2d input")?;
        let (oh, ow) = self.out()?;
        let ckk = self.c * self.k * self.k;
        let mut cols = vec![0f32; b * oh * ow * ckk];
        cols.par_chunks_mut(oh * ow * ckk)
            .zip(x.par_chunks(self.c * self.h * self.w))
            .for_each(|(col, img)| self.im2col(img, col, oh, ow));
        Ok((CpuStorage::F32(cols), Shape::from((b, oh * ow, ckk))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2Im(*self))?))
    }
}

/// The gradient of [`Patches`] (im2col) with respect to its input.
struct Col2Im(Patches);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "dtl-col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let p = self.0;
        let cols = match layout.contiguous_offsets() {
            Some((a, z)) => match s {
                CpuStorage::F32(d) => &d[a..z],
                _ => candle_core::bail!("conv2d backward: gradient must be f32"),
            },
            None => candle_core::bail!("conv2d backward: gradient must be contiguous"),
        };
        let (oh, ow) = p.out()?;
        let b = layout.shape().dims()[0];
        let per_img = p.c * p.h * p.w;
        let mut img = vec![0f32; b * per_img];
        img.par_chunks_mut(per_img)
            .zip(cols.par_chunks(oh * ow * p.c * p.k * p.k))
            .for_each(|(im, col)| p.col2im(col, im, oh, ow));
        Ok((CpuStorage::F32(img), Shape::from((b, p.c, p.h, p.w))))
    }
}

/// 2-d convolution of `xs` `(B, C, H, W)` with a square kernel `w` `(O, C, k, k)`, stride and
/// symmetric zero padding (no bias), as PyTorch's `conv2d(xs, w, stride=stride, padding=padding)`.
///
/// On the CPU (f32) it is an im2col custom op followed by one matrix product, so that both
/// gradients are matrix products plus a col2im scatter: candle 0.11's own CPU backward goes through
/// `conv_transpose2d` and is several times slower. The input gradient is only computed when the
/// input needs one (not for the images entering the first layer). On other devices it is candle's
/// `conv2d`.
pub fn conv2d(xs: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, h, wd) = xs.dims4()?;
    let (o, wc, kh, kw) = w.dims4()?;
    if wc != c || kh != kw {
        candle_core::bail!(
            "conv2d: weight of shape {:?} does not fit input of shape {:?} (square kernels, same channels)",
            w.dims(),
            xs.dims()
        );
    }
    if !(xs.device().is_cpu() && xs.dtype() == DType::F32 && w.dtype() == DType::F32) {
        return xs.conv2d(w, padding, stride, 1, 1);
    }
    let p = Patches {
        k: kh,
        stride,
        pad: padding,
        c,
        h,
        w: wd,
    };
    let (oh, ow) = p.out()?;
    let cols = xs.contiguous()?.apply_op1(p)?; // (B, L, C k k)
    let cols = cols.reshape((b * oh * ow, c * kh * kw))?;
    let y = cols.matmul(&w.reshape((o, c * kh * kw))?.t()?)?; // (B L, O)
    y.reshape((b, oh * ow, o))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, o, oh, ow))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    fn rand_vec(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Forward and both gradients against a direct six-loop convolution written out here.
    #[test]
    fn conv2d_matches_direct_loops() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for &(b, c, h, w, o, k, s, p) in &[
            (2, 3, 7, 6, 4, 3, 1, 1),
            (1, 2, 9, 9, 3, 5, 2, 2),
            (3, 1, 8, 8, 2, 5, 1, 0),
        ] {
            let xv = rand_vec(&mut rng, b * c * h * w);
            let wv = rand_vec(&mut rng, o * c * k * k);
            let x = Var::from_vec(xv.clone(), (b, c, h, w), &Device::Cpu)?;
            let wt = Var::from_vec(wv.clone(), (o, c, k, k), &Device::Cpu)?;
            let y = conv2d(x.as_tensor(), wt.as_tensor(), s, p)?;
            let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
            assert_eq!(y.dims(), &[b, o, oh, ow]);
            let gy = rand_vec(&mut rng, b * o * oh * ow);
            let loss =
                (y.clone() * Tensor::from_vec(gy.clone(), (b, o, oh, ow), &Device::Cpu)?)?.sum_all()?;
            let grads = loss.backward()?;
            let yv = y.flatten_all()?.to_vec1::<f32>()?;
            let gx = grads.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let gw = grads.get(&wt).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let mut ey = vec![0f32; yv.len()];
            let mut egx = vec![0f32; gx.len()];
            let mut egw = vec![0f32; gw.len()];
            for n in 0..b {
                for f in 0..o {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let yi = ((n * o + f) * oh + oy) * ow + ox;
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
            for (name, got, want) in [("y", &yv, &ey), ("dx", &gx, &egx), ("dw", &gw, &egw)] {
                for (i, (g, e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g - e).abs() < 1e-4,
                        "{name}[{i}]: {g} vs {e} (case b{b} c{c} {h}x{w} o{o} k{k} s{s} p{p})"
                    );
                }
            }
        }
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
    }
}
