//! `entropy`: the mean entropy of the target predictions (Morerio, Cavazza & Murino 2018,
//! "Minimal-entropy correlation alignment for unsupervised deep domain adaptation", who choose
//! models by it); confident target predictions score higher. Negated so that higher is better.

use crate::stats::entropy;
use crate::{Inputs, Outputs, Result, Score, Validator};

/// Minus the mean prediction entropy on the target.
pub struct Entropy;

/// The mean entropy of the rows of a probability matrix.
pub fn mean_entropy(p: &crate::Matrix) -> f64 {
    (0..p.rows).map(|i| entropy(p.row(i))).sum::<f64>() / p.rows.max(1) as f64
}

impl Validator for Entropy {
    fn name(&self) -> &'static str {
        "entropy"
    }

    fn score(&self, _inputs: &Inputs, o: &Outputs) -> Result<Score> {
        Ok(Score::of(-mean_entropy(&o.target_probs), o.target_probs.rows))
    }
}
