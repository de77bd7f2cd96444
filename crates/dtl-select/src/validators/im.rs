//! `im`: information maximisation (Shi & Sha 2012, "Information-theoretical learning of
//! discriminative clusters for unsupervised domain adaptation"; the SHOT objective of Liang et
//! al. 2020): the entropy of the mean target prediction (diversity) minus the mean entropy of the
//! target predictions (confidence). Confident predictions that still use every class score high;
//! a model that predicts one class for everything scores about 0.

use crate::stats::entropy;
use crate::validators::entropy::mean_entropy;
use crate::{Inputs, Outputs, Result, Score, Validator};

/// Diversity minus mean entropy of the target predictions.
pub struct Im;

impl Validator for Im {
    fn name(&self) -> &'static str {
        "im"
    }

    fn score(&self, _inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let p = &o.target_probs;
        let mut mean = vec![0.0; p.cols];
        for i in 0..p.rows {
            for (m, v) in mean.iter_mut().zip(p.row(i)) {
                *m += v / p.rows.max(1) as f64;
            }
        }
        let (diversity, confidence) = (entropy(&mean), mean_entropy(p));
        let mut s = Score::of(diversity - confidence, p.rows);
        s.parts = vec![("diversity".into(), diversity), ("entropy".into(), confidence)];
        Ok(s)
    }
}
