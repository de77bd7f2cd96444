//! `mixval`: MixVal (Hu, Liang, Lin, Wang & Tan 2023, "Mixed samples as probes for unsupervised
//! model selection in domain adaptation"). Target images are paired and mixed, `lambda x_i +
//! (1 - lambda) x_j` with `lambda = 0.55`, and the model is asked to keep the pseudo-label (its own
//! prediction) of the dominant image `i`: pairs from different pseudo-classes probe the decision
//! boundaries between classes (inter), pairs from one pseudo-class the classes' insides (intra).
//! The score is the mean of the two probe accuracies; both are reported as parts.

use dtl_core::seed::Stream;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Inputs, Outputs, Result, Score, Validator};

/// Probe accuracy on mixed target samples.
pub struct MixVal {
    /// The dominant image's share of a mix.
    pub lambda: f32,
    /// Pairs of each kind at most.
    pub pairs: usize,
}

impl Default for MixVal {
    fn default() -> Self {
        Self {
            lambda: 0.55,
            pairs: 1000,
        }
    }
}

impl Validator for MixVal {
    fn name(&self) -> &'static str {
        "mixval"
    }

    fn score(&self, inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let pseudo = o.target_probs.argmax_rows();
        let n = pseudo.len();
        if n < 2 {
            return Ok(Score::of(0.0, 0));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::TargetAugment.seed(inputs.seed) ^ 0x313a);
        let (mut inter, mut intra) = (Vec::new(), Vec::new());
        // Rejection sampling of pairs, bounded so that a collapsed model (no inter pairs) ends.
        for _ in 0..self.pairs * 20 {
            if inter.len() >= self.pairs && intra.len() >= self.pairs {
                break;
            }
            let (i, j) = (rng.random_range(0..n), rng.random_range(0..n));
            if i == j {
                continue;
            }
            let list = if pseudo[i] == pseudo[j] {
                &mut intra
            } else {
                &mut inter
            };
            if list.len() < self.pairs {
                list.push((i, j));
            }
        }
        let accuracy = |pairs: &[(usize, usize)]| -> Result<Option<f64>> {
            if pairs.is_empty() {
                return Ok(None);
            }
            let mut hits = 0usize;
            for chunk in pairs.chunks(256) {
                let mut px = Vec::new();
                for &(i, j) in chunk {
                    let a = inputs.target.image(o.target_indices[i]);
                    let b = inputs.target.image(o.target_indices[j]);
                    px.extend(
                        a.iter()
                            .zip(b)
                            .map(|(a, b)| self.lambda * a + (1.0 - self.lambda) * b),
                    );
                }
                let (c, h, w) = inputs.target.image_shape();
                let xs = candle_core::Tensor::from_vec(px, (chunk.len(), c, h, w), inputs.device)?;
                let pred = inputs.model.forward(&xs, false)?.argmax(1)?.to_vec1::<u32>()?;
                hits += chunk
                    .iter()
                    .zip(pred)
                    .filter(|(&(i, _), p)| pseudo[i] == *p as usize)
                    .count();
            }
            Ok(Some(hits as f64 / pairs.len() as f64))
        };
        // No inter-class pair: the model gives every image one class and has no boundary to
        // probe, the worst case; no intra-class pair: every prediction differs, nothing to lose.
        let ai = accuracy(&inter)?.unwrap_or(0.0);
        let aa = accuracy(&intra)?.unwrap_or(1.0);
        let mut s = Score::of((ai + aa) / 2.0, inter.len() + intra.len());
        s.parts = vec![("inter".into(), ai), ("intra".into(), aa)];
        Ok(s)
    }
}
