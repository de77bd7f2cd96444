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

use crate::Result;

use super::config;

/// One round's constants.
#[derive(Debug, Clone, Copy, PartialEq)]
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
