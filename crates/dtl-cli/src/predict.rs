//! Labelling image files with a trained model: `dtl predict`.
//!
//! Images go through [`dtl_data::images::load_image`] to the model's input shape (an image already
//! at that size is used as it is), the model runs in evaluation mode, and each image gets its top
//! classes by softmax probability.

use std::path::PathBuf;

use candle_core::{Device, Tensor, D};
use dtl_backbones::Classifier;
use dtl_data::images::Fit;
use serde::Serialize;

use crate::Result;

/// One class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassProb {
    /// The class name, as the checkpoint stores it.
    pub class: String,
    /// Softmax probability.
    pub prob: f32,
}

/// The prediction for one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The image file.
    pub path: PathBuf,
    /// The `k` most probable classes, most probable first (ties: lower class index first).
    pub top: Vec<ClassProb>,
    /// The raw logits, in class order, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logits: Option<Vec<f32>>,
}

/// Predicts every image in `paths`, `batch_size` at a time, images of another size than the
/// model's input brought to it by `fit`; `top_k` is capped at the number of classes. Unreadable
/// images are errors naming the file.
pub fn predict_images(
    model: &Classifier,
    paths: &[PathBuf],
    top_k: usize,
    with_logits: bool,
    batch_size: usize,
    fit: Fit,
    device: &Device,
) -> Result<Vec<Prediction>> {
    let shape = model.spec().input_shape;
    let names = &model.spec().class_names;
    let k = top_k.clamp(1, names.len());
    let mut out = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(batch_size.max(1)) {
        let pixels = dtl_data::images::load_images(chunk, shape, fit)?;
        let xs = Tensor::from_vec(pixels, (chunk.len(), shape.0, shape.1, shape.2), device)?;
        let logits = model.forward(&xs, false)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        let logits = logits.to_vec2::<f32>()?;
        for ((path, p), l) in chunk.iter().zip(probs).zip(logits) {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            out.push(Prediction {
                path: path.clone(),
                top: order[..k]
                    .iter()
                    .map(|&c| ClassProb {
                        class: names[c].clone(),
                        prob: p[c],
                    })
                    .collect(),
                logits: with_logits.then_some(l),
            });
        }
    }
    Ok(out)
}
