//! `tradaboost`: TrAdaBoost's instance weighting (Dai, Yang, Xue & Yu 2007, "Boosting for transfer
//! learning") for a network, when a few labelled target samples exist beside the labelled source.
//!
//! Every epoch is a boosting round: the network trains on the weighted union of the source and the
//! labelled target samples, then, before the next epoch, the current network is the round's
//! hypothesis `h_t` and the weights follow [`update`]: source samples
//! it gets wrong lose weight by `beta`, target samples it gets wrong gain weight by `1 / beta_t`,
//! with `N = epochs - 1` rounds. A step's loss is the minibatch estimate of the weighted risk over
//! both sets, `(n / B) sum_batch p_i l_i + (m / B_T) sum_target-batch p_j l_j` with the weights
//! `p` normalised to sum 1 over all `n + m` samples. The network of the last epoch is the model
//! (the paper's vote over the later rounds' hypotheses would need every round's network).
//!
//! Target labels are read only from the labelled subset [`TradaboostConfig::labelled_target`]
//! draws from the target's training split (the semi-supervised setting); evaluation uses the
//! target's test split.
//!
//! ## The weight updates
//!
//! TrAdaBoost (Dai et al. 2007, "Boosting for transfer learning"), for a source ("diff-
//! distribution") set of `n` samples and a few labelled target ("same-distribution") samples `m`:
//! each round trains a learner on the weighted union, then
//!
//! ```text
//! eps_t  = sum_{target} w_i |h_t(x_i) - c(x_i)| / sum_{target} w_i
//! beta_t = eps_t / (1 - eps_t),      beta = 1 / (1 + sqrt(2 ln n / N))
//! source: w_i <- w_i beta^{|h_t(x_i) - c(x_i)|}        (misfits lose weight)
//! target: w_i <- w_i beta_t^{-|h_t(x_i) - c(x_i)|}     (misfits gain weight, as in AdaBoost)
//! ```
//!
//! for `N` rounds. The paper requires `eps_t < 1/2`; here `eps_t` is clamped to `[1e-10, 0.499]`
//! (a round at or above one half is logged). The source weights after the last round are the
//! instance weights (source samples that keep disagreeing with the target lose weight
//! geometrically).

use candle_core::{DType, Tensor};
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_core::{params, DomainBatch, StepStats, Strategy};
use dtl_data::Dataset;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::weighting::{self, WeightStats};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `tradaboost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TradaboostConfig {
    /// Labelled target training samples to use (a seeded subset of the target's training split).
    pub labelled_target: usize,
    /// Labelled target samples per step.
    pub target_batch: usize,
}

impl Default for TradaboostConfig {
    /// 100 labelled target samples, 32 of them per step.
    fn default() -> Self {
        Self {
            labelled_target: 100,
            target_batch: 32,
        }
    }
}

impl TradaboostConfig {
    /// The settings' own checks: at least one labelled target sample and a target batch.
    pub fn validate(&self) -> Result<()> {
        if self.labelled_target == 0 || self.target_batch == 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "labelled-target",
                "tradaboost needs at least one labelled target sample and a target batch of at least 1",
            )));
        }
        Ok(())
    }

    /// The strategy around `model`: `source` is the training set the trainer batches (weights are
    /// looked up by position), `target` the target's training split, from which
    /// `labelled_target` samples and their labels are drawn with `seed`.
    pub fn build(
        &self,
        model: Classifier,
        optim: &OptimSettings,
        source: &Dataset,
        target: &Dataset,
        seed: u64,
    ) -> Result<Tradaboost> {
        let bad = |f: &str, m: String| Err(Error::Core(dtl_core::Error::config(f, m)));
        self.validate()?;
        if target.len() < self.labelled_target {
            return bad(
                "labelled-target",
                format!(
                    "{} labelled target samples asked, the target's training split has {}",
                    self.labelled_target,
                    target.len()
                ),
            );
        }
        if source.len() < 2 {
            return bad("source", "tradaboost needs at least 2 source samples".into());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::LabelledTarget.seed(seed));
        let keep = sample(&mut rng, target.len(), self.labelled_target).into_vec();
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        Ok(Tradaboost {
            model,
            opt,
            cfg: self.clone(),
            source: source.clone(),
            labelled: target.subset(&keep)?,
            source_w: vec![1.0; source.len()],
            target_w: vec![1.0; self.labelled_target],
            rounds: Vec::new(),
            last_errors: None,
            stats: None,
            rng,
        })
    }
}

/// The `tradaboost` strategy.
pub struct Tradaboost {
    model: Classifier,
    opt: Optimizer,
    cfg: TradaboostConfig,
    source: Dataset,
    labelled: Dataset,
    source_w: Vec<f64>,
    target_w: Vec<f64>,
    rounds: Vec<Round>,
    last_errors: Option<(Vec<f64>, Vec<f64>)>,
    stats: Option<WeightStats>,
    rng: ChaCha8Rng,
}

impl Tradaboost {
    /// The current (unnormalised) weights of the source and of the labelled target samples.
    pub fn weights(&self) -> (&[f64], &[f64]) {
        (&self.source_w, &self.target_w)
    }

    /// The constants of every round so far.
    pub fn rounds(&self) -> &[Round] {
        &self.rounds
    }

    /// The 0-1 errors of the last round's hypothesis on the source and the labelled target
    /// samples, once a round has run.
    pub fn last_errors(&self) -> Option<(&[f64], &[f64])> {
        self.last_errors
            .as_ref()
            .map(|(s, t)| (s.as_slice(), t.as_slice()))
    }

    /// The labelled target samples.
    pub fn labelled_target(&self) -> &Dataset {
        &self.labelled
    }

    /// 0-1 errors of the current network (evaluation mode) on every sample of `data`.
    fn errors(&self, data: &Dataset) -> Result<Vec<f64>> {
        let predict = |xs: &Tensor| {
            self.model
                .forward(xs, false)
                .map_err(dtl_backbones::Error::into_core)
        };
        Ok(crate::eval::per_sample_losses(predict, data, 500, self.model.device())?.1)
    }

    fn round(&mut self, epochs: usize) -> Result<()> {
        let es = self.errors(&self.source)?;
        let et = self.errors(&self.labelled)?;
        let r = update(
            &mut self.source_w,
            &mut self.target_w,
            &es,
            &et,
            epochs.saturating_sub(1).max(1),
        )?;
        let mut w = self.source_w.clone();
        weighting::self_normalise(&mut w);
        let stats = WeightStats::of(&w, self.source.labels(), self.source.num_classes());
        tracing::info!(
            "tradaboost round {}: target error {:.3}, beta_t {:.3}, beta {:.3}, source effective sample size {:.0} of {}",
            self.rounds.len() + 1,
            r.epsilon,
            r.beta_t,
            r.beta,
            stats.ess,
            w.len()
        );
        self.rounds.push(r);
        self.last_errors = Some((es, et));
        self.stats = Some(stats);
        Ok(())
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let dev = xs.device().clone();
        let total: f64 = self.source_w.iter().chain(&self.target_w).sum();
        let (n, m) = (self.source_w.len() as f64, self.target_w.len() as f64);
        let ws: Vec<f32> = batch
            .source_indices
            .iter()
            .map(|&i| {
                self.source_w
                    .get(i)
                    .map(|w| (w / total * n / batch.source_indices.len() as f64) as f32)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                Error::Core(dtl_core::Error::Msg(format!(
                    "tradaboost: a batch index lies outside the {} source samples weighted",
                    self.source_w.len()
                )))
            })?;
        let bt = self.cfg.target_batch.min(self.labelled.len());
        let ti = sample(&mut self.rng, self.labelled.len(), bt).into_vec();
        let wt: Vec<f32> = ti
            .iter()
            .map(|&j| (self.target_w[j] / total * m / bt as f64) as f32)
            .collect();
        let (xt, yt) = self.labelled.batch(&ti, &dev)?;
        let nb = xs.dim(0)?;
        let logits = self.model.forward(&Tensor::cat(&[xs, &xt], 0)?, true)?;
        let labels = Tensor::cat(&[ys, &yt], 0)?;
        let nll = crate::eval::nll(&logits, &labels)?;
        let w = Tensor::from_vec([ws, wt].concat(), nb + bt, &dev)?;
        let weighted = (&nll * &w)?;
        let loss_src = weighted.narrow(0, 0, nb)?.sum_all()?;
        let loss_tgt = weighted.narrow(0, nb, bt)?.sum_all()?;
        let loss = (&loss_src + &loss_tgt)?;
        let acc = logits
            .narrow(0, 0, nb)?
            .detach()
            .argmax(1)?
            .eq(ys)?
            .to_dtype(DType::F32)?
            .mean_all()?
            .to_scalar::<f32>()? as f64;
        let mut stats = StepStats::new();
        stats
            .push("loss_source", loss_src.to_scalar::<f32>()? as f64)
            .push("loss_target", loss_tgt.to_scalar::<f32>()? as f64)
            .push("loss_total", loss.to_scalar::<f32>()? as f64)
            .push(
                "loss_cls",
                nll.narrow(0, 0, nb)?.mean_all()?.to_scalar::<f32>()? as f64,
            )
            .push("acc_source", acc);
        self.opt.backward_step(&loss)?;
        Ok(stats)
    }
}

impl Strategy for Tradaboost {
    fn name(&self) -> &str {
        "tradaboost"
    }

    fn start_epoch(&mut self, epoch: usize, epochs: usize) -> dtl_core::Result<()> {
        if epoch > 0 {
            self.round(epochs).map_err(Error::into_core)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::save_trained(state, &self.model, &self.opt, None)?;
        let mut save = || -> Result<()> {
            state.put_f64s("boost.source_weights", &self.source_w)?;
            state.put_f64s("boost.target_weights", &self.target_w)?;
            state.put("boost.rounds", &self.rounds)?;
            if let Some((es, et)) = &self.last_errors {
                state.put_f64s("boost.source_errors", es)?;
                state.put_f64s("boost.target_errors", et)?;
            }
            state.put("boost.stats", &self.stats)?;
            state.put_rng("boost.rng", &self.rng)?;
            Ok(())
        };
        save().map_err(Error::into_core)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::load_trained(state, &self.model, &mut self.opt, None)?;
        let mut load = || -> Result<()> {
            let (n, m) = (self.source_w.len(), self.target_w.len());
            self.source_w = state.f64s("boost.source_weights", n)?;
            self.target_w = state.f64s("boost.target_weights", m)?;
            self.rounds = state.get("boost.rounds")?;
            self.last_errors = if state.contains("boost.source_errors") {
                Some((
                    state.f64s("boost.source_errors", n)?,
                    state.f64s("boost.target_errors", m)?,
                ))
            } else {
                None
            };
            self.stats = state.get("boost.stats")?;
            self.rng = state.rng("boost.rng")?;
            Ok(())
        };
        load().map_err(Error::into_core)
    }
}

impl TransferStrategy for Tradaboost {
    fn model(&self) -> &Classifier {
        &self.model
    }

    fn weight_stats(&self) -> Option<&WeightStats> {
        self.stats.as_ref()
    }
}

impl StrategySettings for TradaboostConfig {
    fn validate(&self) -> Result<()> {
        TradaboostConfig::validate(self)
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        let data = ctx.training_data("tradaboost")?;
        Ok(Box::new(self.build(
            ctx.model,
            &ctx.optim,
            data.source,
            data.target,
            ctx.seed,
        )?))
    }
}

/// One round's constants.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Round {
    /// Weighted target error `eps_t` (after clamping).
    pub epsilon: f64,
    /// `beta_t = eps_t / (1 - eps_t)`.
    pub beta_t: f64,
    /// The source factor `beta = 1 / (1 + sqrt(2 ln n / N))`.
    pub beta: f64,
}

/// The weights of both sets after TrAdaBoost's rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Boosted {
    /// Source weights (the paper's `w_1 .. w_n`).
    pub source: Vec<f64>,
    /// Target weights (`w_{n+1} .. w_{n+m}`).
    pub target: Vec<f64>,
    /// Each round's constants.
    pub rounds: Vec<Round>,
}

/// One round of the update above, in place; `err_*` are the losses `|h_t(x) - c(x)|` in `[0, 1]`
/// and `rounds` is `N`.
pub fn update(
    source: &mut [f64],
    target: &mut [f64],
    err_source: &[f64],
    err_target: &[f64],
    rounds: usize,
) -> Result<Round> {
    if source.len() != err_source.len()
        || target.len() != err_target.len()
        || target.is_empty()
        || source.len() < 2
        || rounds == 0
    {
        return Err(config(
            "tradaboost",
            format!(
                "{} source weights / {} errors, {} target weights / {} errors, {rounds} rounds (need >= 2 source, >= 1 target, >= 1 round)",
                source.len(),
                err_source.len(),
                target.len(),
                err_target.len()
            ),
        ));
    }
    if err_source
        .iter()
        .chain(err_target)
        .any(|e| !(0.0..=1.0).contains(e))
    {
        return Err(config("tradaboost", "errors |h(x) - c(x)| must lie in [0, 1]"));
    }
    let total: f64 = target.iter().sum();
    let raw = target.iter().zip(err_target).map(|(w, e)| w * e).sum::<f64>() / total;
    if raw >= 0.5 {
        tracing::warn!("TrAdaBoost: target error {raw:.3} >= 1/2, clamped to 0.499");
    }
    let epsilon = raw.clamp(1e-10, 0.499);
    let beta_t = epsilon / (1.0 - epsilon);
    let beta = 1.0 / (1.0 + (2.0 * (source.len() as f64).ln() / rounds as f64).sqrt());
    source
        .iter_mut()
        .zip(err_source)
        .for_each(|(w, e)| *w *= beta.powf(*e));
    target
        .iter_mut()
        .zip(err_target)
        .for_each(|(w, e)| *w *= beta_t.powf(-*e));
    Ok(Round {
        epsilon,
        beta_t,
        beta,
    })
}

/// Runs `rounds` rounds from uniform weights. `learner` gets the normalised weights of the source
/// then the target samples and returns its losses `|h_t(x) - c(x)|` on the source and on the
/// target samples.
pub fn run(
    n_source: usize,
    n_target: usize,
    rounds: usize,
    mut learner: impl FnMut(&[f64]) -> Result<(Vec<f64>, Vec<f64>)>,
) -> Result<Boosted> {
    let mut source = vec![1.0; n_source];
    let mut target = vec![1.0; n_target];
    let mut log = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let total: f64 = source.iter().chain(&target).sum();
        let p: Vec<f64> = source.iter().chain(&target).map(|w| w / total).collect();
        let (es, et) = learner(&p)?;
        log.push(update(&mut source, &mut target, &es, &et, rounds)?);
    }
    Ok(Boosted {
        source,
        target,
        rounds: log,
    })
}
