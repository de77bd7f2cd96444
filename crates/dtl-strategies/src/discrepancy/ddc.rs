//! `ddc`: Deep Domain Confusion (Tzeng, Hoffman, Zhang, Saenko & Darrell 2014, "Deep domain
//! confusion: maximizing for domain invariance").
//!
//! An adaptation layer (a bottleneck, DDC's `fc_adapt`) is inserted between the last hidden layer
//! (DDC's `fc7`) and the classifier, and the network minimises
//! `L = L_source_CE + lambda * MMD^2(phi(X_S), phi(X_T))` with `phi` the adaptation layer's output
//! and weights shared between the domains. DDC's MMD is the distance between the domains' mean
//! representations, which is MMD with the linear kernel; a Gaussian kernel is an option. The paper
//! uses `lambda = 0.25` and a 256-wide adaptation layer.

use dtl_backbones::{Classifier, Tap};
use dtl_losses::MmdKernel;
use serde::{Deserialize, Serialize};

use crate::discrepancy::{adapt_width, Discrepancy, Distance, EstimatorChoice, Schedule};
use crate::weighting::iw::IwConfig;
use crate::{OptimSettings, Result};

/// The MMD kernel of [`DdcConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelChoice {
    /// `k(a, b) = a . b`: the squared distance between the domain means (DDC's form).
    Linear,
    /// Equal-weight Gaussian kernels at the multipliers of the median heuristic.
    Gaussian,
}

/// Settings of `ddc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DdcConfig {
    /// Weight of the MMD term.
    pub lambda: f64,
    /// How `lambda` is brought in over training (default: ramp from 0, for networks trained from
    /// scratch; `constant` is the paper's form on a pretrained network).
    pub schedule: Schedule,
    /// Width of the adaptation layer; 0 for none (the MMD is then measured on the features).
    pub adapt_width: usize,
    /// The layer whose output the MMD is measured on.
    pub layer: Tap,
    /// The MMD kernel.
    pub kernel: KernelChoice,
    /// For the Gaussian kernel: `sigma^2` as multiples of the median pairwise squared distance.
    pub multipliers: Vec<f64>,
    /// The MMD estimator.
    pub estimator: EstimatorChoice,
    /// Importance-weight the source cross-entropy ([`crate::weighting::iw`]); unset: equal weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_weights: Option<IwConfig>,
}

impl Default for DdcConfig {
    /// DDC's choices: `lambda = 0.25`, a 256-wide adaptation layer, linear-kernel MMD on it.
    fn default() -> Self {
        Self {
            lambda: 0.25,
            schedule: Schedule::Ramp,
            adapt_width: 256,
            layer: Tap::Adapt,
            kernel: KernelChoice::Linear,
            multipliers: vec![0.25, 0.5, 1.0, 2.0, 4.0],
            estimator: EstimatorChoice::Biased,
            instance_weights: None,
        }
    }
}

impl DdcConfig {
    /// The adaptation layer the model needs.
    pub fn adapt_width(&self) -> Option<usize> {
        adapt_width(self.adapt_width)
    }

    /// The distance it minimises.
    pub fn distance(&self) -> Distance {
        Distance::Mmd {
            kernel: match self.kernel {
                KernelChoice::Linear => MmdKernel::Linear,
                KernelChoice::Gaussian => MmdKernel::median(&self.multipliers),
            },
            estimator: self.estimator.into(),
        }
    }

    /// The strategy around `model` (built with [`DdcConfig::adapt_width`]).
    pub fn build(&self, model: Classifier, optim: &OptimSettings) -> Result<Discrepancy> {
        Discrepancy::new(
            "ddc",
            model,
            optim,
            (self.lambda, self.schedule),
            vec![self.layer],
            self.distance(),
        )
    }
}

discrepancy_settings!(DdcConfig, "ddc", |s| std::slice::from_ref(&s.layer));
