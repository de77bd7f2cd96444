//! `dann`: domain-adversarial training of one shared encoder (Ganin & Lempitsky 2015,
//! "Unsupervised domain adaptation by backpropagation"; Ganin et al. 2016, "Domain-adversarial
//! training of neural networks").
//!
//! A domain discriminator `D` reads the encoder's representation of source and target batches
//! through a gradient reversal layer; one optimizer minimises
//! `L = L_source_CE + L_domain(D(R(f(X_S))), D(R(f(X_T))))` over encoder, head and discriminator,
//! so that `D` learns to tell the domains apart while the reversed gradient teaches the encoder to
//! make them indistinguishable. The reversal coefficient follows the paper's schedule
//! `coeff_p = max * (2 / (1 + exp(-gamma p)) - 1)` (gamma = 10) and the learning rate
//! `lr_p = lr / (1 + alpha p)^beta` (alpha = 10, beta = 0.75), at training progress `p`.

use candle_core::Tensor;
use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_losses::{discriminator_loss, grad_reverse};
use serde::{Deserialize, Serialize};

use crate::adversarial::{
    check_disc_hidden, loss_err, lr_factor, reversal_coeff, Discriminator, SharedEncoderStep,
};
use crate::discrepancy::adapt_width;
use crate::loss::{source_loss, MccTerm};
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{AdaptLayer, BuildContext, StrategySettings};
use crate::weighting::iw::{IwConfig, SourceWeighter};
use crate::weighting::WeightStats;
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `dann`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DannConfig {
    /// Hidden widths of the domain discriminator.
    pub disc_hidden: Vec<usize>,
    /// The reversal coefficient reached at the end of training.
    pub max_coeff: f64,
    /// Steepness `gamma` of the coefficient's schedule (0: the coefficient is `max_coeff` from the
    /// first step).
    pub gamma: f64,
    /// Anneal the learning rate as `lr / (1 + alpha p)^beta`.
    pub anneal_lr: bool,
    /// `alpha` of the annealing.
    pub alpha: f64,
    /// `beta` of the annealing.
    pub beta: f64,
    /// Width of an adaptation layer before the head (the discriminator then reads it); 0 for none.
    pub adapt_width: usize,
    /// Importance-weight the source cross-entropy ([`crate::weighting::iw`]); unset: equal weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_weights: Option<IwConfig>,
    /// Add minimum class confusion on the target predictions ([`crate::loss::MccTerm`], Jin et
    /// al. 2020's DANN+MCC); unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcc: Option<MccTerm>,
}

impl Default for DannConfig {
    /// The paper's schedules (gamma 10, alpha 10, beta 0.75, coefficient up to 1) and ADDA's
    /// 500-500 discriminator, reading the last hidden layer.
    fn default() -> Self {
        Self {
            disc_hidden: vec![500, 500],
            max_coeff: 1.0,
            gamma: 10.0,
            anneal_lr: true,
            alpha: 10.0,
            beta: 0.75,
            adapt_width: 0,
            instance_weights: None,
            mcc: None,
        }
    }
}

impl DannConfig {
    /// The adaptation layer the model needs.
    pub fn adapt_width(&self) -> Option<usize> {
        adapt_width(self.adapt_width)
    }

    /// The reversal coefficient at progress `p`.
    pub fn coeff(&self, p: f64) -> f64 {
        reversal_coeff(self.max_coeff, self.gamma, p)
    }

    /// The learning rate factor at progress `p`.
    pub fn lr_factor(&self, p: f64) -> f64 {
        lr_factor(self.anneal_lr, self.alpha, self.beta, p)
    }

    /// The settings' own checks: non-negative schedule constants, discriminator widths.
    pub fn validate(&self) -> Result<()> {
        check_disc_hidden(&self.disc_hidden)?;
        if let Some(w) = &self.instance_weights {
            w.validate()?;
        }
        if let Some(t) = &self.mcc {
            t.validate("mcc.")?;
        }
        let bad = |f: &str, m: String| Err(Error::Core(dtl_core::Error::config(f, m)));
        for (field, v) in [
            ("max-coeff", self.max_coeff),
            ("gamma", self.gamma),
            ("alpha", self.alpha),
            ("beta", self.beta),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("{v} is not a non-negative number"));
            }
        }
        Ok(())
    }

    /// The strategy around `model`, with a discriminator seeded from `seed`.
    pub fn build(&self, model: Classifier, optim: &OptimSettings, seed: u64) -> Result<Dann> {
        self.validate()?;
        let input = self.adapt_width().unwrap_or(model.backbone().feature_dim());
        let disc = Discriminator::new(input, &self.disc_hidden, seed, model.device())?;
        let mut vars = params::trainable(model.varmap());
        vars.extend(disc.params());
        let opt = Optimizer::new(
            optim.kind,
            optim.lr,
            optim.weight_decay,
            vec![ParamGroup::new(vars)],
        )?;
        Ok(Dann {
            cfg: self.clone(),
            model,
            disc,
            opt,
            base_lr: optim.lr,
            weighter: None,
        })
    }
}

/// DANN: a shared encoder trained against a domain discriminator through gradient reversal.
pub struct Dann {
    cfg: DannConfig,
    model: Classifier,
    disc: Discriminator,
    opt: Optimizer,
    base_lr: f64,
    weighter: Option<SourceWeighter>,
}

impl Dann {
    /// The domain discriminator.
    pub fn discriminator(&self) -> &Discriminator {
        &self.disc
    }

    /// Weights the source cross-entropy by `weighter`'s instance weights; the domain loss stays
    /// unweighted.
    pub fn with_instance_weights(mut self, weighter: SourceWeighter) -> Self {
        self.weighter = Some(weighter);
        self
    }

    /// The instance weighter, if the source loss is weighted.
    pub fn weighter(&self) -> Option<&SourceWeighter> {
        self.weighter.as_ref()
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let xs = &batch.source.0;
        let xt = batch.target_images("dann")?;
        let n = xs.dim(0)?;
        let m = xt.dim(0)?;
        let p = batch.progress;
        let coeff = self.cfg.coeff(p);
        let lr = self.base_lr * self.cfg.lr_factor(p);
        self.opt.set_lr(lr);
        let taps = self.model.forward_taps(&Tensor::cat(&[xs, xt], 0)?, true)?;
        let logits_s = taps.logits.narrow(0, 0, n)?;
        let mut stats = StepStats::new();
        let (loss_cls, acc) = source_loss(self.weighter.as_ref(), &logits_s, batch, &mut stats)?;
        let reversed = grad_reverse(taps.hidden(), coeff).map_err(loss_err)?;
        let d = self.disc.forward(&reversed)?;
        let (d_s, d_t) = (d.narrow(0, 0, n)?, d.narrow(0, n, m)?);
        let loss_domain = discriminator_loss(&d_s, &d_t).map_err(loss_err)?;
        SharedEncoderStep {
            loss_cls,
            loss_domain,
            d_s,
            d_t,
            target_logits: taps.logits.narrow(0, n, m)?,
            mcc: self.cfg.mcc.as_ref(),
            coeff,
            lr,
            acc,
        }
        .finish(&mut self.opt, stats)
    }
}

impl Strategy for Dann {
    fn name(&self) -> &str {
        "dann"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn start_epoch(&mut self, epoch: usize, _epochs: usize) -> dtl_core::Result<()> {
        match &mut self.weighter {
            Some(w) => w.start_epoch(epoch, &self.model).map_err(Error::into_core),
            None => Ok(()),
        }
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        state.put_varmap("disc.", self.disc.varmap())?;
        crate::strategy::save_trained(state, &self.model, &self.opt, self.weighter.as_ref())
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        state.load_varmap("disc.", self.disc.varmap())?;
        crate::strategy::load_trained(state, &self.model, &mut self.opt, self.weighter.as_mut())
    }
}

impl TransferStrategy for Dann {
    fn model(&self) -> &Classifier {
        &self.model
    }

    fn weight_stats(&self) -> Option<&WeightStats> {
        self.weighter.as_ref().and_then(|w| w.stats())
    }
}

impl StrategySettings for DannConfig {
    fn validate(&self) -> Result<()> {
        DannConfig::validate(self)
    }

    fn adapt_layer(&self) -> AdaptLayer {
        AdaptLayer::Exactly(self.adapt_width())
    }

    fn instance_weights(&self) -> Option<&IwConfig> {
        self.instance_weights.as_ref()
    }

    fn instance_weights_key(&self) -> Option<&'static str> {
        Some("instance-weights")
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        let weighter = match &self.instance_weights {
            Some(w) => {
                let data = ctx.training_data("instance weights")?;
                Some(w.weighter(data.source, data.target, ctx.seed)?)
            }
            None => None,
        };
        let dann = self.build(ctx.model, &ctx.optim, ctx.seed)?;
        Ok(match weighter {
            Some(w) => Box::new(dann.with_instance_weights(w)),
            None => Box::new(dann),
        })
    }
}
