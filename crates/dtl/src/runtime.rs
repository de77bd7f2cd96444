//! Process-wide settings for binaries that train on the CPU.

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (index 15 in both the v2 and v3 headers the
/// `libmimalloc-sys` crate vendors).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc never to return freed pages to the operating system.
///
/// A training step allocates and frees the same large tensor buffers again and again; when the
/// allocator hands them back, the kernel zeroes fresh pages on the next step (about 15% of a LeNet
/// step measured with `perf`). Call this first thing in a binary whose global allocator is
/// `mimalloc::MiMalloc` (as the `dtl` binary's is); peak memory is unchanged, the process just
/// keeps what it already had.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` only stores an integer option; it is safe to call at any time, from
    // any thread, before or after allocations, and -1 is the documented value for "no purging".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}
