//! `bnm`: batch nuclear-norm maximisation as a validator (Cui et al. 2020, "Towards
//! discriminability and diversity: batch nuclear-norm maximization under label insufficient
//! situations"): the nuclear norm (sum of singular values) of the `n x K` target probability
//! matrix, divided by `n`. It grows with both confident and diverse predictions: at most
//! `sqrt(min(n, K) / n)`-ish for balanced one-hot rows, `1 / sqrt(n)` for a collapsed model.

use crate::linalg::singular_values;
use crate::{Inputs, Outputs, Result, Score, Validator};

/// The target probability matrix's nuclear norm over `n`.
pub struct Bnm;

impl Validator for Bnm {
    fn name(&self) -> &'static str {
        "bnm"
    }

    fn score(&self, _inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let p = &o.target_probs;
        let nuclear: f64 = singular_values(p).iter().sum();
        Ok(Score::of(nuclear / p.rows.max(1) as f64, p.rows))
    }
}
