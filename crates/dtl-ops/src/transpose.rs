//! Out-of-place matrix transposition, by 8x8 blocks (AVX shuffles where the `x86-v4` feature and
//! the CPU allow).
//!
//! The convolution's weight gradient contracts over output pixels, which im2col lays out
//! contiguously (`(C k k, L)`): the `gemm` crate packs such an operand one strided float at a
//! time (13% of the `W3` benchmark's samples). Transposed first to `(L, C k k)`, it packs with
//! contiguous copies.

/// `dst (cols x rows) = src (rows x cols)^T`, both row-major and dense.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(
        src.len() >= rows * cols && dst.len() >= rows * cols,
        "transpose: {rows}x{cols} does not fit buffers of {} and {}",
        src.len(),
        dst.len()
    );
    #[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
    if crate::simd::has_avx512() {
        // SAFETY: the CPU has AVX (checked above); the bounds were asserted above.
        return unsafe { transpose_avx(src, rows, cols, dst) };
    }
    transpose_blocks(src, rows, cols, dst, 0, 0);
}

/// Scalar transposition of the part of `src` from row `r0` and column `c0` on (the edges the
/// vector path leaves, or everything), by 8x8 blocks so that both sides stay in cache.
fn transpose_blocks(src: &[f32], rows: usize, cols: usize, dst: &mut [f32], r0: usize, c0: usize) {
    const B: usize = 8;
    for rb in (0..rows).step_by(B) {
        for cb in (0..cols).step_by(B) {
            if rb + B <= r0 && cb + B <= c0 {
                continue;
            }
            for r in rb..(rb + B).min(rows) {
                for c in cb..(cb + B).min(cols) {
                    if r >= r0 || c >= c0 {
                        dst[c * rows + r] = src[r * cols + c];
                    }
                }
            }
        }
    }
}

/// [`transpose`] with 8x8 blocks transposed in AVX registers; the rows and columns past the last
/// whole block by [`transpose_blocks`].
///
/// # Safety
///
/// The CPU must have AVX, and `src` and `dst` must hold `rows * cols` floats.
#[cfg(all(target_arch = "x86_64", feature = "x86-v4"))]
#[target_feature(enable = "avx,avx2")]
unsafe fn transpose_avx(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (rw, cw) = (rows / 8 * 8, cols / 8 * 8);
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for rb in (0..rw).step_by(8) {
        for cb in (0..cw).step_by(8) {
            // SAFETY: rows rb..rb + 8 and columns cb..cb + 8 lie inside the `rows x cols`
            // matrix, so every load reads `src[r * cols + cb..][..8]` within bounds and every
            // store writes `dst[c * rows + rb..][..8]` within bounds.
            unsafe {
                let at = |r: usize| s.add((rb + r) * cols + cb);
                let (r0, r1, r2, r3) = (
                    _mm256_loadu_ps(at(0)),
                    _mm256_loadu_ps(at(1)),
                    _mm256_loadu_ps(at(2)),
                    _mm256_loadu_ps(at(3)),
                );
                let (r4, r5, r6, r7) = (
                    _mm256_loadu_ps(at(4)),
                    _mm256_loadu_ps(at(5)),
                    _mm256_loadu_ps(at(6)),
                    _mm256_loadu_ps(at(7)),
                );
                let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
                let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
                let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
                let (u0, u1) = (
                    _mm256_shuffle_ps::<0x44>(t0, t2),
                    _mm256_shuffle_ps::<0xEE>(t0, t2),
                );
                let (u2, u3) = (
                    _mm256_shuffle_ps::<0x44>(t1, t3),
                    _mm256_shuffle_ps::<0xEE>(t1, t3),
                );
                let (u4, u5) = (
                    _mm256_shuffle_ps::<0x44>(t4, t6),
                    _mm256_shuffle_ps::<0xEE>(t4, t6),
                );
                let (u6, u7) = (
                    _mm256_shuffle_ps::<0x44>(t5, t7),
                    _mm256_shuffle_ps::<0xEE>(t5, t7),
                );
                let out = |c: usize| d.add((cb + c) * rows + rb);
                _mm256_storeu_ps(out(0), _mm256_permute2f128_ps::<0x20>(u0, u4));
                _mm256_storeu_ps(out(1), _mm256_permute2f128_ps::<0x20>(u1, u5));
                _mm256_storeu_ps(out(2), _mm256_permute2f128_ps::<0x20>(u2, u6));
                _mm256_storeu_ps(out(3), _mm256_permute2f128_ps::<0x20>(u3, u7));
                _mm256_storeu_ps(out(4), _mm256_permute2f128_ps::<0x31>(u0, u4));
                _mm256_storeu_ps(out(5), _mm256_permute2f128_ps::<0x31>(u1, u5));
                _mm256_storeu_ps(out(6), _mm256_permute2f128_ps::<0x31>(u2, u6));
                _mm256_storeu_ps(out(7), _mm256_permute2f128_ps::<0x31>(u3, u7));
            }
        }
    }
    transpose_blocks(src, rows, cols, dst, rw, cw);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape class: whole blocks, ragged edges on either side, thin and empty matrices,
    /// against the definition.
    #[test]
    fn transpose_matches_the_definition() {
        for &(rows, cols) in &[
            (8, 8),
            (16, 24),
            (13, 21),
            (1, 17),
            (17, 1),
            (7, 9),
            (144, 256),
            (0, 5),
            (64, 9),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 3.0).collect();
            let mut got = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut got);
            let mut scalar = vec![f32::NAN; rows * cols];
            transpose_blocks(&src, rows, cols, &mut scalar, 0, 0);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        got[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at ({r}, {c})"
                    );
                }
            }
            assert_eq!(got, scalar, "{rows}x{cols}: vector and scalar paths differ");
        }
    }
}
