//! The dtl training loop, optimizers, evaluation and transfer strategies.
//!
//! A strategy (one file each, by family: [`discrepancy`], [`adversarial`], [`weighting`], and
//! [`source_only`] and [`finetune`]) implements [`dtl_core::Strategy`] and [`TransferStrategy`]: it
//! owns its networks and optimizers and turns a [`dtl_core::DomainBatch`] into one update. Its
//! settings implement [`StrategySettings`] (checks before any work, what it needs from the run,
//! construction from a [`BuildContext`]); the [`registry`] names every strategy once and generates
//! [`StrategyConfig`]. Losses the strategies share are in [`loss`]. The loop in [`trainer`] feeds
//! strategies seeded batches; [`eval`] measures the result on labelled test splits.
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
//! let mut strategy = build(&StrategyConfig::SourceOnly(Default::default()), model, &OptimSettings::default(), 0)?;
//! let cfg = trainer::LoopConfig { epochs: 1, batch_size: 64, seed: 0, progress: false, augment: None };
//! let report = trainer::train(strategy.as_mut(), &data.train, None, &cfg, &dev)?;
//! assert_eq!(report.epochs.len(), 1);
//! let e = eval::evaluate(|xs| strategy.predict(xs), &data.test, 256, &dev)?;
//! assert_eq!(e.n, 450);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod adversarial;
pub mod discrepancy;
mod error;
pub mod eval;
pub mod finetune;
pub mod loss;
pub mod mcc;
pub mod optim;
pub mod registry;
pub mod self_ensembling;
pub mod shot;
pub mod source_only;
pub mod strategy;
pub mod trainer;
pub mod weighting;

pub use adversarial::adda::{Adda, AddaConfig, GeneratorLoss};
pub use adversarial::cdan::{Cdan, CdanConfig};
pub use adversarial::dann::{Dann, DannConfig};
pub use adversarial::mcd::{Mcd, McdConfig};
pub use adversarial::Discriminator;
pub use discrepancy::coral::CoralConfig;
pub use discrepancy::dan::DanConfig;
pub use discrepancy::ddc::{DdcConfig, KernelChoice};
pub use discrepancy::{Discrepancy, Distance, EstimatorChoice, Schedule};
pub use dtl_backbones::Tap;
pub use error::{Error, Result};
pub use eval::{evaluate, feature_gap, Evaluation, FeatureGap};
pub use finetune::FinetuneConfig;
pub use loss::MccTerm;
pub use mcc::{Mcc, MccConfig};
pub use optim::{OptimSettings, Optimizer, OptimizerKind, ParamGroup};
pub use registry::{build, build_with_data, StrategyConfig};
pub use self_ensembling::{SelfEnsembling, SelfEnsemblingConfig};
pub use shot::{Shot, ShotConfig};
pub use source_only::{SourceOnly, SourceOnlyConfig};
pub use strategy::{
    AdaptLayer, BuildContext, InitialModel, InitialWeights, RunFacts, StrategySettings, TrainingData,
    TransferStrategy,
};
pub use trainer::{train, train_resumable, Checkpointing, EpochLog, LoopConfig, Position, TrainReport};
pub use weighting::iw::{Iw, IwConfig, WeightsOn};
pub use weighting::tradaboost::{Tradaboost, TradaboostConfig};
