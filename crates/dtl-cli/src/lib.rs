//! The dtl application: what the `dtl` command line does, as a library.
//!
//! - [`config`]: the run config, one typed tree of sections (`data`, `model`, `optim`, `train`,
//!   `strategy`) that TOML files, flags and `--set KEY=VALUE` write into, checked before any work;
//! - [`experiment`]: a complete run as stages (load domains, build model, build strategy, train,
//!   evaluate, write results) into `config.toml`, `model.safetensors` and `metrics.json`, and the
//!   evaluation of a checkpoint;
//! - [`rundir`]: a run directory that is consistent as a whole (a staging directory, committed by
//!   renames, resumable after a kill);
//! - [`yosinski`]: Yosinski et al. 2014's layer-transfer sweep, with [`figure`] drawing it;
//! - [`predict`]: labelling image files with a trained model;
//! - [`audit`]: a trained model's accuracy per subgroup, with the worst group and the gap.
//!
//! Library users usually reach these through the `dtl` facade (`dtl::experiment`, ...), which
//! re-exports them beside the library crates.
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod audit;
pub mod config;
pub mod experiment;
pub mod figure;
pub mod predict;
pub mod rundir;
pub mod sweep;
pub mod validation;
pub mod yosinski;

/// The git revision (short hash) this build of dtl was compiled from (`build.rs`); `None` outside
/// a git checkout. Results record it so that they name the code that made them.
pub fn git_rev() -> Option<String> {
    Some(env!("DTL_GIT_REV").to_string()).filter(|r| !r.is_empty())
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
    /// An error of the selection crate (validators, sweep specs).
    #[error(transparent)]
    Select(#[from] dtl_select::Error),
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

/// Maps an I/O error on `path` to [`Error::Io`] naming it (`.map_err(io_err(path))`).
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Result type of the facade.
pub type Result<T> = std::result::Result<T, Error>;
