//! `reverse`: reverse validation (Zhong, Fan, Yang, Verscheure & Ren 2010, "Cross validation
//! framework to choose amongst models and datasets for transfer learning"). The model labels the
//! target images (its own predictions as pseudo-labels); a fresh network of the same architecture
//! is trained on those pseudo-labelled target images alone and scored on the labelled source
//! validation split. A model whose target labels are consistent enough to teach the source task
//! back scores high.

use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_data::Dataset;
use dtl_strategies::{evaluate, train, LoopConfig, OptimSettings, SourceOnly, TransferStrategy};

use crate::{Inputs, Outputs, Result, Score, Validator};

/// Source validation accuracy of a network trained on the model's pseudo-labelled target.
pub struct Reverse {
    /// Passes over the pseudo-labelled target.
    pub epochs: usize,
    /// Batch size of the reverse training.
    pub batch_size: usize,
    /// Its optimizer (SGD with momentum 0.9 at learning rate 0.01 by default).
    pub optim: OptimSettings,
}

impl Default for Reverse {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 64,
            optim: OptimSettings::default(),
        }
    }
}

impl Validator for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn score(&self, inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let pseudo: Vec<u32> = o
            .target_probs
            .argmax_rows()
            .into_iter()
            .map(|c| c as u32)
            .collect();
        let pixels: Vec<f32> = o
            .target_indices
            .iter()
            .flat_map(|&i| inputs.target.image(i).to_vec())
            .collect();
        let k = inputs.model.spec().num_classes();
        let labelled = Dataset::new(pixels, pseudo, inputs.target.image_shape(), k)?;
        let seed = Stream::NetworkB.seed(inputs.seed);
        let fresh = Classifier::new(inputs.model.spec().clone(), seed, inputs.device)?;
        let mut reverse = SourceOnly::new(fresh, &self.optim)?;
        let cfg = LoopConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed,
            progress: false,
            augment: None,
        };
        train(&mut reverse, &labelled, None, &cfg, inputs.device)?;
        let source = inputs.source.subset(&o.source_indices)?;
        let e = evaluate(|xs| reverse.predict(xs), &source, 256, inputs.device)?;
        Ok(Score::of(e.accuracy, source.len()))
    }
}
