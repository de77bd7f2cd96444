//! `snd`: soft neighborhood density (Saito, Kim, Teterwak, Sclaroff, Darrell & Saenko 2021, "Tune
//! it the right way: unsupervised validation of domain adaptation via soft neighborhood
//! density"). The target prediction vectors are L2-normalised, their cosine similarities (each
//! sample's own left out) turned into a soft neighbourhood per sample by a softmax at temperature
//! `tau` (0.05, the paper's), and the score is the mean entropy of those neighbourhoods: high when
//! samples sit in dense clusters of similar predictions.

use rayon::prelude::*;

use crate::stats::entropy;
use crate::{Inputs, Matrix, Outputs, Result, Score, Validator};

/// Mean entropy of the target samples' soft neighbourhoods.
pub struct Snd {
    /// Softmax temperature of the similarities.
    pub tau: f64,
}

impl Default for Snd {
    fn default() -> Self {
        Self { tau: 0.05 }
    }
}

/// SND of the rows of `p` at temperature `tau`.
pub fn snd(p: &Matrix, tau: f64) -> f64 {
    let n = p.rows;
    if n < 2 {
        return 0.0;
    }
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let r = p.row(i);
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|v| v / norm).collect()
        })
        .collect();
    let total: f64 = (0..n)
        .into_par_iter()
        .map(|i| {
            let sims: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| rows[i].iter().zip(&rows[j]).map(|(a, b)| a * b).sum::<f64>() / tau)
                .collect();
            let m = sims.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sims.iter().map(|s| (s - m).exp()).sum();
            let soft: Vec<f64> = sims.iter().map(|s| (s - m).exp() / z).collect();
            entropy(&soft)
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    total / n as f64
}

impl Validator for Snd {
    fn name(&self) -> &'static str {
        "snd"
    }

    fn score(&self, _inputs: &Inputs, o: &Outputs) -> Result<Score> {
        Ok(Score::of(snd(&o.target_probs, self.tau), o.target_probs.rows))
    }
}
