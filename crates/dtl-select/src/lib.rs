//! Label-free model selection: with an unlabelled target domain, which run to trust, and what
//! that choice costs against the oracle that could see the target's labels.
//!
//! - [`Validator`]: one trait, one file per validator in [`validators`] (`source-acc`, `entropy`,
//!   `im`, `bnm`, `snd`, `iwcv`, `dev`, `classami`, `mixval`, `reverse`), each scoring a trained model from
//!   its [`Outputs`] on the labelled source validation split and the **unlabelled** target
//!   training split; the target is a [`dtl_data::Unlabelled`] set, so target labels cannot reach a
//!   validator (a labelled split does not type-check there);
//! - [`selection`]: per validator, the run it selects among many, that run's target accuracy,
//!   the oracle's choice and the gap, and the rank correlation of score and accuracy;
//! - [`sweep`]: sweep specs (a base run config and the keys to vary, as a grid or a seeded
//!   random search, times seeds) expanded into runs with stable ids.
//!
//! ```
//! use dtl_select::{validators, Validator};
//!
//! let names: Vec<&str> = validators::all().iter().map(|v| v.name()).collect();
//! assert_eq!(names, ["source-acc", "entropy", "im", "bnm", "snd", "iwcv", "dev", "classami", "mixval", "reverse"]);
//! ```
#![deny(missing_docs)]

pub mod linalg;
pub mod outputs;
pub mod selection;
pub mod stats;
pub mod sweep;
pub mod validator;
pub mod validators;

pub use outputs::{Inputs, Matrix, Outputs};
pub use validator::{Score, Validator};

/// Errors of the selection crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the core crate.
    #[error(transparent)]
    Core(#[from] dtl_core::Error),
    /// An error of the strategies crate (evaluation, instance weights).
    #[error(transparent)]
    Strategy(#[from] dtl_strategies::Error),
    /// An error of the backbones crate.
    #[error(transparent)]
    Backbone(#[from] dtl_backbones::Error),
    /// An error of the data crate.
    #[error(transparent)]
    Data(Box<dtl_data::Error>),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A sweep spec or a setting is wrong.
    #[error("invalid value for `{field}`: {message}")]
    Config {
        /// The key at fault.
        field: String,
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

/// Result type of the selection crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn config(field: &str, message: impl Into<String>) -> Error {
    Error::Config {
        field: field.into(),
        message: message.into(),
    }
}
