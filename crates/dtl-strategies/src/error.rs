//! Errors of the strategies crate.

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
    /// Training produced a non-finite value, or a loss that grew past
    /// [`crate::trainer::DIVERGENCE_FACTOR`] times its first value.
    #[error("training diverged: `{what}` is {value:e} in epoch {epoch} (lower the learning rate)")]
    Diverged {
        /// The scalar that went non-finite or grew past the bound.
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
