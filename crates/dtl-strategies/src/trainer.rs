//! The training loop: epochs of seeded source batches, target batches when the strategy asks for
//! them, per-epoch logs and a progress bar. Strategies never see the loop and the loop never sees a
//! strategy's internals.

use dtl_core::seed::Stream;
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Device;
use dtl_core::state::State;
use dtl_core::{DomainBatch, Strategy};
use dtl_data::augment::Augment;
use dtl_data::{Batcher, Dataset};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// One entry per epoch.
    pub epochs: Vec<EpochLog>,
    /// Total training seconds (steps only, evaluation excluded).
    pub seconds: f64,
}

/// Where a training run is in its schedule: `step` steps of 0-based `epoch` are done (0 at an
/// epoch's end, when `epoch` is the next one), of `steps_per_epoch` per epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The 0-based epoch in progress, or the next one when `step` is 0.
    pub epoch: usize,
    /// Steps of that epoch done.
    pub step: usize,
    /// Steps in every epoch.
    pub steps_per_epoch: usize,
    /// Epochs of the run.
    pub epochs: usize,
}

impl Position {
    /// Whether the run is complete.
    pub fn finished(&self) -> bool {
        self.epoch >= self.epochs
    }
}

/// What the loop saves a run's whole state for, and what it resumes from: [`train_resumable`].
#[derive(Default)]
pub struct Checkpointing<'a> {
    /// The saved state of an interrupted run, to continue from.
    pub resume: Option<&'a State>,
    /// Also save after every `n` steps within an epoch (the state is always saved at the end of
    /// every epoch when `save` is given).
    pub every_steps: Option<usize>,
    /// Receives every state (and writes it, atomically, wherever the caller keeps it).
    #[allow(clippy::type_complexity)]
    pub save: Option<&'a mut dyn FnMut(&State, Position) -> Result<()>>,
}

/// The loop's settings as saved with its state, refused on resume when they differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedLoop {
    strategy: String,
    epochs: usize,
    batch_size: usize,
    seed: u64,
    augment: Option<Augment>,
    source_len: usize,
    target_len: Option<usize>,
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
    train_resumable(strategy, source, target, cfg, device, Checkpointing::default())
}

/// [`train`], saving the run's whole state (the strategy's, the batch streams', the augmentation
/// streams', the epoch log and the running sums) through `ckpt.save` at the end of every epoch
/// and every `ckpt.every_steps` steps, and continuing from `ckpt.resume` when given: a run
/// resumed from any saved state ends, on the CPU, with the model and report (timings aside) of
/// the run that was never interrupted. The strategy must be built as the saved run's was.
pub fn train_resumable(
    strategy: &mut dyn Strategy,
    source: &Dataset,
    target: Option<&Dataset>,
    cfg: &LoopConfig,
    device: &Device,
    mut ckpt: Checkpointing<'_>,
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
    if ckpt.every_steps == Some(0) {
        return Err(Error::Core(dtl_core::Error::config(
            "checkpoint-every",
            "must be at least 1 step",
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
    let saved_loop = SavedLoop {
        strategy: strategy.name().to_string(),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        augment: cfg.augment,
        source_len: source.len(),
        target_len: target.map(Dataset::len),
    };
    let mut report = TrainReport {
        epochs: Vec::new(),
        seconds: 0.0,
    };
    // The first value of each scalar, against which a loss's growth is measured.
    let mut first_losses: BTreeMap<String, f64> = BTreeMap::new();
    // The running sums of the epoch in progress.
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    // Seconds the epoch in progress had spent in steps before a mid-epoch checkpoint.
    let mut resumed_seconds = 0.0;
    let mut at = Position {
        epoch: 0,
        step: 0,
        steps_per_epoch,
        epochs: cfg.epochs,
    };
    if let Some(state) = ckpt.resume {
        let saved: SavedLoop = state.get("loop.settings")?;
        if saved != saved_loop {
            return Err(Error::Core(dtl_core::Error::State {
                key: "loop.settings".into(),
                message: format!("the saved run had {saved:?}, this one has {saved_loop:?}"),
            }));
        }
        let saved_at: Position = state.get("loop.position")?;
        if saved_at.steps_per_epoch != steps_per_epoch
            || saved_at.epochs != cfg.epochs
            || saved_at.step >= steps_per_epoch
            || saved_at.epoch > cfg.epochs
        {
            return Err(Error::Core(dtl_core::Error::State {
                key: "loop.position".into(),
                message: format!(
                    "{saved_at:?} does not fit {} epochs of {steps_per_epoch} steps",
                    cfg.epochs
                ),
            }));
        }
        at = saved_at;
        strategy.load_state(state)?;
        source_batches.load_state(state, "loop.source_batches.")?;
        if let Some(tb) = target_batches.as_mut() {
            tb.load_state(state, "loop.target_batches.")?;
        }
        source_aug = state.rng("loop.source_augment")?;
        target_aug = state.rng("loop.target_augment")?;
        first_losses = state.get("loop.first_losses")?;
        sums = state.get("loop.sums")?;
        report.epochs = state.get("loop.history")?;
        report.seconds = state.get("loop.seconds")?;
        if at.step > 0 {
            resumed_seconds = state.get("loop.epoch_seconds")?;
        }
        tracing::info!(
            "resuming {} at epoch {}/{}, step {}/{}",
            strategy.name(),
            at.epoch + 1,
            cfg.epochs,
            at.step,
            steps_per_epoch
        );
    }
    let total = (steps_per_epoch * cfg.epochs) as u64;
    let bar = if cfg.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_position((at.epoch * steps_per_epoch + at.step) as u64);
    let _span = tracing::info_span!("train", strategy = strategy.name()).entered();
    while at.epoch < cfg.epochs {
        let epoch = at.epoch;
        let _e = tracing::info_span!("epoch", epoch = epoch + 1).entered();
        bar.set_prefix(format!("{}/{}", epoch + 1, cfg.epochs));
        // Within an epoch the saved state already holds what `start_epoch` did.
        let batches = if at.step == 0 {
            strategy.start_epoch(epoch, cfg.epochs)?;
            source_batches.epoch()
        } else {
            source_batches.current_epoch()
        };
        // Seconds in this epoch's steps (checkpoint writes excluded), counted from `tick`.
        let mut seconds = std::mem::take(&mut resumed_seconds);
        let mut tick = Instant::now();
        for (i, idx) in batches.iter().enumerate().skip(at.step) {
            let (xs, ys) = match &cfg.augment {
                Some(a) => source.batch_augmented(idx, device, a, &mut source_aug)?,
                None => source.batch(idx, device)?,
            };
            let (target_x, target_y, target_indices) = match (target, target_batches.as_mut()) {
                (Some(t), Some(tb)) => {
                    let ti = tb.next_batch();
                    let (tx, ty) = match &cfg.augment {
                        Some(a) => t.batch_augmented(&ti, device, a, &mut target_aug)?,
                        None => t.batch(&ti, device)?,
                    };
                    (Some(tx), needs.target_labels.then_some(ty), ti)
                }
                _ => (None, None, Vec::new()),
            };
            let batch = DomainBatch {
                source: (xs, ys),
                source_indices: idx.clone(),
                target: target_x,
                target_indices,
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
            at.step = i + 1;
            let due = ckpt
                .every_steps
                .is_some_and(|n| (epoch * steps_per_epoch + i + 1).is_multiple_of(n));
            if due && at.step < batches.len() {
                if let Some(save) = ckpt.save.as_mut() {
                    seconds += tick.elapsed().as_secs_f64();
                    let mut state = loop_state(
                        strategy,
                        (&saved_loop, at),
                        (&source_batches, target_batches.as_ref()),
                        (&source_aug, &target_aug),
                        (&first_losses, &sums, &report),
                    )?;
                    state.put("loop.epoch_seconds", &seconds)?;
                    save(&state, at)?;
                    tick = Instant::now();
                }
            }
        }
        let seconds = seconds + tick.elapsed().as_secs_f64();
        report.seconds += seconds;
        let steps = batches.len();
        let means: BTreeMap<String, f64> = std::mem::take(&mut sums)
            .into_iter()
            .map(|(k, v)| (k, v / steps as f64))
            .collect();
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
        at.epoch += 1;
        at.step = 0;
        if let Some(save) = ckpt.save.as_mut() {
            let state = loop_state(
                strategy,
                (&saved_loop, at),
                (&source_batches, target_batches.as_ref()),
                (&source_aug, &target_aug),
                (&first_losses, &sums, &report),
            )?;
            save(&state, at)?;
        }
    }
    bar.finish_and_clear();
    Ok(report)
}

/// The whole state of the loop and its strategy at `at`.
#[allow(clippy::type_complexity)]
fn loop_state(
    strategy: &dyn Strategy,
    (settings, at): (&SavedLoop, Position),
    (source_batches, target_batches): (&Batcher, Option<&Batcher>),
    (source_aug, target_aug): (&ChaCha8Rng, &ChaCha8Rng),
    (first_losses, sums, report): (&BTreeMap<String, f64>, &BTreeMap<String, f64>, &TrainReport),
) -> Result<State> {
    let mut state = State::new();
    strategy.save_state(&mut state)?;
    state.put("loop.settings", settings)?;
    state.put("loop.position", &at)?;
    source_batches.save_state(&mut state, "loop.source_batches.")?;
    if let Some(tb) = target_batches {
        tb.save_state(&mut state, "loop.target_batches.")?;
    }
    state.put_rng("loop.source_augment", source_aug)?;
    state.put_rng("loop.target_augment", target_aug)?;
    state.put("loop.first_losses", first_losses)?;
    state.put("loop.sums", sums)?;
    state.put("loop.history", &report.epochs)?;
    state.put("loop.seconds", &report.seconds)?;
    Ok(state)
}
