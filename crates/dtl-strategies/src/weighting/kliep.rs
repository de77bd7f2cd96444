//! KLIEP, the Kullback-Leibler importance estimation procedure (Sugiyama et al. 2008, "Direct
//! importance estimation with model selection and its application to covariate shift
//! adaptation"): the ratio is modelled as `w(x) = sum_l alpha_l k(x, c_l)` with Gaussian kernels
//! centred on `b` target samples, and `alpha` maximises the target log-likelihood
//! `sum_j log w(t_j)` subject to `alpha >= 0` and `1/n_s sum_i w(x_i) = 1`, by the paper's
//! projected gradient ascent (its Fig. 1): a gradient step, then projection onto the constraint
//! `b^T alpha = 1`, onto `alpha >= 0`, and rescaling. The step size adapts: a step that does not
//! raise the objective is undone and the step halved.

use dtl_core::seed::Stream;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{config, gaussian_gram, median_sigma, Samples};
use crate::Result;

/// Settings of KLIEP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct KliepConfig {
    /// Gaussian kernel width; `None`: chosen by likelihood cross-validation, as the paper does,
    /// among the median distance between samples times 1/8, 1/4, 1/2, 1 and 2.
    pub sigma: Option<f64>,
    /// Folds of the likelihood cross-validation over the target samples.
    pub folds: usize,
    /// Kernel centres: up to this many target samples (the paper: 100).
    pub centres: usize,
    /// Gradient-ascent iterations.
    pub iterations: usize,
}

impl Default for KliepConfig {
    /// Width by 4-fold likelihood cross-validation, 100 centres, 2,000 iterations.
    fn default() -> Self {
        Self {
            sigma: None,
            centres: 100,
            iterations: 2000,
            folds: 4,
        }
    }
}

impl KliepFit {
    /// `w(x)` at the samples `at`, for a fit whose centres index `target`.
    pub fn weights_at(&self, target: Samples, at: Samples) -> Result<Vec<f64>> {
        let centres: Vec<f32> = self
            .centres
            .iter()
            .flat_map(|&i| target.row(i).to_vec())
            .collect();
        let c = Samples::new(&centres, self.centres.len(), target.d, "kliep centres")?;
        let k = gaussian_gram(at, c, self.sigma);
        Ok(k.chunks(c.n)
            .map(|r| r.iter().zip(&self.alpha).map(|(x, a)| x * a).sum())
            .collect())
    }
}

/// A fitted KLIEP model: `w(x) = sum_l alpha_l exp(-|x - c_l|^2 / (2 sigma^2))`.
#[derive(Debug, Clone, PartialEq)]
pub struct KliepFit {
    /// Indices of the target samples used as centres.
    pub centres: Vec<usize>,
    /// Coefficients, non-negative.
    pub alpha: Vec<f64>,
    /// Kernel width.
    pub sigma: f64,
    /// Mean target log-likelihood `1/n_t sum_j log w(t_j)` at the end.
    pub log_likelihood: f64,
}

impl KliepConfig {
    /// The weights of `source` relative to `target` (mean 1 by the constraint).
    pub fn estimate(&self, source: Samples, target: Samples, seed: u64) -> Result<Vec<f64>> {
        let fit = self.fit(source, target, seed)?;
        fit.weights_at(target, source)
    }

    /// The kernel width: [`KliepConfig::sigma`], or the candidate whose fits on `folds - 1` folds
    /// of the target give the highest mean log-likelihood `log w(t)` on the held-out fold (Sugiyama
    /// et al. 2008, Sec. 2.4).
    pub fn choose_sigma(&self, source: Samples, target: Samples, seed: u64) -> Result<f64> {
        if let Some(s) = self.sigma {
            return Ok(s);
        }
        let median = median_sigma(source, target, seed);
        let folds = self.folds.clamp(2, target.n.max(2));
        if target.n < 2 * folds {
            return Ok(median);
        }
        let mut best = (f64::NEG_INFINITY, median);
        for mult in [0.125, 0.25, 0.5, 1.0, 2.0] {
            let sigma = median * mult;
            let mut score = 0.0;
            for f in 0..folds {
                let (mut train, mut held) = (Vec::new(), Vec::new());
                for i in 0..target.n {
                    let row = target.row(i);
                    if i % folds == f {
                        held.extend_from_slice(row);
                    } else {
                        train.extend_from_slice(row);
                    }
                }
                let (nt, nh) = (train.len() / target.d, held.len() / target.d);
                let t = Samples::new(&train, nt, target.d, "kliep fold")?;
                let h = Samples::new(&held, nh, target.d, "kliep fold")?;
                let cfg = KliepConfig {
                    sigma: Some(sigma),
                    iterations: self.iterations.min(300),
                    ..self.clone()
                };
                let fit = cfg.fit(source, t, seed)?;
                let w = fit.weights_at(t, h)?;
                score += w.iter().map(|v| v.max(1e-300).ln()).sum::<f64>() / nh as f64;
            }
            tracing::debug!(
                "kliep: sigma {sigma:.4} (median x {mult}), held-out log-likelihood {:.4}",
                score / folds as f64
            );
            if score > best.0 {
                best = (score, sigma);
            }
        }
        Ok(best.1)
    }

    /// The settings' own checks (the kernel width too when it is given).
    pub fn validate(&self) -> Result<()> {
        let sigma_ok = self.sigma.is_none_or(|s| s.is_finite() && s > 0.0);
        if self.centres == 0 || self.iterations == 0 || !sigma_ok {
            return Err(config(
                "estimator",
                format!("kliep needs centres >= 1, iterations >= 1 and sigma > 0, got {self:?}"),
            ));
        }
        Ok(())
    }

    /// Fits `alpha` (see the module docs).
    pub fn fit(&self, source: Samples, target: Samples, seed: u64) -> Result<KliepFit> {
        let sigma = self.choose_sigma(source, target, seed)?;
        if self.centres == 0 || self.iterations == 0 || !(sigma.is_finite() && sigma > 0.0) {
            return Err(config(
                "estimator",
                format!(
                    "kliep needs centres >= 1, iterations >= 1 and sigma > 0, got sigma {sigma}, {self:?}"
                ),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::Kliep.seed(seed));
        let mut centres = sample(&mut rng, target.n, self.centres.min(target.n)).into_vec();
        centres.sort_unstable();
        let cdata: Vec<f32> = centres.iter().flat_map(|&i| target.row(i).to_vec()).collect();
        let c = Samples::new(&cdata, centres.len(), target.d, "kliep centres")?;
        let m = c.n;
        // A_jl = k(t_j, c_l); b_l = 1/n_s sum_i k(x_i, c_l).
        let a = gaussian_gram(target, c, sigma);
        let ks = gaussian_gram(source, c, sigma);
        let mut b = vec![0.0; m];
        for row in ks.chunks(m) {
            b.iter_mut()
                .zip(row)
                .for_each(|(bl, k)| *bl += k / source.n as f64);
        }
        let bb: f64 = b.iter().map(|v| v * v).sum();
        let project = |alpha: &mut Vec<f64>| {
            let ba: f64 = b.iter().zip(alpha.iter()).map(|(x, y)| x * y).sum();
            alpha
                .iter_mut()
                .zip(&b)
                .for_each(|(al, bl)| *al += (1.0 - ba) * bl / bb);
            alpha.iter_mut().for_each(|al| *al = al.max(0.0));
            let ba: f64 = b.iter().zip(alpha.iter()).map(|(x, y)| x * y).sum();
            if ba > 0.0 {
                alpha.iter_mut().for_each(|al| *al /= ba);
            }
        };
        let objective = |alpha: &[f64]| -> f64 {
            a.chunks(m)
                .map(|r| {
                    r.iter()
                        .zip(alpha)
                        .map(|(x, y)| x * y)
                        .sum::<f64>()
                        .max(1e-300)
                        .ln()
                })
                .sum::<f64>()
                / target.n as f64
        };
        let mut alpha = vec![1.0; m];
        project(&mut alpha);
        let mut best = objective(&alpha);
        let mut step = 1.0;
        for _ in 0..self.iterations {
            // Gradient of the mean log-likelihood: 1/n_t A^T (1 / (A alpha)).
            let mut grad = vec![0.0; m];
            for r in a.chunks(m) {
                let wa: f64 = r.iter().zip(&alpha).map(|(x, y)| x * y).sum::<f64>().max(1e-300);
                grad.iter_mut()
                    .zip(r)
                    .for_each(|(g, x)| *g += x / wa / target.n as f64);
            }
            let mut next: Vec<f64> = alpha.iter().zip(&grad).map(|(al, g)| al + step * g).collect();
            project(&mut next);
            let value = objective(&next);
            if value > best {
                alpha = next;
                best = value;
                step *= 1.2;
            } else {
                step *= 0.5;
                if step < 1e-12 {
                    break;
                }
            }
        }
        Ok(KliepFit {
            centres,
            alpha,
            sigma,
            log_likelihood: best,
        })
    }
}
