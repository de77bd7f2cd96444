//! `source-acc`: accuracy on the labelled source validation split, what a user without any
//! label-free validator would choose by; every validator must beat it.

use crate::{Inputs, Outputs, Result, Score, Validator};

/// Source validation accuracy.
pub struct SourceAcc;

impl Validator for SourceAcc {
    fn name(&self) -> &'static str {
        "source-acc"
    }

    fn score(&self, _inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let pred = o.source_probs.argmax_rows();
        let hits = pred
            .iter()
            .zip(&o.source_labels)
            .filter(|(p, y)| **p == **y as usize)
            .count();
        Ok(Score::of(hits as f64 / pred.len().max(1) as f64, pred.len()))
    }
}
