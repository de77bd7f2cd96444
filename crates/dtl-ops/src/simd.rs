//! Run-time dispatch to copies of the copy-bound kernels compiled for AVX-512 (with the `x86-v4`
//! feature, as the GEMMs are): the library itself is built for the baseline x86-64, whose vectors
//! are 4 floats wide, so a data-movement loop such as im2col's runs of 16 floats would take four
//! moves each where one suffices.

/// Whether this CPU has the features the AVX-512 copies are compiled for (`avx512f`, `avx512vl`,
/// `avx2`, `fma`); the standard library caches the detection, so this is a few loads.
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
}
