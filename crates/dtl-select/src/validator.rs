//! The validator trait and its score.

use serde::{Deserialize, Serialize};

use crate::{Inputs, Outputs, Result};

/// A validator's verdict on one trained model: higher is better for every validator (losses and
/// entropies are negated), so that selection always takes the maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// The score; higher is better.
    pub value: f64,
    /// For importance-weighted scores: the weights' effective sample size `(sum w)^2 / sum w^2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ess: Option<f64>,
    /// Samples the score rests on.
    pub n: usize,
    /// `false` when the estimate rests on too few samples to trust (an effective sample size
    /// under [`MIN_ESS`]); the selection report says so.
    pub reliable: bool,
    /// Parts of the score worth reporting (for example MixVal's intra- and inter-class parts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<(String, f64)>,
}

/// Below this effective sample size an importance-weighted estimate is flagged unreliable (the
/// same threshold as `--iwcv`'s).
pub const MIN_ESS: f64 = dtl_strategies::weighting::MIN_RELIABLE_ESS;

impl Score {
    /// A score from `n` samples, reliable.
    pub fn of(value: f64, n: usize) -> Self {
        Self {
            value,
            ess: None,
            n,
            reliable: true,
            parts: Vec::new(),
        }
    }

    /// An importance-weighted score with its effective sample size; unreliable below [`MIN_ESS`].
    pub fn weighted(value: f64, n: usize, ess: f64) -> Self {
        Self {
            value,
            ess: Some(ess),
            n,
            reliable: ess >= MIN_ESS,
            parts: Vec::new(),
        }
    }
}

/// A label-free estimate of how well a trained model does on the target domain.
///
/// A validator reads the model's [`Outputs`] (and, where it needs more forward passes or a
/// density-ratio estimate, the [`Inputs`]), never the target's labels: [`Inputs::target`] is a
/// [`dtl_data::Unlabelled`] set.
pub trait Validator: Send + Sync {
    /// The name in files and reports (`entropy`, `snd`, ...).
    fn name(&self) -> &'static str;
    /// The score of the model behind `outputs`.
    fn score(&self, inputs: &Inputs, outputs: &Outputs) -> Result<Score>;
}
