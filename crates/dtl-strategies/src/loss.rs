//! The losses the strategies share: the source cross-entropy with the batch accuracy, and its
//! importance-weighted form (Shimodaira 2000, "Improving predictive inference under covariate
//! shift by weighting the log-likelihood function"), and [`source_loss`], which picks between them
//! for every strategy whose source loss can be weighted. Per-sample losses are `eval::nll`.

use candle_core::{DType, Tensor};
use dtl_core::{DomainBatch, StepStats};

use crate::weighting::iw::SourceWeighter;
use crate::Result;

/// Mean cross-entropy of `logits` against `labels` and the batch accuracy.
pub fn cross_entropy_with_accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, f64)> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?;
    let hits = logits
        .detach()
        .argmax(1)?
        .eq(labels)?
        .to_dtype(candle_core::DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok((loss, hits as f64))
}

/// The importance-weighted cross-entropy `sum_i w_i l_i / sum_i w_i` of `logits` against
/// `labels` with per-sample weights `w`, the plain mean `l`, and the batch accuracy.
pub fn weighted_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    w: &Tensor,
) -> candle_core::Result<(Tensor, f64, f64)> {
    let nll = crate::eval::nll(logits, labels)?;
    let total = w.sum_all()?.to_scalar::<f32>()?.max(1e-12) as f64;
    let loss = ((&nll * w)?.sum_all()? / total)?;
    let plain = nll.mean_all()?.to_scalar::<f32>()? as f64;
    let acc = logits
        .detach()
        .argmax(1)?
        .eq(labels)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    Ok((loss, plain, acc))
}

/// The source loss of a batch with `logits` for its source images: the cross-entropy, weighted
/// by `weighter` when there is one. Logs `loss_cls` (the plain mean) and, when weighted,
/// `loss_iw` into `stats`; returns the loss to minimise and the batch accuracy.
pub fn source_loss(
    weighter: Option<&SourceWeighter>,
    logits: &Tensor,
    batch: &DomainBatch,
    stats: &mut StepStats,
) -> Result<(Tensor, f64)> {
    let ys = &batch.source.1;
    match weighter {
        None => {
            let (loss, acc) = cross_entropy_with_accuracy(logits, ys)?;
            stats.push("loss_cls", loss.to_scalar::<f32>()? as f64);
            Ok((loss, acc))
        }
        Some(weighter) => {
            let w = weighter.batch_weights(&batch.source_indices, logits.device())?;
            let (loss, plain, acc) = weighted_cross_entropy(logits, ys, &w)?;
            stats
                .push("loss_iw", loss.to_scalar::<f32>()? as f64)
                .push("loss_cls", plain);
            Ok((loss, acc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The weighted loss against its closed form, computed from the logits by hand.
    #[test]
    fn weighted_cross_entropy_matches_the_closed_form() {
        let dev = Device::Cpu;
        let logits = [
            [2.0f32, -1.0, 0.5],
            [0.0, 0.0, 3.0],
            [-2.0, 1.0, 1.5],
            [0.3, 0.2, 0.1],
        ];
        let labels = [0u32, 1, 2, 0];
        let w = [0.5f32, 2.0, 1.0, 0.0];
        let nll: Vec<f64> = logits
            .iter()
            .zip(labels)
            .map(|(row, y)| {
                let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                lse - row[y as usize] as f64
            })
            .collect();
        let want = nll.iter().zip(w).map(|(l, w)| l * w as f64).sum::<f64>() / 3.5;
        let want_plain = nll.iter().sum::<f64>() / 4.0;
        let t = Tensor::new(&logits, &dev).unwrap();
        let (loss, plain, acc) = weighted_cross_entropy(
            &t,
            &Tensor::new(&labels, &dev).unwrap(),
            &Tensor::new(&w, &dev).unwrap(),
        )
        .unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert!((plain - want_plain).abs() < 1e-5, "{plain} vs {want_plain}");
        // Rows 0, 2 and 3 are predicted right; row 1 (label 1, argmax 2) is not.
        assert_eq!(acc, 0.75);
    }
}

/// Minimum class confusion (Jin et al. 2020, "Minimum Class Confusion for Versatile Domain
/// Adaptation") as a term any strategy can add to its loss: `weight` times the MCC loss of the
/// target logits at `temperature` ([`dtl_losses::minimum_class_confusion`]). The paper adds it to
/// DANN and CDAN as well as using it alone (`mcc`); `[strategy.mcc]` in their settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MccTerm {
    /// Weight of the term (the paper's trade-off, 1).
    pub weight: f64,
    /// Temperature of the predictions it reads (the paper's 2.5).
    pub temperature: f64,
}

impl Default for MccTerm {
    /// The paper's weight 1 and temperature 2.5.
    fn default() -> Self {
        Self {
            weight: 1.0,
            temperature: 2.5,
        }
    }
}

impl MccTerm {
    /// Checks the weight (non-negative) and temperature (positive), naming the key under `key`.
    pub fn validate(&self, key: &str) -> Result<()> {
        let bad = |f: &str, m: String| {
            Err(crate::Error::Core(dtl_core::Error::config(
                format!("{key}{f}"),
                m,
            )))
        };
        if !(self.weight >= 0.0 && self.weight.is_finite()) {
            return bad("weight", format!("{} is not a non-negative number", self.weight));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("{} is not a positive number", self.temperature),
            );
        }
        Ok(())
    }

    /// `weight * MCC(target_logits)`, logged as `loss_mcc` (the unweighted MCC loss).
    pub fn loss(&self, target_logits: &Tensor, stats: &mut StepStats) -> Result<Tensor> {
        let mcc = dtl_losses::minimum_class_confusion(target_logits, self.temperature)
            .map_err(crate::adversarial::loss_err)?;
        stats.push("loss_mcc", mcc.to_scalar::<f32>()? as f64);
        Ok((mcc * self.weight)?)
    }
}
