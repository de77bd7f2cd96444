//! Backbones for dtl (LeNet, the 8-layer ConvNet8, AlexNet, ResNet-18/34/50), with layer-indexed parameter names and safetensors checkpoints.
//!
//! A [`Classifier`] is a [`dtl_core::Backbone`], an optional adaptation layer and a linear head. Parameters are named
//! `{layer}.{param}` (`conv1.weight`, `fc1.bias`, `head.weight`) and initialised from a seed through
//! a portable RNG, so that a CPU run repeats exactly; checkpoints carry the architecture in their
//! metadata and are written atomically.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use dtl_backbones::{Classifier, ModelSpec};
//!
//! let model = Classifier::new(ModelSpec::lenet_digits(28), 42, &Device::Cpu)?;
//! assert_eq!(model.layers(), ["conv1", "conv2", "fc1", "head"]);
//! let xs = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward(&xs, false)?.dims(), &[2, 10]);
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("model.safetensors");
//! model.save(&path, &[])?;
//! let (again, _meta) = Classifier::load(&path, &Device::Cpu)?;
//! assert_eq!(again.spec(), model.spec());
//! # Ok::<(), dtl_backbones::Error>(())
//! ```
#![deny(missing_docs)]

use std::path::PathBuf;

pub mod alexnet;
pub mod classifier;
pub mod convnet;
pub mod hub;
pub mod init;
pub mod lenet;
pub mod resnet;

pub use alexnet::{AlexNet, AlexNetConfig};
pub use classifier::{
    imagenet_classes, read_safetensors, BackboneKind, Classifier, ModelSpec, Normalize, PretrainedLoad, Tap,
    Taps, IMAGENET_NORMALIZE,
};
pub use convnet::{ConvNet8, ConvNet8Config};
pub use dtl_ops::Kernels;
pub use lenet::{LeNet, LeNetConfig};
pub use resnet::{ResNet, ResNetConfig};

/// Errors of the backbones crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the core crate.
    #[error(transparent)]
    Core(#[from] dtl_core::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint does not fit the model.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What does not fit.
        message: String,
    },
    /// Weights on the Hugging Face hub could not be had.
    #[error("pretrained weights {spec}: {message}")]
    Hub {
        /// The reference, as `hf:ORG/NAME@REVISION/FILE`.
        spec: String,
        /// What went wrong and how to provide the file.
        message: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("checkpoint {}: tensor `{name}` has shape {found:?}, the model expects {expected:?}", path.display())]
    TensorShape {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// The shape of the model's parameter.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
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
            other => dtl_core::Error::Msg(other.to_string()),
        }
    }
}

/// Result type of the backbones crate.
pub type Result<T> = std::result::Result<T, Error>;
