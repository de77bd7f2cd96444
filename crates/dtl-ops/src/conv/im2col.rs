//! The geometry of a convolution and the layout work around its GEMMs: im2col (through a gather
//! table, or through phase planes for outputs 8-31 columns wide) and its adjoint col2im.

use candle_core::Result;

/// Geometry of a convolution: square kernel `k`, stride, symmetric padding, input `(C, H, W)`,
/// `O` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) oh: usize,
    pub(super) ow: usize,
}

impl Geometry {
    pub(super) fn new(
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (_, c, h, wd) = x;
        let (o, wc, kh, kw) = w;
        if wc != c || kh != kw || kh == 0 || stride == 0 {
            candle_core::bail!(
                "conv2d: weight of shape {:?} does not fit input of shape {:?} (square kernels, same channels)",
                [o, wc, kh, kw],
                [x.0, c, h, wd]
            );
        }
        let side = |n: usize| -> Result<usize> {
            if n + 2 * pad < kh {
                candle_core::bail!(
                    "conv2d: kernel {kh} with padding {pad} does not fit an input side of {n}"
                );
            }
            Ok((n + 2 * pad - kh) / stride + 1)
        };
        Ok(Self {
            k: kh,
            stride,
            pad,
            c,
            h,
            w: wd,
            o,
            oh: side(h)?,
            ow: side(wd)?,
        })
    }

    pub(super) fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }

    pub(super) fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Output columns `ox` whose input column `ox * s + dx - p` lies inside the image.
    #[inline]
    pub(super) fn valid_ox(&self, dx: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.stride, self.pad);
        // ox * s + dx >= p  and  ox * s + dx - p < w
        let lo = if dx >= p { 0 } else { (p - dx).div_ceil(s) };
        let hi = if self.w + p > dx {
            (self.w + p - dx).div_ceil(s).min(self.ow)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// `(C k k, L)` columns of one image: row `(ch, dy, dx)`, column `(oy, ox)` holds
    /// `x[ch, oy * s + dy - p, ox * s + dx - p]` (0 outside the image). Row `r` is written to
    /// `cols[r * ld + off..][..L]`, so that several images can sit side by side in one matrix.
    #[inline(always)]
    pub(super) fn im2col(&self, img: &[f32], cols: &mut [f32], ld: usize, off: usize) {
        let (k, l, s) = (self.k, self.l(), self.stride);
        for ch in 0..self.c {
            let plane = &img[ch * self.h * self.w..(ch + 1) * self.h * self.w];
            for dy in 0..k {
                for dx in 0..k {
                    let r = (ch * k + dy) * k + dx;
                    let row = &mut cols[r * ld + off..r * ld + off + l];
                    let valid = self.valid_ox(dx);
                    for oy in 0..self.oh {
                        let y = (oy * s + dy) as isize - self.pad as isize;
                        let dst = &mut row[oy * self.ow..(oy + 1) * self.ow];
                        if y < 0 || y >= self.h as isize || valid.is_empty() {
                            dst.fill(0.0);
                            continue;
                        }
                        let line = &plane[y as usize * self.w..(y as usize + 1) * self.w];
                        dst[..valid.start].fill(0.0);
                        dst[valid.end..].fill(0.0);
                        let x0 = valid.start * s + dx - self.pad;
                        if s == 1 {
                            dst[valid.clone()].copy_from_slice(&line[x0..x0 + valid.len()]);
                        } else {
                            for (d, &v) in dst[valid.clone()].iter_mut().zip(line[x0..].iter().step_by(s)) {
                                *d = v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adjoint of [`Geometry::im2col`] (same `ld` and `off`): adds every column entry into the
    /// input cell it came from.
    #[inline(always)]
    pub(super) fn col2im(&self, cols: &[f32], img: &mut [f32], ld: usize, off: usize) {
        let (k, l, s) = (self.k, self.l(), self.stride);
        for ch in 0..self.c {
            let plane = &mut img[ch * self.h * self.w..(ch + 1) * self.h * self.w];
            for dy in 0..k {
                for dx in 0..k {
                    let r = (ch * k + dy) * k + dx;
                    let row = &cols[r * ld + off..r * ld + off + l];
                    let valid = self.valid_ox(dx);
                    if valid.is_empty() {
                        continue;
                    }
                    let x0 = valid.start * s + dx - self.pad;
                    for oy in 0..self.oh {
                        let y = (oy * s + dy) as isize - self.pad as isize;
                        if y < 0 || y >= self.h as isize {
                            continue;
                        }
                        let line = &mut plane[y as usize * self.w..(y as usize + 1) * self.w];
                        let src = &row[oy * self.ow + valid.start..oy * self.ow + valid.end];
                        if s == 1 {
                            for (d, &v) in line[x0..x0 + src.len()].iter_mut().zip(src) {
                                *d += v;
                            }
                        } else {
                            for (d, &v) in line[x0..].iter_mut().step_by(s).zip(src) {
                                *d += v;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Output widths below this take [`Phases`]' path: with a few output columns per row, the
/// row-wise copies of [`Geometry::im2col`] spend their time in per-row calls (three `memset`s and a
/// `memcpy` of a handful of floats each), not in moving data.
pub(super) const PHASES_BELOW_WIDTH: usize = 32;

/// Output widths below this take [`Gather`]'s path: runs of fewer than this many floats cost more
/// in per-run bookkeeping than a table lookup per entry (measured again with the AVX-512 copies:
/// ResNet's 2x2 stage at 32x32 inputs, 256 images, 0.65 ms by the table, 0.86-0.93 ms through
/// phase planes, whose per-channel set-up outweighs runs of 2 floats).
pub(super) const PHASES_FROM_WIDTH: usize = 8;

/// im2col through phase planes, for convolutions with narrow outputs: each input plane is first
/// copied into `stride x stride` zero-bordered phase planes (phase `(ry, rx)` holds the cells of
/// the padded plane whose row is `ry` and column `rx` modulo the stride), so that every row of a
/// kernel tap's column is one contiguous run of `OW` floats in one phase plane: no branch, no
/// index table and no padding test per entry, and the copy of a run is a few vector moves.
pub(super) struct Phases {
    /// Rows of a phase plane.
    pub(super) qh: usize,
    /// Columns of a phase plane.
    pub(super) qw: usize,
    /// For 3x3 kernels over 8-wide planes at stride 1 (ResNet's 8x8 stage at 32x32 inputs), the
    /// register path's tables ([`Geometry::im2col_rows8_avx512`]).
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    pub(super) rows8: Option<Rows8>,
}

/// Lane permutations for planes 8 cells wide held two rows to a 16-lane register: for each kernel
/// tap and each output register (two output rows), the first of the two input registers it reads
/// (`-1`: before the plane) with the permutation and mask over that pair (`forward`); and for each
/// tap and input register, the same over the output registers that read it (`backward`).
#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
pub(super) struct Rows8 {
    pub(super) forward: Vec<(isize, Lanes)>,
    pub(super) backward: Vec<(isize, Lanes)>,
}

impl Phases {
    /// Floats of scratch the phase planes of one input plane take.
    pub(super) fn cells(&self, stride: usize) -> usize {
        stride * stride * self.qh * self.qw
    }
}

/// im2col by a lookup table, for convolutions with narrow outputs: each input plane is copied once
/// into a zero-bordered `(H + 2p, W + 2p)` buffer, and every column entry is then read from the
/// buffer at an offset precomputed per kernel tap and output pixel. No branch or call per row, and
/// the padding costs nothing per entry.
pub(super) struct Gather {
    /// Width of the padded plane.
    pub(super) pw: usize,
    /// Cells of the padded plane.
    pub(super) cells: usize,
    /// The kernel taps `dy * k + dx` that read inside the image for at least one output pixel,
    /// in order. The others read only padding (a 3x3 kernel with padding 1 over a 1x1 input sees
    /// the image through its centre tap alone): their rows of the column matrix would be zero, so
    /// they are left out of it, and out of the GEMM's inner dimension.
    pub(super) taps: Vec<usize>,
    /// `table[t * L + oy * OW + ox] = (oy * s + dy) * pw + ox * s + dx` for tap `taps[t] = dy * k + dx`.
    pub(super) table: Vec<u32>,
    /// One more than the largest entry of `table`: the plane the table reads must hold as many.
    pub(super) span: usize,
    /// For input planes and outputs of at most 16 cells, per kept tap: the unpadded input cell
    /// each output pixel reads and which of them lie inside the image (a lane permutation and
    /// its mask, for [`Geometry::im2col_small_avx512`]), and the inverse: the output pixel that
    /// reads each input cell, if any (for [`Geometry::col2im_small_avx512`]; a tap reads each
    /// cell for at most one pixel).
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    pub(super) small: Option<Vec<[Lanes; 2]>>,
}

/// A permutation of 16 lanes and the lanes it fills (the others are zero).
#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
pub(super) type Lanes = ([i32; 16], u16);

/// The low `n` of 16 lanes (all of them from `n = 16` on).
#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
fn lanes(n: usize) -> u16 {
    ((1u32 << n.min(16)) - 1) as u16
}

impl Gather {
    /// Whether some taps are left out (the column matrix has fewer than `C k k` rows).
    pub(super) fn pruned(&self, k: usize) -> bool {
        self.taps.len() < k * k
    }
}

impl Geometry {
    /// Whether kernel tap `t = dy * k + dx` reads inside the image for some output pixel: its
    /// row offset for some output row and its column offset for some output column.
    fn tap_reads_image(&self, t: usize) -> bool {
        let (s, p) = (self.stride, self.pad);
        let inside = |d: usize, out: usize, n: usize| (0..out).any(|o| (p..p + n).contains(&(o * s + d)));
        inside(t / self.k, self.oh, self.h) && inside(t % self.k, self.ow, self.w)
    }

    /// The lookup table, when the output is narrow enough for it to pay (and offsets fit `u32`).
    pub(super) fn gather(&self) -> Option<Gather> {
        let (pw, ph) = (self.w + 2 * self.pad, self.h + 2 * self.pad);
        if self.ow >= PHASES_FROM_WIDTH || pw * ph > u32::MAX as usize {
            return None;
        }
        let (k, s, l) = (self.k, self.stride, self.l());
        let taps: Vec<usize> = (0..k * k).filter(|&t| self.tap_reads_image(t)).collect();
        let mut table = Vec::with_capacity(taps.len() * l);
        for &t in &taps {
            let (dy, dx) = (t / k, t % k);
            for oy in 0..self.oh {
                for ox in 0..self.ow {
                    table.push(((oy * s + dy) * pw + ox * s + dx) as u32);
                }
            }
        }
        let span = table.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
        let small = (self.h * self.w <= 16 && l <= 16).then(|| {
            taps.iter()
                .map(|&t| {
                    let (dy, dx) = (t / k, t % k);
                    let (mut idx, mut mask) = ([0i32; 16], 0u16);
                    for oy in 0..self.oh {
                        for ox in 0..self.ow {
                            let j = oy * self.ow + ox;
                            let (iy, ix) = (
                                (oy * s + dy).wrapping_sub(self.pad),
                                (ox * s + dx).wrapping_sub(self.pad),
                            );
                            if iy < self.h && ix < self.w {
                                idx[j] = (iy * self.w + ix) as i32;
                                mask |= 1 << j;
                            }
                        }
                    }
                    let (mut inv, mut inv_mask) = ([0i32; 16], 0u16);
                    for j in (0..16).filter(|j| mask >> j & 1 == 1) {
                        inv[idx[j] as usize] = j as i32;
                        inv_mask |= 1 << idx[j];
                    }
                    [(idx, mask), (inv, inv_mask)]
                })
                .collect()
        });
        Some(Gather {
            pw,
            cells: pw * ph,
            taps,
            table,
            span,
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            small,
        })
    }

    /// [`Geometry::im2col`] through `t`; `buf` holds `t.cells` floats whose border is zero (only
    /// the interior is ever written, so a buffer zeroed once serves every call).
    #[inline(always)]
    pub(super) fn im2col_gather(
        &self,
        t: &Gather,
        buf: &mut [f32],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (kk, l, hw) = (t.taps.len(), self.l(), self.h * self.w);
        for ch in 0..self.c {
            let plane = &img[ch * hw..(ch + 1) * hw];
            let src: &[f32] = if self.pad == 0 {
                plane
            } else {
                for (y, line) in plane.chunks(self.w).enumerate() {
                    let at = (y + self.pad) * t.pw + self.pad;
                    buf[at..at + self.w].copy_from_slice(line);
                }
                &buf[..t.cells]
            };
            assert!(t.span <= src.len(), "im2col: table reaches past its plane");
            for (tap, idx) in t.table.chunks(l).enumerate() {
                let r = ch * kk + tap;
                let row = &mut cols[r * ld + off..r * ld + off + l];
                for (d, &i) in row.iter_mut().zip(idx) {
                    // SAFETY: every entry of the table is below `t.span` (`Geometry::gather`),
                    // and `t.span <= src.len()` is asserted above.
                    *d = unsafe { *src.get_unchecked(i as usize) };
                }
            }
        }
    }

    /// Adjoint of [`Geometry::im2col_gather`] (adds into `img`); `buf` holds `t.cells` floats of
    /// scratch.
    #[inline(always)]
    pub(super) fn col2im_gather(
        &self,
        t: &Gather,
        buf: &mut [f32],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (kk, l, hw) = (t.taps.len(), self.l(), self.h * self.w);
        for ch in 0..self.c {
            let plane = &mut img[ch * hw..(ch + 1) * hw];
            let dst: &mut [f32] = if self.pad == 0 {
                plane
            } else {
                buf[..t.cells].fill(0.0);
                &mut buf[..t.cells]
            };
            for (tap, idx) in t.table.chunks(l).enumerate() {
                let r = ch * kk + tap;
                let row = &cols[r * ld + off..r * ld + off + l];
                for (&v, &i) in row.iter().zip(idx) {
                    dst[i as usize] += v;
                }
            }
            if self.pad > 0 {
                let plane = &mut img[ch * hw..(ch + 1) * hw];
                for (y, line) in plane.chunks_mut(self.w).enumerate() {
                    let at = (y + self.pad) * t.pw + self.pad;
                    for (d, &v) in line.iter_mut().zip(&buf[at..at + self.w]) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// How a convolution unfolds its input: by rows for wide outputs, through phase planes for
/// narrow ones, by a lookup table for the narrowest.
pub(super) enum Path {
    Rows,
    Phases(Phases),
    Gather(Gather),
}

impl Path {
    /// Rows of the column matrix: `C k k`, or `C` times the taps kept.
    pub(super) fn rows(&self, g: &Geometry) -> usize {
        match self {
            Path::Gather(t) => g.c * t.taps.len(),
            _ => g.ckk(),
        }
    }

    /// The taps kept, when some are left out.
    pub(super) fn pruned_taps(&self, g: &Geometry) -> Option<&[usize]> {
        match self {
            Path::Gather(t) if t.pruned(g.k) => Some(&t.taps),
            _ => None,
        }
    }

    /// Floats of per-thread scratch the path needs.
    pub(super) fn cells(&self, stride: usize) -> usize {
        match self {
            Path::Rows => 0,
            Path::Phases(t) => t.cells(stride),
            Path::Gather(t) => t.cells,
        }
    }
}

/// Which compiled copy of im2col (and of its adjoint) runs for a path on this CPU: the register
/// paths and the AVX-512 build of the copy loops where the CPU has AVX-512 (with the `x86-v4`
/// feature), the baseline build elsewhere. `unfold` and `fold` choose through the same value.
enum Route<'a> {
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    Small(&'a [[Lanes; 2]]),
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    Rows8(&'a Rows8),
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    Avx512(&'a Path),
    Any(&'a Path),
}

impl<'a> Route<'a> {
    fn of(path: &'a Path) -> Self {
        #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
        if crate::simd::has_avx512() {
            return match path {
                Path::Gather(Gather {
                    small: Some(small), ..
                }) => Route::Small(small),
                Path::Phases(Phases {
                    rows8: Some(rows8), ..
                }) => Route::Rows8(rows8),
                _ => Route::Avx512(path),
            };
        }
        Route::Any(path)
    }
}

impl Geometry {
    pub(super) fn path(&self) -> Path {
        if let Some(t) = self.phases() {
            Path::Phases(t)
        } else if let Some(t) = self.gather() {
            Path::Gather(t)
        } else {
            Path::Rows
        }
    }
}

/// One kernel tap's row of the column matrix from its phase plane: `row.len() / OW` runs of `OW`
/// floats, run `oy` from `phase[start + oy * qw..]`. `OW` is a constant, so a run is one or two
/// vector moves and the loop has no per-run length logic.
#[inline(always)]
pub(super) fn copy_tap_const<const OW: usize>(row: &mut [f32], phase: &[f32], qw: usize, start: usize) {
    for (oy, dst) in row.chunks_exact_mut(OW).enumerate() {
        let at = start + oy * qw;
        let src: &[f32; OW] = phase[at..at + OW].try_into().expect("a run of OW floats");
        dst.copy_from_slice(src);
    }
}

/// Calls `$f::<N>($args)` for the run length `N` equal to `$ow` among the common ones (1, 2, 4, 8,
/// 16), else `$other`.
macro_rules! by_run_length {
    ($ow:expr, $f:ident($($args:expr),*), $other:expr) => {
        match $ow {
            1 => $f::<1>($($args),*),
            2 => $f::<2>($($args),*),
            4 => $f::<4>($($args),*),
            8 => $f::<8>($($args),*),
            16 => $f::<16>($($args),*),
            _ => $other,
        }
    };
}

/// [`copy_tap_const`] for runs of `ow` floats.
#[inline(always)]
pub(super) fn copy_tap(row: &mut [f32], phase: &[f32], qw: usize, start: usize, ow: usize) {
    by_run_length!(ow, copy_tap_const(row, phase, qw, start), {
        for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
            let at = start + oy * qw;
            dst.copy_from_slice(&phase[at..at + ow]);
        }
    })
}

/// The adjoint of [`copy_tap_const`]: adds each run of `row` into the phase plane.
#[inline(always)]
pub(super) fn add_tap_const<const OW: usize>(row: &[f32], phase: &mut [f32], qw: usize, start: usize) {
    for (oy, src) in row.chunks_exact(OW).enumerate() {
        let at = start + oy * qw;
        let dst: &mut [f32; OW] = (&mut phase[at..at + OW]).try_into().expect("a run of OW floats");
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += v;
        }
    }
}

/// [`add_tap_const`] for runs of `ow` floats.
#[inline(always)]
pub(super) fn add_tap(row: &[f32], phase: &mut [f32], qw: usize, start: usize, ow: usize) {
    by_run_length!(ow, add_tap_const(row, phase, qw, start), {
        for (oy, src) in row.chunks_exact(ow).enumerate() {
            let at = start + oy * qw;
            for (d, &v) in phase[at..at + ow].iter_mut().zip(src) {
                *d += v;
            }
        }
    })
}

impl Geometry {
    /// The phase planes' shape, when the output is narrow enough for them to pay.
    pub(super) fn phases(&self) -> Option<Phases> {
        if self.ow >= PHASES_BELOW_WIDTH || self.ow < PHASES_FROM_WIDTH {
            return None;
        }
        let s = self.stride;
        Some(Phases {
            qh: (self.h + 2 * self.pad).div_ceil(s),
            qw: (self.w + 2 * self.pad).div_ceil(s),
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            rows8: self.rows8(),
        })
    }

    /// [`Rows8`] where it applies: 3x3 kernels with padding 1 at stride 1 over planes 8 columns
    /// wide and at most 32 rows (16 registers). A pair of output rows then reads two adjacent
    /// registers, the one before the plane (zero) included.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    fn rows8(&self) -> Option<Rows8> {
        if self.w != 8 || self.k != 3 || self.pad != 1 || self.stride != 1 || self.h > 32 {
            return None;
        }
        let (k, p) = (self.k as isize, self.pad as isize);
        let (h, oh) = (self.h as isize, self.oh as isize);
        // Lanes of the register pair from `first` (rows 2 first .. 2 first + 3) that hold the
        // rows `rows` of a plane `n` rows tall, columns `cols(lane)`; `None` outside the plane.
        let pair = |first: isize, dst_row0: isize, shift: (isize, isize), n: isize, m: isize| {
            let (mut idx, mut mask) = ([0i32; 16], 0u16);
            for lane in 0..16isize {
                let (row, col) = (dst_row0 + lane / 8, lane % 8);
                let (sr, sc) = (row + shift.0, col + shift.1);
                if row < m && (0..n).contains(&sr) && (0..8).contains(&sc) {
                    idx[lane as usize] = ((sr - 2 * first) * 8 + sc) as i32;
                    mask |= 1 << lane;
                }
            }
            (idx, mask)
        };
        let (mut forward, mut backward) = (Vec::new(), Vec::new());
        for t in 0..k * k {
            let (dy, dx) = (t / k, t % k);
            // Output row `o` reads input row `o + dy - p`, column `c + dx - p`.
            for q in 0..(oh + 1) / 2 {
                let first = (2 * q + dy - p).div_euclid(2);
                forward.push((first, pair(first, 2 * q, (dy - p, dx - p), h, oh)));
            }
            // Input row `i` is read by output row `i - dy + p`, column `c - dx + p`.
            for r in 0..(h + 1) / 2 {
                let first = (2 * r - dy + p).div_euclid(2);
                backward.push((first, pair(first, 2 * r, (p - dy, p - dx), oh, h)));
            }
        }
        Some(Rows8 { forward, backward })
    }

    /// The runs of one input row `y` in the phase buffer: for each column phase, the first image
    /// column in that phase and where its run starts in the buffer.
    pub(super) fn phase_runs(&self, t: &Phases, y: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (s, p) = (self.stride, self.pad);
        let py = y + p;
        let qw = t.qw;
        let qh = t.qh;
        (0..s).filter_map(move |rx| {
            // First image column x with (x + p) % s == rx.
            let x0 = (rx + s - p % s) % s;
            (x0 < self.w).then(|| (x0, (((py % s) * s + rx) * qh + py / s) * qw + (x0 + p) / s))
        })
    }

    /// [`Geometry::im2col`] through phase planes; `buf` holds `t.cells(stride)` floats whose border
    /// is zero (only cells of the image are ever written, so a buffer zeroed once serves every
    /// call).
    #[inline(always)]
    pub(super) fn im2col_phases(
        &self,
        t: &Phases,
        buf: &mut [f32],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (k, s, l, hw, ow) = (self.k, self.stride, self.l(), self.h * self.w, self.ow);
        let q = t.qh * t.qw;
        for ch in 0..self.c {
            let plane = &img[ch * hw..(ch + 1) * hw];
            for (y, line) in plane.chunks(self.w).enumerate() {
                for (x0, at) in self.phase_runs(t, y) {
                    if s == 1 {
                        buf[at..at + self.w].copy_from_slice(line);
                    } else {
                        for (d, &v) in buf[at..].iter_mut().zip(line[x0..].iter().step_by(s)) {
                            *d = v;
                        }
                    }
                }
            }
            for dy in 0..k {
                for dx in 0..k {
                    let r = (ch * k + dy) * k + dx;
                    let row = &mut cols[r * ld + off..r * ld + off + l];
                    let phase = &buf[((dy % s) * s + dx % s) * q..][..q];
                    copy_tap(row, phase, t.qw, (dy / s) * t.qw + dx / s, ow);
                }
            }
        }
    }

    /// Adjoint of [`Geometry::im2col_phases`] (adds into `img`); `buf` holds `t.cells(stride)`
    /// floats of scratch.
    #[inline(always)]
    pub(super) fn col2im_phases(
        &self,
        t: &Phases,
        buf: &mut [f32],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (k, s, l, hw, ow) = (self.k, self.stride, self.l(), self.h * self.w, self.ow);
        let q = t.qh * t.qw;
        let cells = t.cells(s);
        for ch in 0..self.c {
            buf[..cells].fill(0.0);
            for dy in 0..k {
                for dx in 0..k {
                    let r = (ch * k + dy) * k + dx;
                    let row = &cols[r * ld + off..r * ld + off + l];
                    let phase = &mut buf[((dy % s) * s + dx % s) * q..][..q];
                    add_tap(row, phase, t.qw, (dy / s) * t.qw + dx / s, ow);
                }
            }
            let plane = &mut img[ch * hw..(ch + 1) * hw];
            for (y, line) in plane.chunks_mut(self.w).enumerate() {
                for (x0, at) in self.phase_runs(t, y) {
                    for (d, &v) in line[x0..].iter_mut().step_by(s).zip(&buf[at..]) {
                        *d += v;
                    }
                }
            }
        }
    }

    /// im2col by whichever path `path` chose; with the `x86-v4` feature, compiled a second time
    /// for AVX-512 and that copy run where the CPU has it (a kernel tap's run of 16 floats is then
    /// one vector move instead of four).
    pub(super) fn unfold(
        &self,
        path: &Path,
        buf: &mut [f32],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        // SAFETY (each arm): `Route::of` picks an AVX-512 arm only where the CPU has the
        // features that function is compiled for.
        match Route::of(path) {
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Small(small) => unsafe { self.im2col_small_avx512(small, img, cols, ld, off) },
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Rows8(rows8) => unsafe { self.im2col_rows8_avx512(rows8, img, cols, ld, off) },
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Avx512(path) => unsafe { self.unfold_avx512(path, buf, img, cols, ld, off) },
            Route::Any(path) => self.unfold_any(path, buf, img, cols, ld, off),
        }
    }

    /// [`Geometry::im2col_phases`] for planes 8 cells wide at stride 1 ([`Rows8`]): the plane
    /// sits in registers of two rows each, and each kernel tap's row of the column matrix is one
    /// masked two-register permutation per pair of output rows, stored at once.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f")]
    unsafe fn im2col_rows8_avx512(&self, t: &Rows8, img: &[f32], cols: &mut [f32], ld: usize, off: usize) {
        use std::arch::x86_64::*;
        let (hw, l, kk) = (self.h * 8, self.l(), self.k * self.k);
        let (nr, nq) = (self.h.div_ceil(2), self.oh.div_ceil(2));
        assert!(
            self.w == 8 && self.ow == 8 && nr <= 16 && t.forward.len() == kk * nq,
            "im2col: the 8-wide register path does not fit this geometry"
        );
        self.check_buffers(kk, img.len(), cols.len(), ld, off);
        for ch in 0..self.c {
            // SAFETY: AVX-512F is present (the caller's contract); the masked loads read the
            // `8 h` cells of plane `ch`, inside `img`, and the masked stores write the `l = 8 OH`
            // floats of row `ch * kk + tap` from `off`, inside `cols` (both asserted by
            // `check_buffers`).
            unsafe {
                let plane = img.as_ptr().add(ch * hw);
                let mut regs = [_mm512_setzero_ps(); 18];
                for r in 0..nr {
                    regs[r + 1] = _mm512_maskz_loadu_ps(lanes(hw - 16 * r), plane.add(16 * r));
                }
                for tap in 0..kk {
                    let dst = cols.as_mut_ptr().add((ch * kk + tap) * ld + off);
                    for q in 0..nq {
                        let (first, (idx, mask)) = &t.forward[tap * nq + q];
                        // `regs[i + 1]` is input register `i`; indices -1 and `nr` stay zero.
                        let at = (first + 1).clamp(0, 16) as usize;
                        let row = _mm512_maskz_permutex2var_ps(
                            *mask,
                            regs[at],
                            _mm512_loadu_si512(idx.as_ptr().cast()),
                            regs[at + 1],
                        );
                        _mm512_mask_storeu_ps(dst.add(16 * q), lanes(l - 16 * q), row);
                    }
                }
            }
        }
    }

    /// The adjoint of [`Geometry::im2col_rows8_avx512`] (adds into `img`): for each pair of input
    /// rows, each kernel tap's contributions are permuted back out of the output registers that
    /// read them and added in tap order, as [`Geometry::col2im_phases`] adds them.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f")]
    unsafe fn col2im_rows8_avx512(&self, t: &Rows8, cols: &[f32], img: &mut [f32], ld: usize, off: usize) {
        use std::arch::x86_64::*;
        let (hw, l, kk) = (self.h * 8, self.l(), self.k * self.k);
        let (nr, nq) = (self.h.div_ceil(2), self.oh.div_ceil(2));
        assert!(
            self.w == 8 && self.ow == 8 && nq <= 16 && t.backward.len() == kk * nr,
            "col2im: the 8-wide register path does not fit this geometry"
        );
        self.check_buffers(kk, img.len(), cols.len(), ld, off);
        for ch in 0..self.c {
            // SAFETY: AVX-512F is present (the caller's contract); the masked loads read the `l`
            // floats of row `ch * kk + tap` from `off`, inside `cols`, and the plane's masked
            // loads and stores touch its `8 h` cells, inside `img` (both asserted by
            // `check_buffers`).
            unsafe {
                let mut acc = [_mm512_setzero_ps(); 16];
                for tap in 0..kk {
                    let src = cols.as_ptr().add((ch * kk + tap) * ld + off);
                    let mut outs = [_mm512_setzero_ps(); 18];
                    for q in 0..nq {
                        outs[q + 1] = _mm512_maskz_loadu_ps(lanes(l - 16 * q), src.add(16 * q));
                    }
                    for (r, a) in acc.iter_mut().enumerate().take(nr) {
                        let (first, (idx, mask)) = &t.backward[tap * nr + r];
                        let at = (first + 1).clamp(0, 16) as usize;
                        let back = _mm512_permutex2var_ps(
                            outs[at],
                            _mm512_loadu_si512(idx.as_ptr().cast()),
                            outs[at + 1],
                        );
                        *a = _mm512_mask_add_ps(*a, *mask, *a, back);
                    }
                }
                let plane = img.as_mut_ptr().add(ch * hw);
                for (r, a) in acc.iter().enumerate().take(nr) {
                    let m = lanes(hw - 16 * r);
                    let p = plane.add(16 * r);
                    _mm512_mask_storeu_ps(p, m, _mm512_add_ps(_mm512_maskz_loadu_ps(m, p), *a));
                }
            }
        }
    }

    /// For the register paths: asserts that the `C` input planes lie inside a buffer of `img`
    /// floats and the `C kk` rows of the column matrix (`L` floats each, from `off`, row stride
    /// `ld`) inside one of `cols` floats.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    fn check_buffers(&self, kk: usize, img: usize, cols: usize, ld: usize, off: usize) {
        assert!(
            img >= self.c * self.h * self.w,
            "im2col: image shorter than its planes"
        );
        let rows = self.c * kk;
        assert!(
            rows == 0 || (rows - 1) * ld + off + self.l() <= cols,
            "im2col: column matrix too short"
        );
    }

    /// For the 16-cell register path: [`Geometry::check_buffers`], a check that the planes and
    /// outputs fit 16 lanes, and the lane masks of a plane and of a row.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    fn small_masks(&self, kk: usize, img: usize, cols: usize, ld: usize, off: usize) -> (u16, u16) {
        let (hw, l) = (self.h * self.w, self.l());
        assert!(
            hw <= 16 && l <= 16,
            "im2col: the register path takes planes of 16 cells at most"
        );
        self.check_buffers(kk, img, cols, ld, off);
        (lanes(hw), lanes(l))
    }

    /// [`Geometry::im2col_gather`] for input planes and outputs of at most 16 cells (ResNet's
    /// 4x4, 2x2 and 1x1 stages at 32x32 inputs): each input plane is loaded into one AVX-512
    /// register, and each kept tap's row of the column matrix is one permutation of it with the
    /// cells outside the image zeroed, stored at once. No padded copy, no table walk.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f")]
    unsafe fn im2col_small_avx512(
        &self,
        small: &[[Lanes; 2]],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        use std::arch::x86_64::*;
        let (hw, kk) = (self.h * self.w, small.len());
        let (load_mask, store_mask) = self.small_masks(kk, img.len(), cols.len(), ld, off);
        for ch in 0..self.c {
            // SAFETY: AVX-512F is present (the caller's contract); the masked load reads the
            // `hw` cells of plane `ch`, inside `img`, and each masked store writes `l` floats of
            // row `ch * kk + t` from `off`, inside `cols` (both asserted by `small_masks`).
            unsafe {
                let plane = _mm512_maskz_loadu_ps(load_mask, img.as_ptr().add(ch * hw));
                for (t, [(idx, mask), _]) in small.iter().enumerate() {
                    let idx = _mm512_loadu_si512(idx.as_ptr().cast());
                    let row = _mm512_maskz_permutexvar_ps(*mask, idx, plane);
                    let at = (ch * kk + t) * ld + off;
                    _mm512_mask_storeu_ps(cols.as_mut_ptr().add(at), store_mask, row);
                }
            }
        }
    }

    /// [`Geometry::unfold`] compiled for AVX-512.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn unfold_avx512(
        &self,
        path: &Path,
        buf: &mut [f32],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        self.unfold_any(path, buf, img, cols, ld, off)
    }

    /// [`Geometry::unfold`]'s body, inlined into each compiled copy.
    #[inline(always)]
    fn unfold_any(&self, path: &Path, buf: &mut [f32], img: &[f32], cols: &mut [f32], ld: usize, off: usize) {
        match path {
            Path::Phases(t) => self.im2col_phases(t, buf, img, cols, ld, off),
            Path::Gather(t) => self.im2col_gather(t, buf, img, cols, ld, off),
            Path::Rows => self.im2col(img, cols, ld, off),
        }
    }

    /// col2im by whichever path `path` chose; compiled for AVX-512 as [`Geometry::unfold`] is.
    pub(super) fn fold(
        &self,
        path: &Path,
        buf: &mut [f32],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        // SAFETY (each arm): as in `unfold`.
        match Route::of(path) {
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Small(small) => unsafe { self.col2im_small_avx512(small, cols, img, ld, off) },
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Rows8(rows8) => unsafe { self.col2im_rows8_avx512(rows8, cols, img, ld, off) },
            #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
            Route::Avx512(path) => unsafe { self.fold_avx512(path, buf, cols, img, ld, off) },
            Route::Any(path) => self.fold_any(path, buf, cols, img, ld, off),
        }
    }

    /// The adjoint of [`Geometry::im2col_small_avx512`] (adds into `img`): each kept tap's row
    /// is permuted back onto the input cells it read and added into one register per plane, in
    /// tap order (the order [`Geometry::col2im_gather`] adds in, so the sums are the same).
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f")]
    unsafe fn col2im_small_avx512(
        &self,
        small: &[[Lanes; 2]],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        use std::arch::x86_64::*;
        let (hw, kk) = (self.h * self.w, small.len());
        let (plane_mask, row_mask) = self.small_masks(kk, img.len(), cols.len(), ld, off);
        for ch in 0..self.c {
            // SAFETY: AVX-512F is present (the caller's contract); each masked load reads `l`
            // floats of row `ch * kk + t` from `off`, inside `cols`, and the plane's masked load
            // and store touch its `hw` cells, inside `img` (all asserted by `small_masks`).
            unsafe {
                let mut acc = _mm512_setzero_ps();
                for (t, [_, (inv, inv_mask)]) in small.iter().enumerate() {
                    let at = (ch * kk + t) * ld + off;
                    let row = _mm512_maskz_loadu_ps(row_mask, cols.as_ptr().add(at));
                    let back = _mm512_permutexvar_ps(_mm512_loadu_si512(inv.as_ptr().cast()), row);
                    acc = _mm512_mask_add_ps(acc, *inv_mask, acc, back);
                }
                let p = img.as_mut_ptr().add(ch * hw);
                let sum = _mm512_add_ps(_mm512_maskz_loadu_ps(plane_mask, p), acc);
                _mm512_mask_storeu_ps(p, plane_mask, sum);
            }
        }
    }

    /// [`Geometry::fold`] compiled for AVX-512.
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn fold_avx512(
        &self,
        path: &Path,
        buf: &mut [f32],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        self.fold_any(path, buf, cols, img, ld, off)
    }

    /// [`Geometry::fold`]'s body, inlined into each compiled copy.
    #[inline(always)]
    fn fold_any(&self, path: &Path, buf: &mut [f32], cols: &[f32], img: &mut [f32], ld: usize, off: usize) {
        match path {
            Path::Phases(t) => self.col2im_phases(t, buf, cols, img, ld, off),
            Path::Gather(t) => self.col2im_gather(t, buf, cols, img, ld, off),
            Path::Rows => self.col2im(cols, img, ld, off),
        }
    }
}
