//! `iw`: importance-weighted source risk (Shimodaira 2000; Sugiyama et al. 2007): the source
//! cross-entropy of each sample is weighted by an estimate of `p_T(x) / p_S(x)` from one of the
//! estimators of [`crate::weighting`], so that training minimises an estimate of the target risk.
//!
//! On the images themselves (`pixels`) the weights are estimated once, before the first epoch
//! (the pixels do not change, so `every` must stay 0 there). On the model's features (`features`) a freshly
//! initialised network's features say little about the domains, so the first `k` epochs (at least
//! one) train with equal weights and the weights are estimated before epoch `k + 1`, then every `k`
//! epochs on the features as they have become. The loss of a batch is
//! `sum_i w_i l_i / sum_i w_i`.
//!
//! The weighting itself is a [`SourceWeighter`], which the discrepancy strategies (`ddc`, `dan`,
//! `coral`) and `dann` also take (`instance-weights` in their settings): their source
//! cross-entropy is then weighted the same way while their adaptation loss pulls the feature
//! distributions together, the combination of instance weighting and feature transformation.

use candle_core::Tensor;
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_core::{params, DomainBatch, StepStats, Strategy};
use dtl_data::Dataset;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::loss::source_loss;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::weighting::{Estimator, Samples, WeightStats};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// What the weights are estimated on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightsOn {
    /// The images, flattened.
    #[default]
    Pixels,
    /// The model's backbone features (re-estimated as they change with `every`).
    Features,
}

/// Settings of `iw`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct IwConfig {
    /// The estimator and its settings (`[strategy.estimator]`, `kind = "ratio" | "kmm" | "kliep"`).
    pub estimator: Estimator,
    /// Estimate on pixels or on features.
    pub weights_on: WeightsOn,
    /// On features: re-estimate every this many epochs, and train this many equal-weight epochs
    /// before the first estimate (0 counts as 1). On pixels it must be 0 (estimated once).
    pub every: usize,
    /// At most this many target training images go into an estimate (a seeded subset).
    pub max_target: usize,
}

impl Default for IwConfig {
    /// The domain-classifier ratio on pixels, once, from up to 5,000 target images.
    fn default() -> Self {
        Self {
            estimator: Estimator::default(),
            weights_on: WeightsOn::Pixels,
            every: 0,
            max_target: 5000,
        }
    }
}

impl IwConfig {
    /// The settings' own checks: at least one target image, no re-estimation on pixels.
    pub fn validate(&self) -> Result<()> {
        self.estimator.validate()?;
        if self.max_target == 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "max-target",
                "must be at least 1",
            )));
        }
        if self.weights_on == WeightsOn::Pixels && self.every > 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "reweight-every",
                format!(
                    "is {} but the weights are estimated on pixels, which do not change during training: \
                     re-estimating would repeat the same work; leave it at 0, or estimate on features \
                     (weights-on = \"features\")",
                    self.every
                ),
            )));
        }
        Ok(())
    }

    /// The weighter of `source`, the training set the trainer will batch (the same samples in the
    /// same order: weights are looked up by position), against `target`, the training set whose
    /// images (never labels) the estimator reads, at most [`IwConfig::max_target`] of them.
    pub fn weighter(&self, source: &Dataset, target: &Dataset, seed: u64) -> Result<SourceWeighter> {
        self.validate()?;
        if target.is_empty() {
            return Err(Error::Core(dtl_core::Error::config(
                "target",
                "instance weights need target training images, the target training set is empty",
            )));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::WeightSubset.seed(seed));
        let keep = sample(&mut rng, target.len(), self.max_target.min(target.len())).into_vec();
        Ok(SourceWeighter {
            cfg: self.clone(),
            source: source.clone(),
            target: target.subset(&keep)?,
            weights: vec![1.0; source.len()],
            stats: None,
            seed,
        })
    }

    /// The strategy around `model`, weighting `source` against `target` (see
    /// [`IwConfig::weighter`]).
    pub fn build(
        &self,
        model: Classifier,
        optim: &OptimSettings,
        source: &Dataset,
        target: &Dataset,
        seed: u64,
    ) -> Result<Iw> {
        Iw::new(model, optim, self.weighter(source, target, seed)?)
    }
}

/// One weight per source training sample, estimated by an [`Estimator`] on pixels or on a
/// model's features, and re-estimated on the schedule of an [`IwConfig`]. Strategies call
/// [`SourceWeighter::start_epoch`] before each epoch and weight their source loss with
/// [`crate::loss::source_loss`].
#[derive(Debug, Clone)]
pub struct SourceWeighter {
    cfg: IwConfig,
    source: Dataset,
    target: Dataset,
    weights: Vec<f32>,
    stats: Option<WeightStats>,
    seed: u64,
}

impl SourceWeighter {
    /// The current weight of each source training sample (mean 1; all 1 before the first
    /// estimate).
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// The last estimate's summary, once there is one.
    pub fn stats(&self) -> Option<&WeightStats> {
        self.stats.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &IwConfig {
        &self.cfg
    }

    /// Whether the weights are (re-)estimated before 0-based `epoch`.
    pub fn due(&self, epoch: usize) -> bool {
        match self.cfg.weights_on {
            WeightsOn::Pixels => epoch == 0,
            WeightsOn::Features => {
                let k = self.cfg.every.max(1);
                epoch > 0 && epoch.is_multiple_of(k)
            }
        }
    }

    /// Estimates the weights before `epoch` if the schedule says so; `model` gives the features.
    pub fn start_epoch(&mut self, epoch: usize, model: &Classifier) -> Result<()> {
        if self.due(epoch) {
            self.estimate(epoch, model)?;
        }
        Ok(())
    }

    /// The weights of the source samples at `indices` (a batch's
    /// [`DomainBatch::source_indices`]) as a `(B,)` tensor on `device`.
    pub fn batch_weights(&self, indices: &[usize], device: &candle_core::Device) -> Result<Tensor> {
        let w: Vec<f32> = indices
            .iter()
            .map(|&i| self.weights.get(i).copied())
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::Core(dtl_core::Error::Msg(format!(
                    "instance weights: a batch index lies outside the {} source samples the weights were estimated for",
                    self.weights.len()
                )))
            })?;
        Ok(Tensor::from_vec(w, indices.len(), device)?)
    }

    /// Writes the current weights and the last estimate's summary under `prefix`.
    pub fn save_state(&self, state: &mut dtl_core::state::State, prefix: &str) -> Result<()> {
        state.put_f32s(&format!("{prefix}values"), &self.weights)?;
        state.put(&format!("{prefix}stats"), &self.stats)?;
        Ok(())
    }

    /// Restores what [`SourceWeighter::save_state`] wrote under `prefix`.
    pub fn load_state(&mut self, state: &dtl_core::state::State, prefix: &str) -> Result<()> {
        self.weights = state.f32s(&format!("{prefix}values"), self.weights.len())?;
        self.stats = state.get(&format!("{prefix}stats"))?;
        Ok(())
    }

    /// Rows of `data` as the estimator sees them.
    fn representation(&self, data: &Dataset, model: &Classifier) -> Result<Vec<f32>> {
        match self.cfg.weights_on {
            WeightsOn::Pixels => Ok(crate::weighting::pixel_rows(data)),
            WeightsOn::Features => {
                let mut out = Vec::new();
                let idx: Vec<usize> = (0..data.len()).collect();
                for chunk in idx.chunks(512) {
                    let (xs, _) = data.batch(chunk, model.device())?;
                    let f = model.features(&xs, false)?.detach();
                    out.extend(f.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(out)
            }
        }
    }

    fn estimate(&mut self, epoch: usize, model: &Classifier) -> Result<()> {
        let started = std::time::Instant::now();
        let s = self.representation(&self.source, model)?;
        let t = self.representation(&self.target, model)?;
        let d = s.len() / self.source.len().max(1);
        let w = self.cfg.estimator.estimate(
            Samples::new(&s, self.source.len(), d, "source")?,
            Samples::new(&t, self.target.len(), d, "target")?,
            Stream::Reestimate { epoch }.seed(self.seed),
        )?;
        let labels = self.source.labels();
        let stats = WeightStats::of(&w, labels, self.source.num_classes());
        tracing::info!(
            "instance weights ({}, on {:?}) before epoch {}: effective sample size {:.0} of {} ({:.1}%), weights {:.3}..{:.3}, {:.1} s",
            self.cfg.estimator.name(),
            self.cfg.weights_on,
            epoch + 1,
            stats.ess,
            w.len(),
            100.0 * stats.ess_fraction,
            stats.min,
            stats.max,
            started.elapsed().as_secs_f64()
        );
        self.weights = w.iter().map(|&v| v as f32).collect();
        self.stats = Some(stats);
        Ok(())
    }
}

/// The `iw` strategy: the importance-weighted source risk alone.
pub struct Iw {
    model: Classifier,
    opt: Optimizer,
    weighter: SourceWeighter,
}

impl Iw {
    /// Weighted cross-entropy training of every parameter of `model` with `weighter`'s weights.
    pub fn new(model: Classifier, optim: &OptimSettings, weighter: SourceWeighter) -> Result<Self> {
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        Ok(Iw { model, opt, weighter })
    }

    /// The current weight of each source training sample (mean 1).
    pub fn weights(&self) -> &[f32] {
        self.weighter.weights()
    }

    /// The weighter.
    pub fn weighter(&self) -> &SourceWeighter {
        &self.weighter
    }
}

impl Strategy for Iw {
    fn name(&self) -> &str {
        "iw"
    }

    fn start_epoch(&mut self, epoch: usize, _epochs: usize) -> dtl_core::Result<()> {
        self.weighter
            .start_epoch(epoch, &self.model)
            .map_err(Error::into_core)
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        let mut step = || -> Result<StepStats> {
            let logits = self.model.forward(&batch.source.0, true)?;
            let mut stats = StepStats::new();
            let (loss, acc) = source_loss(Some(&self.weighter), &logits, batch, &mut stats)?;
            self.opt.backward_step(&loss)?;
            stats.push("acc_source", acc);
            Ok(stats)
        };
        step().map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::save_trained(state, &self.model, &self.opt, Some(&self.weighter))
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::load_trained(state, &self.model, &mut self.opt, Some(&mut self.weighter))
    }
}

impl TransferStrategy for Iw {
    fn model(&self) -> &Classifier {
        &self.model
    }

    fn weight_stats(&self) -> Option<&WeightStats> {
        self.weighter.stats()
    }
}

impl StrategySettings for IwConfig {
    fn validate(&self) -> Result<()> {
        IwConfig::validate(self)
    }

    fn instance_weights(&self) -> Option<&IwConfig> {
        Some(self)
    }

    fn instance_weights_key(&self) -> Option<&'static str> {
        Some("")
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        let data = ctx.training_data("iw")?;
        let weighter = self.weighter(data.source, data.target, ctx.seed)?;
        Ok(Box::new(Iw::new(ctx.model, &ctx.optim, weighter)?))
    }
}
