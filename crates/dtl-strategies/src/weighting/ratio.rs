//! Density ratio from a probabilistic domain classifier (Bickel et al. 2007, "Discriminative
//! learning for differing training and test distributions"; the "discriminative" estimator of
//! the seed deck): a logistic regression learns `p(target | x)` against `p(source | x)` with the two
//! domains weighted equally, so that its odds `p(t|x) / p(s|x)` estimate `p_T(x) / p_S(x)` (with
//! unequal sample counts this is the classifier's odds times `n_s / n_t`). Weights are clipped at
//! `clip` times the mean (a few source points deep in the target's region would otherwise carry
//! the whole risk) and self-normalised to mean 1 ([`clip_at`]).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{clip_at, config, Samples};
use crate::Result;

/// Rows per partial sum of the domain classifier's gradient.
const GRADIENT_CHUNK: usize = 256;

/// Settings of the domain-classifier estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RatioConfig {
    /// Full-batch Adam steps of the logistic regression.
    pub steps: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// L2 penalty on the regression weights (features are standardised first).
    pub l2: f64,
    /// Largest weight, as a multiple of the mean, before the final normalisation.
    pub clip: f64,
}

impl Default for RatioConfig {
    /// 300 steps at 0.05, L2 1e-3, clip at 20.
    fn default() -> Self {
        Self {
            steps: 300,
            lr: 0.05,
            l2: 1e-3,
            clip: 20.0,
        }
    }
}

impl RatioConfig {
    /// The settings' own checks.
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || !(self.lr.is_finite() && self.lr > 0.0 && self.l2 >= 0.0 && self.clip > 1.0) {
            return Err(config(
                "estimator",
                format!("ratio needs steps >= 1, lr > 0, l2 >= 0 and clip > 1, got {self:?}"),
            ));
        }
        Ok(())
    }

    /// The weights of `source` relative to `target`.
    pub fn estimate(&self, source: Samples, target: Samples, _seed: u64) -> Result<Vec<f64>> {
        self.validate()?;
        let d = source.d;
        // Standardise with the pooled mean and std (constant features are left at 0).
        let n = (source.n + target.n) as f64;
        let mut mean = vec![0.0; d];
        let mut sq = vec![0.0; d];
        for s in [source, target] {
            for i in 0..s.n {
                for (k, &v) in s.row(i).iter().enumerate() {
                    mean[k] += v as f64;
                    sq[k] += (v as f64) * (v as f64);
                }
            }
        }
        let scale: Vec<f64> = (0..d)
            .map(|k| {
                mean[k] /= n;
                let var = sq[k] / n - mean[k] * mean[k];
                if var > 1e-12 {
                    1.0 / var.sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let z = |s: Samples, i: usize| -> Vec<f64> {
            s.row(i)
                .iter()
                .enumerate()
                .map(|(k, &v)| (v as f64 - mean[k]) * scale[k])
                .collect()
        };
        let xs: Vec<Vec<f64>> = (0..source.n).map(|i| z(source, i)).collect();
        let xt: Vec<Vec<f64>> = (0..target.n).map(|i| z(target, i)).collect();
        // Each domain carries half of the loss.
        let (ws, wt) = (0.5 / source.n as f64, 0.5 / target.n as f64);
        let mut theta = vec![0.0; d + 1]; // weights, then bias
        let (mut m, mut v) = (vec![0.0; d + 1], vec![0.0; d + 1]);
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        let logit = |theta: &[f64], x: &[f64]| -> f64 {
            x.iter().zip(theta).map(|(a, b)| a * b).sum::<f64>() + theta[d]
        };
        for t in 1..=self.steps {
            // d/dlogit of the cross-entropy: sigmoid(l) - y, with y = 1 for target.
            // Partial sums over fixed chunks of rows, added in chunk order: the same sums in the
            // same order on any number of threads (rayon's fold splits where work is stolen, so
            // its grouping, and the last bits of the gradient, changed from run to run).
            let grad_of = |rows: &[Vec<f64>], y: f64, w: f64| -> Vec<f64> {
                let partial: Vec<Vec<f64>> = rows
                    .par_chunks(GRADIENT_CHUNK)
                    .map(|chunk| {
                        let mut g = vec![0.0; d + 1];
                        for x in chunk {
                            let r = w * (1.0 / (1.0 + (-logit(&theta, x)).exp()) - y);
                            for (gk, xk) in g.iter_mut().zip(x) {
                                *gk += r * xk;
                            }
                            g[d] += r;
                        }
                        g
                    })
                    .collect();
                let mut g = vec![0.0; d + 1];
                for p in &partial {
                    g.iter_mut().zip(p).for_each(|(a, b)| *a += b);
                }
                g
            };
            let gs = grad_of(&xs, 0.0, ws);
            let gt = grad_of(&xt, 1.0, wt);
            for k in 0..=d {
                let mut g = gs[k] + gt[k];
                if k < d {
                    g += self.l2 * theta[k];
                }
                m[k] = b1 * m[k] + (1.0 - b1) * g;
                v[k] = b2 * v[k] + (1.0 - b2) * g * g;
                let mh = m[k] / (1.0 - b1.powi(t as i32));
                let vh = v[k] / (1.0 - b2.powi(t as i32));
                theta[k] -= self.lr * mh / (vh.sqrt() + eps);
            }
        }
        // Balanced training: the odds estimate p_T(x) / p_S(x) directly.
        let mut w: Vec<f64> = xs.par_iter().map(|x| logit(&theta, x).min(50.0).exp()).collect();
        clip_at(&mut w, self.clip);
        tracing::debug!(
            "ratio weights: min {:.3e}, max {:.3}",
            w.iter().copied().fold(f64::INFINITY, f64::min),
            w.iter().copied().fold(0.0, f64::max)
        );
        Ok(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same samples give the same weights to the last bit, however the threads split the
    /// gradient's sums (a fixed-seed run must repeat exactly).
    #[test]
    fn repeated_estimates_are_bit_identical() {
        let (n, m, d) = (3000, 2000, 16);
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let xs: Vec<f32> = (0..n * d).map(|_| next()).collect();
        let xt: Vec<f32> = (0..m * d).map(|_| next() + 0.1).collect();
        let est = RatioConfig::default();
        let run = || {
            est.estimate(
                Samples::new(&xs, n, d, "source").unwrap(),
                Samples::new(&xt, m, d, "target").unwrap(),
                0,
            )
            .unwrap()
        };
        let first = run();
        for _ in 0..4 {
            let again = run();
            assert!(
                first.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()),
                "weights changed between two identical estimates"
            );
        }
    }
}
