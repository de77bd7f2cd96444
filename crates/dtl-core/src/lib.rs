//! Shared traits and types of dtl, the deep transfer learning library on candle.
//!
//! Every other dtl crate builds on the pieces here:
//!
//! - [`Backbone`]: a feature extractor with an ordered list of named layers (Yosinski et al. 2014,
//!   "How transferable are features in deep neural networks?", count transferred layers along it);
//! - [`Strategy`]: one training step of a transfer strategy on a [`DomainBatch`] (prediction is
//!   the trained classifier's, `dtl_strategies::TransferStrategy::predict`);
//! - [`StepStats`]: the named scalars a step reports;
//! - [`config`]: the settings tree a run config is read into, with errors that name the dotted key;
//! - [`seed`]: the named seed streams every random choice of a run derives from its one seed;
//! - [`state`]: a run's whole state (parameters, optimizer moments, random streams, counters),
//!   saved and restored exactly, so that a killed run resumes bit for bit;
//! - [`params`]: parameter selection by layer prefix, the way dtl freezes layers (candle has no
//!   `requires_grad`: a frozen parameter is simply not handed to an optimizer);
//! - [`Error`]: the error type the other crates wrap.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use dtl_core::params;
//!
//! let vm = VarMap::new();
//! params::insert(&vm, "fc1.weight", Tensor::zeros((4, 2), DType::F32, &Device::Cpu)?)?;
//! params::insert(&vm, "fc1.bias", Tensor::zeros(4, DType::F32, &Device::Cpu)?)?;
//! params::insert(&vm, "fc2.weight", Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?)?;
//! let trainable = params::select(&vm, &["fc1"]);
//! assert_eq!(trainable.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["fc1.bias", "fc1.weight"]);
//! # Ok::<(), dtl_core::Error>(())
//! ```
#![deny(missing_docs)]

use candle_core::Tensor;

pub mod config;
pub mod interval;
pub mod params;
pub mod seed;
pub mod state;

/// Errors shared by the dtl crates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error from candle's tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A tensor had another shape than the one required.
    #[error("tensor `{name}`: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Name of the tensor (parameter name, or the argument of a function).
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A configuration value was out of range or inconsistent.
    #[error("invalid value for `{field}`: {message}")]
    Config {
        /// The field or flag at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// A saved training state lacks a key, or holds one that does not fit the run.
    #[error("train state `{key}`: {message}")]
    State {
        /// The key at fault.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// Any other failure, with a message that names what failed.
    #[error("{0}")]
    Msg(String),
}

impl Error {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The largest image side dtl reads, resizes to or builds a model for (4096 pixels): every size
/// that comes from a file header, checkpoint metadata or a flag is checked against it before
/// anything is allocated, so that a corrupt or hostile header cannot ask for terabytes.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Checks an image side `value` read from `field` (a flag, a header, a metadata key): at least
/// `min` and at most [`MAX_IMAGE_SIDE`].
pub fn check_image_side(field: &str, value: usize, min: usize) -> Result<()> {
    if value < min {
        return Err(Error::config(
            field,
            format!("{value} is below the smallest supported size of {min}"),
        ));
    }
    if value > MAX_IMAGE_SIDE {
        return Err(Error::config(
            field,
            format!("{value} is above the largest supported size of {MAX_IMAGE_SIDE}"),
        ));
    }
    Ok(())
}

/// Result type of the core crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A feature extractor: the part of a network before its classifier head.
///
/// Parameters are stored as `{layer}.{param}` (for example `conv1.weight`), and [`Backbone::layers`]
/// lists the layers in forward order, so that sequential transfer (Yosinski et al. 2014) can copy or
/// freeze "the first n layers" of any backbone.
pub trait Backbone: Send + Sync {
    /// Features of a batch `xs` of shape `(B, C, H, W)`, as a `(B, D)` tensor. `train` switches
    /// dropout and batch statistics on.
    fn features(&self, xs: &Tensor, train: bool) -> Result<Tensor>;
    /// [`Backbone::features`] with the gradient stopped behind the first `n` layers of
    /// [`Backbone::layers`] (their output is detached), so that a backward pass spends nothing on
    /// layers that are frozen (sequential transfer with `--freeze`, Yosinski et al. 2014's BnB and
    /// AnB). The values are those of `features`. The default stops nothing: correct, only slower.
    fn features_frozen_prefix(&self, xs: &Tensor, train: bool, n: usize) -> Result<Tensor> {
        let _ = n;
        self.features(xs, train)
    }
    /// The feature dimension `D`.
    fn feature_dim(&self) -> usize;
    /// Ordered layer names, first layer first.
    fn layers(&self) -> &[String];
    /// The input shape `(C, H, W)` the backbone expects.
    fn input_shape(&self) -> (usize, usize, usize);
    /// A short architecture name, stored in checkpoints (for example `lenet`).
    fn name(&self) -> &str;
    /// The generator of the backbone's dropout masks, when it has dropout: part of a training
    /// run's state ([`state`]), saved and restored with the parameters.
    fn dropout_rng(&self) -> Option<&std::sync::Mutex<rand_chacha::ChaCha8Rng>>;
}

/// One training step's input: a labelled source batch and an unlabelled target batch.
///
/// Target labels are carried only for the semi-supervised setting (a few labelled target samples);
/// unsupervised strategies never read them.
#[derive(Debug, Clone)]
pub struct DomainBatch {
    /// Source images `(B, C, H, W)` and labels `(B,)` (u32).
    pub source: (Tensor, Tensor),
    /// Positions of the source samples in the source training set (per-sample state such as
    /// instance weights is looked up by them).
    pub source_indices: Vec<usize>,
    /// Target images `(B', C, H, W)`, when the strategy asked for them.
    pub target: Option<Tensor>,
    /// Positions of the target samples in the target training set (per-sample state such as
    /// pseudo-labels is looked up by them); empty without a target batch.
    pub target_indices: Vec<usize>,
    /// Target labels, only in the semi-supervised setting.
    pub target_labels: Option<Tensor>,
    /// Training progress in `[0, 1)`: steps done before this one over all steps of the run
    /// (schedules such as DANN's `2 / (1 + exp(-10 p)) - 1` read it).
    pub progress: f64,
}

impl DomainBatch {
    /// The target images, which `strategy` reads at every step: an error naming it when the
    /// loop gave none.
    pub fn target_images(&self, strategy: &str) -> Result<&Tensor> {
        self.target
            .as_ref()
            .ok_or_else(|| Error::Msg(format!("{strategy} needs a target batch at every step")))
    }
}

/// Named scalars reported by one training step (losses, batch accuracy, coefficients).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    values: Vec<(String, f64)>,
}

impl StepStats {
    /// Empty statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the scalar `name`.
    pub fn push(&mut self, name: impl Into<String>, value: f64) -> &mut Self {
        let name = name.into();
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.values.push((name, value)),
        }
        self
    }

    /// The value of `name`, if reported.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// All scalars in the order they were reported.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.values.iter().map(|(n, v)| (n.as_str(), *v))
    }
}

/// What a strategy needs from the training loop besides the source batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StrategyNeeds {
    /// The strategy reads unlabelled target batches.
    pub target_batches: bool,
    /// The strategy reads labelled target batches (semi-supervised).
    pub target_labels: bool,
}

impl StrategyNeeds {
    /// Unlabelled target batches beside the source's (every unsupervised adaptation strategy).
    pub const TARGET: Self = Self {
        target_batches: true,
        target_labels: false,
    };
}

/// A transfer strategy: how one step of training uses a [`DomainBatch`].
///
/// The training loop (epochs, batching, logging, checkpoints) lives outside the strategies; a
/// strategy owns its networks and optimizers (one, or two for adversarial methods) and decides which
/// parameters train.
pub trait Strategy {
    /// The strategy's name as the command line spells it (for example `source-only`).
    fn name(&self) -> &str;
    /// The batches this strategy needs.
    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::default()
    }
    /// Called by the training loop before each epoch (0-based), with the total number of epochs,
    /// so that strategies can follow schedules.
    fn start_epoch(&mut self, _epoch: usize, _epochs: usize) -> Result<()> {
        Ok(())
    }
    /// One optimisation step; returns the named scalars to log.
    fn train_step(&mut self, batch: &DomainBatch) -> Result<StepStats>;
    /// Writes everything a later step depends on (parameters and buffers of every network,
    /// optimizer moments and step counts, random streams, stages, weights, schedules) into
    /// `state`, under keys of the strategy's own choosing.
    fn save_state(&self, state: &mut state::State) -> Result<()>;
    /// Restores what [`Strategy::save_state`] wrote, into a strategy built exactly as the saved
    /// one was (same settings, seed and data): the next step is then the one the saved strategy
    /// would have taken, bit for bit on the CPU.
    fn load_state(&mut self, state: &state::State) -> Result<()>;
}

/// Writes `bytes` to `dest` through a temporary file in the same directory and a rename, so that
/// `dest` holds either its previous content or the complete new one (checkpoints, downloads,
/// results are never left half-written).
pub fn write_atomic(dest: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.{}.partial", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
