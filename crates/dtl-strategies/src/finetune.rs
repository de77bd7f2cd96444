//! `finetune`: sequential transfer (Yosinski, Clune, Bengio & Lipson 2014, "How transferable are
//! features in deep neural networks?").
//!
//! Step 1 trained a model on a source task; step 2 (this strategy) trains the target model on
//! labelled target data with its first `n` layers copied from the source model, either frozen
//! (Yosinski's AnB / BnB) or fine-tuned with a learning-rate multiplier (AnB+ / BnB+); the other
//! layers start from the run's seed. The copy is made when the run builds its model (see
//! `Classifier::transfer_from`); this strategy decides what trains. Frozen layers are not handed to
//! the optimizer: they get no optimizer state and stay bit-identical.

use dtl_backbones::Classifier;
use dtl_core::params;
use serde::{Deserialize, Serialize};

use crate::optim::{Optimizer, ParamGroup};
use crate::source_only::SourceOnly;
use crate::strategy::{BuildContext, InitialWeights, RunFacts, StrategySettings, TransferStrategy};
use crate::{Error, OptimSettings, Result};

/// Settings of `finetune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FinetuneConfig {
    /// How many layers, from the first, are copied from the initial checkpoint.
    pub transfer_layers: usize,
    /// Keep the copied layers frozen (no updates at all).
    pub freeze: bool,
    /// Learning-rate multiplier of the copied layers when they are fine-tuned.
    pub transferred_lr_mult: f64,
}

impl Default for FinetuneConfig {
    /// No layer copied (set `transfer-layers`), copied layers fine-tuned at the full rate.
    fn default() -> Self {
        Self {
            transfer_layers: 0,
            freeze: false,
            transferred_lr_mult: 1.0,
        }
    }
}

impl FinetuneConfig {
    /// The settings' own checks: a non-negative learning-rate multiplier.
    pub fn validate(&self) -> Result<()> {
        if !(self.transferred_lr_mult >= 0.0 && self.transferred_lr_mult.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "transferred-lr-mult",
                format!("{} is not a non-negative number", self.transferred_lr_mult),
            )));
        }
        Ok(())
    }

    /// The strategy around `model`, whose first `transfer_layers` layers hold the transferred
    /// weights.
    pub fn build(&self, mut model: Classifier, optim: &OptimSettings) -> Result<SourceOnly> {
        let n = self.transfer_layers;
        if n > model.layers().len() {
            return Err(Error::Core(dtl_core::Error::config(
                "transfer-layers",
                format!("{n} layers asked, the model has {}", model.layers().len()),
            )));
        }
        self.validate()?;
        let copied: Vec<&str> = model.layers()[..n].iter().map(String::as_str).collect();
        let fresh: Vec<&str> = model.layers()[n..].iter().map(String::as_str).collect();
        let mut groups = vec![ParamGroup::new(params::select(model.varmap(), &fresh))];
        if !self.freeze && !copied.is_empty() {
            let mut g = ParamGroup::new(params::select(model.varmap(), &copied));
            g.lr_mult = self.transferred_lr_mult;
            groups.push(g);
        }
        tracing::info!(
            "finetune: copied [{}] ({}), new [{}]",
            copied.join(", "),
            if self.freeze { "frozen" } else { "fine-tuned" },
            fresh.join(", ")
        );
        if self.freeze {
            // Nothing behind the frozen layers needs a gradient: stop the backward pass there.
            model.set_frozen_prefix(n);
        }
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, groups)?;
        Ok(SourceOnly::with_optimizer(model, opt, "finetune"))
    }
}

impl StrategySettings for FinetuneConfig {
    fn validate(&self) -> Result<()> {
        FinetuneConfig::validate(self)
    }

    fn check_run(&self, run: &RunFacts) -> Result<()> {
        if !run.init_from {
            return Err(Error::Core(dtl_core::Error::config(
                "init-from",
                "finetune copies layers from a checkpoint: give --init-from FILE",
            )));
        }
        Ok(())
    }

    fn initial_weights(&self) -> InitialWeights {
        InitialWeights::Own
    }

    /// Copies the first `transfer_layers` layers of the initial checkpoint into the model (the
    /// rest keep their initialisation from the run seed), then builds the strategy.
    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        if let Some(init) = ctx.init {
            let copied = ctx
                .model
                .transfer_from(init.model, self.transfer_layers, init.path)?;
            tracing::info!("copied [{}] from {}", copied.join(", "), init.path.display());
        }
        Ok(Box::new(self.build(ctx.model, &ctx.optim)?))
    }
}
