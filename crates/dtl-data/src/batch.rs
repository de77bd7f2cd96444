//! Seeded, reproducible batching.

use dtl_core::state::State;
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

    /// The batches of the epoch the last [`Batcher::epoch`] began (the current permutation cut
    /// into batches): a run resumed within an epoch continues with them.
    pub fn current_epoch(&self) -> Vec<Vec<usize>> {
        self.order.chunks(self.batch_size).map(|c| c.to_vec()).collect()
    }

    /// Writes the stream's position, permutation and place in it under `prefix`.
    pub fn save_state(&self, state: &mut State, prefix: &str) -> dtl_core::Result<()> {
        state.put(&format!("{prefix}n"), &[self.n, self.batch_size])?;
        state.put_rng(&format!("{prefix}rng"), &self.rng)?;
        state.put_indices(&format!("{prefix}order"), &self.order)?;
        state.put(&format!("{prefix}pos"), &self.pos)
    }

    /// Restores what [`Batcher::save_state`] wrote under `prefix`, into a batcher over the same
    /// number of samples and batch size.
    pub fn load_state(&mut self, state: &State, prefix: &str) -> dtl_core::Result<()> {
        let key = format!("{prefix}n");
        let [n, batch_size]: [usize; 2] = state.get(&key)?;
        if (n, batch_size) != (self.n, self.batch_size) {
            return Err(dtl_core::Error::State {
                key,
                message: format!(
                    "saved for {n} samples in batches of {batch_size}, the run has {} in batches of {}",
                    self.n, self.batch_size
                ),
            });
        }
        let order_key = format!("{prefix}order");
        let order = state.indices(&order_key, self.n)?;
        if !(order.is_empty() || order.len() == self.n) {
            return Err(dtl_core::Error::State {
                key: order_key,
                message: format!("{} positions, not a permutation of {}", order.len(), self.n),
            });
        }
        let pos: usize = state.get(&format!("{prefix}pos"))?;
        if pos > self.n {
            return Err(dtl_core::Error::State {
                key: format!("{prefix}pos"),
                message: format!("{pos} is past the {} samples", self.n),
            });
        }
        self.rng = state.rng(&format!("{prefix}rng"))?;
        self.order = order;
        self.pos = pos;
        Ok(())
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
    fn a_restored_batcher_continues_both_kinds_of_stream() {
        let mut a = Batcher::new(10, 4, 7);
        a.epoch();
        a.next_batch();
        let mut state = State::new();
        a.save_state(&mut state, "b.").unwrap();
        let mut b = Batcher::new(10, 4, 99);
        b.load_state(&state, "b.").unwrap();
        assert_eq!(b.current_epoch(), a.current_epoch());
        assert_eq!(b.next_batch(), a.next_batch());
        assert_eq!(b.next_batch(), a.next_batch());
        assert_eq!(b.epoch(), a.epoch());
        let err = Batcher::new(11, 4, 7)
            .load_state(&state, "b.")
            .unwrap_err()
            .to_string();
        assert!(err.contains("b.n") && err.contains("11"), "{err}");
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
