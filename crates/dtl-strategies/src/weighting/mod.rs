//! Instance weighting, the first family of deep transfer learning: one weight per source sample,
//! an estimate of the density ratio `w(x) = p_T(x) / p_S(x)`, so that the weighted source risk
//! `E_S[w(x) l(f(x), y)]` estimates the target risk under covariate shift (Shimodaira 2000,
//! "Improving predictive inference under covariate shift by weighting the log-likelihood
//! function").
//!
//! Estimators, each in its own file, all returning one weight per source sample (mean 1):
//!
//! - [`ratio`]: a probabilistic domain classifier, `w = p(t|x) / p(s|x)` (Bickel et al. 2007,
//!   "Discriminative learning for differing training and test distributions"), clipped and
//!   self-normalised;
//! - [`kmm`]: kernel mean matching (Huang et al. 2006, "Correcting sample selection bias by
//!   unlabeled data"), a quadratic programme solved by the Clarabel interior-point solver, on the
//!   exact Gaussian kernel or on random Fourier features (Rahimi & Recht 2007) for large sources;
//! - [`kliep`]: the Kullback-Leibler importance estimation procedure (Sugiyama et al. 2008) with
//!   Gaussian kernel centres on target samples;
//! - [`iw`]: the `iw` strategy (importance-weighted source risk) and the [`iw::SourceWeighter`]
//!   the other strategies' weighted source losses use;
//! - [`tradaboost`]: the `tradaboost` strategy and TrAdaBoost's weight updates (Dai et al. 2007, "Boosting for transfer
//!   learning") for a few labelled target samples.
//!
//! [`effective_sample_size`] and [`WeightStats`] describe a set of weights; [`iwcv`] scores a model
//! on weighted source validation data (Sugiyama et al. 2007), and [`validate`] applies it to a
//! trained model.
//!
//! ```
//! use dtl_strategies::weighting::{effective_sample_size, self_normalise};
//!
//! let mut w = vec![1.0, 3.0];
//! self_normalise(&mut w);
//! assert_eq!(w, [0.5, 1.5]);
//! // (sum w)^2 / sum w^2 = 4 / 2.5
//! assert!((effective_sample_size(&w) - 1.6).abs() < 1e-12);
//! ```

pub mod iw;
pub mod kliep;
pub mod kmm;
pub mod ratio;
pub mod tradaboost;

use dtl_core::seed::Stream;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub use kliep::KliepConfig;
pub use kmm::KmmConfig;
pub use ratio::RatioConfig;

/// `n` samples of `d` features, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Samples<'a> {
    /// The values, `n * d` of them.
    pub data: &'a [f32],
    /// Number of samples.
    pub n: usize,
    /// Features per sample.
    pub d: usize,
}

impl<'a> Samples<'a> {
    /// Wraps `data` as `n x d`; the error names `what` when the sizes disagree or it is empty.
    pub fn new(data: &'a [f32], n: usize, d: usize, what: &str) -> Result<Self> {
        if n == 0 || d == 0 || data.len() != n * d {
            return Err(config(
                what,
                format!(
                    "{} values are not {n} samples of {d} features (both at least 1)",
                    data.len()
                ),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(config(what, format!("value {i} is not finite")));
        }
        Ok(Self { data, n, d })
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// Which estimator, with its settings (`[strategy.estimator]` in a config, tagged by `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Estimator {
    /// A domain classifier's odds ([`ratio`]).
    Ratio(RatioConfig),
    /// Kernel mean matching ([`kmm`]).
    Kmm(KmmConfig),
    /// KLIEP ([`kliep`]).
    Kliep(KliepConfig),
}

impl Default for Estimator {
    fn default() -> Self {
        Estimator::Ratio(RatioConfig::default())
    }
}

impl Estimator {
    /// The name configs use.
    pub fn name(&self) -> &'static str {
        match self {
            Estimator::Ratio(_) => "ratio",
            Estimator::Kmm(_) => "kmm",
            Estimator::Kliep(_) => "kliep",
        }
    }

    /// The estimator's own checks, before any data is read.
    pub fn validate(&self) -> Result<()> {
        match self {
            Estimator::Ratio(c) => c.validate(),
            Estimator::Kmm(c) => c.validate(),
            Estimator::Kliep(c) => c.validate(),
        }
    }

    /// The estimator `name` with its default settings.
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "ratio" => Estimator::Ratio(RatioConfig::default()),
            "kmm" => Estimator::Kmm(KmmConfig::default()),
            "kliep" => Estimator::Kliep(KliepConfig::default()),
            _ => {
                return Err(config(
                    "estimator",
                    format!("`{name}` is not an estimator (ratio, kmm, kliep)"),
                ))
            }
        })
    }

    /// One weight per source sample (mean 1), from `seed` where the estimator draws.
    pub fn estimate(&self, source: Samples, target: Samples, seed: u64) -> Result<Vec<f64>> {
        if source.d != target.d {
            return Err(config(
                "target",
                format!(
                    "{} features per target sample, {} per source sample",
                    target.d, source.d
                ),
            ));
        }
        match self {
            Estimator::Ratio(c) => c.estimate(source, target, seed),
            Estimator::Kmm(c) => c.estimate(source, target, seed),
            Estimator::Kliep(c) => c.estimate(source, target, seed),
        }
    }
}

pub(crate) fn config(field: &str, message: impl Into<String>) -> Error {
    Error::Core(dtl_core::Error::config(field, message))
}

/// Scales `w` to mean 1 (all zeros stay zeros).
pub fn self_normalise(w: &mut [f64]) {
    let mean = w.iter().sum::<f64>() / w.len().max(1) as f64;
    if mean > 0.0 {
        w.iter_mut().for_each(|v| *v /= mean);
    }
}

/// Self-normalises `w` to mean 1 with no weight above `clip`: clipping lowers the mean, and
/// renormalising raises the clipped weights again, so the two alternate until the largest weight
/// is within `clip` (at most 100 rounds; `clip` must exceed 1).
pub fn clip_at(w: &mut [f64], clip: f64) {
    self_normalise(w);
    for _ in 0..100 {
        if w.iter().all(|&v| v <= clip * (1.0 + 1e-9)) {
            break;
        }
        w.iter_mut().for_each(|v| *v = v.min(clip));
        self_normalise(w);
    }
}

/// Kish's effective sample size `(sum w)^2 / sum w^2`: `n` for equal weights, 1 when one sample
/// carries everything.
pub fn effective_sample_size(w: &[f64]) -> f64 {
    let s: f64 = w.iter().sum();
    let s2: f64 = w.iter().map(|v| v * v).sum();
    if s2 > 0.0 {
        s * s / s2
    } else {
        0.0
    }
}

/// Edges of [`WeightStats`]'s histograms: weights in `[0, 0.25)`, `[0.25, 0.5)`, `[0.5, 1)`,
/// `[1, 2)`, `[2, 4)`, `[4, inf)` (relative to the mean weight 1).
pub const HISTOGRAM_EDGES: [f64; 5] = [0.25, 0.5, 1.0, 2.0, 4.0];

/// A summary of source weights for `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightStats {
    /// [`effective_sample_size`].
    pub ess: f64,
    /// `ess / n`.
    pub ess_fraction: f64,
    /// Smallest weight.
    pub min: f64,
    /// Largest weight.
    pub max: f64,
    /// Per class: its mean weight and the counts of its weights in the bins of
    /// [`HISTOGRAM_EDGES`].
    pub per_class: Vec<ClassWeights>,
}

/// One class's weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassWeights {
    /// Class index.
    pub class: usize,
    /// Samples of the class.
    pub n: usize,
    /// Their mean weight.
    pub mean: f64,
    /// Counts per bin of [`HISTOGRAM_EDGES`] (6 bins).
    pub histogram: Vec<usize>,
}

impl WeightStats {
    /// The summary of weights `w` of samples labelled `labels` (classes `0..num_classes`).
    pub fn of(w: &[f64], labels: &[u32], num_classes: usize) -> Self {
        let ess = effective_sample_size(w);
        let per_class = (0..num_classes)
            .map(|c| {
                let mut histogram = vec![0; HISTOGRAM_EDGES.len() + 1];
                let (mut n, mut sum) = (0, 0.0);
                for (&v, _) in w.iter().zip(labels).filter(|(_, &l)| l as usize == c) {
                    n += 1;
                    sum += v;
                    histogram[HISTOGRAM_EDGES.iter().filter(|&&e| v >= e).count()] += 1;
                }
                ClassWeights {
                    class: c,
                    n,
                    mean: if n > 0 { sum / n as f64 } else { 0.0 },
                    histogram,
                }
            })
            .collect();
        Self {
            ess,
            ess_fraction: ess / w.len().max(1) as f64,
            min: w.iter().copied().fold(f64::INFINITY, f64::min),
            max: w.iter().copied().fold(0.0, f64::max),
            per_class,
        }
    }
}

/// Importance-weighted cross-validation score (Sugiyama et al. 2007, "Covariate shift
/// adaptation by importance weighted cross validation"): the mean of per-sample source
/// validation losses `losses` weighted by their importance weights, `sum w l / sum w`, an
/// estimate of the target risk that needs no target label (pick the setting with the lowest).
pub fn iwcv(losses: &[f64], weights: &[f64]) -> Result<f64> {
    if losses.len() != weights.len() || losses.is_empty() {
        return Err(config(
            "iwcv",
            format!("{} losses and {} weights", losses.len(), weights.len()),
        ));
    }
    let sw: f64 = weights.iter().sum();
    if sw <= 0.0 {
        return Err(config("iwcv", "the weights sum to zero"));
    }
    Ok(losses.iter().zip(weights).map(|(l, w)| l * w).sum::<f64>() / sw)
}

/// An importance-weighted validation of a trained model ([`validate`]): its loss and error on a
/// labelled source validation split, each sample weighted by `p_T(x) / p_S(x)`, estimates of the
/// model's target loss and error that need no target label (Sugiyama et al. 2007). Compare runs
/// (a `lambda`, a learning rate, a strategy) by `loss` or `error`, lowest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Validation {
    /// The estimator of the weights (on pixels).
    pub estimator: String,
    /// Source validation samples.
    pub n: usize,
    /// Unlabelled target images the weights were estimated against.
    pub target_n: usize,
    /// Effective sample size of the weights.
    pub ess: f64,
    /// Importance-weighted mean cross-entropy ([`iwcv`] of the per-sample losses).
    pub loss: f64,
    /// Importance-weighted 0-1 error.
    pub error: f64,
    /// The unweighted mean cross-entropy (the source's own validation loss), for comparison.
    pub plain_loss: f64,
    /// The unweighted error.
    pub plain_error: f64,
    /// `false` when the effective sample size is under [`MIN_RELIABLE_ESS`]: the weighted
    /// estimates then rest on a handful of samples and say little.
    pub reliable: bool,
}

/// Below this effective sample size an importance-weighted estimate is reported unreliable.
pub const MIN_RELIABLE_ESS: f64 = 50.0;

/// Validates `predict` (images to logits) on the labelled `validation` split with importance
/// weights from `estimator` on pixels against at most `max_target` images of `target` (a seeded
/// subset of images without labels: target labels cannot reach this function).
pub fn validate<F>(
    predict: F,
    validation: &dtl_data::Dataset,
    target: &dtl_data::Unlabelled,
    estimator: &Estimator,
    max_target: usize,
    seed: u64,
    device: &candle_core::Device,
) -> Result<Validation>
where
    F: Fn(&candle_core::Tensor) -> dtl_core::Result<candle_core::Tensor>,
{
    if validation.is_empty() || target.is_empty() || max_target == 0 {
        return Err(config(
            "iwcv",
            format!(
                "needs validation and target samples: {} validation, {} target, max-target {max_target}",
                validation.len(),
                target.len()
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(Stream::ValidationSubset.seed(seed));
    let keep = sample(&mut rng, target.len(), max_target.min(target.len())).into_vec();
    let target = target.subset(&keep)?;
    let ts: Vec<f32> = (0..target.len()).flat_map(|i| target.image(i).to_vec()).collect();
    let vs = pixel_rows(validation);
    let dim = vs.len() / validation.len();
    let weights = estimator.estimate(
        Samples::new(&vs, validation.len(), dim, "validation")?,
        Samples::new(&ts, target.len(), dim, "target")?,
        seed,
    )?;
    let (losses, errors) = crate::eval::per_sample_losses(predict, validation, 500, device)?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ess = effective_sample_size(&weights);
    if ess < MIN_RELIABLE_ESS {
        tracing::warn!(
            "importance-weighted validation rests on an effective sample size of {ess:.1} of {}: unreliable",
            validation.len()
        );
    }
    Ok(Validation {
        estimator: estimator.name().to_string(),
        n: validation.len(),
        target_n: target.len(),
        ess,
        reliable: ess >= MIN_RELIABLE_ESS,
        loss: iwcv(&losses, &weights)?,
        error: iwcv(&errors, &weights)?,
        plain_loss: mean(&losses),
        plain_error: mean(&errors),
    })
}

/// Every image of `data`, flattened, one row per sample: what the estimators see "on pixels".
pub fn pixel_rows(data: &dtl_data::Dataset) -> Vec<f32> {
    (0..data.len()).flat_map(|i| data.image(i).to_vec()).collect()
}

/// Squared Euclidean distance of two rows, in f64.
pub(crate) fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// The Gaussian kernel matrix `exp(-|a_i - b_j|^2 / (2 sigma^2))`, `a.n x b.n`, row-major.
pub(crate) fn gaussian_gram(a: Samples, b: Samples, sigma: f64) -> Vec<f64> {
    let g = -1.0 / (2.0 * sigma * sigma);
    let mut out = vec![0.0; a.n * b.n];
    out.par_chunks_mut(b.n).enumerate().for_each(|(i, row)| {
        let ai = a.row(i);
        for (j, v) in row.iter_mut().enumerate() {
            *v = (g * sq_dist(ai, b.row(j))).exp();
        }
    });
    out
}

/// The median heuristic for a Gaussian kernel's width: `sigma` = the median distance between
/// pairs of up to 500 pooled source and target samples (drawn from `seed`).
pub fn median_sigma(source: Samples, target: Samples, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(Stream::MedianSample.seed(seed));
    let pick = |s: Samples, rng: &mut ChaCha8Rng| -> Vec<usize> { sample(rng, s.n, s.n.min(250)).into_vec() };
    let rows: Vec<&[f32]> = pick(source, &mut rng)
        .into_iter()
        .map(|i| source.row(i))
        .chain(pick(target, &mut rng).into_iter().map(|i| target.row(i)))
        .collect();
    let mut d: Vec<f64> = Vec::new();
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            d.push(sq_dist(rows[i], rows[j]).sqrt());
        }
    }
    d.sort_by(f64::total_cmp);
    let m = d.get(d.len() / 2).copied().unwrap_or(1.0);
    if m > 0.0 {
        m
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_bins_per_class() {
        let w = [0.1, 0.3, 0.7, 1.5, 3.0, 9.0];
        let labels = [0, 0, 0, 1, 1, 1];
        let s = WeightStats::of(&w, &labels, 2);
        assert_eq!(s.per_class[0].histogram, [1, 1, 1, 0, 0, 0]);
        assert_eq!(s.per_class[1].histogram, [0, 0, 0, 1, 1, 1]);
        assert!((s.per_class[1].mean - 4.5).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.1, 9.0));
        assert!((iwcv(&[1.0, 3.0], &[3.0, 1.0]).unwrap() - 1.5).abs() < 1e-12);
        // One huge weight among nine ones: clipped to 3 times the mean, the mean kept at 1.
        let mut w = vec![1.0; 9];
        w.push(1000.0);
        clip_at(&mut w, 3.0);
        assert!((w.iter().sum::<f64>() / 10.0 - 1.0).abs() < 1e-12);
        // The fixed point: 9 a + 3 = 10, a = 7/9.
        assert!(
            (w[9] - 3.0).abs() < 1e-6 && (w[0] - 7.0 / 9.0).abs() < 1e-6,
            "{w:?}"
        );
    }
}
