//! Settings of mimalloc, the allocator dtl's binaries install.
//!
//! A training step frees and re-allocates the same tensor buffers every step. By default mimalloc
//! (v3, the version the `mimalloc` crate builds) returns freed memory to the operating system
//! ("purges" it) after a delay of up to a second, and the next step takes it back through page
//! faults whose pages the kernel zeroes, two megabytes at a time where transparent huge pages are
//! on: in the `W3` benchmark (`cargo xtask bench`) about 130 page faults and up to a fifth of the
//! CPU samples per step on a machine busy with other work (`perf stat -e page-faults`: 3,360
//! faults in 27 steps, 225 with purging off). [`keep_freed_memory`] turns purging off.

/// mimalloc's `mi_option_purge_delay`: position 15 of `mi_option_t` in both the v2 and v3 headers
/// (`include/mimalloc.h`), right before `mi_option_use_numa_nodes`, which the bindings name.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Keeps memory freed to mimalloc in the process for reuse instead of returning it to the
/// operating system (`purge_delay = -1`). Peak memory does not change (a purged page is taken
/// back by the next step anyway); the process keeps its peak until it exits. Binaries call it
/// first thing in `main`; it only matters where mimalloc is the global allocator.
pub fn keep_freed_memory() {
    // SAFETY: `mi_option_set` takes two integers by value and writes an atomic option slot; it
    // may be called at any time from any thread, and `PURGE_DELAY` is a valid option (see above).
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
}

/// The purge delay mimalloc uses now, in milliseconds (-1: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: as in `keep_freed_memory`: a read of an option slot by a valid index.
    unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option index is mimalloc's purge delay: v3's default is 1,000 ms (`src/options.c`; the
    /// next option, `use_numa_nodes`, defaults to 0), and setting it reads back.
    #[test]
    fn purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay_ms(), 1000);
        }
        // SAFETY: as above.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY + 1) }, 0);
        keep_freed_memory();
        assert_eq!(purge_delay_ms(), -1);
    }
}
