//! The convolution's arithmetic: a strided GEMM view, how many images one GEMM takes, and the
//! forward and backward passes over a batch (parallel over groups of images).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::im2col::{Geometry, Path};
use crate::scratch::{scratch, Scratch};
use crate::transpose::transpose;

/// A row-major matrix view for [`matmul`]: `rows x cols` with the given strides.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_stride: usize,
    pub(super) col_stride: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(crate) fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    pub(super) fn last_index(&self) -> usize {
        (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
    }
}

/// `dst (m x n, row-major) = [dst +] a (m x k) b (k x n)`, single-threaded (callers parallelise
/// over images).
pub(crate) fn matmul(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool) {
    matmul_with(dst, a, b, accumulate, gemm::Parallelism::None)
}

/// [`matmul`] on `parallelism`'s threads (split over the rows and columns of `dst`, so the result
/// does not depend on the thread count).
pub(crate) fn matmul_with(dst: &mut [f32], a: Mat, b: Mat, accumulate: bool, parallelism: gemm::Parallelism) {
    // SAFETY: `dst` is initialised, so reading it (when accumulating) is fine.
    unsafe { matmul_into(dst.as_mut_ptr(), dst.len(), a, b, accumulate, parallelism) }
}

/// [`matmul`] without accumulation into a `dst` that need not be initialised: on return its
/// first `m x n` values are.
pub(super) fn matmul_uninit(dst: &mut [MaybeUninit<f32>], a: Mat, b: Mat) {
    // SAFETY: without accumulation `matmul_into` only writes `dst` (`gemm` with `read_dst ==
    // false` never reads it) and writes all of its first `m x n` values.
    unsafe {
        matmul_into(
            dst.as_mut_ptr().cast(),
            dst.len(),
            a,
            b,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The GEMM behind [`matmul_with`] and [`matmul_uninit`]: `dst` points to `len` floats that do
/// not overlap `a` or `b`, of which the first `m x n` are written.
///
/// # Safety
///
/// `dst` must be valid for writes of `len` floats, and for reads of them if `accumulate` (which
/// then requires them initialised).
unsafe fn matmul_into(
    dst: *mut f32,
    len: usize,
    a: Mat,
    b: Mat,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && len >= m * n, "matmul: shapes do not chain");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            // SAFETY: `dst` is valid for `len >= m n` writes (the caller's contract).
            unsafe { std::ptr::write_bytes(dst, 0, m * n) };
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "matmul: view out of bounds"
    );
    // SAFETY: the asserts above check that every element gemm reads through the strides of `a`
    // and `b` lies inside their slices and that `dst` holds the m x n row-major result (the
    // caller's contract gives `len` valid floats); `dst` does not overlap `a` or `b`, which are
    // shared borrows while the caller holds `dst` exclusively.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
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
            parallelism,
        )
    }
}

/// Images per parallel job, at least. Job sizes are functions of the shape, not of the thread
/// count, so that the weight-gradient sums are added in the same order on every run and machine.
pub(super) const IMAGES_PER_JOB: usize = 8;

/// Images per parallel job, at most: each job of the backward pass zeroes, fills and finally adds
/// its own `(O, C k k)` weight-gradient copy, which for late layers with few output pixels costs
/// as much as the job's GEMMs unless the job holds more images.
pub(super) const MAX_IMAGES_PER_JOB: usize = 16;

/// Images per job for `l` output pixels per image: enough that a job multiplies at least
/// [`MIN_GEMM_COLUMNS`] columns, within [`IMAGES_PER_JOB`]..=[`MAX_IMAGES_PER_JOB`].
pub(super) fn images_per_job(l: usize) -> usize {
    MIN_GEMM_COLUMNS
        .div_ceil(l.max(1))
        .clamp(IMAGES_PER_JOB, MAX_IMAGES_PER_JOB)
}

/// GEMM columns worth gathering: below this many output pixels per image, the images of a job are
/// put side by side into one `(C k k, G L)` matrix and multiplied at once, because a GEMM with a
/// handful of columns (ResNet's late stages: 4 or 1 pixels) leaves the FMA units idle.
pub(super) const MIN_GEMM_COLUMNS: usize = 256;

/// Images per GEMM for `l` output pixels per image: a function of the shape only, so results do not
/// depend on the machine.
pub(super) fn group_size(l: usize) -> usize {
    MIN_GEMM_COLUMNS.div_ceil(l.max(1)).clamp(1, images_per_job(l))
}

pub(super) fn forward(
    g: Geometry,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    relu: bool,
) -> Vec<f32> {
    let (l, o) = (g.l(), g.o);
    let chw = g.c * g.h * g.w;
    let gs = group_size(l);
    let path = g.path();
    let cells = path.cells(g.stride);
    // Rows of the column matrix, and the filters restricted to the taps that read the image.
    let ckk = path.rows(&g);
    let w = kept_filters(&path, &g, w);
    let w: &[f32] = &w;
    // The output is not zeroed first: every value is written once below (by the GEMM, or by the
    // copy out of a group's GEMM) before `set_len`.
    let mut y: Vec<f32> = Vec::with_capacity(b * o * l);
    y.spare_capacity_mut()[..b * o * l]
        .par_chunks_mut(gs * o * l)
        .zip(x.par_chunks(gs * chw))
        .for_each_init(
            || {
                (
                    scratch(ckk * gs * l),
                    scratch(if gs > 1 { o * gs * l } else { 0 }),
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
                let (wm, cm) = (Mat::new(w, o, ckk), Mat::new(&cols[..ckk * gl], ckk, gl));
                let fill_bias = |dst: &mut [MaybeUninit<f32>], bias: &[f32]| {
                    for (row, &bv) in dst.chunks_mut(gl).zip(bias) {
                        row.fill(MaybeUninit::new(bv));
                    }
                };
                if n == 1 {
                    match bias {
                        Some(bias) => {
                            fill_bias(yc, bias);
                            // SAFETY: the bias fill above initialised all `O L` values of `yc`.
                            let yc = unsafe { assume_init_mut(yc) };
                            matmul(yc, wm, cm, true);
                        }
                        None => matmul_uninit(yc, wm, cm),
                    }
                } else {
                    let dst = &mut yg[..o * gl];
                    if let Some(bias) = bias {
                        for (row, &bv) in dst.chunks_mut(gl).zip(bias) {
                            row.fill(bv);
                        }
                    }
                    matmul(dst, wm, cm, bias.is_some());
                    for (k, yi) in yc.chunks_mut(o * l).enumerate() {
                        for (ch, plane) in yi.chunks_mut(l).enumerate() {
                            let src = &yg[ch * gl + k * l..ch * gl + (k + 1) * l];
                            for (d, &v) in plane.iter_mut().zip(src) {
                                d.write(v);
                            }
                        }
                    }
                }
                // SAFETY: every value of `yc` was written above: by the GEMM (one image), or by
                // the copies of all `n` images' `O` planes (several).
                let yc = unsafe { assume_init_mut(yc) };
                if relu {
                    for v in yc.iter_mut() {
                        *v = crate::relu::relu(*v);
                    }
                }
            },
        );
    // SAFETY: the chunks above cover `0..b O L` and each was fully written.
    unsafe { y.set_len(b * o * l) };
    y
}

/// `&mut [f32]` over values the caller has initialised.
///
/// # Safety
///
/// Every element of `s` must be initialised.
unsafe fn assume_init_mut(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout; the caller guarantees initialisation.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// Gradients `(dx, dw, db)` of the convolution for output gradient `dy`; `dx` only if asked.
///
/// Jobs of [`images_per_job`] images run in parallel, each accumulating its own weight and bias
/// gradients over GEMMs of [`group_size`] images; the partial sums are then added in job order, so
/// the result is deterministic.
pub(super) fn backward(
    g: Geometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    b: usize,
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (l, o) = (g.l(), g.o);
    let chw = g.c * g.h * g.w;
    let gs = group_size(l);
    let per_job = images_per_job(l);
    let jobs = b.div_ceil(per_job);
    let path = g.path();
    let cells = path.cells(g.stride);
    // As in `forward`: the GEMMs run over the kept taps only; the weight gradient of the others
    // is zero, put back at the end.
    let ckk = path.rows(&g);
    let w = kept_filters(&path, &g, w);
    let w: &[f32] = &w;
    let mut dx = if want_dx { vec![0f32; b * chw] } else { Vec::new() };
    // Scratch of one rayon task, reused by the jobs it runs: every buffer is either fully written
    // before it is read (`cols`, `dyg`, `dcols`), zeroed where it is used (`dbuf`, per channel), or
    // written only inside a zero border that no job touches (`buf`). Separate buffers for the two
    // directions: im2col relies on its buffer's zero border, which col2im's scatter would dirty.
    // `tr` holds the column matrix and dY of a group transposed, for the weight gradient's GEMM.
    let scratch = || {
        (
            vec![0f32; cells],
            vec![0f32; if want_dx { cells } else { 0 }],
            scratch(ckk * gs * l),
            scratch(if gs > 1 { o * gs * l } else { 0 }),
            scratch(if want_dx { ckk * gs * l } else { 0 }),
            scratch((ckk + o) * gs * l),
        )
    };
    type Buffers = (Vec<f32>, Vec<f32>, Scratch, Scratch, Scratch, Scratch);
    let job = |scratch: &mut Buffers, j: usize, mut dxc: Option<&mut [f32]>| -> (Vec<f32>, Vec<f32>) {
        // The job's weight gradient is written by its first group's GEMM (not zeroed first) and
        // accumulated by the others'.
        let (mut dw, mut db) = (Vec::<f32>::with_capacity(o * ckk), vec![0f32; o]);
        let (buf, dbuf, cols, dyg, dcols, tr) = scratch;
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
            // dW += dY (O x G L) cols^T (G L x CKK), both operands transposed first: contracted
            // over pixels, they would otherwise be packed by `gemm` one strided float at a time.
            let (colst, dygt) = tr.split_at_mut(ckk * gl);
            transpose(&cols[..ckk * gl], ckk, gl, colst);
            transpose(dyg, o, gl, &mut dygt[..o * gl]);
            let (a, bm) = (Mat::new(&dygt[..o * gl], gl, o).t(), Mat::new(colst, gl, ckk));
            if i0 == first {
                matmul_uninit(&mut dw.spare_capacity_mut()[..o * ckk], a, bm);
                // SAFETY: `matmul_uninit` initialised the first `O CKK` values.
                unsafe { dw.set_len(o * ckk) };
            } else {
                matmul(&mut dw, a, bm, true);
            }
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
    if let Some(taps) = path.pruned_taps(&g) {
        dw = unprune(&dw, o * g.c, g.k * g.k, taps);
    }
    (dx, dw, db)
}

/// The filters `(O, C k k)` restricted to the taps `path` keeps: `(O, C T)`, or `w` itself.
fn kept_filters<'a>(path: &Path, g: &Geometry, w: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
    match path.pruned_taps(g) {
        Some(taps) => std::borrow::Cow::Owned(prune(w, g.o * g.c, g.k * g.k, taps)),
        None => std::borrow::Cow::Borrowed(w),
    }
}

/// `(R, k k)` rows of filters restricted to `taps`: `(R, T)`.
fn prune(w: &[f32], rows: usize, kk: usize, taps: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * taps.len());
    for row in w[..rows * kk].chunks_exact(kk) {
        out.extend(taps.iter().map(|&t| row[t]));
    }
    out
}

/// The adjoint of [`prune`]: `(R, T)` back into `(R, k k)`, zero at the taps left out.
fn unprune(p: &[f32], rows: usize, kk: usize, taps: &[usize]) -> Vec<f32> {
    let mut out = vec![0f32; rows * kk];
    for (dst, src) in out.chunks_exact_mut(kk).zip(p.chunks_exact(taps.len())) {
        for (&t, &v) in taps.iter().zip(src) {
            dst[t] = v;
        }
    }
    out
}
