//! `source-only`: train on labelled source data alone, the baseline every transfer method is
//! measured against (the "source only" rows of Tzeng et al. 2017 and Ganin & Lempitsky 2015).

use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy};

use crate::optim::{Optimizer, ParamGroup};
use serde::{Deserialize, Serialize};

use crate::strategy::{BuildContext, StrategySettings};
use crate::{OptimSettings, Result, TransferStrategy};

/// Settings of `source-only`: none beyond the run's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceOnlyConfig {}

impl StrategySettings for SourceOnlyConfig {
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        Ok(Box::new(SourceOnly::new(ctx.model, &ctx.optim)?))
    }
}

/// Minimises the source cross-entropy over every parameter of the classifier.
pub struct SourceOnly {
    model: Classifier,
    opt: Optimizer,
    name: &'static str,
}

impl SourceOnly {
    /// A source-only strategy training every parameter of `model`.
    pub fn new(model: Classifier, optim: &OptimSettings) -> Result<Self> {
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        Ok(Self::with_optimizer(model, opt, "source-only"))
    }

    /// Cross-entropy training of `model` with `opt`, which decides which parameters move and at
    /// what rate (`finetune` freezes or slows the transferred layers this way).
    pub fn with_optimizer(model: Classifier, opt: Optimizer, name: &'static str) -> Self {
        Self { model, opt, name }
    }

    /// The optimizer.
    pub fn optimizer(&self) -> &Optimizer {
        &self.opt
    }

    /// The trained model.
    pub fn into_model(self) -> Classifier {
        self.model
    }
}

impl Strategy for SourceOnly {
    fn name(&self) -> &str {
        self.name
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        let mut step = || -> Result<StepStats> {
            let (xs, ys) = &batch.source;
            let logits = self.model.forward(xs, true)?;
            let (loss, acc) = crate::loss::cross_entropy_with_accuracy(&logits, ys)?;
            let value = loss.to_scalar::<f32>()? as f64;
            self.opt.backward_step(&loss)?;
            let mut stats = StepStats::new();
            stats.push("loss_cls", value).push("acc_source", acc);
            Ok(stats)
        };
        step().map_err(crate::Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::save_trained(state, &self.model, &self.opt, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::load_trained(state, &self.model, &mut self.opt, None)
    }
}

impl TransferStrategy for SourceOnly {
    fn model(&self) -> &Classifier {
        &self.model
    }
}
