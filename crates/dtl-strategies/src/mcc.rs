//! `mcc`: Minimum Class Confusion alone (Jin et al. 2020, "Minimum Class Confusion for Versatile
//! Domain Adaptation", ECCV): the source cross-entropy plus `lambda` times the class confusion of
//! the target predictions ([`crate::loss::MccTerm`]), which pushes each target sample towards one
//! class without a discriminator. The same term can be added to `dann` and `cdan`
//! (`[strategy.mcc]`).

use candle_core::Tensor;
use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use serde::{Deserialize, Serialize};

use crate::loss::{cross_entropy_with_accuracy, MccTerm};
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `mcc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MccConfig {
    /// Weight of the class-confusion loss (the paper's 1).
    pub lambda: f64,
    /// Temperature of the target predictions (the paper's 2.5).
    pub temperature: f64,
}

impl Default for MccConfig {
    /// The paper's trade-off 1 and temperature 2.5.
    fn default() -> Self {
        let t = MccTerm::default();
        Self {
            lambda: t.weight,
            temperature: t.temperature,
        }
    }
}

impl MccConfig {
    fn term(&self) -> MccTerm {
        MccTerm {
            weight: self.lambda,
            temperature: self.temperature,
        }
    }
}

impl StrategySettings for MccConfig {
    fn validate(&self) -> Result<()> {
        let t = self.term();
        if !(t.weight >= 0.0 && t.weight.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "lambda",
                format!("{} is not a non-negative number", t.weight),
            )));
        }
        t.validate("")
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        self.validate()?;
        Ok(Box::new(Mcc::new(ctx.model, &ctx.optim, self.term())?))
    }
}

/// Source cross-entropy plus the target's minimum class confusion, on one network.
pub struct Mcc {
    model: Classifier,
    opt: Optimizer,
    term: MccTerm,
}

impl Mcc {
    /// MCC training of every parameter of `model`.
    pub fn new(model: Classifier, optim: &OptimSettings, term: MccTerm) -> Result<Self> {
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        Ok(Self { model, opt, term })
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let xt = batch.target_images("mcc")?;
        let n = xs.dim(0)?;
        let logits = self.model.forward(&Tensor::cat(&[xs, xt], 0)?, true)?;
        let (loss_cls, acc) = cross_entropy_with_accuracy(&logits.narrow(0, 0, n)?, ys)?;
        let mut stats = StepStats::new();
        stats.push("loss_cls", loss_cls.to_scalar::<f32>()? as f64);
        let mcc = self.term.loss(&logits.narrow(0, n, xt.dim(0)?)?, &mut stats)?;
        let loss = (&loss_cls + mcc)?;
        stats.push("loss_total", loss.to_scalar::<f32>()? as f64);
        stats.push("acc_source", acc);
        self.opt.backward_step(&loss)?;
        Ok(stats)
    }
}

impl Strategy for Mcc {
    fn name(&self) -> &str {
        "mcc"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::save_trained(state, &self.model, &self.opt, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::load_trained(state, &self.model, &mut self.opt, None)
    }
}

impl TransferStrategy for Mcc {
    fn model(&self) -> &Classifier {
        &self.model
    }
}
