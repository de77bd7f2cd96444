//! Evaluation: accuracy, per-class accuracy and the confusion matrix on a labelled split.
//!
//! Target labels reach nothing but this module: the training loop sees target images only, and an
//! [`Evaluation`] of the target domain can only be made by handing its labelled test split here.

use candle_core::{Device, Tensor};
use dtl_backbones::{Classifier, Tap};
use dtl_data::Dataset;
use dtl_losses::{Estimator, MmdKernel};
use serde::Serialize;

use crate::{Error, Result};

/// Classification quality on a labelled split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Fraction of samples whose arg-max prediction is the label.
    pub accuracy: f64,
    /// Number of samples.
    pub n: usize,
    /// The 95% Wilson score interval of the accuracy over these `n` samples
    /// ([`dtl_core::interval::wilson95`]).
    pub ci95: [f64; 2],
    /// Accuracy of each true class (`null` for a class with no samples).
    pub per_class: Vec<Option<f64>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
}

impl Evaluation {
    /// Builds the measures from true and predicted labels over `k` classes (more if a label or a
    /// prediction names a higher class).
    pub fn from_predictions(truth: &[u32], predicted: &[u32], k: usize) -> Self {
        let k = truth
            .iter()
            .chain(predicted)
            .map(|&c| c as usize + 1)
            .max()
            .unwrap_or(0)
            .max(k);
        let mut confusion = vec![vec![0u64; k]; k];
        for (&t, &p) in truth.iter().zip(predicted) {
            confusion[t as usize][p as usize] += 1;
        }
        let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
        let per_class = confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: u64 = row.iter().sum();
                (total > 0).then(|| row[c] as f64 / total as f64)
            })
            .collect();
        Self {
            accuracy: if truth.is_empty() {
                0.0
            } else {
                correct as f64 / truth.len() as f64
            },
            n: truth.len(),
            ci95: {
                let (lo, hi) = dtl_core::interval::wilson95(correct, truth.len() as u64);
                [lo, hi]
            },
            per_class,
            confusion,
        }
    }
}

/// Evaluates `predict` (images `(B, C, H, W)` to logits `(B, K)`) on every sample of `data`, in
/// batches of `batch_size`.
pub fn evaluate<F>(predict: F, data: &Dataset, batch_size: usize, device: &Device) -> Result<Evaluation>
where
    F: Fn(&Tensor) -> dtl_core::Result<Tensor>,
{
    let mut predicted = Vec::with_capacity(data.len());
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (xs, _) = data.batch(chunk, device)?;
        let logits = predict(&xs)?.detach();
        if logits.dim(1)? != data.num_classes() {
            return Err(Error::Core(dtl_core::Error::config(
                "classes",
                format!(
                    "the model predicts {} classes, the data set has {}",
                    logits.dim(1)?,
                    data.num_classes()
                ),
            )));
        }
        predicted.extend(logits.argmax(1)?.to_vec1::<u32>()?);
    }
    Ok(Evaluation::from_predictions(
        data.labels(),
        &predicted,
        data.num_classes(),
    ))
}

/// Per-sample negative log-likelihood `-log softmax(logits)[label]`, `(B,)`.
pub(crate) fn nll(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::log_softmax(logits, candle_core::D::Minus1)?
        .gather(&labels.unsqueeze(1)?, 1)?
        .squeeze(1)?
        .neg()
}

/// Per-sample cross-entropy and 0-1 error of `predict` (images to logits) on every sample of
/// `data`, in batches of `batch_size`.
pub fn per_sample_losses<F>(
    predict: F,
    data: &Dataset,
    batch_size: usize,
    device: &Device,
) -> Result<(Vec<f64>, Vec<f64>)>
where
    F: Fn(&Tensor) -> dtl_core::Result<Tensor>,
{
    let (mut losses, mut errors) = (Vec::with_capacity(data.len()), Vec::with_capacity(data.len()));
    let indices: Vec<usize> = (0..data.len()).collect();
    for chunk in indices.chunks(batch_size.max(1)) {
        let (xs, ys) = data.batch(chunk, device)?;
        let logits = predict(&xs)?.detach();
        losses.extend(nll(&logits, &ys)?.to_vec1::<f32>()?.into_iter().map(f64::from));
        let hit = logits.argmax(1)?.eq(&ys)?.to_vec1::<u8>()?;
        errors.extend(hit.into_iter().map(|h| if h == 1 { 0.0 } else { 1.0 }));
    }
    Ok((losses, errors))
}

/// How far apart two domains are in a model's representation: a label-free diagnostic of
/// adaptation, measured in evaluation mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureGap {
    /// The representation measured: the adaptation layer if the model has one, else the features.
    pub layer: Tap,
    /// Samples per domain.
    pub n: usize,
    /// Biased MMD^2 with five Gaussian kernels at `sigma^2 = 2^-2 .. 2^2` times the median pairwise
    /// squared distance (scale-free, so models with different feature scales compare).
    pub mmd2: f64,
    /// The CORAL loss `||C_a - C_b||_F^2 / (4 d^2)`.
    pub coral: f64,
}

/// The [`FeatureGap`] between the first `max_n` samples of `a` and of `b` under `model`.
pub fn feature_gap(
    model: &Classifier,
    a: &Dataset,
    b: &Dataset,
    max_n: usize,
    device: &Device,
) -> Result<FeatureGap> {
    let n = max_n.min(a.len()).min(b.len());
    if n < 2 {
        return Err(Error::Core(dtl_core::Error::config(
            "feature-gap",
            format!("needs at least 2 samples per domain, got {n}"),
        )));
    }
    let hidden = |d: &Dataset| -> Result<Tensor> {
        let idx: Vec<usize> = (0..n).collect();
        let mut parts = Vec::new();
        for chunk in idx.chunks(500) {
            let (xs, _) = d.batch(chunk, device)?;
            parts.push(model.forward_taps(&xs, false)?.hidden().detach());
        }
        Ok(Tensor::cat(&parts, 0)?)
    };
    let (fa, fb) = (hidden(a)?, hidden(b)?);
    let loss = crate::adversarial::loss_err;
    let kernel = MmdKernel::median(&[0.25, 0.5, 1.0, 2.0, 4.0]);
    let mmd2 = dtl_losses::mmd2(&fa, &fb, &kernel, Estimator::Biased).map_err(loss)?;
    let coral = dtl_losses::coral(&fa, &fb).map_err(loss)?;
    Ok(FeatureGap {
        layer: if model.spec().adapt_width.is_some() {
            Tap::Adapt
        } else {
            Tap::Features
        },
        n,
        mmd2: mmd2.to_scalar::<f32>()? as f64,
        coral: coral.to_scalar::<f32>()? as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_from_a_hand_checked_example() {
        // truth:     0 0 0 1 1 2
        // predicted: 0 1 0 1 0 2  -> 4 of 6 right; class 0: 2/3, class 1: 1/2, class 2: 1/1.
        let e = Evaluation::from_predictions(&[0, 0, 0, 1, 1, 2], &[0, 1, 0, 1, 0, 2], 4);
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(e.per_class, vec![Some(2.0 / 3.0), Some(0.5), Some(1.0), None]);
        assert_eq!(e.confusion[0], vec![2, 1, 0, 0]);
        assert_eq!(e.confusion[1], vec![1, 1, 0, 0]);
        assert_eq!(e.n, 6);
        // A prediction beyond `k` widens the matrix instead of failing.
        let e = Evaluation::from_predictions(&[0, 1], &[0, 3], 2);
        assert_eq!(
            e.confusion,
            vec![vec![1, 0, 0, 0], vec![0, 0, 0, 1], vec![0; 4], vec![0; 4]]
        );
        assert_eq!(e.accuracy, 0.5);
    }

    #[test]
    fn evaluate_uses_argmax_of_logits() -> anyhow::Result<()> {
        let data = Dataset::new(vec![0.0, 1.0, 2.0], vec![0, 1, 1], (1, 1, 1), 2)?;
        // Predict class 1 when the pixel exceeds 0.5.
        let e = evaluate(
            |xs| {
                let v = xs.flatten_all()?;
                Ok(Tensor::stack(&[(v.neg()? + 0.5)?, (v - 0.5)?], 1)?)
            },
            &data,
            2,
            &Device::Cpu,
        )?;
        assert_eq!(e.accuracy, 1.0);
        Ok(())
    }
}
