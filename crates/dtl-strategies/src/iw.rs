//! `iw`: importance-weighted source risk (Shimodaira 2000; Sugiyama et al. 2007): the source
//! cross-entropy of each sample is weighted by an estimate of `p_T(x) / p_S(x)` from one of the
//! estimators of [`crate::weighting`], so that training minimises an estimate of the target risk.
//!
//! On the images themselves (`pixels`) the weights are estimated before the first epoch (and,
//! with `every = k`, again every `k` epochs). On the model's features (`features`) a freshly
//! initialised network's features say little about the domains, so the first `k` epochs (at least
//! one) train with equal weights and the weights are estimated before epoch `k + 1`, then every `k`
//! epochs on the features as they have become. The loss of a batch is
//! `sum_i w_i l_i / sum_i w_i`.

use candle_core::{DType, Device, Tensor, D};
use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy};
use dtl_data::Dataset;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::optim::{Optimizer, ParamGroup};
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
    /// Re-estimate every this many epochs (0: once). On features, also the number of
    /// equal-weight epochs before the first estimate (at least 1).
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
    /// The strategy around `model`, with the source training set the trainer will batch (the
    /// same samples in the same order: weights are looked up by position) and the target
    /// training set whose images (never labels) the estimator reads.
    pub fn build(
        &self,
        model: Classifier,
        optim: &OptimSettings,
        source: &Dataset,
        target: &Dataset,
        seed: u64,
    ) -> Result<Iw> {
        if self.max_target == 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "max-target",
                "must be at least 1",
            )));
        }
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1a7e);
        let keep = sample(&mut rng, target.len(), self.max_target.min(target.len())).into_vec();
        Ok(Iw {
            device: model.device().clone(),
            model,
            opt,
            cfg: self.clone(),
            source: source.clone(),
            target: target.subset(&keep)?,
            weights: vec![1.0; source.len()],
            stats: None,
            seed,
        })
    }
}

/// The `iw` strategy.
pub struct Iw {
    model: Classifier,
    opt: Optimizer,
    cfg: IwConfig,
    source: Dataset,
    target: Dataset,
    weights: Vec<f32>,
    stats: Option<WeightStats>,
    seed: u64,
    device: Device,
}

impl Iw {
    /// The current weight of each source training sample (mean 1).
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// Rows of `data` as the estimator sees them.
    fn representation(&self, data: &Dataset) -> Result<Vec<f32>> {
        match self.cfg.weights_on {
            WeightsOn::Pixels => Ok((0..data.len()).flat_map(|i| data.image(i).to_vec()).collect()),
            WeightsOn::Features => {
                let mut out = Vec::new();
                let idx: Vec<usize> = (0..data.len()).collect();
                for chunk in idx.chunks(512) {
                    let (xs, _) = data.batch(chunk, &self.device)?;
                    let f = self.model.features(&xs, false)?.detach();
                    out.extend(f.flatten_all()?.to_vec1::<f32>()?);
                }
                Ok(out)
            }
        }
    }

    fn estimate(&mut self, epoch: usize) -> Result<()> {
        let started = std::time::Instant::now();
        let s = self.representation(&self.source)?;
        let t = self.representation(&self.target)?;
        let d = s.len() / self.source.len();
        let w = self.cfg.estimator.estimate(
            Samples::new(&s, self.source.len(), d, "source")?,
            Samples::new(&t, self.target.len(), d, "target")?,
            self.seed.wrapping_add(epoch as u64),
        )?;
        let labels = self.source.labels();
        let stats = WeightStats::of(&w, labels, self.source.num_classes());
        tracing::info!(
            "iw ({}, on {:?}) before epoch {}: effective sample size {:.0} of {} ({:.1}%), weights {:.3}..{:.3}, {:.1} s",
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

impl Strategy for Iw {
    fn name(&self) -> &str {
        "iw"
    }

    fn start_epoch(&mut self, epoch: usize, _epochs: usize) -> dtl_core::Result<()> {
        let due = match self.cfg.weights_on {
            WeightsOn::Pixels => epoch == 0 || (self.cfg.every > 0 && epoch % self.cfg.every == 0),
            WeightsOn::Features => {
                let k = self.cfg.every.max(1);
                epoch > 0 && epoch % k == 0
            }
        };
        if due {
            self.estimate(epoch).map_err(Error::into_core)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        let mut step = || -> Result<StepStats> {
            let (xs, ys) = &batch.source;
            let w: Vec<f32> = batch
                .source_indices
                .iter()
                .map(|&i| self.weights.get(i).copied())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::Core(dtl_core::Error::Msg(format!(
                        "iw: a batch index lies outside the {} source samples the weights were estimated for",
                        self.weights.len()
                    )))
                })?;
            let w = Tensor::from_vec(w, batch.source_indices.len(), xs.device())?;
            let logits = self.model.forward(xs, true)?;
            let nll = candle_nn::ops::log_softmax(&logits, D::Minus1)?
                .gather(&ys.unsqueeze(1)?, 1)?
                .squeeze(1)?
                .neg()?;
            let total = w.sum_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
            let loss = ((&nll * &w)?.sum_all()? / total)?;
            let value = loss.to_scalar::<f32>()? as f64;
            let plain = nll.mean_all()?.to_scalar::<f32>()? as f64;
            let acc = logits
                .detach()
                .argmax(1)?
                .eq(ys)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()? as f64;
            self.opt.backward_step(&loss)?;
            let mut stats = StepStats::new();
            stats
                .push("loss_iw", value)
                .push("loss_cls", plain)
                .push("acc_source", acc);
            Ok(stats)
        };
        step().map_err(Error::into_core)
    }

    fn predict(&self, xs: &Tensor) -> dtl_core::Result<Tensor> {
        self.model
            .forward(xs, false)
            .map_err(dtl_backbones::Error::into_core)
    }
}

impl TransferStrategy for Iw {
    fn model(&self) -> &Classifier {
        &self.model
    }

    fn weight_stats(&self) -> Option<&WeightStats> {
        self.stats.as_ref()
    }
}
