//! `dev`: deep embedded validation (You, Wang, Chen, Wang & Jordan 2019, "Towards accurate model
//! selection in deep unsupervised domain adaptation"): IWCV with the density ratio estimated by a
//! domain classifier on the model's representation, and a control variate that cancels much of
//! the weights' variance. With `L_i = w_i l_i` over the source validation samples,
//! `eta = -Cov(L, w) / Var(w)` and the risk estimate is `mean(L) + eta mean(w) - eta`. Negated, so
//! higher is better; it carries the weights' effective sample size.

use dtl_strategies::weighting::{effective_sample_size, Estimator, Samples};

use crate::{Inputs, Outputs, Result, Score, Validator};

/// Minus DEV's risk estimate, weights on the representation.
#[derive(Default)]
pub struct Dev {
    /// The density-ratio estimator (on features).
    pub estimator: Estimator,
}

/// DEV's risk from per-sample losses `l` and weights `w` (You et al. 2019, Algorithm 1).
pub fn dev_risk(l: &[f64], w: &[f64]) -> f64 {
    let n = l.len() as f64;
    let weighted: Vec<f64> = l.iter().zip(w).map(|(l, w)| l * w).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
    let (ml, mw) = (mean(&weighted), mean(w));
    // Unbiased (n - 1) covariance and variance, as the paper's numpy code computes them.
    let cov = weighted
        .iter()
        .zip(w)
        .map(|(a, b)| (a - ml) * (b - mw))
        .sum::<f64>()
        / (n - 1.0).max(1.0);
    let var = w.iter().map(|b| (b - mw) * (b - mw)).sum::<f64>() / (n - 1.0).max(1.0);
    let eta = if var > 0.0 { -cov / var } else { 0.0 };
    ml + eta * mw - eta
}

impl Validator for Dev {
    fn name(&self) -> &'static str {
        "dev"
    }

    fn score(&self, inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let to_f32 = |m: &crate::Matrix| m.data.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let (s, t) = (to_f32(&o.source_features), to_f32(&o.target_features));
        let d = o.source_features.cols;
        let w = self.estimator.estimate(
            Samples::new(&s, o.source_features.rows, d, "source validation features")?,
            Samples::new(&t, o.target_features.rows, d, "target features")?,
            inputs.seed,
        )?;
        let risk = dev_risk(&o.source_losses, &w);
        Ok(Score::weighted(-risk, w.len(), effective_sample_size(&w)))
    }
}
