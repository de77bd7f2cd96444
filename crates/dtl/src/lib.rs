//! dtl: deep transfer learning and domain adaptation on candle.
//!
//! This facade is the one crate a program depends on: it re-exports every dtl library crate
//! under a short name, the application's run pipeline (feature `app`, on by default), a prelude,
//! and fans the device features out to all of them.
//!
//! | module | crate | what it holds |
//! |---|---|---|
//! | [`core`] | `dtl-core` | traits, errors, named seed streams, the settings tree |
//! | [`data`] | `dtl-data` | readers, domains, batching, augmentation, the data directory |
//! | [`ops`] | `dtl-ops` | CPU kernels with autograd, thread and allocator settings |
//! | [`losses`] | `dtl-losses` | MMD, CORAL, GAN losses, gradient reversal |
//! | [`backbones`] | `dtl-backbones` | LeNet, convnet8, AlexNet, ResNets, checkpoints, the hub |
//! | [`strategies`] | `dtl-strategies` | the training loop, the registry and every strategy |
//! | [`select`] | `dtl-select` | label-free validators, selection reports, sweep specs |
//! | [`experiment`], [`config`], [`sweep`], [`validation`], [`yosinski`], [`figure`], [`predict`] | `dtl-cli` | the run config, pipeline and sweeps the `dtl` tool runs |
//!
//! ```no_run
//! use dtl::experiment::{run, RunConfig, RunOptions};
//!
//! let mut cfg = RunConfig::default();
//! cfg.data.source = "mnist-small".into();
//! cfg.data.target = "optdigits".into();
//! cfg.train.epochs = 3;
//! let metrics = run(&cfg, std::path::Path::new("runs/first"), RunOptions::default())?;
//! println!("source {:.3}, target {:.3}", metrics.source_test.accuracy, metrics.target_test.accuracy);
//! # Ok::<(), dtl::Error>(())
//! ```
//!
//! Features `cuda` and `metal` switch on candle's GPU kernels in every crate; `x86-v4` the
//! AVX-512 matrix kernels.
#![deny(missing_docs)]

pub use dtl_backbones as backbones;
pub use dtl_core as core;
pub use dtl_data as data;
pub use dtl_losses as losses;
pub use dtl_ops as ops;
pub use dtl_ops::allocator;
pub use dtl_select as select;
pub use dtl_strategies as strategies;

#[cfg(feature = "app")]
pub use dtl_cli::{
    config, experiment, figure, git_rev, predict, rundir, sweep, validation, yosinski, Error, Result,
};

/// The names most programs need.
pub mod prelude {
    pub use dtl_backbones::{Classifier, ModelSpec};
    #[cfg(feature = "app")]
    pub use dtl_cli::experiment::{run, Metrics, RunConfig, RunOptions};
    pub use dtl_core::{Backbone, DomainBatch, StepStats, Strategy};
    pub use dtl_data::{Batcher, DataDir, Domain, DomainId, LoadOptions, Placement};
    pub use dtl_strategies::{
        evaluate, train, BuildContext, Evaluation, LoopConfig, OptimSettings, StrategyConfig,
        TransferStrategy,
    };
}
