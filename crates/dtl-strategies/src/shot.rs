//! `shot`: Source HypOthesis Transfer (Liang et al. 2020, "Do We Really Need to Access the Source
//! Data? Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML): source-free
//! adaptation of a trained model to the target.
//!
//! The model comes from a saved source model (`--init-from`); its classifier head, the source
//! hypothesis, stays fixed, and only the feature extractor (backbone, and the adaptation layer
//! when there is one) trains, on target images alone, with
//!
//! - information maximisation: the mean entropy of the target predictions (each confident) minus
//!   the entropy of their mean (all classes used), `E[H(p)] - H(E[p])`;
//! - self-supervised pseudo-labels, `beta` (the paper's 0.3) times their cross-entropy: before
//!   every epoch the target features `[f, 1] / ||[f, 1]||` are clustered around class centroids
//!   weighted by the predictions, each sample labelled by its nearest centroid (cosine distance),
//!   and the centroids recomputed from those labels for `rounds` more assignments (the paper's
//!   one); classes no sample predicts get no centroid.
//!
//! The strategy never reads a source batch: a model shipped without its training data adapts.
//! (The loop still counts its steps by the source split's batches; `--source-train-size` sets
//! their number.)

use candle_core::{DType, Tensor, D};
use dtl_backbones::Classifier;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_data::Unlabelled;
use dtl_losses::conditional::{entropy, softmax};
use serde::{Deserialize, Serialize};

use crate::adversarial::loss_err;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, RunFacts, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `shot`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShotConfig {
    /// Weight of the pseudo-label cross-entropy (the paper's 0.3; 0: information maximisation
    /// alone, SHOT-IM).
    pub beta: f64,
    /// Subtract the entropy of the mean prediction (the diversity term).
    pub diversity: bool,
    /// Assignments after the first, each from centroids of the previous labels (the paper's 1).
    pub rounds: usize,
}

impl Default for ShotConfig {
    /// The paper's beta 0.3, diversity on, one further round of clustering.
    fn default() -> Self {
        Self {
            beta: 0.3,
            diversity: true,
            rounds: 1,
        }
    }
}

impl StrategySettings for ShotConfig {
    fn validate(&self) -> Result<()> {
        if !(self.beta >= 0.0 && self.beta.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "beta",
                format!("{} is not a non-negative number", self.beta),
            )));
        }
        if self.rounds > 100 {
            return Err(Error::Core(dtl_core::Error::config(
                "rounds",
                format!("{} clustering rounds: give 0 to 100", self.rounds),
            )));
        }
        Ok(())
    }

    fn check_run(&self, run: &RunFacts) -> Result<()> {
        if !run.init_from {
            return Err(Error::Core(dtl_core::Error::config(
                "init-from",
                "shot adapts a trained source model: give --init-from MODEL (a dtl train checkpoint)",
            )));
        }
        Ok(())
    }

    fn needs_data(&self) -> bool {
        true
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        self.check_run(&RunFacts {
            epochs: 1,
            init_from: ctx.init.is_some(),
        })?;
        let data = ctx.training_data("shot")?;
        Ok(Box::new(Shot::new(
            self.clone(),
            ctx.model,
            &ctx.optim,
            data.target.without_labels(),
        )?))
    }
}

/// SHOT's pseudo-labels of `n` samples from their features `(n, d)` and predicted probabilities
/// `(n, k)` (both row-major): see the module documentation.
pub fn pseudo_labels(features: &[f32], probs: &[f32], n: usize, k: usize, rounds: usize) -> Vec<u32> {
    let d = features.len().checked_div(n).unwrap_or(0);
    // [f, 1], L2-normalised.
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut r: Vec<f64> = features[i * d..(i + 1) * d].iter().map(|&v| v as f64).collect();
            r.push(1.0);
            let norm = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            r.iter().map(|v| v / norm).collect()
        })
        .collect();
    let predicted: Vec<usize> = (0..n)
        .map(|i| {
            let p = &probs[i * k..(i + 1) * k];
            (0..k).fold(0, |best, c| if p[c] > p[best] { c } else { best })
        })
        .collect();
    let present: Vec<usize> = (0..k).filter(|c| predicted.contains(c)).collect();
    let assign = |weight: &dyn Fn(usize, usize) -> f64| -> Vec<u32> {
        let centroids: Vec<Vec<f64>> = present
            .iter()
            .map(|&c| {
                let mut sum = vec![0.0; d + 1];
                let mut total = 0.0;
                for (i, r) in rows.iter().enumerate() {
                    let w = weight(i, c);
                    total += w;
                    for (s, v) in sum.iter_mut().zip(r) {
                        *s += w * v;
                    }
                }
                sum.iter().map(|s| s / (total + 1e-8)).collect()
            })
            .collect();
        rows.iter()
            .map(|r| {
                let cosine_distance = |c: &Vec<f64>| {
                    let dot: f64 = r.iter().zip(c).map(|(a, b)| a * b).sum();
                    let norm = c.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                    1.0 - dot / norm
                };
                let best = (0..centroids.len()).fold(0, |best, j| {
                    if cosine_distance(&centroids[j]) < cosine_distance(&centroids[best]) {
                        j
                    } else {
                        best
                    }
                });
                present[best] as u32
            })
            .collect()
    };
    if present.is_empty() {
        return vec![0; n];
    }
    let mut labels = assign(&|i, c| probs[i * k + c] as f64);
    for _ in 0..rounds {
        let previous = labels.clone();
        labels = assign(&|i, c| (previous[i] as usize == c) as u8 as f64);
    }
    labels
}

/// SHOT: the source hypothesis fixed, the feature extractor adapted on target images.
pub struct Shot {
    cfg: ShotConfig,
    model: Classifier,
    opt: Optimizer,
    target: Unlabelled,
    pseudo: Vec<u32>,
}

impl Shot {
    /// SHOT training of `model`'s feature extractor on `target`.
    pub fn new(
        cfg: ShotConfig,
        model: Classifier,
        optim: &OptimSettings,
        target: Unlabelled,
    ) -> Result<Self> {
        let extractor: Vec<_> = params::trainable(model.varmap())
            .into_iter()
            .filter(|(n, _)| !params::belongs_to(n, "head"))
            .collect();
        let opt = Optimizer::new(
            optim.kind,
            optim.lr,
            optim.weight_decay,
            vec![ParamGroup::new(extractor)],
        )?;
        Ok(Self {
            cfg,
            model,
            opt,
            pseudo: vec![0; target.len()],
            target,
        })
    }

    /// The pseudo-labels of the target training samples, as the last epoch began.
    pub fn pseudo_labels(&self) -> &[u32] {
        &self.pseudo
    }

    fn relabel(&mut self) -> Result<()> {
        let n = self.target.len();
        let k = self.model.spec().num_classes();
        let (mut features, mut probs) = (Vec::new(), Vec::new());
        let idx: Vec<usize> = (0..n).collect();
        for chunk in idx.chunks(512) {
            let xs = self.target.batch(chunk, self.model.device())?;
            let taps = self.model.forward_taps(&xs, false)?;
            features.extend(
                taps.hidden()
                    .detach()
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
            let p = softmax(&taps.logits.detach(), 1.0).map_err(loss_err)?;
            probs.extend(p.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
        }
        self.pseudo = pseudo_labels(&features, &probs, n, k, self.cfg.rounds);
        Ok(())
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let xt = batch.target_images("shot")?;
        let logits = self.model.forward(xt, true)?;
        let p = softmax(&logits, 1.0).map_err(loss_err)?;
        let ent = entropy(&p).map_err(loss_err)?.mean_all()?;
        let mut stats = StepStats::new();
        stats.push("loss_ent", ent.to_scalar::<f32>()? as f64);
        let mut loss = ent;
        if self.cfg.diversity {
            let mean = p.mean_keepdim(0)?;
            let div = entropy(&mean).map_err(loss_err)?.sum_all()?;
            stats.push("diversity", div.to_scalar::<f32>()? as f64);
            loss = (loss - div)?;
        }
        if self.cfg.beta > 0.0 {
            let labels: Vec<u32> = batch
                .target_indices
                .iter()
                .map(|&i| self.pseudo.get(i).copied())
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::Core(dtl_core::Error::Msg(format!(
                        "shot: a target index lies outside the {} samples pseudo-labelled",
                        self.pseudo.len()
                    )))
                })?;
            let ys = Tensor::new(labels, logits.device())?;
            let ce = candle_nn::loss::cross_entropy(&logits, &ys)?;
            let agree = logits
                .detach()
                .argmax(D::Minus1)?
                .eq(&ys)?
                .to_dtype(DType::F32)?
                .mean_all()?;
            stats
                .push("loss_pseudo", ce.to_scalar::<f32>()? as f64)
                .push("pseudo_agreement", agree.to_scalar::<f32>()? as f64);
            loss = (loss + (ce * self.cfg.beta)?)?;
        }
        stats.push("loss_total", loss.to_scalar::<f32>()? as f64);
        self.opt.backward_step(&loss)?;
        Ok(stats)
    }
}

impl Strategy for Shot {
    fn name(&self) -> &str {
        "shot"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn start_epoch(&mut self, _epoch: usize, _epochs: usize) -> dtl_core::Result<()> {
        if self.cfg.beta > 0.0 {
            self.relabel().map_err(Error::into_core)?;
        }
        Ok(())
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        state.put_indices(
            "pseudo",
            &self.pseudo.iter().map(|&l| l as usize).collect::<Vec<_>>(),
        )?;
        crate::strategy::save_trained(state, &self.model, &self.opt, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        let labels = state.indices("pseudo", self.model.spec().num_classes())?;
        if labels.len() != self.pseudo.len() {
            return Err(dtl_core::Error::State {
                key: "pseudo".into(),
                message: format!("{} labels for {} target samples", labels.len(), self.pseudo.len()),
            });
        }
        self.pseudo = labels.into_iter().map(|l| l as u32).collect();
        crate::strategy::load_trained(state, &self.model, &mut self.opt, None)
    }
}

impl TransferStrategy for Shot {
    fn model(&self) -> &Classifier {
        &self.model
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two clusters on the unit circle's axes: the predictions weight the first centroids, the
    /// nearest centroid labels each point, and a point the classifier got wrong is relabelled by
    /// its cluster.
    #[test]
    fn pseudo_labels_follow_the_clusters() {
        // Features (2-d) and predictions of 2 classes; sample 2 sits with class 0's cluster but
        // is predicted (weakly) as class 1.
        let f = [1.0, 0.0, 0.9, 0.1, 1.0, -0.1, 0.0, 1.0, 0.1, 0.9];
        let p = [0.9, 0.1, 0.8, 0.2, 0.4, 0.6, 0.1, 0.9, 0.2, 0.8];
        assert_eq!(pseudo_labels(&f, &p, 5, 2, 1), [0, 0, 0, 1, 1]);
        // A class nobody predicts gets no centroid: 3 classes, all predicted 0 or 1.
        let p3 = [
            0.9, 0.1, 0.0, 0.8, 0.2, 0.0, 0.4, 0.6, 0.0, 0.1, 0.9, 0.0, 0.2, 0.8, 0.0,
        ];
        assert_eq!(pseudo_labels(&f, &p3, 5, 3, 1), [0, 0, 0, 1, 1]);
    }
}
