//! What a strategy is to the rest of dtl: a [`TransferStrategy`] (one training step, prediction by
//! its classifier), built from its settings, a [`StrategySettings`] type, and one
//! [`BuildContext`].
//!
//! A strategy's file holds its settings struct (serde, `Default`, the paper in its doc comment),
//! implements [`StrategySettings`] for it (checks, what it needs from the run, construction) and
//! adds one line to the registry ([`crate::registry`]).

use std::path::Path;

use candle_core::Tensor;
use dtl_backbones::Classifier;
use dtl_data::Dataset;

use crate::optim::OptimSettings;
use crate::weighting::{iw::IwConfig, WeightStats};
use crate::{Error, Result};

/// A strategy whose prediction is made by a [`Classifier`] (saved as the run's checkpoint).
pub trait TransferStrategy: dtl_core::Strategy {
    /// The classifier that predicts target labels.
    fn model(&self) -> &Classifier;
    /// Class logits `(B, K)` of a batch, in evaluation mode: [`TransferStrategy::model`]'s.
    fn predict(&self, xs: &Tensor) -> dtl_core::Result<Tensor> {
        self.model()
            .forward(xs, false)
            .map_err(dtl_backbones::Error::into_core)
    }
    /// The source samples' instance weights, summarised, for strategies that weight them (`iw`).
    fn weight_stats(&self) -> Option<&WeightStats> {
        None
    }
}

/// Saves what most strategies train: the model under `model.`, its optimizer under `opt.`, and
/// the instance weights of its source loss, when weighted, under `weights.`.
pub(crate) fn save_trained(
    state: &mut dtl_core::state::State,
    model: &Classifier,
    opt: &crate::Optimizer,
    weighter: Option<&crate::weighting::iw::SourceWeighter>,
) -> dtl_core::Result<()> {
    let mut save = || -> Result<()> {
        model.save_state(state, "model.")?;
        opt.save_state(state, "opt.")?;
        if let Some(w) = weighter {
            w.save_state(state, "weights.")?;
        }
        Ok(())
    };
    save().map_err(Error::into_core)
}

/// Restores what [`save_trained`] saved.
pub(crate) fn load_trained(
    state: &dtl_core::state::State,
    model: &Classifier,
    opt: &mut crate::Optimizer,
    weighter: Option<&mut crate::weighting::iw::SourceWeighter>,
) -> dtl_core::Result<()> {
    let load = || -> Result<()> {
        model.load_state(state, "model.")?;
        opt.load_state(state, "opt.")?;
        if let Some(w) = weighter {
            w.load_state(state, "weights.")?;
        }
        Ok(())
    };
    load().map_err(Error::into_core)
}

/// The adaptation layer a strategy needs in its model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdaptLayer {
    /// Any model trains: the strategy does not read an adaptation layer.
    Any,
    /// The model must have exactly this adaptation layer (`None`: none).
    Exactly(Option<usize>),
}

/// How a strategy uses an initial checkpoint (`init_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialWeights {
    /// Optional; when given, the model starts from all of its weights (same architecture and
    /// classes required).
    Whole,
    /// Required; the strategy copies part of it itself (sequential transfer's first layers).
    Own,
}

/// Facts about the rest of a run that a strategy's settings are checked against before any work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFacts {
    /// Passes over the source training split.
    pub epochs: usize,
    /// Whether an initial checkpoint is given.
    pub init_from: bool,
}

/// A strategy's settings: checked, then turned into the strategy.
pub trait StrategySettings: std::fmt::Debug {
    /// Ranges and combinations of the settings alone, naming the key at fault. Runs before
    /// anything is loaded or written.
    fn validate(&self) -> Result<()>;
    /// The settings against the rest of the run (its epochs, its initial checkpoint).
    fn check_run(&self, run: &RunFacts) -> Result<()> {
        let _ = run;
        Ok(())
    }
    /// The adaptation layer the model must have.
    fn adapt_layer(&self) -> AdaptLayer {
        AdaptLayer::Any
    }
    /// The instance weights of the source loss, when they are switched on.
    fn instance_weights(&self) -> Option<&IwConfig> {
        None
    }
    /// Where the instance-weight settings sit within these settings, for strategies whose source
    /// loss can be weighted: `Some("")` when they are the settings themselves (`iw`),
    /// `Some("instance-weights")` for a sub-table; `None` when the source loss cannot be weighted.
    fn instance_weights_key(&self) -> Option<&'static str> {
        None
    }
    /// Whether building reads the training data ([`BuildContext::data`]).
    fn needs_data(&self) -> bool {
        self.instance_weights().is_some()
    }
    /// How the strategy uses an initial checkpoint.
    fn initial_weights(&self) -> InitialWeights {
        InitialWeights::Whole
    }
    /// The strategy, from a context whose model already holds the initial checkpoint's weights
    /// when [`StrategySettings::initial_weights`] is [`InitialWeights::Whole`].
    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>>;
}

/// The training sets a strategy may read when it is built: the source training set the trainer
/// will batch (per-sample state is looked up by position) and the target training set (strategies
/// read its images; only `tradaboost` reads a few of its labels).
#[derive(Debug, Clone, Copy)]
pub struct TrainingData<'a> {
    /// The source training set.
    pub source: &'a Dataset,
    /// The target training set.
    pub target: &'a Dataset,
}

/// An initial model and where it came from (for messages).
#[derive(Clone, Copy)]
pub struct InitialModel<'a> {
    /// The model.
    pub model: &'a Classifier,
    /// Its checkpoint file.
    pub path: &'a Path,
}

/// Everything a strategy is built from.
pub struct BuildContext<'a> {
    /// The model the strategy trains, initialised from the run seed.
    pub model: Classifier,
    /// Optimizer settings of the run.
    pub optim: OptimSettings,
    /// The run seed; the strategy derives its own streams from it ([`dtl_core::seed`]).
    pub seed: u64,
    /// The training data, when the caller has it.
    pub data: Option<TrainingData<'a>>,
    /// An initial checkpoint.
    pub init: Option<InitialModel<'a>>,
}

impl<'a> BuildContext<'a> {
    /// A context with a model, optimizer settings and the run seed; no data, no checkpoint.
    pub fn new(model: Classifier, optim: &OptimSettings, seed: u64) -> Self {
        Self {
            model,
            optim: *optim,
            seed,
            data: None,
            init: None,
        }
    }

    /// With the training data.
    pub fn with_data(mut self, source: &'a Dataset, target: &'a Dataset) -> Self {
        self.data = Some(TrainingData { source, target });
        self
    }

    /// With an initial checkpoint.
    pub fn with_init(mut self, model: &'a Classifier, path: &'a Path) -> Self {
        self.init = Some(InitialModel { model, path });
        self
    }

    /// The training data, which strategy `name` needs.
    pub fn training_data(&self, name: &str) -> Result<TrainingData<'a>> {
        self.data.ok_or_else(|| {
            Error::Core(dtl_core::Error::config(
                "strategy",
                format!(
                    "{name} estimates from the training data: build it with build_with_data (or a BuildContext with data)"
                ),
            ))
        })
    }

    /// Loads the initial checkpoint's weights into the model, whole: it must have the model's
    /// architecture and classes.
    pub(crate) fn load_initial_weights(&self) -> Result<()> {
        let Some(init) = self.init else {
            return Ok(());
        };
        if init.model.spec() != self.model.spec() {
            return Err(Error::Core(dtl_core::Error::config(
                "init-from",
                format!(
                    "{} holds a {:?}, the run needs a {:?}",
                    init.path.display(),
                    init.model.spec(),
                    self.model.spec()
                ),
            )));
        }
        let tensors: std::collections::HashMap<String, Tensor> =
            dtl_core::params::snapshot(init.model.varmap())?
                .into_iter()
                .collect();
        self.model.load_tensors(&tensors, init.path)?;
        tracing::info!("initialised from {}", init.path.display());
        Ok(())
    }
}
