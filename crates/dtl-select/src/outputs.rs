//! What a validator sees: the model's outputs on the labelled source validation split and on the
//! unlabelled target training split, computed once in evaluation mode.

use candle_core::{Device, Tensor, D};
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_data::{Dataset, Unlabelled};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::Result;

/// A dense row-major `rows x cols` matrix of `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// The values, row after row.
    pub data: Vec<f64>,
}

impl Matrix {
    /// A matrix from its rows (all of one length).
    pub fn from_rows(rows: &[Vec<f64>]) -> Self {
        let cols = rows.first().map_or(0, Vec::len);
        Self {
            rows: rows.len(),
            cols,
            data: rows.iter().flatten().copied().collect(),
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// The index of each row's largest value (the first on ties).
    pub fn argmax_rows(&self) -> Vec<usize> {
        (0..self.rows)
            .map(|i| {
                let r = self.row(i);
                (0..r.len()).fold(0, |best, k| if r[k] > r[best] { k } else { best })
            })
            .collect()
    }

    fn of(t: &Tensor) -> Result<Self> {
        let (rows, cols) = t.dims2()?;
        let data = t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        Ok(Self { rows, cols, data })
    }

    fn stack(parts: Vec<Matrix>) -> Self {
        let cols = parts.first().map_or(0, |m| m.cols);
        Self {
            rows: parts.iter().map(|m| m.rows).sum(),
            cols,
            data: parts.into_iter().flat_map(|m| m.data).collect(),
        }
    }
}

/// A trained model and the data a validator may read: the labelled source validation split and
/// the target's images, without labels.
pub struct Inputs<'a> {
    /// The trained model.
    pub model: &'a Classifier,
    /// The labelled source validation split.
    pub source: &'a Dataset,
    /// The target training split, images only.
    pub target: &'a Unlabelled,
    /// Where the model runs.
    pub device: &'a Device,
    /// Seed of the validators' own random choices (subsets, pairs, estimators).
    pub seed: u64,
}

/// The model's outputs on (seeded subsets of) both splits, in evaluation mode.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Class probabilities of the source validation samples, `n_s x K`.
    pub source_probs: Matrix,
    /// Their representation (the adaptation layer if any, else the features), `n_s x D`.
    pub source_features: Matrix,
    /// Their labels.
    pub source_labels: Vec<u32>,
    /// Per-sample cross-entropy of the source validation samples.
    pub source_losses: Vec<f64>,
    /// The positions of the source samples used, in the source split.
    pub source_indices: Vec<usize>,
    /// Class probabilities of the target samples, `n_t x K`.
    pub target_probs: Matrix,
    /// Their representation, `n_t x D`.
    pub target_features: Matrix,
    /// The positions of the target samples used, in the target split.
    pub target_indices: Vec<usize>,
}

/// A seeded subset of at most `max` of `n` positions, in increasing order.
fn pick(n: usize, max: usize, seed: u64) -> Vec<usize> {
    if n <= max {
        return (0..n).collect();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx = sample(&mut rng, n, max).into_vec();
    idx.sort_unstable();
    idx
}

impl Outputs {
    /// Runs `inputs.model` over at most `max_samples` source and target samples (seeded subsets).
    pub fn compute(inputs: &Inputs, max_samples: usize) -> Result<Self> {
        let (model, dev) = (inputs.model, inputs.device);
        let source_indices = pick(
            inputs.source.len(),
            max_samples,
            Stream::ValidationSubset.seed(inputs.seed),
        );
        let target_indices = pick(
            inputs.target.len(),
            max_samples,
            Stream::WeightSubset.seed(inputs.seed),
        );
        let run = |xs: &Tensor| -> Result<(Matrix, Matrix, Tensor)> {
            let taps = model.forward_taps(xs, false)?;
            let probs = candle_nn::ops::softmax(&taps.logits.detach(), D::Minus1)?;
            Ok((
                Matrix::of(&probs)?,
                Matrix::of(&taps.hidden().detach())?,
                taps.logits.detach(),
            ))
        };
        let (mut sp, mut sf, mut losses, mut labels) = (vec![], vec![], vec![], vec![]);
        for chunk in source_indices.chunks(256) {
            let (xs, ys) = inputs.source.batch(chunk, dev)?;
            let (p, f, logits) = run(&xs)?;
            let lsm = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let nll = lsm
                .gather(&ys.unsqueeze(1)?, 1)?
                .squeeze(1)?
                .neg()?
                .to_dtype(candle_core::DType::F64)?
                .to_vec1::<f64>()?;
            losses.extend(nll);
            labels.extend(ys.to_vec1::<u32>()?);
            sp.push(p);
            sf.push(f);
        }
        let (mut tp, mut tf) = (vec![], vec![]);
        for chunk in target_indices.chunks(256) {
            let xs = inputs.target.batch(chunk, dev)?;
            let (p, f, _) = run(&xs)?;
            tp.push(p);
            tf.push(f);
        }
        Ok(Self {
            source_probs: Matrix::stack(sp),
            source_features: Matrix::stack(sf),
            source_labels: labels,
            source_losses: losses,
            source_indices,
            target_probs: Matrix::stack(tp),
            target_features: Matrix::stack(tf),
            target_indices,
        })
    }

    /// The largest share of the target samples predicted as one class: near 1 for a collapsed
    /// model that gives every image the same label.
    pub fn target_max_class_share(&self) -> f64 {
        let k = self.target_probs.cols.max(1);
        let mut counts = vec![0usize; k];
        for c in self.target_probs.argmax_rows() {
            counts[c] += 1;
        }
        counts.into_iter().max().unwrap_or(0) as f64 / self.target_probs.rows.max(1) as f64
    }
}
