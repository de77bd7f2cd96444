//! Max-pooling with argmax routing of the gradient.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::{contiguous_f32, dims4};

/// Geometry of a square 2-d pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool {
    k: usize,
    stride: usize,
    pad: usize,
}

impl Pool {
    fn out_size(&self, n: usize) -> Result<usize> {
        let padded = n + 2 * self.pad;
        if self.k == 0 || self.stride == 0 || padded < self.k || self.pad >= self.k {
            candle_core::bail!(
                "max_pool2d: kernel {} stride {} padding {} does not fit an input side of {n}",
                self.k,
                self.stride,
                self.pad
            );
        }
        Ok((padded - self.k) / self.stride + 1)
    }

    /// The rows and columns of output cell `(oy, ox)`'s window that lie inside an `h x w` plane.
    #[inline]
    fn window(
        &self,
        h: usize,
        w: usize,
        oy: usize,
        ox: usize,
    ) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
        let clip = |o: usize, n: usize| {
            let start = o * self.stride;
            let lo = start.saturating_sub(self.pad).min(n);
            let hi = (start + self.k).saturating_sub(self.pad).min(n);
            lo..hi.max(lo)
        };
        (clip(oy, h), clip(ox, w))
    }

    /// Index (within the plane) of the first maximum of output cell `(oy, ox)` and its value; the
    /// first NaN if the window holds one (NaN propagates as in PyTorch). Padding never wins.
    ///
    /// Branch-free selects: which cell wins is data-dependent, and a branch on it mispredicted
    /// often enough to make pooling a sixth of ResNet's eval forward pass.
    #[inline]
    fn argmax(&self, plane: &[f32], h: usize, w: usize, oy: usize, ox: usize) -> (usize, f32) {
        let (rows, cols) = self.window(h, w, oy, ox);
        if rows.is_empty() || cols.is_empty() {
            return (usize::MAX, f32::NEG_INFINITY);
        }
        let first = rows.start * w + cols.start;
        let (mut best, mut at, mut nan_at) = (plane[first], first, usize::MAX);
        for y in rows {
            let base = y * w + cols.start;
            for (dx, &v) in plane[base..base + cols.len()].iter().enumerate() {
                let take = v > best;
                best = if take { v } else { best };
                at = if take { base + dx } else { at };
                let first_nan = v.is_nan() & (nan_at == usize::MAX);
                nan_at = if first_nan { base + dx } else { nan_at };
            }
        }
        if nan_at != usize::MAX {
            (nan_at, plane[nan_at])
        } else {
            (at, best)
        }
    }

    /// Floats of scratch [`Pool::max_plane`] needs for an `h x w` plane: the padded plane with
    /// each row split into its `stride` column phases.
    fn scratch(&self, h: usize, w: usize) -> usize {
        (h + 2 * self.pad) * self.stride * (w + 2 * self.pad).div_ceil(self.stride)
    }

    /// The values of [`Pool::argmax`] over a whole plane (the forward pass needs no index). The
    /// plane is copied into `buf` with `-inf` padding and each padded row split into its `stride`
    /// column phases (phase `r` holds the columns `r, r + s, ...`), so that a kernel tap `(dy,
    /// dx)` reads one output row's window cells as one contiguous run: the taps are folded into
    /// a whole output row at once, independent lanes instead of one chain of compares per cell.
    /// Taps are taken in the window's row-major order, as [`Pool::argmax`] does, so ties between
    /// `0.0` and `-0.0` resolve alike; a NaN anywhere in a window makes its value NaN.
    fn max_plane(&self, plane: &[f32], w: usize, out: &mut [f32], ow: usize, buf: &mut [f32]) {
        match self.stride {
            1 => self.max_plane_strided::<1>(plane, w, out, ow, buf),
            2 => self.max_plane_strided::<2>(plane, w, out, ow, buf),
            _ => self.max_plane_strided::<0>(plane, w, out, ow, buf),
        }
    }

    /// [`Pool::max_plane`] for stride `S` (0: the pool's own), a constant for the common strides
    /// so that the phase arithmetic needs no division.
    #[inline(always)]
    fn max_plane_strided<const S: usize>(
        &self,
        plane: &[f32],
        w: usize,
        out: &mut [f32],
        ow: usize,
        buf: &mut [f32],
    ) {
        let (k, s, p) = (self.k, if S == 0 { self.stride } else { S }, self.pad);
        let qw = (w + 2 * p).div_ceil(s);
        let row_len = s * qw;
        buf.fill(f32::NEG_INFINITY);
        for (y, line) in plane.chunks_exact(w).enumerate() {
            let row = &mut buf[(y + p) * row_len..(y + p + 1) * row_len];
            for r in 0..s {
                // The first image column in phase `r` ((x + p) % s == r), and where it goes.
                let x0 = (r + s - p % s) % s;
                let at = r * qw + (x0 + p) / s;
                for (d, &v) in row[at..].iter_mut().zip(line.iter().skip(x0).step_by(s)) {
                    *d = v;
                }
            }
        }
        for (oy, orow) in out.chunks_exact_mut(ow).enumerate() {
            orow.fill(f32::NEG_INFINITY);
            for dy in 0..k {
                let line = &buf[(oy * s + dy) * row_len..(oy * s + dy + 1) * row_len];
                for dx in 0..k {
                    let at = (dx % s) * qw + dx / s;
                    for (o, &v) in orow.iter_mut().zip(&line[at..at + ow]) {
                        *o = nan_max(v, *o);
                    }
                }
            }
            for o in orow.iter_mut() {
                if o.is_nan() {
                    *o = f32::NAN;
                }
            }
        }
    }
}

/// `max(a, b)` that propagates NaN (either one NaN gives NaN), without a branch.
#[inline(always)]
fn nan_max(a: f32, b: f32) -> f32 {
    if a.is_nan() || a > b {
        a
    } else {
        b
    }
}

impl Pool {
    /// Non-overlapping 2x2 windows without padding (LeNet's pooling): the windows need no
    /// clipping, so a plane is two rows at a time of pairs.
    fn is_2x2(&self) -> bool {
        self.k == 2 && self.stride == 2 && self.pad == 0
    }

    /// [`Pool::max_plane`] for [`Pool::is_2x2`]: pairs of two rows at a time, no buffer.
    pub(crate) fn max_2x2(plane: &[f32], w: usize, out: &mut [f32], ow: usize) {
        for (oy, o) in out.chunks_exact_mut(ow).enumerate() {
            let r0 = &plane[2 * oy * w..2 * oy * w + 2 * ow];
            let r1 = &plane[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
            for ((o, a), b) in o.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                *o = nan_max(nan_max(a[0], a[1]), nan_max(b[0], b[1]));
            }
        }
    }

    /// [`Pool::argmax`]'s gradient routing over a whole plane for [`Pool::is_2x2`]: each output
    /// gradient to its window's first maximum in row-major order (the first NaN if any). `dx`
    /// must be zero: the windows do not overlap, so each of the four cells of a window is
    /// written once (`0.0 + g` where it wins, as an addition into zero gives, `0.0` elsewhere),
    /// with no data-dependent index, so that the cells of a row are independent lanes.
    fn route_2x2(plane: &[f32], w: usize, g: &[f32], ow: usize, dx: &mut [f32]) {
        Self::route_2x2_with(plane, w, g, ow, dx, |_, gv| gv)
    }

    /// [`Pool::route_2x2`] with each output gradient first mapped by `grad(pooled value,
    /// gradient)` (a fused ReLU's mask).
    #[inline(always)]
    pub(crate) fn route_2x2_with(
        plane: &[f32],
        w: usize,
        g: &[f32],
        ow: usize,
        dx: &mut [f32],
        grad: impl Fn(f32, f32) -> f32,
    ) {
        for (oy, gr) in g.chunks_exact(ow).enumerate() {
            let (y0, y1) = (2 * oy * w, (2 * oy + 1) * w);
            let (r0, r1) = (&plane[y0..y0 + 2 * ow], &plane[y1..y1 + 2 * ow]);
            let (top, bottom) = dx[y0..y1 + 2 * ow].split_at_mut(w);
            let (d0, d1) = (&mut top[..2 * ow], &mut bottom[..2 * ow]);
            for ((((&gv, a), b), o0), o1) in gr
                .iter()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
                .zip(d0.chunks_exact_mut(2))
                .zip(d1.chunks_exact_mut(2))
            {
                let cells = [a[0], a[1], b[0], b[1]];
                let (mut best, mut at) = (cells[0], 0u8);
                for (i, &v) in cells.iter().enumerate().skip(1) {
                    let take = v > best;
                    best = if take { v } else { best };
                    at = if take { i as u8 } else { at };
                }
                // The first NaN, if any, wins.
                let mut nan_at = 4u8;
                for (i, &v) in cells.iter().enumerate().rev() {
                    nan_at = if v.is_nan() { i as u8 } else { nan_at };
                }
                let (at, pooled) = if nan_at < 4 {
                    (nan_at, f32::NAN)
                } else {
                    (at, best)
                };
                let gv = grad(pooled, gv);
                let put = |i: u8| if at == i { 0.0 + gv } else { 0.0 };
                o0[0] = put(0);
                o0[1] = put(1);
                o1[0] = put(2);
                o1[1] = put(3);
            }
        }
    }
}

/// Planes per parallel task: enough output cells that a task is worth scheduling.
fn planes_per_task(cells_per_plane: usize) -> usize {
    (4096 / cells_per_plane.max(1)).max(1)
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "dtl-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (b, c, h, w) = dims4(layout, "max_pool2d input")?;
        let x = contiguous_f32(s, layout, "max_pool2d input")?;
        let (oh, ow) = (self.out_size(h)?, self.out_size(w)?);
        let mut out = vec![0f32; b * c * oh * ow];
        let scratch = if self.is_2x2() { 0 } else { self.scratch(h, w) };
        out.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .with_min_len(planes_per_task(oh * ow))
            .for_each_init(
                || vec![0f32; scratch],
                |buf, (o, plane)| {
                    if self.is_2x2() {
                        return Pool::max_2x2(plane, w, o, ow);
                    }
                    self.max_plane(plane, w, o, ow, buf);
                },
            );
        Ok((CpuStorage::F32(out), Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        Ok(Some(arg.apply_op2_no_bwd(&grad, &PoolBackward(*self))?))
    }
}

/// Gradient of [`Pool`] with respect to its input: each output gradient goes to its window's
/// first maximum (recomputed from the input, so nothing is stored between passes).
struct PoolBackward(Pool);

impl CustomOp2 for PoolBackward {
    fn name(&self) -> &'static str {
        "dtl-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let p = self.0;
        let (b, c, h, w) = dims4(xl, "max_pool2d input")?;
        let x = contiguous_f32(xs, xl, "max_pool2d input")?;
        let g = contiguous_f32(gs, gl, "max_pool2d output gradient")?;
        let (oh, ow) = (p.out_size(h)?, p.out_size(w)?);
        if gl.shape().dims() != [b, c, oh, ow] {
            candle_core::bail!(
                "max_pool2d backward: gradient shape {:?}, expected {:?}",
                gl.shape().dims(),
                [b, c, oh, ow]
            );
        }
        let mut out = vec![0f32; b * c * h * w];
        out.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .with_min_len(planes_per_task(oh * ow))
            .for_each(|(o, (plane, gp))| {
                if p.is_2x2() {
                    return Pool::route_2x2(plane, w, gp, ow, o);
                }
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (at, _) = p.argmax(plane, h, w, oy, ox);
                        if at != usize::MAX {
                            o[at] += gp[oy * ow + ox];
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((b, c, h, w))))
    }
}

/// 2-d max pooling of `xs` `(B, C, H, W)` with a square `k x k` window, `stride` and symmetric
/// zero-cost padding (`-inf`), as PyTorch's `max_pool2d(xs, k, stride, padding)`.
///
/// On the CPU (f32) the forward and backward are dtl's kernels: the gradient goes to the first
/// maximum of each window. On other devices it defers to candle's tensor ops (a reshape and a max
/// reduction when `k == stride` and there is no padding; the gradient is then shared between tied
/// maxima).
pub fn max_pool2d(xs: &Tensor, k: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let pool = Pool {
        k,
        stride,
        pad: padding,
    };
    if xs.device().is_cpu() && xs.dtype() == DType::F32 {
        return xs.contiguous()?.apply_op1(pool);
    }
    let (b, c, h, w) = xs.dims4()?;
    if k != stride || padding != 0 || !h.is_multiple_of(k) || !w.is_multiple_of(k) {
        candle_core::bail!(
            "max_pool2d: on {:?} with {:?} only non-overlapping windows without padding are supported \
             (k {k}, stride {stride}, padding {padding}, input {h}x{w})",
            xs.device().location(),
            xs.dtype()
        );
    }
    xs.reshape((b, c, h / k, k, w / k, k))?.max(5)?.max(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Direct reference of PyTorch's semantics, written independently of the kernel.
    fn reference(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize) -> (Vec<f32>, Vec<usize>) {
        let oh = (h + 2 * p - k) / s + 1;
        let ow = (w + 2 * p - k) / s + 1;
        let mut vals = Vec::new();
        let mut idx = Vec::new();
        for oy in 0..oh {
            for ox in 0..ow {
                let mut cands = Vec::new();
                for dy in 0..k {
                    for dx in 0..k {
                        let y = (oy * s + dy) as isize - p as isize;
                        let xx = (ox * s + dx) as isize - p as isize;
                        if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                            cands.push(y as usize * w + xx as usize);
                        }
                    }
                }
                let m = cands.iter().map(|&i| x[i]).fold(f32::NEG_INFINITY, f32::max);
                let first = *cands.iter().find(|&&i| x[i] == m).unwrap();
                vals.push(m);
                idx.push(first);
            }
        }
        (vals, idx)
    }

    #[test]
    fn forward_and_gradient_match_reference() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for &(h, w, k, s, p) in &[
            (6, 6, 2, 2, 0),
            (7, 5, 2, 2, 0),
            (7, 5, 3, 2, 1),
            (8, 8, 3, 1, 1),
            (5, 5, 2, 1, 0),
            // ResNet's stem pooling, a stride larger than the padding, and odd sides unpadded.
            (16, 16, 3, 2, 1),
            (9, 11, 3, 3, 1),
            (6, 7, 3, 2, 0),
        ] {
            // Quantised values create ties, which must go to the first maximum.
            let x: Vec<f32> = (0..2 * h * w)
                .map(|_| (rng.random_range(0..6) as f32) / 2.0)
                .collect();
            let var = Var::from_vec(x.clone(), (1, 2, h, w), &Device::Cpu)?;
            let y = max_pool2d(var.as_tensor(), k, s, p)?;
            let (_, _, oh, ow) = y.dims4()?;
            let gy: Vec<f32> = (0..2 * oh * ow).map(|i| i as f32 + 1.0).collect();
            let gy_t = Tensor::from_vec(gy.clone(), (1, 2, oh, ow), &Device::Cpu)?;
            let grads = (y.clone() * gy_t)?.sum_all()?.backward()?;
            let g = grads.get(&var).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let yv = y.flatten_all()?.to_vec1::<f32>()?;
            let mut expect_g = vec![0f32; 2 * h * w];
            for ch in 0..2 {
                let (vals, idx) = reference(&x[ch * h * w..(ch + 1) * h * w], h, w, k, s, p);
                assert_eq!(&yv[ch * oh * ow..(ch + 1) * oh * ow], &vals[..]);
                for (o, &i) in idx.iter().enumerate() {
                    expect_g[ch * h * w + i] += gy[ch * oh * ow + o];
                }
            }
            assert_eq!(g, expect_g, "case {h}x{w} k{k} s{s} p{p}");
        }
        Ok(())
    }

    /// A NaN in a window is the window's value and takes its gradient (PyTorch's `max_pool2d`
    /// propagates NaN and routes the gradient to it), with and without padding.
    #[test]
    fn nan_wins_its_window() -> Result<()> {
        for p in [0, 1] {
            let x = [1.0f32, f32::NAN, 3.0, 2.0];
            let var = Var::from_vec(x.to_vec(), (1, 1, 2, 2), &Device::Cpu)?;
            let y = max_pool2d(var.as_tensor(), 2, 2, p)?;
            let yv = y.flatten_all()?.to_vec1::<f32>()?;
            // Without padding one window holds all four cells; with padding 1, four windows hold
            // one cell each.
            let nan_at = if p == 0 { 0 } else { 1 };
            assert!(yv[nan_at].is_nan(), "padding {p}: {yv:?}");
            if p == 1 {
                assert_eq!([yv[0], yv[2], yv[3]], [1.0, 3.0, 2.0]);
            }
            let g = y.sum_all()?.backward()?;
            let gv = g.get(&var).unwrap().flatten_all()?.to_vec1::<f32>()?;
            let want = if p == 0 {
                vec![0.0, 1.0, 0.0, 0.0]
            } else {
                vec![1.0, 1.0, 1.0, 1.0]
            };
            assert_eq!(
                gv.iter()
                    .map(|v| if v.is_nan() { -1.0 } else { *v })
                    .collect::<Vec<_>>(),
                want
            );
        }
        Ok(())
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let x = Tensor::zeros((1, 1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        let err = max_pool2d(&x, 3, 1, 0).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        let x3 = Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(max_pool2d(&x3, 2, 2, 0).is_err());
    }
}
