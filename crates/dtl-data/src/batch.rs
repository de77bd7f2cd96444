//! Seeded, reproducible batching.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Shuffled mini-batches over `0..n`, from a ChaCha stream: the same seed gives the same batches on
/// every platform.
#[derive(Debug, Clone)]
pub struct Batcher {
    n: usize,
    batch_size: usize,
    rng: ChaCha8Rng,
    order: Vec<usize>,
    pos: usize,
}

impl Batcher {
    /// Batches of `batch_size` over `n` samples, shuffled by `seed`. `n` and `batch_size` must be
    /// positive (the training loop validates them first).
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Self {
        assert!(
            n > 0 && batch_size > 0,
            "Batcher needs samples and a positive batch size"
        );
        Self {
            n,
            batch_size,
            rng: ChaCha8Rng::seed_from_u64(seed),
            order: Vec::new(),
            pos: n,
        }
    }

    /// Number of batches in one pass over the data (the last one may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        self.n.div_ceil(self.batch_size)
    }

    /// The batches of one epoch: a fresh permutation cut into batches, the last one possibly short.
    pub fn epoch(&mut self) -> Vec<Vec<usize>> {
        self.reshuffle();
        self.pos = self.n;
        self.order.chunks(self.batch_size).map(|c| c.to_vec()).collect()
    }

    /// The next full batch of an endless stream that reshuffles after each pass (for the target
    /// domain, whose size differs from the source's). Batches never straddle two passes, so a
    /// sample never appears twice in one batch; with fewer samples than `batch_size` the batch is
    /// the whole (shuffled) set.
    pub fn next_batch(&mut self) -> Vec<usize> {
        let b = self.batch_size.min(self.n);
        if self.pos + b > self.n {
            self.reshuffle();
        }
        let batch = self.order[self.pos..self.pos + b].to_vec();
        self.pos += b;
        batch
    }

    fn reshuffle(&mut self) {
        self.order = (0..self.n).collect();
        self.order.shuffle(&mut self.rng);
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_a_permutation_and_reproducible() {
        let mut a = Batcher::new(10, 4, 7);
        let mut b = Batcher::new(10, 4, 7);
        let ea = a.epoch();
        assert_eq!(ea, b.epoch());
        assert_eq!(ea.iter().map(|x| x.len()).collect::<Vec<_>>(), [4, 4, 2]);
        let mut all: Vec<usize> = ea.concat();
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert_ne!(a.epoch(), ea, "a second epoch is shuffled again");
        assert_ne!(
            Batcher::new(10, 4, 8).epoch(),
            ea,
            "another seed shuffles differently"
        );
    }

    #[test]
    fn stream_covers_each_pass_without_repeats() {
        let mut s = Batcher::new(7, 3, 1);
        for _ in 0..5 {
            let mut pass: Vec<usize> = (0..2).flat_map(|_| s.next_batch()).collect();
            pass.sort();
            pass.dedup();
            assert_eq!(pass.len(), 6);
        }
        let mut small = Batcher::new(2, 5, 1);
        assert_eq!(small.next_batch().len(), 2);
    }
}
