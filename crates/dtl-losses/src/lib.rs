//! Domain-discrepancy losses for dtl, differentiable through candle's autograd.
//!
//! - [`mmd2`]: squared maximum mean discrepancy (Gretton et al. 2012, "A kernel two-sample test")
//!   with the biased (V-statistic), unbiased (U-statistic) and linear-time estimators, for a
//!   linear kernel, a Gaussian kernel, or a weighted sum of Gaussian kernels (the multi-kernel MMD
//!   of DAN, Long et al. 2015, "Learning transferable features with deep adaptation networks"),
//!   with fixed bandwidths or the median heuristic. DDC (Tzeng et al. 2014, "Deep domain
//!   confusion") adds `lambda * MMD^2` of an adaptation layer's outputs to the source loss.
//! - [`coral`]: the CORAL loss `||C_S - C_T||_F^2 / (4 d^2)` of Deep CORAL (Sun & Saenko 2016,
//!   "Deep CORAL: correlation alignment for deep domain adaptation").
//! - [`gan`]: the adversarial losses of ADDA and DANN from discriminator logits, numerically
//!   stable, and gradient reversal.
//! - [`conditional`]: losses on the target predictions: MCC's minimum class confusion (Jin et al.
//!   2020) and CDAN's multilinear conditioning and entropy weights (Long et al. 2018).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use dtl_losses::{mmd2, Estimator, MmdKernel};
//!
//! let xs = Tensor::new(&[[0f32, 0.], [1., 0.], [0., 1.]], &Device::Cpu)?;
//! let xt = (&xs + 3.0)?;
//! let kernel = MmdKernel::gaussian(&[1.0, 2.0, 4.0]);
//! let same = mmd2(&xs, &xs, &kernel, Estimator::Biased)?.to_scalar::<f32>()?;
//! let shifted = mmd2(&xs, &xt, &kernel, Estimator::Biased)?.to_scalar::<f32>()?;
//! assert_eq!(same, 0.0);
//! assert!(shifted > 0.5);
//! # Ok::<(), dtl_losses::Error>(())
//! ```
#![deny(missing_docs)]

use candle_core::{DType, Tensor, D};

pub mod conditional;
pub mod gan;
pub use conditional::{
    entropy_weights, minimum_class_confusion, multilinear_map, randomized_multilinear_map,
    weighted_discriminator_loss,
};
pub use gan::{
    discriminator_accuracy, discriminator_loss, generator_inverted_loss, generator_minimax_loss,
    grad_reverse, softplus,
};

/// Errors of the losses crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the core crate.
    #[error(transparent)]
    Core(#[from] dtl_core::Error),
    /// A tensor error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The inputs cannot give the requested estimate.
    #[error("{loss}: {message}")]
    Input {
        /// The loss.
        loss: &'static str,
        /// What is wrong with the inputs.
        message: String,
    },
}

/// Result type of the losses crate.
pub type Result<T> = std::result::Result<T, Error>;

/// How Gaussian bandwidths are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Bandwidths {
    /// Fixed bandwidths `sigma` (the kernel is `exp(-||a - b||^2 / (2 sigma^2))`).
    Fixed(Vec<f64>),
    /// `sigma^2 = m * median` of the pooled sample's pairwise squared distances (off-diagonal,
    /// computed without gradient), one kernel per multiplier `m`.
    Median(Vec<f64>),
    /// `sigma^2 = m * mean` of the pooled sample's pairwise squared distances (off-diagonal,
    /// without gradient), one kernel per multiplier `m`: the bandwidth of DAN's and TLlib's
    /// multi-kernel implementations.
    Mean(Vec<f64>),
}

/// The kernel of an MMD estimate.
#[derive(Debug, Clone, PartialEq)]
pub enum MmdKernel {
    /// `k(a, b) = a . b`: MMD^2 is then the squared distance between the means.
    Linear,
    /// `k = sum_i w_i exp(-||a - b||^2 / (2 sigma_i^2))`; weights default to `1 / (number of
    /// kernels)`, which keeps the sum characteristic (DAN's convex combination).
    Gaussian {
        /// The bandwidths.
        bandwidths: Bandwidths,
        /// One non-negative weight per bandwidth, or `None` for equal weights.
        weights: Option<Vec<f64>>,
    },
}

impl MmdKernel {
    /// Equal-weight Gaussian kernels with fixed bandwidths `sigmas`.
    pub fn gaussian(sigmas: &[f64]) -> Self {
        MmdKernel::Gaussian {
            bandwidths: Bandwidths::Fixed(sigmas.to_vec()),
            weights: None,
        }
    }

    /// Equal-weight Gaussian kernels at `multipliers` times the median heuristic (DAN used
    /// multipliers `2^-8 .. 2^8`; `[0.25, 0.5, 1, 2, 4]` is a common choice).
    pub fn median(multipliers: &[f64]) -> Self {
        MmdKernel::Gaussian {
            bandwidths: Bandwidths::Median(multipliers.to_vec()),
            weights: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| {
            Err(Error::Input {
                loss: "mmd2",
                message: m,
            })
        };
        if let MmdKernel::Gaussian { bandwidths, weights } = self {
            let values = match bandwidths {
                Bandwidths::Fixed(v) | Bandwidths::Median(v) | Bandwidths::Mean(v) => v,
            };
            if values.is_empty() {
                return bad("a Gaussian kernel needs at least one bandwidth".into());
            }
            if let Some(v) = values.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
                return bad(format!("bandwidth or multiplier {v} is not a positive number"));
            }
            if let Some(w) = weights {
                if w.len() != values.len() {
                    return bad(format!("{} weights for {} bandwidths", w.len(), values.len()));
                }
                if let Some(x) = w.iter().find(|x| !(**x >= 0.0 && x.is_finite())) {
                    return bad(format!("kernel weight {x} is negative or not finite"));
                }
            }
        }
        Ok(())
    }
}

/// Which estimator of MMD^2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Estimator {
    /// V-statistic: means over all pairs, diagonals included. Never negative; zero for identical
    /// samples; biased upwards by `O(1/n)`.
    Biased,
    /// U-statistic: within-domain means without the diagonals. Unbiased; can be negative. Needs at
    /// least two samples per domain.
    Unbiased,
    /// Linear-time estimate over disjoint pairs `(x_{2i}, x_{2i+1})` (Gretton et al. 2012, Lemma
    /// 14): unbiased, `O(n)` time and memory, higher variance. Uses the first `2 floor(n/2)`
    /// samples of each domain, `n` the smaller batch.
    Linear,
}

fn check_pair(loss: &'static str, xs: &Tensor, xt: &Tensor) -> Result<(usize, usize, usize)> {
    let (&[n, d], &[m, e]) = (xs.dims(), xt.dims()) else {
        return Err(Error::Input {
            loss,
            message: format!(
                "inputs must be (batch, features), got {:?} and {:?}",
                xs.dims(),
                xt.dims()
            ),
        });
    };
    if d != e {
        return Err(Error::Input {
            loss,
            message: format!("source has {d} features, target {e}"),
        });
    }
    if n == 0 || m == 0 {
        return Err(Error::Input {
            loss,
            message: "an empty batch has no distribution".into(),
        });
    }
    Ok((n, m, d))
}

/// Pairwise squared distances `||a_i - b_j||^2`, clamped at 0 against rounding.
fn sq_dists(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    let na = a.sqr()?.sum_keepdim(1)?;
    let nb = b.sqr()?.sum_keepdim(1)?.t()?;
    let ab = a.matmul(&b.t()?)?;
    na.broadcast_add(&nb)?.broadcast_sub(&(ab * 2.0)?)?.relu()
}

/// The `sigma^2` of each Gaussian kernel and its weight.
fn gaussian_terms(kernel: &MmdKernel, pooled_d2: Option<&Tensor>) -> Result<Vec<(f64, f64)>> {
    let MmdKernel::Gaussian { bandwidths, weights } = kernel else {
        return Ok(Vec::new());
    };
    let sig2: Vec<f64> = match bandwidths {
        Bandwidths::Fixed(s) => s.iter().map(|s| s * s).collect(),
        Bandwidths::Median(mults) => {
            let d2 = pooled_d2.expect("median needs the pooled distances");
            let (rows, cols) = d2.dims2()?;
            let vals: Vec<f32> = d2.detach().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
            // A square matrix of a sample against itself: its zero diagonal is left out.
            let mut off: Vec<f32> = if rows == cols {
                (0..rows * cols)
                    .filter(|k| k / cols != k % cols)
                    .map(|k| vals[k])
                    .collect()
            } else {
                vals
            };
            let median = if off.is_empty() {
                1.0
            } else {
                let mid = off.len() / 2;
                *off.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1 as f64
            };
            // All points equal: any bandwidth gives k = 1 everywhere; avoid dividing by zero.
            let median = if median > 0.0 { median } else { 1.0 };
            mults.iter().map(|m| m * median).collect()
        }
        Bandwidths::Mean(mults) => {
            let d2 = pooled_d2.expect("mean needs the pooled distances");
            let (rows, cols) = d2.dims2()?;
            // The diagonal of a square matrix (a sample against itself) is zero and left out.
            let pairs = if rows == cols {
                rows * cols - rows
            } else {
                rows * cols
            };
            let sum = d2.detach().to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?;
            let mean = if pairs > 0 { sum / pairs as f64 } else { 0.0 };
            let mean = if mean > 0.0 { mean } else { 1.0 };
            mults.iter().map(|m| m * mean).collect()
        }
    };
    let w = match weights {
        Some(w) => w.clone(),
        None => vec![1.0 / sig2.len() as f64; sig2.len()],
    };
    Ok(sig2.into_iter().zip(w).collect())
}

fn kernel_matrix(d2: &Tensor, terms: &[(f64, f64)]) -> candle_core::Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(s2, w) in terms {
        let k = ((d2 / (-2.0 * s2))?.exp()? * w)?;
        acc = Some(match acc {
            None => k,
            Some(a) => (a + k)?,
        });
    }
    Ok(acc.expect("validated: at least one kernel"))
}

/// Mean of the off-diagonal entries of a square matrix.
fn offdiag_mean(k: &Tensor) -> candle_core::Result<Tensor> {
    let n = k.dim(0)?;
    let diag = k.mul(&Tensor::eye(n, k.dtype(), k.device())?)?.sum_all()?;
    (k.sum_all()? - diag)? / ((n * (n - 1)) as f64)
}

/// MMD^2 between samples `xs` `(n, d)` and `xt` `(m, d)` under `kernel`, with `estimator`.
///
/// Differentiable with respect to both inputs (median-heuristic bandwidths are computed without
/// gradient). Errors name the problem: mismatched feature sizes, empty batches, a batch of one
/// for the unbiased estimator, fewer than two pairs for the linear-time one.
pub fn mmd2(xs: &Tensor, xt: &Tensor, kernel: &MmdKernel, estimator: Estimator) -> Result<Tensor> {
    let (n, m, _) = check_pair("mmd2", xs, xt)?;
    kernel.validate()?;
    match estimator {
        Estimator::Linear => {
            let pairs = n.min(m) / 2;
            if pairs == 0 {
                return Err(Error::Input {
                    loss: "mmd2",
                    message: "the linear-time estimator needs at least 2 samples per domain".into(),
                });
            }
            let take = |x: &Tensor, start: usize| -> candle_core::Result<Tensor> {
                let idx = Tensor::arange_step(start as u32, (2 * pairs) as u32, 2, x.device())?;
                x.index_select(&idx, 0)
            };
            let (x1, x2, y1, y2) = (take(xs, 0)?, take(xs, 1)?, take(xt, 0)?, take(xt, 1)?);
            let pairs = [(&x1, &x2), (&y1, &y2), (&x1, &y2), (&x2, &y1)];
            let h: Vec<Tensor> = match kernel {
                MmdKernel::Linear => pairs
                    .iter()
                    .map(|(a, b)| (*a * *b)?.sum(D::Minus1))
                    .collect::<candle_core::Result<_>>()?,
                MmdKernel::Gaussian { bandwidths, .. } => {
                    let d2: Vec<Tensor> = pairs
                        .iter()
                        .map(|(a, b)| (*a - *b)?.sqr()?.sum(D::Minus1))
                        .collect::<candle_core::Result<_>>()?;
                    // The median heuristic over the 4 * pairs distances the estimate uses: O(n).
                    let terms = match bandwidths {
                        Bandwidths::Median(_) | Bandwidths::Mean(_) => {
                            let all = Tensor::cat(&d2, 0)?.unsqueeze(0)?;
                            gaussian_terms(kernel, Some(&all))?
                        }
                        Bandwidths::Fixed(_) => gaussian_terms(kernel, None)?,
                    };
                    d2.iter()
                        .map(|d| kernel_matrix(d, &terms))
                        .collect::<candle_core::Result<_>>()?
                }
            };
            let h = (((&h[0] + &h[1])? - &h[2])? - &h[3])?;
            Ok(h.mean_all()?)
        }
        Estimator::Biased | Estimator::Unbiased => {
            if estimator == Estimator::Unbiased && (n < 2 || m < 2) {
                return Err(Error::Input {
                    loss: "mmd2",
                    message: format!(
                        "the unbiased estimator needs at least 2 samples per domain, got {n} and {m}"
                    ),
                });
            }
            let (kss, ktt, kst) = match kernel {
                MmdKernel::Linear => (xs.matmul(&xs.t()?)?, xt.matmul(&xt.t()?)?, xs.matmul(&xt.t()?)?),
                MmdKernel::Gaussian { .. } => {
                    let z = Tensor::cat(&[xs, xt], 0)?;
                    let d2 = sq_dists(&z, &z)?;
                    let terms = gaussian_terms(kernel, Some(&d2))?;
                    let k = kernel_matrix(&d2, &terms)?;
                    (
                        k.narrow(0, 0, n)?.narrow(1, 0, n)?,
                        k.narrow(0, n, m)?.narrow(1, n, m)?,
                        k.narrow(0, 0, n)?.narrow(1, n, m)?,
                    )
                }
            };
            let (ss, tt) = if estimator == Estimator::Biased {
                (kss.mean_all()?, ktt.mean_all()?)
            } else {
                (offdiag_mean(&kss)?, offdiag_mean(&ktt)?)
            };
            Ok(((ss + tt)? - (kst.mean_all()? * 2.0)?)?)
        }
    }
}

/// The CORAL loss `||C_S - C_T||_F^2 / (4 d^2)` between the feature covariances (with the
/// `1/(n-1)` normalisation) of `xs` `(n, d)` and `xt` `(m, d)` (Sun & Saenko 2016). Needs at least
/// two samples per domain.
pub fn coral(xs: &Tensor, xt: &Tensor) -> Result<Tensor> {
    let (n, m, d) = check_pair("coral", xs, xt)?;
    if n < 2 || m < 2 {
        return Err(Error::Input {
            loss: "coral",
            message: format!("a covariance needs at least 2 samples per domain, got {n} and {m}"),
        });
    }
    let cov = |x: &Tensor, n: usize| -> candle_core::Result<Tensor> {
        let centred = x.broadcast_sub(&x.mean_keepdim(0)?)?;
        centred.t()?.matmul(&centred)? / (n as f64 - 1.0)
    };
    let diff = (cov(xs, n)? - cov(xt, m)?)?;
    Ok((diff.sqr()?.sum_all()? / (4.0 * (d * d) as f64))?)
}

#[cfg(test)]
mod mean_bandwidth_tests {
    use crate::{mmd2, Bandwidths, Estimator, MmdKernel};
    use candle_core::{DType, Device, Tensor, Var};
    use rand::{Rng, SeedableRng};

    /// MMD^2 written out as loops in f64 over the pooled sample, with `sigma^2 = mult * mean`
    /// of the off-diagonal squared distances and kernel weights `w`.
    fn direct(x: &[Vec<f64>], n: usize, mults: &[f64], w: &[f64], unbiased: bool) -> f64 {
        let t = x.len();
        let d2 = |i: usize, j: usize| {
            x[i].iter()
                .zip(&x[j])
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
        };
        let mut sum = 0.0;
        for i in 0..t {
            for j in 0..t {
                if i != j {
                    sum += d2(i, j);
                }
            }
        }
        let mean = sum / (t * t - t) as f64;
        let k = |i: usize, j: usize| {
            mults
                .iter()
                .zip(w)
                .map(|(m, w)| w * (-d2(i, j) / (2.0 * m * mean)).exp())
                .sum::<f64>()
        };
        let block = |r: std::ops::Range<usize>, c: std::ops::Range<usize>, off: bool| {
            let (mut s, mut cnt) = (0.0, 0usize);
            for i in r.clone() {
                for j in c.clone() {
                    if !(off && i == j) {
                        s += k(i, j);
                        cnt += 1;
                    }
                }
            }
            s / cnt as f64
        };
        block(0..n, 0..n, unbiased) + block(n..t, n..t, unbiased) - 2.0 * block(0..n, n..t, false)
    }

    /// With DAN's mean-distance bandwidths, the f32 estimate equals the direct loops, and its
    /// gradients equal those of the same ops run in f64 (validated against PyTorch in
    /// `tests/losses.rs`), for both estimators and unequal sample sizes.
    #[test]
    fn mean_bandwidths_match_direct_loops() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let (n, m, d) = (21, 34, 7);
        let rows: Vec<Vec<f64>> = (0..n + m)
            .map(|i| {
                (0..d)
                    .map(|_| rng.random_range(-1.0..1.0) + if i >= n { 0.4 } else { 0.0 })
                    .collect()
            })
            .collect();
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let mults = [0.25, 0.5, 1.0, 2.0, 4.0];
        let w = [1.0; 5];
        let kernel = MmdKernel::Gaussian {
            bandwidths: Bandwidths::Mean(mults.to_vec()),
            weights: Some(w.to_vec()),
        };
        for est in [Estimator::Biased, Estimator::Unbiased] {
            let unbiased = est == Estimator::Unbiased;
            let run = |dtype: DType| -> (f64, Vec<f64>) {
                let all = Tensor::from_vec(flat.clone(), (n + m, d), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap();
                let xs = Var::from_tensor(&all.narrow(0, 0, n).unwrap()).unwrap();
                let xt = Var::from_tensor(&all.narrow(0, n, m).unwrap()).unwrap();
                let v = mmd2(xs.as_tensor(), xt.as_tensor(), &kernel, est).unwrap();
                let g = v.backward().unwrap();
                let grads = [&xs, &xt]
                    .iter()
                    .flat_map(|x| {
                        let t = g.get(x).unwrap().to_dtype(DType::F64).unwrap();
                        t.flatten_all().unwrap().to_vec1::<f64>().unwrap()
                    })
                    .collect();
                (v.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(), grads)
            };
            let want = direct(&rows, n, &mults, &w, unbiased);
            let (v32, g32) = run(DType::F32);
            let (v64, g64) = run(DType::F64);
            assert!((v64 - want).abs() < 1e-9, "composed f64 {v64} vs direct {want}");
            assert!(
                (v32 - want).abs() < 1e-5 * want.abs().max(1e-3),
                "f32 {v32} vs direct {want} ({est:?})"
            );
            let scale = g64.iter().fold(0f64, |a, v| a.max(v.abs()));
            let diff = g32
                .iter()
                .zip(&g64)
                .map(|(a, b)| (a - b).abs())
                .fold(0f64, f64::max);
            assert!(
                scale > 0.0 && diff < 1e-4 * scale,
                "{est:?}: gradient differs by {diff:e} at scale {scale:e}"
            );
        }
    }
}
