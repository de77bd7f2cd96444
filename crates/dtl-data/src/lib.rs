//! Digit domains for dtl: readers, the data directory, seeded batching and verified downloads.
//!
//! Three real handwritten-digit domains are read in the formats they are published in (MNIST as
//! gzip'd IDX, USPS as bzip2'd LIBSVM text, UCI optdigits as gzip'd CSV) and mapped to one
//! convention: one channel, ink high, `f32` in `[0, 1]`, resized (bilinear) to a common canvas,
//! 28x28 by default, so that any two domains can be paired as source and target.
//!
//! Data sets live in a data directory (`--data-dir`, else `$DTL_DATA_DIR`, else the per-user cache
//! directory) laid out as `<dir>/mnist/`, `<dir>/usps/`, `<dir>/optdigits/`. UCI optdigits and a
//! 2,000 + 500 image MNIST subset (`mnist-small`) are compiled in, so this runs anywhere:
//!
//! ```
//! use dtl_data::{Batcher, Domain, DomainId, LoadOptions};
//!
//! let digits = Domain::load(DomainId::Optdigits, None, &LoadOptions::default())?;
//! assert_eq!((digits.train.len(), digits.test.len()), (1347, 450));
//! assert_eq!(digits.train.image_shape(), (1, 28, 28));
//!
//! let mut batches = Batcher::new(digits.train.len(), 64, 42);
//! let first = &batches.epoch()[0];
//! let (xs, ys) = digits.train.batch(first, &candle_core::Device::Cpu)?;
//! assert_eq!(xs.dims(), &[64, 1, 28, 28]);
//! assert_eq!(ys.dims(), &[64]);
//! # Ok::<(), dtl_data::Error>(())
//! ```
#![deny(missing_docs)]

use std::path::{Path, PathBuf};

pub mod augment;
pub mod batch;
pub mod bundled;
pub mod catalog;
pub mod dataset;
pub mod domain;
pub mod download;
pub mod folder;
pub mod formats;
pub mod images;
pub mod unlabelled;

pub use batch::Batcher;
pub use catalog::DomainId;
pub use dataset::{Dataset, Placement};
pub use domain::{DataDir, Domain, DomainSource, FileRecord, LoadOptions, DATA_DIR_ENV};
pub use unlabelled::Unlabelled;

/// Errors of the data crate. Each names the file, URL or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the core crate.
    #[error(transparent)]
    Core(#[from] dtl_core::Error),
    /// A tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A domain's file is not in the data directory.
    #[error(
        "{domain}: missing file {}\n  data directory: {data_dir}\n  expected in {}: {expected}\n  source: {provenance}",
        path.display(),
        path.parent().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
        /// The domain.
        domain: String,
        /// The files expected in the domain's folder.
        expected: String,
        /// Where the files come from.
        provenance: String,
        /// The data directory and where its setting came from.
        data_dir: String,
    },
    /// A file's content does not follow its format.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Format {
        /// The file.
        path: PathBuf,
        /// The 1-based line, for text formats.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// Downloaded or stored content does not have the published checksum.
    #[error("{what}: sha256 of the content is {found}, expected {expected}")]
    Checksum {
        /// The URL or file.
        what: String,
        /// The published sha256.
        expected: String,
        /// The sha256 found.
        found: String,
    },
    /// A download failed.
    #[error("downloading {url}: {message}")]
    Download {
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// A domain name dtl does not know.
    #[error("unknown domain `{name}`: known domains are {known}")]
    UnknownDomain {
        /// The name given.
        name: String,
        /// The names dtl knows.
        known: String,
    },
    /// A setting out of range.
    #[error("invalid value for `{field}`: {message}")]
    Config {
        /// The field or flag.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Any other failure.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, line: Option<usize>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// Result type of the data crate.
pub type Result<T> = std::result::Result<T, Error>;
