//! The dtl training loop, optimizers, evaluation and transfer strategies.
//!
//! A strategy (one file each) implements [`dtl_core::Strategy`]: it owns its networks and
//! optimizers and turns a [`dtl_core::DomainBatch`] into one update. The loop in [`trainer`] feeds
//! it seeded batches; [`eval`] measures the result on labelled test splits. Strategies are chosen by
//! name through [`StrategyConfig`] and built with [`build`].
//!
//! ```
//! use candle_core::Device;
//! use dtl_backbones::{Classifier, ModelSpec};
//! use dtl_data::{Domain, DomainId, LoadOptions};
//! use dtl_strategies::{build, eval, trainer, OptimSettings, StrategyConfig};
//!
//! let dev = Device::Cpu;
//! let data = Domain::load(DomainId::Optdigits, None, &LoadOptions { image_size: 16, ..Default::default() })?;
//! let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev)?;
//! let mut strategy = build(&StrategyConfig::SourceOnly, model, &OptimSettings::default(), 0)?;
//! let cfg = trainer::LoopConfig { epochs: 1, batch_size: 64, seed: 0, progress: false, augment: None };
//! let report = trainer::train(strategy.as_mut(), &data.train, None, &cfg, &dev)?;
//! assert_eq!(report.epochs.len(), 1);
//! let e = eval::evaluate(|xs| strategy.predict(xs), &data.test, 256, &dev)?;
//! assert_eq!(e.n, 450);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

use dtl_backbones::Classifier;
use serde::{Deserialize, Serialize};

pub mod adda;
pub mod adversarial;
pub mod coral;
pub mod dan;
pub mod dann;
pub mod ddc;
pub mod discrepancy;
pub mod eval;
pub mod finetune;
pub mod iw;
pub mod optim;
pub mod source_only;
pub mod tradaboost;
pub mod trainer;
pub mod weighting;

pub use adda::{Adda, AddaConfig, GeneratorLoss};
pub use adversarial::Discriminator;
pub use coral::CoralConfig;
pub use dan::DanConfig;
pub use dann::{Dann, DannConfig};
pub use ddc::{DdcConfig, KernelChoice};
pub use discrepancy::{Discrepancy, Distance, EstimatorChoice, Schedule};
pub use dtl_backbones::Tap;
pub use eval::{evaluate, feature_gap, Evaluation, FeatureGap};
pub use finetune::FinetuneConfig;
pub use optim::{Optimizer, OptimizerKind, ParamGroup};
pub use source_only::SourceOnly;
pub use tradaboost::{Tradaboost, TradaboostConfig};
pub use trainer::{train, EpochLog, LoopConfig, TrainReport};

/// Errors of the strategies crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the core crate.
    #[error(transparent)]
    Core(#[from] dtl_core::Error),
    /// An error of the data crate (boxed: its messages carry paths and provenance).
    #[error(transparent)]
    Data(Box<dtl_data::Error>),
    /// An error of the backbones crate.
    #[error(transparent)]
    Backbone(#[from] dtl_backbones::Error),
    /// Training produced a non-finite value.
    #[error("training diverged: `{what}` is {value} in epoch {epoch} (lower the learning rate)")]
    Diverged {
        /// The scalar that went non-finite.
        what: String,
        /// Its value.
        value: f64,
        /// The 1-based epoch.
        epoch: usize,
    },
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Core(dtl_core::Error::Candle(e))
    }
}

impl Error {
    /// Converts into the core error (for trait methods that return it).
    pub fn into_core(self) -> dtl_core::Error {
        match self {
            Error::Core(e) => e,
            Error::Backbone(e) => e.into_core(),
            other => dtl_core::Error::Msg(other.to_string()),
        }
    }
}

impl From<dtl_data::Error> for Error {
    fn from(e: dtl_data::Error) -> Self {
        Error::Data(Box::new(e))
    }
}

/// Result type of the strategies crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A strategy whose prediction is made by a [`Classifier`] (saved as the run's checkpoint).
pub trait TransferStrategy: dtl_core::Strategy {
    /// The classifier that predicts target labels.
    fn model(&self) -> &Classifier;
    /// The source samples' instance weights, summarised, for strategies that weight them (`iw`).
    fn weight_stats(&self) -> Option<&weighting::WeightStats> {
        None
    }
}

/// Optimizer settings shared by the strategies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimSettings {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

impl Default for OptimSettings {
    /// SGD, momentum 0.9, learning rate 0.01, weight decay 5e-4.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::sgd(),
            lr: 0.01,
            weight_decay: 5e-4,
        }
    }
}

/// A strategy and its own settings, as configs and the command line name it.
///
/// In TOML: `[strategy]` with `name = "ddc"` and the strategy's own fields (`lambda = 0.25`, ...);
/// fields left out take the strategy's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StrategyConfig {
    /// Train on the source domain only.
    SourceOnly,
    /// Deep Domain Confusion (Tzeng et al. 2014).
    Ddc(DdcConfig),
    /// Deep Adaptation Networks (Long et al. 2015).
    Dan(DanConfig),
    /// Deep CORAL (Sun & Saenko 2016).
    Coral(CoralConfig),
    /// Domain-adversarial training with gradient reversal (Ganin & Lempitsky 2015).
    Dann(DannConfig),
    /// Adversarial discriminative domain adaptation (Tzeng et al. 2017).
    Adda(AddaConfig),
    /// Sequential transfer: the first layers from a checkpoint, frozen or fine-tuned (Yosinski et
    /// al. 2014).
    Finetune(FinetuneConfig),
    /// Importance-weighted source risk with instance weights from an estimator (Shimodaira 2000).
    Iw(iw::IwConfig),
    /// TrAdaBoost's weights over the source and a few labelled target samples (Dai et al. 2007).
    Tradaboost(TradaboostConfig),
}

/// Strategy settings given on the command line; each applies only to strategies that have it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrategyOverrides {
    /// Weight of the adaptation loss.
    pub lambda: Option<f64>,
    /// How the weight is brought in over training.
    pub schedule: Option<Schedule>,
    /// Width of the adaptation layer (0: none).
    pub adapt_width: Option<usize>,
    /// The layers adapted.
    pub layers: Option<Vec<Tap>>,
    /// The MMD kernel (DDC).
    pub kernel: Option<KernelChoice>,
    /// The MMD estimator (DDC, DAN).
    pub estimator: Option<EstimatorChoice>,
    /// Epochs of source pre-training (ADDA).
    pub source_epochs: Option<usize>,
    /// Backbone layers the target encoder shares with the source encoder (ADDA).
    pub shared_layers: Option<usize>,
    /// Layers copied from the initial checkpoint (finetune).
    pub transfer_layers: Option<usize>,
    /// Freeze the copied layers (finetune).
    pub freeze: bool,
    /// Learning-rate multiplier of the copied layers (finetune).
    pub transferred_lr_mult: Option<f64>,
    /// Instance-weight estimator by name: ratio, kmm, kliep (iw; on ddc, dan, coral and dann it
    /// switches on weighting of the source loss, as the next two do).
    pub weight_estimator: Option<String>,
    /// What the weights are estimated on (iw, ddc, dan, coral, dann).
    pub weights_on: Option<iw::WeightsOn>,
    /// Re-estimate the weights every this many epochs (iw, ddc, dan, coral, dann).
    pub reweight_every: Option<usize>,
    /// Labelled target training samples the strategy may use (tradaboost).
    pub labelled_target: Option<usize>,
}

impl StrategyConfig {
    /// Every strategy name, for help texts and errors.
    pub const NAMES: [&'static str; 9] = [
        "source-only",
        "ddc",
        "dan",
        "coral",
        "dann",
        "adda",
        "finetune",
        "iw",
        "tradaboost",
    ];

    /// The strategy's name.
    pub fn name(&self) -> &'static str {
        match self {
            StrategyConfig::SourceOnly => "source-only",
            StrategyConfig::Ddc(_) => "ddc",
            StrategyConfig::Dan(_) => "dan",
            StrategyConfig::Coral(_) => "coral",
            StrategyConfig::Dann(_) => "dann",
            StrategyConfig::Adda(_) => "adda",
            StrategyConfig::Finetune(_) => "finetune",
            StrategyConfig::Iw(_) => "iw",
            StrategyConfig::Tradaboost(_) => "tradaboost",
        }
    }

    /// The strategy of that name with its default settings.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "source-only" => Ok(StrategyConfig::SourceOnly),
            "ddc" => Ok(StrategyConfig::Ddc(DdcConfig::default())),
            "dan" => Ok(StrategyConfig::Dan(DanConfig::default())),
            "coral" => Ok(StrategyConfig::Coral(CoralConfig::default())),
            "dann" => Ok(StrategyConfig::Dann(DannConfig::default())),
            "adda" => Ok(StrategyConfig::Adda(AddaConfig::default())),
            "finetune" => Ok(StrategyConfig::Finetune(FinetuneConfig::default())),
            "iw" => Ok(StrategyConfig::Iw(iw::IwConfig::default())),
            "tradaboost" => Ok(StrategyConfig::Tradaboost(TradaboostConfig::default())),
            _ => Err(Error::Core(dtl_core::Error::config(
                "strategy",
                format!(
                    "`{name}` is not a known strategy (known: {})",
                    Self::NAMES.join(", ")
                ),
            ))),
        }
    }

    /// The instance weights of the source loss: `iw`'s settings, or those a discrepancy strategy
    /// or `dann` was given (`instance-weights`); `None` when the source loss is not weighted.
    pub fn instance_weights(&self) -> Option<&iw::IwConfig> {
        match self {
            StrategyConfig::Iw(c) => Some(c),
            StrategyConfig::Ddc(c) => c.instance_weights.as_ref(),
            StrategyConfig::Dan(c) => c.instance_weights.as_ref(),
            StrategyConfig::Coral(c) => c.instance_weights.as_ref(),
            StrategyConfig::Dann(c) => c.instance_weights.as_ref(),
            StrategyConfig::SourceOnly
            | StrategyConfig::Adda(_)
            | StrategyConfig::Finetune(_)
            | StrategyConfig::Tradaboost(_) => None,
        }
    }

    /// The instance-weight settings to edit, switched on with the defaults if they were off;
    /// `None` for strategies whose source loss cannot be weighted.
    fn instance_weights_mut(&mut self) -> Option<&mut iw::IwConfig> {
        let slot = match self {
            StrategyConfig::Iw(c) => return Some(c),
            StrategyConfig::Ddc(c) => &mut c.instance_weights,
            StrategyConfig::Dan(c) => &mut c.instance_weights,
            StrategyConfig::Coral(c) => &mut c.instance_weights,
            StrategyConfig::Dann(c) => &mut c.instance_weights,
            StrategyConfig::SourceOnly
            | StrategyConfig::Adda(_)
            | StrategyConfig::Finetune(_)
            | StrategyConfig::Tradaboost(_) => return None,
        };
        Some(slot.get_or_insert_with(iw::IwConfig::default))
    }

    /// The width of the adaptation layer the strategy's model needs, if any.
    pub fn adapt_width(&self) -> Option<usize> {
        match self {
            StrategyConfig::SourceOnly => None,
            StrategyConfig::Ddc(c) => c.adapt_width(),
            StrategyConfig::Dan(c) => c.adapt_width(),
            StrategyConfig::Coral(c) => c.adapt_width(),
            StrategyConfig::Dann(c) => c.adapt_width(),
            StrategyConfig::Adda(_)
            | StrategyConfig::Finetune(_)
            | StrategyConfig::Iw(_)
            | StrategyConfig::Tradaboost(_) => None,
        }
    }

    /// Applies command-line settings; a setting the strategy does not have is an error naming it.
    pub fn apply(&mut self, o: &StrategyOverrides) -> Result<()> {
        use StrategyConfig as S;
        let name = self.name();
        let unsupported = |field: &str| -> Result<()> {
            Err(Error::Core(dtl_core::Error::config(
                field,
                format!("strategy `{name}` has no such setting"),
            )))
        };
        if let Some(v) = o.lambda {
            match self {
                S::Ddc(c) => c.lambda = v,
                S::Dan(c) => c.lambda = v,
                S::Coral(c) => c.lambda = v,
                _ => return unsupported("lambda"),
            }
        }
        if let Some(v) = o.schedule {
            match self {
                S::Ddc(c) => c.schedule = v,
                S::Dan(c) => c.schedule = v,
                S::Coral(c) => c.schedule = v,
                _ => return unsupported("lambda-schedule"),
            }
        }
        if let Some(v) = o.adapt_width {
            match self {
                S::Ddc(c) => c.adapt_width = v,
                S::Dan(c) => c.adapt_width = v,
                S::Coral(c) => c.adapt_width = v,
                S::Dann(c) => c.adapt_width = v,
                _ => return unsupported("adapt-width"),
            }
        }
        if let Some(v) = &o.layers {
            match self {
                S::Ddc(c) => {
                    let [layer] = v[..] else {
                        return Err(Error::Core(dtl_core::Error::config(
                            "adapt-layers",
                            format!("ddc measures the MMD on one layer, got {}", v.len()),
                        )));
                    };
                    c.layer = layer;
                }
                S::Dan(c) => c.layers = v.clone(),
                S::Coral(c) => c.layers = v.clone(),
                _ => return unsupported("adapt-layers"),
            }
        }
        if let Some(v) = o.kernel {
            match self {
                S::Ddc(c) => c.kernel = v,
                _ => return unsupported("mmd-kernel"),
            }
        }
        if let Some(v) = o.estimator {
            match self {
                S::Ddc(c) => c.estimator = v,
                S::Dan(c) => c.estimator = v,
                _ => return unsupported("mmd-estimator"),
            }
        }
        if let Some(v) = o.source_epochs {
            match self {
                S::Adda(c) => c.source_epochs = v,
                _ => return unsupported("source-epochs"),
            }
        }
        if let Some(v) = o.transfer_layers {
            match self {
                S::Finetune(c) => c.transfer_layers = v,
                _ => return unsupported("transfer-layers"),
            }
        }
        if o.freeze {
            match self {
                S::Finetune(c) => c.freeze = true,
                _ => return unsupported("freeze"),
            }
        }
        if let Some(v) = o.transferred_lr_mult {
            match self {
                S::Finetune(c) => c.transferred_lr_mult = v,
                _ => return unsupported("transferred-lr-mult"),
            }
        }
        if let Some(v) = o.shared_layers {
            match self {
                S::Adda(c) => c.shared_layers = v,
                _ => return unsupported("shared-layers"),
            }
        }
        if let Some(v) = o.labelled_target {
            match self {
                S::Tradaboost(c) => c.labelled_target = v,
                _ => return unsupported("labelled-target"),
            }
        }
        let weights_asked =
            o.weight_estimator.is_some() || o.weights_on.is_some() || o.reweight_every.is_some();
        if weights_asked {
            let field = if o.weight_estimator.is_some() {
                "estimator"
            } else if o.weights_on.is_some() {
                "weights-on"
            } else {
                "reweight-every"
            };
            // iw's own settings, or the instance weights another strategy's source loss takes
            // (switched on by any of these flags).
            let Some(c) = self.instance_weights_mut() else {
                return unsupported(field);
            };
            if let Some(v) = &o.weight_estimator {
                c.estimator = weighting::Estimator::from_name(v)?;
            }
            if let Some(v) = o.weights_on {
                c.weights_on = v;
            }
            if let Some(v) = o.reweight_every {
                c.every = v;
            }
        }
        Ok(())
    }
}

/// Builds the strategy `cfg` around `model`; `seed` initialises whatever networks the strategy adds
/// (a discriminator). A strategy with an adaptation layer needs the model to have exactly the one
/// [`StrategyConfig::adapt_width`] asks for; `source-only`, `adda` and `finetune` train any model.
/// Strategies with instance weights (`iw`, or `instance-weights` set) need the training data:
/// [`build_with_data`].
pub fn build(
    cfg: &StrategyConfig,
    model: Classifier,
    optim: &OptimSettings,
    seed: u64,
) -> Result<Box<dyn TransferStrategy>> {
    if cfg.instance_weights().is_some() {
        return Err(Error::Core(dtl_core::Error::config(
            "instance-weights",
            format!(
                "{} estimates instance weights from the training data: build it with build_with_data",
                cfg.name()
            ),
        )));
    }
    check_adapt_width(cfg, &model)?;
    Ok(match cfg {
        StrategyConfig::SourceOnly => Box::new(SourceOnly::new(model, optim)?),
        StrategyConfig::Ddc(c) => Box::new(c.build(model, optim)?),
        StrategyConfig::Dan(c) => Box::new(c.build(model, optim)?),
        StrategyConfig::Coral(c) => Box::new(c.build(model, optim)?),
        StrategyConfig::Dann(c) => Box::new(c.build(model, optim, seed)?),
        StrategyConfig::Adda(c) => Box::new(c.build(model, optim, seed)?),
        StrategyConfig::Finetune(c) => Box::new(c.build(model, optim)?),
        // iw always has instance weights: refused above.
        StrategyConfig::Iw(_) | StrategyConfig::Tradaboost(_) => {
            return Err(Error::Core(dtl_core::Error::config(
                "strategy",
                format!(
                    "{} needs the training data: build it with build_with_data",
                    cfg.name()
                ),
            )))
        }
    })
}

/// The model's adaptation layer against the one the strategy needs.
fn check_adapt_width(cfg: &StrategyConfig, model: &Classifier) -> Result<()> {
    let any_model = matches!(
        cfg,
        StrategyConfig::SourceOnly
            | StrategyConfig::Adda(_)
            | StrategyConfig::Finetune(_)
            | StrategyConfig::Iw(_)
            | StrategyConfig::Tradaboost(_)
    );
    if !any_model && model.spec().adapt_width != cfg.adapt_width() {
        return Err(Error::Core(dtl_core::Error::config(
            "adapt-width",
            format!(
                "strategy `{}` wants an adaptation layer of {:?} units, the model has {:?}",
                cfg.name(),
                cfg.adapt_width(),
                model.spec().adapt_width
            ),
        )));
    }
    Ok(())
}

/// [`build`] for every strategy, including those with instance weights (`iw`, or a discrepancy
/// strategy or `dann` with `instance-weights`), which read the source training set the trainer
/// will batch and the target training set (images only) to estimate the weights, and
/// `tradaboost`, which draws its few labelled target samples from `target`.
pub fn build_with_data(
    cfg: &StrategyConfig,
    model: Classifier,
    optim: &OptimSettings,
    seed: u64,
    source: &dtl_data::Dataset,
    target: &dtl_data::Dataset,
) -> Result<Box<dyn TransferStrategy>> {
    if let StrategyConfig::Tradaboost(c) = cfg {
        check_adapt_width(cfg, &model)?;
        return Ok(Box::new(c.build(model, optim, source, target, seed)?));
    }
    let Some(w) = cfg.instance_weights() else {
        return build(cfg, model, optim, seed);
    };
    check_adapt_width(cfg, &model)?;
    let weighter = w.weighter(source, target, seed)?;
    Ok(match cfg {
        StrategyConfig::Iw(_) => Box::new(iw::Iw::new(model, optim, weighter)?),
        StrategyConfig::Ddc(c) => Box::new(c.build(model, optim)?.with_instance_weights(weighter)),
        StrategyConfig::Dan(c) => Box::new(c.build(model, optim)?.with_instance_weights(weighter)),
        StrategyConfig::Coral(c) => Box::new(c.build(model, optim)?.with_instance_weights(weighter)),
        StrategyConfig::Dann(c) => Box::new(c.build(model, optim, seed)?.with_instance_weights(weighter)),
        // instance_weights() is None for these: built above.
        StrategyConfig::SourceOnly
        | StrategyConfig::Adda(_)
        | StrategyConfig::Finetune(_)
        | StrategyConfig::Tradaboost(_) => return build(cfg, model, optim, seed),
    })
}
