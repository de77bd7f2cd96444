//! `iwcv`: importance-weighted cross-validation (Sugiyama, Krauledat & Müller 2007, "Covariate
//! shift adaptation by importance weighted cross validation"): the source validation loss with
//! each sample weighted by an estimate of `p_T(x) / p_S(x)` on the images (a domain classifier,
//! [`dtl_strategies::weighting::ratio`], by default), an estimate of the target loss. Negated, so
//! higher is better; it carries the weights' effective sample size and is flagged unreliable when
//! that is small.

use dtl_strategies::weighting::{effective_sample_size, Estimator, Samples};

use crate::{Inputs, Outputs, Result, Score, Validator};

/// Minus the importance-weighted source validation loss, weights on pixels.
#[derive(Default)]
pub struct Iwcv {
    /// The density-ratio estimator.
    pub estimator: Estimator,
}

/// The pixels of the source and target samples `o` was computed on, as estimator rows.
pub(crate) fn pixel_rows(inputs: &Inputs, o: &Outputs) -> (Vec<f32>, Vec<f32>, usize) {
    let s: Vec<f32> = o
        .source_indices
        .iter()
        .flat_map(|&i| inputs.source.image(i).to_vec())
        .collect();
    let t: Vec<f32> = o
        .target_indices
        .iter()
        .flat_map(|&i| inputs.target.image(i).to_vec())
        .collect();
    let (c, h, w) = inputs.target.image_shape();
    (s, t, c * h * w)
}

/// `sum w l / sum w`.
pub(crate) fn weighted_mean(values: &[f64], w: &[f64]) -> f64 {
    let sw: f64 = w.iter().sum();
    values.iter().zip(w).map(|(v, w)| v * w).sum::<f64>() / sw.max(1e-300)
}

impl Validator for Iwcv {
    fn name(&self) -> &'static str {
        "iwcv"
    }

    fn score(&self, inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let (s, t, d) = pixel_rows(inputs, o);
        let (ns, nt) = (o.source_indices.len(), o.target_indices.len());
        let w = self.estimator.estimate(
            Samples::new(&s, ns, d, "source validation")?,
            Samples::new(&t, nt, d, "target")?,
            inputs.seed,
        )?;
        let loss = weighted_mean(&o.source_losses, &w);
        Ok(Score::weighted(-loss, ns, effective_sample_size(&w)))
    }
}
