//! Scratch buffers reused across ops on each thread.
//!
//! The convolution's parallel tasks each need column matrices of up to a few hundred kilobytes.
//! Allocated zeroed per task, they cost a `memset` each time (about 4% of the `W3` benchmark's
//! samples); these buffers come back from the thread's cache instead, holding whatever their last
//! user left. Only buffers that are entirely written before they are read may come from here.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers a thread keeps for reuse, at most.
const KEPT: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// `len` floats of unspecified (stale, but initialised) contents; returned to the thread's cache
/// when dropped.
pub(crate) struct Scratch(Vec<f32>);

/// A buffer of `len` floats for a caller that writes every one before reading it.
pub(crate) fn scratch(len: usize) -> Scratch {
    let reused = POOL
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            // The smallest buffer that fits, else the largest (grown below).
            let fit = (0..p.len())
                .filter(|&i| p[i].capacity() >= len)
                .min_by_key(|&i| p[i].capacity())
                .or_else(|| (0..p.len()).max_by_key(|&i| p[i].capacity()))?;
            Some(p.swap_remove(fit))
        })
        .ok()
        .flatten();
    let mut v = reused.unwrap_or_default();
    // Shrinking keeps the old values; growing zero-fills only the new tail.
    v.resize(len, 0.0);
    Scratch(v)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 {
            return;
        }
        let _ = POOL.try_with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                if p.len() < KEPT {
                    p.push(v);
                } else if let Some(small) = p.iter_mut().min_by_key(|b| b.capacity()) {
                    // Keep the larger of the two.
                    if small.capacity() < v.capacity() {
                        *small = v;
                    }
                }
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer comes back with the asked length, reuses a dropped one's memory on the same
    /// thread, and a fresh tail is zero.
    #[test]
    fn buffers_are_reused_with_the_asked_length() {
        let mut a = scratch(100);
        assert_eq!(a.len(), 100);
        a.fill(7.0);
        let ptr = a.as_ptr();
        drop(a);
        let b = scratch(50);
        assert_eq!((b.len(), b.as_ptr()), (50, ptr));
        assert_eq!(b[0], 7.0, "contents are the last user's");
        drop(b);
        let c = scratch(100_000);
        assert_eq!(c.len(), 100_000);
        assert!(c[100..].iter().all(|&v| v == 0.0));
        // Two live buffers are distinct.
        let d = scratch(10);
        assert_ne!(c.as_ptr(), d.as_ptr());
    }
}
