//! `mcd`: Maximum Classifier Discrepancy (Saito et al. 2018, "Maximum Classifier Discrepancy for
//! Unsupervised Domain Adaptation", CVPR).
//!
//! A feature generator `G` (the backbone, and the adaptation layer when there is one) feeds two
//! classifiers, `F1` (the model's head, the one that predicts and is saved) and `F2` (a second head
//! of the same shape, initialised from its own stream). Their disagreement on a target sample,
//! `d(p1, p2) = mean_c |p1_c - p2_c|` of their softmax outputs, marks it as lying outside the
//! source's support; the two players take turns on every batch:
//!
//! - **A**: `G`, `F1` and `F2` minimise the source cross-entropy of both classifiers;
//! - **B**: `G` fixed, `F1` and `F2` minimise the source cross-entropy minus their discrepancy on
//!   the target (they learn to disagree where the target leaves the source);
//! - **C**: `F1`, `F2` fixed, `G` minimises the target discrepancy, `num-k` times (the paper's 4).
//!
//! As in the paper's code, the generator and the classifiers have an optimizer each (the run's
//! settings): step A steps both, B the classifiers', C the generator's.

use candle_core::{Tensor, D};
use dtl_backbones::init::{uniform_param, Param};
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_losses::conditional::softmax;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adversarial::loss_err;
use crate::loss::cross_entropy_with_accuracy;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `mcd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct McdConfig {
    /// Generator updates (step C) per batch: the paper's 4.
    pub num_k: usize,
    /// Weight of the discrepancy in steps B and C (the paper's 1).
    pub trade_off: f64,
}

impl Default for McdConfig {
    /// The paper's four generator updates per batch and unit trade-off.
    fn default() -> Self {
        Self {
            num_k: 4,
            trade_off: 1.0,
        }
    }
}

impl StrategySettings for McdConfig {
    fn validate(&self) -> Result<()> {
        if self.num_k == 0 || self.num_k > 100 {
            return Err(Error::Core(dtl_core::Error::config(
                "num-k",
                format!("{} generator updates per batch: give 1 to 100", self.num_k),
            )));
        }
        if !(self.trade_off >= 0.0 && self.trade_off.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "trade-off",
                format!("{} is not a non-negative number", self.trade_off),
            )));
        }
        Ok(())
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        self.validate()?;
        Ok(Box::new(Mcd::new(self.clone(), ctx.model, &ctx.optim, ctx.seed)?))
    }
}

/// The classifier discrepancy `mean |softmax(a) - softmax(b)|` over samples and classes.
pub fn discrepancy(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let pa = softmax(a, 1.0).map_err(loss_err)?;
    let pb = softmax(b, 1.0).map_err(loss_err)?;
    Ok((pa - pb)?.abs()?.mean(D::Minus1)?.mean_all()?)
}

/// MCD: a generator and two classifiers in three-step turns.
pub struct Mcd {
    cfg: McdConfig,
    model: Classifier,
    head2: Param,
    head2_vars: candle_nn::VarMap,
    opt_heads: Optimizer,
    opt_gen: Optimizer,
}

impl Mcd {
    /// The strategy around `model` (whose head is `F1`); `F2` is initialised from `seed`.
    pub fn new(cfg: McdConfig, model: Classifier, optim: &OptimSettings, seed: u64) -> Result<Self> {
        let head2_vars = candle_nn::VarMap::new();
        let width = model.spec().adapt_width.unwrap_or(model.backbone().feature_dim());
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::SecondHead.seed(seed));
        let head2 = uniform_param(
            &head2_vars,
            "head2",
            &[model.spec().num_classes(), width],
            &mut rng,
            model.device(),
        )?;
        let opt = |vars: Vec<(String, candle_core::Var)>| {
            Optimizer::new(
                optim.kind,
                optim.lr,
                optim.weight_decay,
                vec![ParamGroup::new(vars)],
            )
        };
        let heads: Vec<_> = params::select(model.varmap(), &["head"])
            .into_iter()
            .chain(params::trainable(&head2_vars))
            .collect();
        let generator: Vec<_> = params::trainable(model.varmap())
            .into_iter()
            .filter(|(n, _)| !params::belongs_to(n, "head"))
            .collect();
        Ok(Self {
            cfg,
            opt_heads: opt(heads)?,
            opt_gen: opt(generator)?,
            model,
            head2,
            head2_vars,
        })
    }

    /// The second classifier's parameters.
    pub fn second_head(&self) -> &candle_nn::VarMap {
        &self.head2_vars
    }

    /// Both classifiers' logits of `xs`.
    fn logits(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        let taps = self.model.forward_taps(xs, true)?;
        let l2 = self.head2.linear(taps.hidden())?;
        Ok((taps.logits.clone(), l2))
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let xt = batch.target_images("mcd")?;
        let n = xs.dim(0)?;
        let both = Tensor::cat(&[xs, xt], 0)?;
        let mut stats = StepStats::new();
        // A: both classifiers and the generator on the source.
        let (l1, l2) = self.logits(xs)?;
        let (ce1, acc) = cross_entropy_with_accuracy(&l1, ys)?;
        let (ce2, _) = cross_entropy_with_accuracy(&l2, ys)?;
        let loss_a = (&ce1 + &ce2)?;
        stats.push("loss_cls", ce1.to_scalar::<f32>()? as f64);
        let grads = loss_a.backward()?;
        self.opt_gen.step(&grads)?;
        self.opt_heads.step(&grads)?;
        // B: the classifiers disagree on the target, still fitting the source.
        let (l1, l2) = self.logits(&both)?;
        let (ce1, _) = cross_entropy_with_accuracy(&l1.narrow(0, 0, n)?, ys)?;
        let (ce2, _) = cross_entropy_with_accuracy(&l2.narrow(0, 0, n)?, ys)?;
        let m = xt.dim(0)?;
        let disc_b = discrepancy(&l1.narrow(0, n, m)?, &l2.narrow(0, n, m)?)?;
        let loss_b = ((&ce1 + &ce2)? - (&disc_b * self.cfg.trade_off)?)?;
        stats.push("discrepancy_b", disc_b.to_scalar::<f32>()? as f64);
        self.opt_heads.backward_step(&loss_b)?;
        // C: the generator makes them agree on the target.
        for k in 0..self.cfg.num_k {
            let (l1, l2) = self.logits(xt)?;
            let disc_c = discrepancy(&l1, &l2)?;
            // Before the first and the last of the generator's updates.
            if k == 0 {
                stats.push("discrepancy_c_first", disc_c.to_scalar::<f32>()? as f64);
            }
            if k + 1 == self.cfg.num_k {
                stats.push("discrepancy_c_last", disc_c.to_scalar::<f32>()? as f64);
            }
            self.opt_gen.backward_step(&(disc_c * self.cfg.trade_off)?)?;
        }
        stats.push("acc_source", acc);
        Ok(stats)
    }
}

impl Strategy for Mcd {
    fn name(&self) -> &str {
        "mcd"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        state.put_varmap("head2.", &self.head2_vars)?;
        self.opt_heads
            .save_state(state, "opt_heads.")
            .map_err(Error::into_core)?;
        crate::strategy::save_trained(state, &self.model, &self.opt_gen, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        state.load_varmap("head2.", &self.head2_vars)?;
        self.opt_heads
            .load_state(state, "opt_heads.")
            .map_err(Error::into_core)?;
        crate::strategy::load_trained(state, &self.model, &mut self.opt_gen, None)
    }
}

impl TransferStrategy for Mcd {
    /// The generator with `F1`.
    fn model(&self) -> &Classifier {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn discrepancy_is_the_mean_absolute_difference_of_probabilities() {
        let a = Tensor::new(&[[0.0f64, 0.0], [2.0, 0.0]], &Device::Cpu).unwrap();
        let b = Tensor::new(&[[1.0f64, 0.0], [2.0, 0.0]], &Device::Cpu).unwrap();
        let got = discrepancy(&a, &b).unwrap().to_scalar::<f64>().unwrap();
        // Row 1: p_a = (0.5, 0.5), p_b = (e/(e+1), 1/(e+1)); row 2 agrees.
        let e = std::f64::consts::E;
        let d = (0.5 - e / (e + 1.0)).abs();
        assert!((got - (d + d) / 2.0 / 2.0).abs() < 1e-12, "{got}");
    }
}
