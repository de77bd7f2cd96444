//! `adda`: Adversarial Discriminative Domain Adaptation (Tzeng, Hoffman, Saenko & Darrell 2017).
//!
//! Three stages, untied weights:
//!
//! 1. pre-training: a source encoder `M_S` and classifier `C` minimise the source cross-entropy
//!    (the first `source_epochs` epochs of the run, with the run's optimizer; or a checkpoint given
//!    with `init-from` and `source-epochs = 0`);
//! 2. adversarial adaptation: a target encoder `M_T`, initialised from `M_S`, plays against a
//!    discriminator `D` (ADDA's 500-500 MLP), both with Adam (lr 2e-4, betas 0.5 / 0.999):
//!    `D` minimises the domain cross-entropy on `M_S(x_s)` (label source) and `M_T(x_t)` (label
//!    target), `M_T` minimises the inverted-label GAN loss `-log D(M_T(x_t))`. `M_S` and `C` stay
//!    fixed, bit for bit. Optionally the first `shared_layers` layers of `M_T` stay tied to
//!    (frozen at) `M_S`'s;
//! 3. testing: target images are classified by `C(M_T(x))`, the model the run saves.
//!
//! The stages count epochs over the source training split: stage 2 lasts `epochs - source_epochs`.

use candle_core::{backprop::GradStore, Tensor};
use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_losses::{
    discriminator_accuracy, discriminator_loss, generator_inverted_loss, generator_minimax_loss,
};
use serde::{Deserialize, Serialize};

use crate::adversarial::{check_disc_hidden, loss_err, Discriminator};
use crate::loss::cross_entropy_with_accuracy;
use crate::optim::{Optimizer, OptimizerKind, ParamGroup};
use crate::strategy::{BuildContext, RunFacts, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// The target encoder's loss in stage 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GeneratorLoss {
    /// `-log D(M_T(x_t))`, ADDA's choice.
    Inverted,
    /// `log(1 - D(M_T(x_t)))`, the original minimax game.
    Minimax,
}

/// Settings of `adda`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AddaConfig {
    /// Epochs of stage 1 (source pre-training); 0 starts at stage 2 from the initial model.
    pub source_epochs: usize,
    /// Hidden widths of the discriminator.
    pub disc_hidden: Vec<usize>,
    /// Learning rate of stage 2 (target encoder and discriminator, Adam).
    pub adversary_lr: f64,
    /// Adam's first-moment decay in stage 2.
    pub adversary_beta1: f64,
    /// The target encoder's loss.
    pub generator_loss: GeneratorLoss,
    /// The first N backbone layers of the target encoder stay tied to the source encoder's.
    pub shared_layers: usize,
}

impl Default for AddaConfig {
    /// ADDA's digit settings: a 500-500 discriminator, Adam with lr 2e-4 and beta1 0.5, the
    /// inverted-label loss, untied encoders; 5 epochs of source pre-training: half of a run of
    /// dtl's default 10 epochs, so that the defaults run as they are (the other half adapts).
    fn default() -> Self {
        Self {
            source_epochs: 5,
            disc_hidden: vec![500, 500],
            adversary_lr: 2e-4,
            adversary_beta1: 0.5,
            generator_loss: GeneratorLoss::Inverted,
            shared_layers: 0,
        }
    }
}

impl AddaConfig {
    /// The settings' own checks: the adversary's learning rate and Adam constant, the
    /// discriminator's widths.
    pub fn validate(&self) -> Result<()> {
        check_disc_hidden(&self.disc_hidden)?;
        if !(self.adversary_lr > 0.0 && self.adversary_lr.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "adversary-lr",
                format!("{} is not positive", self.adversary_lr),
            )));
        }
        self.adversary().validate()?;
        Ok(())
    }

    /// Adam with ADDA's constants, for stage 2.
    fn adversary(&self) -> OptimizerKind {
        OptimizerKind::Adam {
            beta1: self.adversary_beta1,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// The strategy around the source model `model`; the discriminator is seeded from `seed`.
    pub fn build(&self, model: Classifier, optim: &OptimSettings, seed: u64) -> Result<Adda> {
        let backbone_layers = model.backbone().layers().len();
        if self.shared_layers > backbone_layers {
            return Err(Error::Core(dtl_core::Error::config(
                "shared-layers",
                format!(
                    "{} layers asked, the {} backbone has {backbone_layers} ({})",
                    self.shared_layers,
                    model.backbone().name(),
                    model.backbone().layers().join(", ")
                ),
            )));
        }
        self.validate()?;
        let adversary = self.adversary();
        let disc = Discriminator::new(
            model.backbone().feature_dim(),
            &self.disc_hidden,
            seed,
            model.device(),
        )?;
        let source_opt = Optimizer::new(
            optim.kind,
            optim.lr,
            optim.weight_decay,
            vec![ParamGroup::new(params::trainable(model.varmap()))],
        )?;
        Ok(Adda {
            cfg: self.clone(),
            source: model,
            source_opt,
            stage2: None,
            disc,
            adversary,
            seed,
        })
    }
}

struct Stage2 {
    target: Classifier,
    target_opt: Optimizer,
    disc_opt: Optimizer,
}

/// ADDA: source pre-training, then a separate target encoder trained against a discriminator.
pub struct Adda {
    cfg: AddaConfig,
    source: Classifier,
    source_opt: Optimizer,
    stage2: Option<Stage2>,
    disc: Discriminator,
    adversary: OptimizerKind,
    seed: u64,
}

impl Adda {
    /// The source encoder and classifier (fixed from stage 2 on).
    pub fn source_model(&self) -> &Classifier {
        &self.source
    }

    /// The target model `C(M_T(.))`, from stage 2 on.
    pub fn target_model(&self) -> Option<&Classifier> {
        self.stage2.as_ref().map(|s| &s.target)
    }

    /// The discriminator.
    pub fn discriminator(&self) -> &Discriminator {
        &self.disc
    }

    /// Starts stage 2: the target encoder as an exact copy of the source model, its optimizer over
    /// the backbone layers after the shared ones (never the head), and the discriminator's.
    fn begin_adaptation(&mut self) -> Result<()> {
        let target = Classifier::new(self.source.spec().clone(), self.seed, self.source.device())?;
        let copy: std::collections::HashMap<String, Tensor> = params::snapshot(self.source.varmap())?
            .into_iter()
            .map(|(n, t)| Ok((n, t.copy()?)))
            .collect::<candle_core::Result<_>>()?;
        target.load_tensors(&copy, std::path::Path::new("<adda source encoder>"))?;
        let trained: Vec<&str> = target.backbone().layers()[self.cfg.shared_layers..]
            .iter()
            .map(String::as_str)
            .collect();
        tracing::info!(
            "adda stage 2: target encoder trains {} (shared with the source: {})",
            trained.join(", "),
            target.backbone().layers()[..self.cfg.shared_layers].join(", ")
        );
        let target_vars: Vec<_> = params::select(target.varmap(), &trained)
            .into_iter()
            .filter(|(n, _)| !params::is_buffer(n))
            .collect();
        let target_opt = Optimizer::new(
            self.adversary,
            self.cfg.adversary_lr,
            0.0,
            vec![ParamGroup::new(target_vars)],
        )?;
        let disc_opt = Optimizer::new(
            self.adversary,
            self.cfg.adversary_lr,
            0.0,
            vec![ParamGroup::new(self.disc.params())],
        )?;
        self.stage2 = Some(Stage2 {
            target,
            target_opt,
            disc_opt,
        });
        Ok(())
    }

    fn pretrain_step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let logits = self.source.forward(xs, true)?;
        let (loss, acc) = cross_entropy_with_accuracy(&logits, ys)?;
        let mut stats = StepStats::new();
        stats
            .push("loss_cls", loss.to_scalar::<f32>()? as f64)
            .push("acc_source", acc);
        self.source_opt.backward_step(&loss)?;
        Ok(stats)
    }

    fn adapt_step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let xt = batch.target_images("adda")?;
        let stage = self.stage2.as_mut().expect("stage 2 begun");
        // The source encoder is fixed: evaluation mode, no graph.
        let fs = self.source.features(&batch.source.0, false)?.detach();
        let ft = stage.target.features(xt, true)?;
        // Discriminator step on detached features.
        let d_s = self.disc.forward(&fs)?;
        let d_t = self.disc.forward(&ft.detach())?;
        let loss_d = discriminator_loss(&d_s, &d_t).map_err(loss_err)?;
        let disc_acc = discriminator_accuracy(&d_s.detach(), &d_t.detach()).map_err(loss_err)?;
        stage.disc_opt.backward_step(&loss_d)?;
        // Target encoder step against the updated discriminator; only its own parameters move.
        let d_t = self.disc.forward(&ft)?;
        let loss_g = match self.cfg.generator_loss {
            GeneratorLoss::Inverted => generator_inverted_loss(&d_t),
            GeneratorLoss::Minimax => generator_minimax_loss(&d_t),
        }
        .map_err(loss_err)?;
        let grads: GradStore = loss_g.backward()?;
        stage.target_opt.step(&grads)?;
        let mut stats = StepStats::new();
        stats
            .push("loss_disc", loss_d.to_scalar::<f32>()? as f64)
            .push("loss_gen", loss_g.to_scalar::<f32>()? as f64)
            .push("disc_acc", disc_acc);
        Ok(stats)
    }
}

impl Strategy for Adda {
    fn name(&self) -> &str {
        "adda"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn start_epoch(&mut self, epoch: usize, epochs: usize) -> dtl_core::Result<()> {
        if epoch == 0 {
            check_epochs(self.cfg.source_epochs, epochs)?;
        }
        if epoch == self.cfg.source_epochs && self.stage2.is_none() {
            self.begin_adaptation().map_err(Error::into_core)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        let r = if self.stage2.is_some() {
            self.adapt_step(batch)
        } else {
            self.pretrain_step(batch)
        };
        r.map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        let mut save = || -> Result<()> {
            self.source.save_state(state, "source.")?;
            self.source_opt.save_state(state, "source_opt.")?;
            state.put_varmap("disc.", self.disc.varmap())?;
            state.put("stage", &if self.stage2.is_some() { 2 } else { 1 })?;
            if let Some(s) = &self.stage2 {
                s.target.save_state(state, "target.")?;
                s.target_opt.save_state(state, "target_opt.")?;
                s.disc_opt.save_state(state, "disc_opt.")?;
            }
            Ok(())
        };
        save().map_err(Error::into_core)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        let mut load = || -> Result<()> {
            self.source.load_state(state, "source.")?;
            self.source_opt.load_state(state, "source_opt.")?;
            state.load_varmap("disc.", self.disc.varmap())?;
            match state.get::<u8>("stage")? {
                1 => self.stage2 = None,
                2 => {
                    if self.stage2.is_none() {
                        self.begin_adaptation()?;
                    }
                    let s = self.stage2.as_mut().expect("stage 2 begun");
                    s.target.load_state(state, "target.")?;
                    s.target_opt.load_state(state, "target_opt.")?;
                    s.disc_opt.load_state(state, "disc_opt.")?;
                }
                other => {
                    return Err(Error::Core(dtl_core::Error::State {
                        key: "stage".into(),
                        message: format!("adda has stages 1 and 2, not {other}"),
                    }))
                }
            }
            Ok(())
        };
        load().map_err(Error::into_core)
    }
}

impl TransferStrategy for Adda {
    /// The target model once stage 2 has begun, the source model before.
    fn model(&self) -> &Classifier {
        self.target_model().unwrap_or(&self.source)
    }
}

/// The stage-2 length check, before any work and again when training starts.
fn check_epochs(source_epochs: usize, epochs: usize) -> dtl_core::Result<()> {
    if source_epochs >= epochs {
        return Err(dtl_core::Error::config(
            "source-epochs",
            format!(
                "adda pre-trains for {source_epochs} epochs but the run has {epochs}: nothing would be left for adaptation (raise epochs)"
            ),
        ));
    }
    Ok(())
}

impl StrategySettings for AddaConfig {
    fn validate(&self) -> Result<()> {
        AddaConfig::validate(self)
    }

    fn check_run(&self, run: &RunFacts) -> Result<()> {
        Ok(check_epochs(self.source_epochs, run.epochs)?)
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        Ok(Box::new(self.build(ctx.model, &ctx.optim, ctx.seed)?))
    }
}
