//! dtl: deep transfer learning and domain adaptation on candle.
//!
//! This facade re-exports the dtl crates and adds [`experiment`], the complete run the `dtl`
//! command line performs: load a source and a target domain, train a strategy, evaluate on both
//! test splits, and write `config.toml`, `model.safetensors` and `metrics.json`.
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
//! Features `cuda` and `metal` switch on candle's GPU kernels in every crate.
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod allocator;
pub mod config;
pub mod experiment;
pub mod figure;
pub mod predict;
pub mod yosinski;

/// The git revision (short hash) this build of dtl was compiled from (`build.rs`); `None` outside
/// a git checkout. Results record it so that they name the code that made them.
pub fn git_rev() -> Option<String> {
    Some(env!("DTL_GIT_REV").to_string()).filter(|r| !r.is_empty())
}

pub use dtl_backbones as backbones;
pub use dtl_core as core;
pub use dtl_data as data;
pub use dtl_ops as ops;
pub use dtl_strategies as strategies;

/// The names most programs need.
pub mod prelude {
    pub use crate::experiment::{run, Metrics, RunConfig, RunOptions};
    pub use dtl_backbones::{Classifier, ModelSpec};
    pub use dtl_core::{Backbone, DomainBatch, StepStats, Strategy};
    pub use dtl_data::{Batcher, DataDir, Domain, DomainId, LoadOptions, Placement};
    pub use dtl_strategies::{evaluate, train, Evaluation, LoopConfig, OptimSettings, StrategyConfig};
}

/// Errors of a run.
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
    /// An error of the strategies crate.
    #[error(transparent)]
    Strategy(#[from] dtl_strategies::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A config file could not be read.
    #[error("config file {}: {message}", path.display())]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A setting out of range.
    #[error("invalid value for `{field}`: {message}")]
    Config {
        /// The field or flag.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The output directory cannot take the run.
    #[error("output directory {}: {message}", path.display())]
    Output {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Core(dtl_core::Error::Candle(e))
    }
}

impl From<dtl_data::Error> for Error {
    fn from(e: dtl_data::Error) -> Self {
        Error::Data(Box::new(e))
    }
}

/// Result type of the facade.
pub type Result<T> = std::result::Result<T, Error>;
