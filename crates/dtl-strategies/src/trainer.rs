//! The training loop: epochs of seeded source batches, target batches when the strategy asks for
//! them, per-epoch logs and a progress bar. Strategies never see the loop and the loop never sees a
//! strategy's internals.

use dtl_core::seed::Stream;
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Device;
use dtl_core::{DomainBatch, Strategy};
use dtl_data::augment::Augment;
use dtl_data::{Batcher, Dataset};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{Error, Result};

/// A run stops as diverged when a loss (a scalar whose name starts with `loss`) grows past this
/// many times its first value (or 1, when that is smaller): finite but exploding losses, such as
/// Adam at a learning rate of 1000 reaching 5e16, end the run instead of writing a useless model.
pub const DIVERGENCE_FACTOR: f64 = 1e4;

/// Settings of the loop itself.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// Passes over the source training split.
    pub epochs: usize,
    /// Source (and target) batch size.
    pub batch_size: usize,
    /// Seed of the batch order (source and target streams derive from it).
    pub seed: u64,
    /// Draw a progress bar (the caller decides, e.g. only on a terminal).
    pub progress: bool,
    /// Augment source and target training batches (random resized crop, flip), from streams
    /// seeded by `seed`.
    pub augment: Option<Augment>,
}

/// The mean of each reported scalar over one epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Wall-clock seconds of the epoch's training steps.
    pub seconds: f64,
    /// Number of steps.
    pub steps: usize,
    /// Mean of each named scalar over the epoch's steps.
    pub means: BTreeMap<String, f64>,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochLog>,
    /// Total training seconds (steps only, evaluation excluded).
    pub seconds: f64,
}

/// Trains `strategy` on `source` (labelled) and, when the strategy needs them, batches of `target`
/// (its labels are passed on only to strategies that declare they use them).
pub fn train(
    strategy: &mut dyn Strategy,
    source: &Dataset,
    target: Option<&Dataset>,
    cfg: &LoopConfig,
    device: &Device,
) -> Result<TrainReport> {
    if cfg.epochs == 0 {
        return Err(Error::Core(dtl_core::Error::config(
            "epochs",
            "must be at least 1",
        )));
    }
    if cfg.batch_size == 0 {
        return Err(Error::Core(dtl_core::Error::config(
            "batch-size",
            "must be at least 1",
        )));
    }
    if source.is_empty() {
        return Err(Error::Core(dtl_core::Error::config(
            "source",
            "the training split is empty",
        )));
    }
    let needs = strategy.needs();
    let target = if needs.target_batches || needs.target_labels {
        match target {
            Some(t) if !t.is_empty() => Some(t),
            _ => {
                return Err(Error::Core(dtl_core::Error::config(
                    "target",
                    format!("strategy `{}` needs target training data", strategy.name()),
                )))
            }
        }
    } else {
        None
    };
    let mut source_batches = Batcher::new(source.len(), cfg.batch_size, Stream::SourceOrder.seed(cfg.seed));
    let mut target_batches =
        target.map(|t| Batcher::new(t.len(), cfg.batch_size, Stream::TargetOrder.seed(cfg.seed)));
    let steps_per_epoch = source_batches.batches_per_epoch();
    let mut source_aug = ChaCha8Rng::seed_from_u64(Stream::SourceAugment.seed(cfg.seed));
    let mut target_aug = ChaCha8Rng::seed_from_u64(Stream::TargetAugment.seed(cfg.seed));
    if let Some(a) = &cfg.augment {
        a.validate()?;
    }
    let bar = if cfg.progress {
        ProgressBar::new((steps_per_epoch * cfg.epochs) as u64)
    } else {
        ProgressBar::with_draw_target(
            Some((steps_per_epoch * cfg.epochs) as u64),
            ProgressDrawTarget::hidden(),
        )
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let mut report = TrainReport {
        epochs: Vec::new(),
        seconds: 0.0,
    };
    // The first value of each scalar, against which a loss's growth is measured.
    let mut first_losses: BTreeMap<String, f64> = BTreeMap::new();
    let _span = tracing::info_span!("train", strategy = strategy.name()).entered();
    for epoch in 0..cfg.epochs {
        let _e = tracing::info_span!("epoch", epoch = epoch + 1).entered();
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        strategy.start_epoch(epoch, cfg.epochs)?;
        let started = Instant::now();
        let mut sums: BTreeMap<String, f64> = BTreeMap::new();
        let batches = source_batches.epoch();
        for (i, idx) in batches.iter().enumerate() {
            let (xs, ys) = match &cfg.augment {
                Some(a) => source.batch_augmented(idx, device, a, &mut source_aug)?,
                None => source.batch(idx, device)?,
            };
            let (target_x, target_y) = match (target, target_batches.as_mut()) {
                (Some(t), Some(tb)) => {
                    let ti = tb.next_batch();
                    let (tx, ty) = match &cfg.augment {
                        Some(a) => t.batch_augmented(&ti, device, a, &mut target_aug)?,
                        None => t.batch(&ti, device)?,
                    };
                    (Some(tx), needs.target_labels.then_some(ty))
                }
                _ => (None, None),
            };
            let batch = DomainBatch {
                source: (xs, ys),
                source_indices: idx.clone(),
                target: target_x,
                target_labels: target_y,
                progress: (epoch * steps_per_epoch + i) as f64 / (cfg.epochs * steps_per_epoch) as f64,
            };
            let stats = strategy.train_step(&batch)?;
            for (name, v) in stats.iter() {
                let first = *first_losses.entry(name.to_string()).or_insert(v.abs());
                let exploded = name.starts_with("loss") && v.abs() > DIVERGENCE_FACTOR * first.max(1.0);
                if !v.is_finite() || exploded {
                    return Err(Error::Diverged {
                        what: name.to_string(),
                        value: v,
                        epoch: epoch + 1,
                    });
                }
                *sums.entry(name.to_string()).or_default() += v;
            }
            if let Some(loss) = stats.iter().next() {
                bar.set_message(format!("{} {:.4}", loss.0, loss.1));
            }
            bar.inc(1);
        }
        let seconds = started.elapsed().as_secs_f64();
        report.seconds += seconds;
        let steps = batches.len();
        let means: BTreeMap<String, f64> = sums.into_iter().map(|(k, v)| (k, v / steps as f64)).collect();
        tracing::info!(
            seconds = format!("{seconds:.1}"),
            "epoch {}/{}: {}",
            epoch + 1,
            cfg.epochs,
            means
                .iter()
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.epochs.push(EpochLog {
            epoch: epoch + 1,
            seconds,
            steps,
            means,
        });
    }
    bar.finish_and_clear();
    Ok(report)
}
