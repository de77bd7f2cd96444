//! `coral`: Deep CORAL (Sun & Saenko 2016, "Deep CORAL: correlation alignment for deep domain
//! adaptation").
//!
//! Aligns the second-order statistics of the domains' representations,
//! `L = L_source_CE + lambda * ||C_S - C_T||_F^2 / (4 d^2)` with `C` the feature covariance, on one
//! shared network. The paper applies it to the last layer and chooses `lambda` so that the two
//! terms are of the same order at the end of training. dtl measures it on the last hidden layer by
//! default, with `lambda = 25` from that rule: at the end of source-only LeNet training on MNIST the
//! source cross-entropy is about 0.045 and the CORAL loss of the 500-wide features about 0.002.

use dtl_backbones::{Classifier, Tap};
use serde::{Deserialize, Serialize};

use crate::discrepancy::{adapt_width, Discrepancy, Distance, Schedule};
use crate::weighting::iw::IwConfig;
use crate::{OptimSettings, Result};

/// Settings of `coral`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CoralConfig {
    /// Weight of the CORAL term.
    pub lambda: f64,
    /// How `lambda` is brought in over training (default: ramp from 0, for networks trained from
    /// scratch; `constant` is the paper's form on a pretrained network).
    pub schedule: Schedule,
    /// Width of an adaptation layer; 0 for none.
    pub adapt_width: usize,
    /// The layers aligned (each gets its own CORAL term).
    pub layers: Vec<Tap>,
    /// Importance-weight the source cross-entropy ([`crate::weighting::iw`]); unset: equal weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_weights: Option<IwConfig>,
}

impl Default for CoralConfig {
    /// `lambda = 25` on the last hidden layer, no adaptation layer.
    fn default() -> Self {
        Self {
            lambda: 25.0,
            schedule: Schedule::Ramp,
            adapt_width: 0,
            layers: vec![Tap::Features],
            instance_weights: None,
        }
    }
}

impl CoralConfig {
    /// The adaptation layer the model needs.
    pub fn adapt_width(&self) -> Option<usize> {
        adapt_width(self.adapt_width)
    }

    /// The strategy around `model` (built with [`CoralConfig::adapt_width`]).
    pub fn build(&self, model: Classifier, optim: &OptimSettings) -> Result<Discrepancy> {
        Discrepancy::new(
            "coral",
            model,
            optim,
            (self.lambda, self.schedule),
            self.layers.clone(),
            Distance::Coral,
        )
    }
}

discrepancy_settings!(CoralConfig, "coral", |s| &s.layers);
