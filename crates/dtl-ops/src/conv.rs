//! 2-d convolution on the CPU: im2col and one GEMM per image straight into its `(O, OH*OW)` output
//! plane (bias folded in), or one GEMM per group of images side by side when an image has few
//! output pixels (`group_size`); the backward pass computes the weight and bias gradients (and
//! the input gradient only when the input needs one) in a single pass over the batch.
//!
//! candle 0.11's CPU convolution computes its input gradient through `conv_transpose2d` (8-33x
//! slower than a GEMM), always computes it, and adds the bias as a separate broadcast op whose
//! gradient costs two more passes over the output.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::{contiguous_f32, dims4};

/// Geometry of a convolution: square kernel `k`, stride, symmetric padding, input `(C, H, W)`,
/// `O` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    k: usize,
    stride: usize,
    pad: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn new(
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

    fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }

    fn l(&self) -> usize {
        self.oh * self.ow
    }

    /// Output columns `ox` whose input column `ox * s + dx - p` lies inside the image.
    #[inline]
    fn valid_ox(&self, dx: usize) -> std::ops::Range<usize> {
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
    fn im2col(&self, img: &[f32], cols: &mut [f32], ld: usize, off: usize) {
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
    fn col2im(&self, cols: &[f32], img: &mut [f32], ld: usize, off: usize) {
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
const PHASES_BELOW_WIDTH: usize = 32;

/// Output widths below this take [`Gather`]'s path: runs of fewer than this many floats cost more
/// in per-run bookkeeping than a table lookup per entry.
const PHASES_FROM_WIDTH: usize = 8;

/// im2col through phase planes, for convolutions with narrow outputs: each input plane is first
/// copied into `stride x stride` zero-bordered phase planes (phase `(ry, rx)` holds the cells of
/// the padded plane whose row is `ry` and column `rx` modulo the stride), so that every row of a
/// kernel tap's column is one contiguous run of `OW` floats in one phase plane: no branch, no
/// index table and no padding test per entry, and the copy of a run is a few vector moves.
struct Phases {
    /// Rows of a phase plane.
    qh: usize,
    /// Columns of a phase plane.
    qw: usize,
}

impl Phases {
    /// Floats of scratch the phase planes of one input plane take.
    fn cells(&self, stride: usize) -> usize {
        stride * stride * self.qh * self.qw
    }
}

/// im2col by a lookup table, for convolutions with narrow outputs: each input plane is copied once
/// into a zero-bordered `(H + 2p, W + 2p)` buffer, and every column entry is then read from the
/// buffer at an offset precomputed per kernel tap and output pixel. No branch or call per row, and
/// the padding costs nothing per entry.
struct Gather {
    /// Width of the padded plane.
    pw: usize,
    /// Cells of the padded plane.
    cells: usize,
    /// `table[(dy * k + dx) * L + oy * OW + ox] = (oy * s + dy) * pw + ox * s + dx`.
    table: Vec<u32>,
}

impl Geometry {
    /// The lookup table, when the output is narrow enough for it to pay (and offsets fit `u32`).
    fn gather(&self) -> Option<Gather> {
        let (pw, ph) = (self.w + 2 * self.pad, self.h + 2 * self.pad);
        if self.ow >= PHASES_FROM_WIDTH || pw * ph > u32::MAX as usize {
            return None;
        }
        let (k, s, l) = (self.k, self.stride, self.l());
        let mut table = Vec::with_capacity(k * k * l);
        for dy in 0..k {
            for dx in 0..k {
                for oy in 0..self.oh {
                    for ox in 0..self.ow {
                        table.push(((oy * s + dy) * pw + ox * s + dx) as u32);
                    }
                }
            }
        }
        Some(Gather {
            pw,
            cells: pw * ph,
            table,
        })
    }

    /// [`Geometry::im2col`] through `t`; `buf` holds `t.cells` floats whose border is zero (only
    /// the interior is ever written, so a buffer zeroed once serves every call).
    fn im2col_gather(
        &self,
        t: &Gather,
        buf: &mut [f32],
        img: &[f32],
        cols: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (kk, l, hw) = (self.k * self.k, self.l(), self.h * self.w);
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
            for (tap, idx) in t.table.chunks(l).enumerate() {
                let r = ch * kk + tap;
                let row = &mut cols[r * ld + off..r * ld + off + l];
                for (d, &i) in row.iter_mut().zip(idx) {
                    *d = src[i as usize];
                }
            }
        }
    }

    /// Adjoint of [`Geometry::im2col_gather`] (adds into `img`); `buf` holds `t.cells` floats of
    /// scratch.
    fn col2im_gather(
        &self,
        t: &Gather,
        buf: &mut [f32],
        cols: &[f32],
        img: &mut [f32],
        ld: usize,
        off: usize,
    ) {
        let (kk, l, hw) = (self.k * self.k, self.l(), self.h * self.w);
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
enum Path {
    Rows,
    Phases(Phases),
    Gather(Gather),
}

impl Path {
    /// Floats of per-thread scratch the path needs.
    fn cells(&self, stride: usize) -> usize {
        match self {
            Path::Rows => 0,
            Path::Phases(t) => t.cells(stride),
            Path::Gather(t) => t.cells,
        }
    }
}

impl Geometry {
    fn path(&self) -> Path {
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
fn copy_tap_const<const OW: usize>(row: &mut [f32], phase: &[f32], qw: usize, start: usize) {
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
fn copy_tap(row: &mut [f32], phase: &[f32], qw: usize, start: usize, ow: usize) {
    by_run_length!(ow, copy_tap_const(row, phase, qw, start), {
        for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
            let at = start + oy * qw;
            dst.copy_from_slice(&phase[at..at + ow]);
        }
    })
}

/// The adjoint of [`copy_tap_const`]: adds each run of `row` into the phase plane.
#[inline(always)]
fn add_tap_const<const OW: usize>(row: &[f32], phase: &mut [f32], qw: usize, start: usize) {
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
fn add_tap(row: &[f32], phase: &mut [f32], qw: usize, start: usize, ow: usize) {
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
    fn phases(&self) -> Option<Phases> {
        if self.ow >= PHASES_BELOW_WIDTH || self.ow < PHASES_FROM_WIDTH {
            return None;
        }
        let s = self.stride;
        Some(Phases {
            qh: (self.h + 2 * self.pad).div_ceil(s),
            qw: (self.w + 2 * self.pad).div_ceil(s),
        })
    }

    /// The runs of one input row `y` in the phase buffer: for each column phase, the first image
    /// column in that phase and where its run starts in the buffer.
    fn phase_runs(&self, t: &Phases, y: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
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
    fn im2col_phases(
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
    fn col2im_phases(
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

    /// im2col by whichever path `path` chose.
    fn unfold(&self, path: &Path, buf: &mut [f32], img: &[f32], cols: &mut [f32], ld: usize, off: usize) {
        match path {
            Path::Phases(t) => self.im2col_phases(t, buf, img, cols, ld, off),
            Path::Gather(t) => self.im2col_gather(t, buf, img, cols, ld, off),
            Path::Rows => self.im2col(img, cols, ld, off),
        }
    }

    /// col2im by whichever path `path` chose.
    fn fold(&self, path: &Path, buf: &mut [f32], cols: &[f32], img: &mut [f32], ld: usize, off: usize) {
        match path {
            Path::Phases(t) => self.col2im_phases(t, buf, cols, img, ld, off),
            Path::Gather(t) => self.col2im_gather(t, buf, cols, img, ld, off),
            Path::Rows => self.col2im(cols, img, ld, off),
        }
    }
}

/// A row-major matrix view for [`matmul`]: `rows x cols` with the given strides.
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    fn last_index(&self) -> usize {
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `dst (m x n, row-major) = [dst +] a (m x k) b (k x n)`, single-threaded (callers parallelise
/// over images).
fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && dst.len() >= m * n, "matmul: shapes do not chain");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: view out of bounds"
    );
    // SAFETY: the asserts above check that every element gemm reads through the strides of `a`
    // and `b` lies inside their slices and that `dst` holds the m x n row-major result; the three
    // slices do not overlap because `dst` is borrowed mutably while `a` and `b` are shared.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Images per parallel job, at least. Job sizes are functions of the shape, not of the thread
/// count, so that the weight-gradient sums are added in the same order on every run and machine.
const IMAGES_PER_JOB: usize = 8;

/// Images per parallel job, at most: each job of the backward pass zeroes, fills and finally adds
/// its own `(O, C k k)` weight-gradient copy, which for late layers with few output pixels costs
/// as much as the job's GEMMs unless the job holds more images.
const MAX_IMAGES_PER_JOB: usize = 16;

/// Images per job for `l` output pixels per image: enough that a job multiplies at least
/// [`MIN_GEMM_COLUMNS`] columns, within [`IMAGES_PER_JOB`]..=[`MAX_IMAGES_PER_JOB`].
fn images_per_job(l: usize) -> usize {
    MIN_GEMM_COLUMNS
        .div_ceil(l.max(1))
        .clamp(IMAGES_PER_JOB, MAX_IMAGES_PER_JOB)
}

/// GEMM columns worth gathering: below this many output pixels per image, the images of a job are
/// put side by side into one `(C k k, G L)` matrix and multiplied at once, because a GEMM with a
/// handful of columns (ResNet's late stages: 4 or 1 pixels) leaves the FMA units idle.
const MIN_GEMM_COLUMNS: usize = 256;

/// Images per GEMM for `l` output pixels per image: a function of the shape only, so results do not
/// depend on the machine.
fn group_size(l: usize) -> usize {
    MIN_GEMM_COLUMNS.div_ceil(l.max(1)).clamp(1, images_per_job(l))
}

fn forward(g: Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, b: usize, relu: bool) -> Vec<f32> {
    let (ckk, l, o) = (g.ckk(), g.l(), g.o);
    let chw = g.c * g.h * g.w;
    let gs = group_size(l);
    let path = g.path();
    let cells = path.cells(g.stride);
    let mut y = vec![0f32; b * o * l];
    y.par_chunks_mut(gs * o * l)
        .zip(x.par_chunks(gs * chw))
        .for_each_init(
            || {
                (
                    vec![0f32; ckk * gs * l],
                    vec![0f32; if gs > 1 { o * gs * l } else { 0 }],
                    vec![0f32; cells],
                )
            },
            |(cols, yg, buf), (yc, xc)| {
                let n = xc.len() / chw;
                let gl = n * l;
                for (k, xi) in xc.chunks(chw).enumerate() {
                    g.unfold(&path, buf, xi, cols, gl, k * l);
                }
                // One image: the GEMM writes the output plane directly; several: into `yg`
                // `(O, G L)`, then each image's columns are copied to its own plane.
                let dst: &mut [f32] = if n == 1 { yc } else { &mut yg[..o * gl] };
                if let Some(bias) = bias {
                    for (row, &bv) in dst.chunks_mut(gl).zip(bias) {
                        row.fill(bv);
                    }
                }
                matmul(
                    dst,
                    Mat::new(w, o, ckk),
                    Mat::new(&cols[..ckk * gl], ckk, gl),
                    bias.is_some(),
                );
                if n > 1 {
                    for (k, yi) in yc.chunks_mut(o * l).enumerate() {
                        for (ch, plane) in yi.chunks_mut(l).enumerate() {
                            plane.copy_from_slice(&yg[ch * gl + k * l..ch * gl + (k + 1) * l]);
                        }
                    }
                }
                if relu {
                    for v in yc.iter_mut() {
                        *v = crate::relu::relu(*v);
                    }
                }
            },
        );
    y
}

/// Gradients `(dx, dw, db)` of the convolution for output gradient `dy`; `dx` only if asked.
///
/// Jobs of [`images_per_job`] images run in parallel, each accumulating its own weight and bias
/// gradients over GEMMs of [`group_size`] images; the partial sums are then added in job order, so
/// the result is deterministic.
fn backward(
    g: Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    b: usize,
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (ckk, l, o) = (g.ckk(), g.l(), g.o);
    let chw = g.c * g.h * g.w;
    let gs = group_size(l);
    let per_job = images_per_job(l);
    let jobs = b.div_ceil(per_job);
    let path = g.path();
    let cells = path.cells(g.stride);
    let mut dx = if want_dx { vec![0f32; b * chw] } else { Vec::new() };
    // Scratch of one rayon task, reused by the jobs it runs: every buffer is either fully written
    // before it is read (`cols`, `dyg`, `dcols`), zeroed where it is used (`dbuf`, per channel), or
    // written only inside a zero border that no job touches (`buf`). Separate buffers for the two
    // directions: im2col relies on its buffer's zero border, which col2im's scatter would dirty.
    let scratch = || {
        (
            vec![0f32; cells],
            vec![0f32; if want_dx { cells } else { 0 }],
            vec![0f32; ckk * gs * l],
            vec![0f32; if gs > 1 { o * gs * l } else { 0 }],
            vec![0f32; if want_dx { ckk * gs * l } else { 0 }],
        )
    };
    type Scratch = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);
    let job = |scratch: &mut Scratch, j: usize, mut dxc: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        let (mut dw, mut db) = (vec![0f32; o * ckk], vec![0f32; o]);
        let (buf, dbuf, cols, dyg, dcols) = scratch;
        let first = j * per_job;
        let last = ((j + 1) * per_job).min(b);
        for i0 in (first..last).step_by(gs) {
            let n = gs.min(last - i0);
            let gl = n * l;
            for k in 0..n {
                let img = &x[(i0 + k) * chw..(i0 + k + 1) * chw];
                g.unfold(&path, buf, img, cols, gl, k * l);
            }
            // dY of the group as one `(O, G L)` matrix.
            let dyc = &dy[i0 * o * l..(i0 + n) * o * l];
            let dyg: &[f32] = if n == 1 {
                dyc
            } else {
                for (k, dyi) in dyc.chunks(o * l).enumerate() {
                    for (ch, plane) in dyi.chunks(l).enumerate() {
                        dyg[ch * gl + k * l..ch * gl + (k + 1) * l].copy_from_slice(plane);
                    }
                }
                &dyg[..o * gl]
            };
            // dW += dY (O x G L) cols^T (G L x CKK)
            matmul(
                &mut dw,
                Mat::new(dyg, o, gl),
                Mat::new(&cols[..ckk * gl], ckk, gl).t(),
                true,
            );
            for (d, row) in db.iter_mut().zip(dyg.chunks(gl)) {
                *d += row.iter().sum::<f32>();
            }
            if let Some(dxc) = dxc.as_deref_mut() {
                // dcols (CKK x G L) = W^T (CKK x O) dY (O x G L), then scattered back per image.
                matmul(dcols, Mat::new(w, o, ckk).t(), Mat::new(dyg, o, gl), false);
                for k in 0..n {
                    let at = i0 + k - first;
                    let img = &mut dxc[at * chw..(at + 1) * chw];
                    g.fold(&path, dbuf, dcols, img, gl, k * l);
                }
            }
        }
        (dw, db)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = if want_dx {
        dx.par_chunks_mut(per_job * chw)
            .enumerate()
            .map_init(scratch, |s, (j, c)| job(s, j, Some(c)))
            .collect()
    } else {
        (0..jobs)
            .into_par_iter()
            .map_init(scratch, |s, j| job(s, j, None))
            .collect()
    };
    let mut parts = partials.into_iter();
    let (mut dw, mut db) = parts
        .next()
        .unwrap_or_else(|| (vec![0f32; o * ckk], vec![0f32; o]));
    for (pw, pb) in parts {
        dw.iter_mut().zip(&pw).for_each(|(a, v)| *a += v);
        db.iter_mut().zip(&pb).for_each(|(a, v)| *a += v);
    }
    (dx, dw, db)
}

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
        let want_dx = x.track_op();
        let grad = if self.relu {
            crate::relu::relu_grad(res, grad)?
        } else {
            grad.contiguous()?
        };
        let packed = x.apply_op3_no_bwd(w, &grad, &ConvBackward { conv: *self, want_dx })?;
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
