//! `dan`: Deep Adaptation Networks (Long, Cao, Wang & Jordan 2015, "Learning transferable features
//! with deep adaptation networks").
//!
//! The multi-kernel MMD (MK-MMD) between source and target is added for each of the last layers,
//! `L = L_source_CE + lambda * sum_l MK-MMD^2(phi_l(X_S), phi_l(X_T))`, with the kernel a convex
//! combination of Gaussian kernels whose bandwidths span a range around the median heuristic. DAN
//! adapts the task-specific layers `fc6`-`fc8` and leaves the general convolutional features alone;
//! on a LeNet the counterparts are the last hidden layer (`features`) and the logits. DAN learns
//! the kernel weights to maximise test power; dtl keeps them fixed: equal by default, or as given
//! in the config.

use dtl_backbones::{Classifier, Tap};
use dtl_losses::{Bandwidths, MmdKernel};
use serde::{Deserialize, Serialize};

use crate::discrepancy::{adapt_width, Discrepancy, Distance, EstimatorChoice, Schedule};
use crate::weighting::iw::IwConfig;
use crate::{OptimSettings, Result};

/// Settings of `dan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DanConfig {
    /// Weight of the MK-MMD terms.
    pub lambda: f64,
    /// How `lambda` is brought in over training (default: ramp from 0, for networks trained from
    /// scratch; `constant` is the paper's form on a pretrained network).
    pub schedule: Schedule,
    /// Width of an adaptation layer; 0 for none (DAN has none).
    pub adapt_width: usize,
    /// The layers adapted (each gets its own MK-MMD term).
    pub layers: Vec<Tap>,
    /// `sigma^2` of each Gaussian kernel, as a multiple of the median pairwise squared distance.
    pub multipliers: Vec<f64>,
    /// Kernel weights (one per multiplier, non-negative); empty for equal weights.
    pub weights: Vec<f64>,
    /// The MMD estimator.
    pub estimator: EstimatorChoice,
    /// Importance-weight the source cross-entropy ([`crate::weighting::iw`]); unset: equal weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_weights: Option<IwConfig>,
}

impl Default for DanConfig {
    /// `lambda = 1` as in DAN; the last hidden layer and the logits; five kernels at
    /// `sigma^2 = 2^-2 .. 2^2` times the median; the biased estimator.
    fn default() -> Self {
        Self {
            lambda: 1.0,
            schedule: Schedule::Ramp,
            adapt_width: 0,
            layers: vec![Tap::Features, Tap::Logits],
            multipliers: vec![0.25, 0.5, 1.0, 2.0, 4.0],
            weights: Vec::new(),
            estimator: EstimatorChoice::Biased,
            instance_weights: None,
        }
    }
}

impl DanConfig {
    /// The adaptation layer the model needs.
    pub fn adapt_width(&self) -> Option<usize> {
        adapt_width(self.adapt_width)
    }

    /// The distance it minimises on each layer.
    pub fn distance(&self) -> Distance {
        Distance::Mmd {
            kernel: MmdKernel::Gaussian {
                bandwidths: Bandwidths::Median(self.multipliers.clone()),
                weights: (!self.weights.is_empty()).then(|| self.weights.clone()),
            },
            estimator: self.estimator.into(),
        }
    }

    /// The strategy around `model` (built with [`DanConfig::adapt_width`]).
    pub fn build(&self, model: Classifier, optim: &OptimSettings) -> Result<Discrepancy> {
        Discrepancy::new(
            "dan",
            model,
            optim,
            (self.lambda, self.schedule),
            self.layers.clone(),
            self.distance(),
        )
    }
}

discrepancy_settings!(DanConfig, "dan", |s| &s.layers);
