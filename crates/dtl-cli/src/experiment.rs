//! A complete run: load the domains, train a strategy, evaluate on both test splits, and write
//! `config.toml`, `model.safetensors` and `metrics.json` into an output directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use dtl_backbones::{BackboneKind, Classifier, ModelSpec};
use dtl_core::seed::Stream;
use dtl_core::state::State;
use dtl_data::images::Fit;
use dtl_data::{DataDir, Domain, DomainSource, FileRecord, LoadOptions, Placement};
use dtl_strategies::{
    BuildContext, Checkpointing, EpochLog, Evaluation, FeatureGap, LoopConfig, TransferStrategy,
};

use crate::rundir::{RunDir, Staged};
use serde::Serialize;

pub use crate::config::{Assignment, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig};
use crate::{Error, Result};

/// Files every finished run directory holds (with `train.validate`, `validation.json` too).
pub const RUN_FILES: [&str; 3] = ["config.toml", "metrics.json", "model.safetensors"];

/// A run's configuration after validation.
pub(crate) struct Validated {
    source: DomainSource,
    target: DomainSource,
    backbone: BackboneKind,
    placement: Placement,
    fit: Fit,
    device: Device,
    iwcv: Option<dtl_strategies::weighting::Estimator>,
}

/// Checks every setting of `cfg` and their combinations (the strategy's settings, against the
/// run too), naming the key at fault, and parses what the run needs; reads and writes nothing.
pub(crate) fn validate(cfg: &RunConfig) -> Result<Validated> {
    let positive = |field: &str, v: usize| {
        if v == 0 {
            Err(Error::Config {
                field: field.into(),
                message: "must be at least 1".into(),
            })
        } else {
            Ok(())
        }
    };
    positive("epochs", cfg.train.epochs)?;
    positive("steps", cfg.train.steps.unwrap_or(1))?;
    if cfg.data.target_eval == crate::config::TargetEval::All && cfg.strategy.name() == "tradaboost" {
        return Err(Error::Config {
            field: "target_eval".into(),
            message: "`all` evaluates on every target image, and tradaboost trains on the labels of some of them: use `holdout` with tradaboost".into(),
        });
    }
    for (from, to) in &cfg.data.class_map {
        if from.is_empty() || to.is_empty() {
            return Err(Error::Config {
                field: format!("class_map.{from}"),
                message: "class names in the map cannot be empty".into(),
            });
        }
    }
    positive("batch-size", cfg.train.batch_size)?;
    positive("source-train-size", cfg.data.source_train_size.unwrap_or(1))?;
    positive("target-train-size", cfg.data.target_train_size.unwrap_or(1))?;
    if !(cfg.optim.lr > 0.0 && cfg.optim.lr.is_finite()) {
        return Err(Error::Config {
            field: "lr".into(),
            message: format!("{} is not a positive number", cfg.optim.lr),
        });
    }
    cfg.optim.optimizer.validate()?;
    if cfg.model.pretrained.is_some() && cfg.model.init_from.is_some() {
        return Err(Error::Config {
            field: "pretrained".into(),
            message: "give either pretrained (published weights for the backbone) or init-from (a checkpoint written by dtl train), not both".into(),
        });
    }
    if let Some(a) = &cfg.data.augment {
        a.validate().map_err(|e| field_err("augment", e))?;
    }
    cfg.strategy.validate()?;
    cfg.strategy.settings().check_run(&cfg.run_facts())?;
    let backbone = cfg.model.backbone;
    let fit = match cfg.data.fit {
        Some(f) => f,
        None if backbone.is_imagenet() => Fit::Crop,
        None => Fit::Stretch,
    };
    Ok(Validated {
        source: cfg.data.source.parse().map_err(|e| field_err("source", e))?,
        target: cfg.data.target.parse().map_err(|e| field_err("target", e))?,
        backbone,
        fit,
        placement: cfg.data.placement,
        device: parse_device(&cfg.train.device)?,
        iwcv: cfg
            .train
            .iwcv
            .as_deref()
            .map(dtl_strategies::weighting::Estimator::from_name)
            .transpose()
            .map_err(|e| Error::Config {
                field: "iwcv".into(),
                message: e.to_string(),
            })?,
    })
}

fn field_err(field: &str, e: dtl_data::Error) -> Error {
    Error::Config {
        field: field.into(),
        message: match e {
            dtl_data::Error::Config { message, .. } => message,
            other => other.to_string(),
        },
    }
}

/// Parses a device name: `cpu`, `cuda`, `cuda:N`, `metal`.
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = |m: String| Error::Config {
        field: "device".into(),
        message: m,
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "metal" => Device::new_metal(0).map_err(|e| bad(format!("metal: {e}"))),
        _ => {
            let ordinal = match name.strip_prefix("cuda") {
                Some("") => 0,
                Some(rest) => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| bad(format!("`{name}` is not cuda or cuda:N")))?,
                None => return Err(bad(format!("`{name}` is not one of cpu, cuda, cuda:N, metal"))),
            };
            Device::new_cuda(ordinal).map_err(|e| bad(format!("{name}: {e}")))
        }
    }
}

/// The data a run read from one domain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DataRecord {
    /// Files read, with their sha256.
    pub files: Vec<FileRecord>,
    /// Training samples used (after the cap).
    pub train_size: usize,
    /// Training samples available before the cap.
    pub full_train_size: usize,
    /// Test samples.
    pub test_size: usize,
    /// How images were placed on the canvas (`fill` or `box`).
    pub placement: String,
}

impl DataRecord {
    fn of(d: &Domain) -> Self {
        Self {
            files: d.files.clone(),
            train_size: d.train.len(),
            full_train_size: d.full_train_size,
            test_size: d.test.len(),
            placement: d.placement.as_str().into(),
        }
    }
}

/// The host a run was made on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRecord {
    /// Operating system.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// The device trained on.
    pub device: String,
}

/// `metrics.json`: what a run measured. The schema is documented in README.md.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// dtl's version.
    pub dtl_version: String,
    /// The git revision dtl was built from, when built from a checkout.
    pub git_rev: Option<String>,
    /// Strategy name.
    pub strategy: String,
    /// Source domain.
    pub source: String,
    /// Target domain.
    pub target: String,
    /// Backbone.
    pub backbone: String,
    /// Run seed.
    pub seed: u64,
    /// Epochs trained.
    pub epochs: usize,
    /// Training steps taken (`epochs` times the source batches per epoch).
    pub steps: usize,
    /// How the target was evaluated: `holdout` (its test split) or `all` (every target image,
    /// also the unlabelled adaptation set).
    pub target_eval: String,
    /// Seconds spent in training steps (evaluation and loading excluded).
    pub train_seconds: f64,
    /// `train_seconds / epochs`.
    pub seconds_per_epoch: f64,
    /// Per domain: files, sizes and placement.
    pub data: BTreeMap<String, DataRecord>,
    /// Evaluation on the source test split.
    pub source_test: Evaluation,
    /// Evaluation on the target test split.
    pub target_test: Evaluation,
    /// `source_test.accuracy - target_test.accuracy`: the drop caused by the domain shift.
    pub drop: f64,
    /// MMD^2 and CORAL between the source and target test splits' representations (up to 1,000
    /// images each, no labels used): how well the model aligned the domains.
    pub feature_gap: FeatureGap,
    /// `iw`: the source instance weights at the end of training (effective sample size, range,
    /// per-class means and histograms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_weights: Option<dtl_strategies::weighting::WeightStats>,
    /// With `iwcv` set: the importance-weighted validation on the source test split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iwcv: Option<dtl_strategies::weighting::Validation>,
    /// Per-epoch means of the strategy's logged scalars.
    pub history: Vec<EpochLog>,
    /// Where it ran.
    pub host: HostRecord,
}

/// How [`run`] treats its output directory and terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Replace a previous run's files in the output directory.
    pub overwrite: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    dtl_core::write_atomic(path, bytes).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// The source and target domains of a run, as `load_domains` read them.
pub(crate) struct Domains {
    /// The source domain.
    pub(crate) source: Domain,
    /// The target domain, its classes in the source's order.
    pub(crate) target: Domain,
}

/// Stage 1: reads the source and target domains of `cfg` from `data_dir`, the target at the
/// source's canvas and channels, its classes matched to the source's.
pub(crate) fn load_domains(cfg: &RunConfig, v: &Validated, data_dir: &DataDir) -> Result<Domains> {
    let d = &cfg.data;
    let load = |src: &DomainSource,
                cap: Option<usize>,
                stream: Stream,
                channels: Option<usize>,
                class_fractions: Option<Vec<f64>>,
                key: &str| {
        Domain::load_source(
            src,
            Some(data_dir),
            &LoadOptions {
                image_size: d.image_size,
                placement: v.placement,
                train_size: cap,
                seed: stream.seed(cfg.train.seed),
                channels,
                skip_bad_images: d.skip_bad_images,
                fit: v.fit,
                class_fractions,
                ..Default::default()
            },
        )
        .map_err(|e| match e {
            // Name the run config's key of the side at fault.
            dtl_data::Error::Config { field, message } if field == "class-fractions" => Error::Config {
                field: key.into(),
                message,
            },
            other => Error::from(other),
        })
    };
    let source = load(
        &v.source,
        d.source_train_size,
        Stream::SourceData,
        d.channels,
        d.source_class_fractions.clone(),
        "data.source_class_fractions",
    )?;
    let mut used = std::collections::BTreeSet::new();
    let source = mapped_classes(source, &d.class_map, &mut used)?;
    let target = if v.target == v.source
        && d.target_train_size == d.source_train_size
        && d.target_class_fractions == d.source_class_fractions
    {
        source.clone()
    } else {
        // The target is read at the source's canvas, channels included.
        let target = load(
            &v.target,
            d.target_train_size,
            Stream::TargetData,
            Some(source.train.image_shape().0),
            d.target_class_fractions.clone(),
            "data.target_class_fractions",
        )?;
        let target = mapped_classes(target, &d.class_map, &mut used)?;
        match (&v.source, &v.target) {
            (DomainSource::Builtin(_), DomainSource::Builtin(_)) => target,
            // Folders name their classes: match them to the source's by name.
            _ => target.relabelled_to(&source.class_names)?,
        }
    };
    if target.class_names != source.class_names {
        return Err(Error::Config {
            field: "target".into(),
            message: format!("{} has other classes than {}", v.target, v.source),
        });
    }
    if let Some(unused) = d.class_map.keys().find(|k| !used.contains(*k)) {
        return Err(Error::Config {
            field: format!("class_map.{unused}"),
            message: format!(
                "matched no class: the classes are {} (a key names a folder of either domain, its value the class it is read as)",
                source.class_names.join(", ")
            ),
        });
    }
    let target = match d.target_eval {
        crate::config::TargetEval::Holdout => target,
        crate::config::TargetEval::All => {
            // The transductive protocol: the adaptation set and the evaluation set are every
            // target image (training split first, then the test split).
            let all = target.train.concat(&target.test)?;
            tracing::info!(
                "target evaluation `all`: adapting on and evaluating all {} images of {}",
                all.len(),
                v.target
            );
            Domain {
                train: all.clone(),
                test: all,
                ..target
            }
        }
    };
    Ok(Domains { source, target })
}

/// `d` with the class names that `map` has as keys renamed to their values (folders only:
/// built-in domains name their classes themselves); two classes renamed to one is an error. The
/// keys that named a class are added to `used`.
fn mapped_classes(
    d: Domain,
    map: &BTreeMap<String, String>,
    used: &mut std::collections::BTreeSet<String>,
) -> Result<Domain> {
    if map.is_empty() || matches!(d.origin, DomainSource::Builtin(_)) {
        return Ok(d);
    }
    let names: Vec<String> = d
        .class_names
        .iter()
        .map(|c| match map.get(c) {
            Some(to) => {
                used.insert(c.clone());
                to.clone()
            }
            None => c.clone(),
        })
        .collect();
    for (i, n) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|m| m == n) {
            return Err(Error::Config {
                field: "class_map".into(),
                message: format!(
                    "{}: classes `{}` and `{}` would both be read as `{n}`",
                    d.origin, d.class_names[j], d.class_names[i]
                ),
            });
        }
    }
    Ok(Domain {
        class_names: names,
        ..d
    })
}

/// The measurements after training need two test images per domain (the feature gap compares
/// their spread): checked before training, so that no trained model is lost to it.
fn check_test_splits(v: &Validated, domains: &Domains) -> Result<()> {
    for (field, name, d) in [
        ("source", &v.source, &domains.source),
        ("target", &v.target, &domains.target),
    ] {
        if d.test.len() < 2 {
            return Err(Error::Config {
                field: field.into(),
                message: format!(
                    "{name} has {} test image(s); the evaluation after training needs at least 2 (add images, or raise the test share of a folder without train/ and test/)",
                    d.test.len()
                ),
            });
        }
    }
    Ok(())
}

/// Stage 2: the run's model for the source domain (its classes and canvas, the strategy's
/// adaptation layer), initialised from the run seed and, with `pretrained`, its backbone from
/// published weights.
pub(crate) fn build_model(cfg: &RunConfig, v: &Validated, source: &Domain) -> Result<Classifier> {
    let spec = ModelSpec::new(v.backbone, source.train.image_shape(), source.class_names.clone())
        .with_adapt_width(cfg.strategy.adapt_width());
    let model = Classifier::new(spec, cfg.train.seed, &v.device)?;
    if let Some(spec) = &cfg.model.pretrained {
        let path = spec.parse::<dtl_backbones::hub::Pretrained>()?.resolve()?;
        let tensors = dtl_backbones::read_safetensors(&path, &v.device)?;
        let report = model.load_pretrained(&tensors, &path)?;
        tracing::info!(
            "backbone from {spec} ({} tensors; head {})",
            report.loaded,
            if report.head { "from the checkpoint" } else { "new" }
        );
    }
    Ok(model)
}

/// Stage 3: the strategy around `model`, with the run's initial checkpoint (a path, or
/// `hf:ORG/NAME[@REVISION][/FILE]` from the hub, cache first) and training data.
pub(crate) fn build_strategy(
    cfg: &RunConfig,
    v: &Validated,
    model: Classifier,
    domains: &Domains,
) -> Result<Box<dyn TransferStrategy>> {
    let init_from = cfg
        .model
        .init_from
        .as_ref()
        .map(|p| {
            p.to_string_lossy()
                .parse::<dtl_backbones::hub::Pretrained>()
                .and_then(|src| src.resolve())
        })
        .transpose()?;
    let init = match &init_from {
        Some(path) => Some((Classifier::load(path, &v.device)?.0, path.clone())),
        None => None,
    };
    let mut ctx = BuildContext::new(model, &cfg.optim.settings(), cfg.train.seed)
        .with_data(&domains.source.train, &domains.target.train);
    if let Some((m, p)) = &init {
        ctx = ctx.with_init(m, p);
    }
    Ok(cfg.strategy.build(ctx)?)
}

/// Stage 4: trains `strategy` on the run's domains, from `resume` when given, saving the run's
/// state to `checkpoint` at every epoch end and every `train.checkpoint_every` steps.
pub(crate) fn train_strategy(
    cfg: &RunConfig,
    v: &Validated,
    strategy: &mut dyn TransferStrategy,
    domains: &Domains,
    progress: bool,
    (resume, checkpoint): (Option<&State>, &Path),
) -> Result<dtl_strategies::TrainReport> {
    let loop_cfg = LoopConfig {
        epochs: cfg.train.epochs,
        batch_size: cfg.train.batch_size,
        seed: cfg.train.seed,
        progress,
        augment: cfg.data.augment,
    };
    tracing::info!(
        "training {} on {} ({} images) -> {} ({} images), {} epochs",
        cfg.strategy.name(),
        v.source,
        domains.source.train.len(),
        v.target,
        domains.target.train.len(),
        cfg.train.epochs
    );
    let started = Instant::now();
    let mut writes = 0usize;
    let mut save = |state: &State, _at: dtl_strategies::Position| -> dtl_strategies::Result<()> {
        writes += 1;
        write_checkpoint(state, checkpoint, writes)
            .map_err(|e| dtl_strategies::Error::Core(dtl_core::Error::Msg(e.to_string())))
    };
    let report = dtl_strategies::train_resumable(
        strategy,
        &domains.source.train,
        Some(&domains.target.train),
        &loop_cfg,
        &v.device,
        Checkpointing {
            resume,
            every_steps: cfg.train.checkpoint_every,
            save: Some(&mut save),
        },
    )?;
    tracing::info!("trained in {:.1} s", started.elapsed().as_secs_f64());
    Ok(report)
}

/// The environment variable of a test hook: `DTL_TEST_ABORT_IN_CHECKPOINT=K` aborts the process
/// halfway through writing its K-th checkpoint (half of the bytes in the temporary file, the
/// rename not done), the state a kill during the write leaves. Tests use it to check that such a
/// run resumes from the checkpoint before and ends as the uninterrupted run.
pub const ABORT_IN_CHECKPOINT: &str = "DTL_TEST_ABORT_IN_CHECKPOINT";

/// Writes the `k`-th checkpoint of a run atomically.
fn write_checkpoint(state: &State, path: &Path, k: usize) -> Result<()> {
    let bytes = state.to_bytes()?;
    if std::env::var(ABORT_IN_CHECKPOINT)
        .ok()
        .and_then(|v| v.parse().ok())
        == Some(k)
    {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.{}.partial",
            crate::rundir::CHECKPOINT,
            std::process::id()
        ));
        let _ = std::fs::write(&tmp, &bytes[..bytes.len() / 2]);
        std::process::abort();
    }
    write_file(path, &bytes)?;
    if let Some(ms) = std::env::var(PAUSE_AFTER_CHECKPOINT)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    Ok(())
}

/// The environment variable of a test hook: `DTL_TEST_PAUSE_AFTER_CHECKPOINT=MS` sleeps MS
/// milliseconds after every checkpoint is written, so that a test can stop a short run between
/// two checkpoints (the Slurm test cancels an array task this way) instead of racing it.
pub const PAUSE_AFTER_CHECKPOINT: &str = "DTL_TEST_PAUSE_AFTER_CHECKPOINT";

/// What stage 5 measured.
pub(crate) struct Measured {
    source_test: Evaluation,
    target_test: Evaluation,
    feature_gap: FeatureGap,
    iwcv: Option<dtl_strategies::weighting::Validation>,
}

/// Stage 5: evaluates the trained strategy on both test splits, the feature gap between them,
/// and (with `iwcv`) the importance-weighted validation.
pub(crate) fn evaluate_strategy(
    cfg: &RunConfig,
    v: &Validated,
    strategy: &dyn TransferStrategy,
    domains: &Domains,
) -> Result<Measured> {
    let (source, target) = (&domains.source, &domains.target);
    let predict = |xs: &candle_core::Tensor| strategy.predict(xs);
    let source_test = dtl_strategies::evaluate(predict, &source.test, 500, &v.device)?;
    let target_test = dtl_strategies::evaluate(predict, &target.test, 500, &v.device)?;
    let feature_gap =
        dtl_strategies::feature_gap(strategy.model(), &source.test, &target.test, 1000, &v.device)?;
    tracing::info!(
        "feature gap ({}): MMD^2 {:.4}, CORAL {:.3e}",
        feature_gap.layer,
        feature_gap.mmd2,
        feature_gap.coral
    );
    let iwcv = match &v.iwcv {
        Some(estimator) => {
            let r = dtl_strategies::weighting::validate(
                predict,
                &source.test,
                &target.train.without_labels(),
                estimator,
                5000,
                cfg.train.seed,
                &v.device,
            )?;
            tracing::info!(
                "importance-weighted validation ({}): loss {:.4}, error {:.4} (unweighted {:.4} / {:.4}), effective sample size {:.0} of {}",
                r.estimator,
                r.loss,
                r.error,
                r.plain_loss,
                r.plain_error,
                r.ess,
                r.n
            );
            Some(r)
        }
        None => None,
    };
    Ok(Measured {
        source_test,
        target_test,
        feature_gap,
        iwcv,
    })
}

/// Stage 6: writes the model and `metrics.json` into `out`.
pub(crate) fn write_results(
    cfg: &RunConfig,
    v: &Validated,
    strategy: &dyn TransferStrategy,
    domains: &Domains,
    report: dtl_strategies::TrainReport,
    measured: Measured,
    out: &Path,
) -> Result<Metrics> {
    strategy.model().save(
        &out.join("model.safetensors"),
        &[
            ("dtl.strategy", cfg.strategy.name().to_string()),
            ("dtl.source", v.source.to_string()),
            ("dtl.target", v.target.to_string()),
            ("dtl.placement", v.placement.as_str().to_string()),
            ("dtl.fit", v.fit.as_str().to_string()),
            ("dtl.seed", cfg.train.seed.to_string()),
        ],
    )?;
    let mut data = BTreeMap::new();
    // One domain on both sides (a prior shift made with class fractions) keeps both records.
    let (source_key, target_key) = if v.source == v.target {
        (format!("{} (source)", v.source), format!("{} (target)", v.target))
    } else {
        (v.source.to_string(), v.target.to_string())
    };
    data.insert(source_key, DataRecord::of(&domains.source));
    data.insert(target_key, DataRecord::of(&domains.target));
    let Measured {
        source_test,
        target_test,
        feature_gap,
        iwcv,
    } = measured;
    let metrics = Metrics {
        dtl_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: crate::git_rev(),
        strategy: cfg.strategy.name().into(),
        source: v.source.to_string(),
        target: v.target.to_string(),
        backbone: v.backbone.as_str().into(),
        seed: cfg.train.seed,
        epochs: cfg.train.epochs,
        steps: cfg.train.epochs * domains.source.train.len().div_ceil(cfg.train.batch_size),
        target_eval: cfg.data.target_eval.as_str().into(),
        train_seconds: report.seconds,
        seconds_per_epoch: report.seconds / cfg.train.epochs as f64,
        data,
        drop: source_test.accuracy - target_test.accuracy,
        feature_gap,
        source_weights: strategy.weight_stats().cloned(),
        iwcv,
        source_test,
        target_test,
        history: report.epochs,
        host: HostRecord {
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            device: cfg.train.device.clone(),
        },
    };
    let json = serde_json::to_string_pretty(&metrics).expect("metrics always serialise");
    write_file(&out.join("metrics.json"), json.as_bytes())?;
    Ok(metrics)
}

/// Runs `cfg` and writes its results into `out`: every setting is checked before anything is
/// written, then the run builds in a staging directory beside `out` ([`crate::rundir`]) through
/// the stages in order (load domains, build model, build strategy, train with checkpoints,
/// evaluate, write results), and replaces `out` only once complete.
pub fn run(cfg: &RunConfig, out: &Path, opts: RunOptions) -> Result<Metrics> {
    let v = validate(cfg)?;
    let rd = RunDir::new(out)?;
    let _lock = rd.lock()?;
    rd.begin(opts.overwrite)?;
    let mut written = cfg.clone();
    let staged = (|| {
        let data_dir = DataDir::resolve(cfg.data.data_dir.as_deref())?;
        written.data.data_dir = Some(data_dir.path().to_path_buf());
        write_file(&rd.staging().join("config.toml"), written.to_toml().as_bytes())?;
        stages(cfg, &v, &data_dir, &rd, None, opts.progress)
    })();
    finish(&rd, staged)
}

/// Continues the interrupted run of output directory `out` (or of its staging directory) from its
/// last checkpoint, with its saved `config.toml`: it ends with the files the uninterrupted run
/// would have written (bit for bit on the CPU, timings aside). A run killed before its first
/// checkpoint starts over from its saved config; a failed run is retried from its last
/// checkpoint. Returns the metrics and where the checkpoint stood (`None`: started over).
pub fn resume(out: &Path, progress: bool) -> Result<(Metrics, Option<dtl_strategies::Position>)> {
    let out = match out.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.starts_with('.') && n.ends_with(".partial") => {
            out.with_file_name(&n[1..n.len() - ".partial".len()])
        }
        _ => out.to_path_buf(),
    };
    let rd = RunDir::new(&out)?;
    let _lock = rd.lock()?;
    rd.recover()?;
    if rd.staged() == Staged::Nothing {
        return Err(Error::Output {
            path: out.clone(),
            message: if rd.finished() {
                "is a finished run: nothing to resume".into()
            } else {
                format!("no interrupted run to resume (no {})", rd.staging().display())
            },
        });
    }
    let cfg = RunConfig::from_toml_file(&rd.staging().join("config.toml"))?;
    let v = validate(&cfg)?;
    rd.clear_failed()?;
    let mut from = None;
    let staged = (|| {
        let state = match rd.checkpoint().is_file() {
            true => Some(State::load(&rd.checkpoint(), &v.device)?),
            false => None,
        };
        if let Some(s) = &state {
            from = Some(s.get("loop.position")?);
        }
        let data_dir = DataDir::resolve(cfg.data.data_dir.as_deref())?;
        stages(&cfg, &v, &data_dir, &rd, state.as_ref(), progress)
    })();
    Ok((finish(&rd, staged)?, from))
}

/// Whether `out` has an interrupted run that `dtl train --resume` can continue.
pub fn interrupted(out: &Path) -> bool {
    RunDir::new(out).is_ok_and(|rd| rd.staged() == Staged::Interrupted)
}

/// Commits a complete staging directory, or records the failure in it.
fn finish(rd: &RunDir, staged: Result<Metrics>) -> Result<Metrics> {
    match staged {
        Ok(m) => {
            rd.commit()?;
            Ok(m)
        }
        Err(e) => {
            rd.mark_failed(&e.to_string());
            Err(e)
        }
    }
}

/// Fewer training steps than this draw a warning: schedules (lambda ramps, DANN's coefficient,
/// learning-rate annealing) and the optimizer need a few hundred.
pub const FEW_STEPS: usize = 300;

/// `cfg` with `train.steps` turned into whole passes over a source of `source_len` training
/// images (`ceil(steps / steps per epoch)`), and a warning when the run has fewer than
/// [`FEW_STEPS`] steps.
pub fn with_steps_resolved(cfg: &RunConfig, source_len: usize) -> RunConfig {
    let mut cfg = cfg.clone();
    let per_epoch = source_len.div_ceil(cfg.train.batch_size).max(1);
    if let Some(steps) = cfg.train.steps {
        cfg.train.epochs = steps.div_ceil(per_epoch);
        tracing::info!(
            "{steps} steps: {} passes of {per_epoch} steps over {source_len} source images",
            cfg.train.epochs
        );
    }
    let total = cfg.train.epochs * per_epoch;
    if total < FEW_STEPS {
        tracing::warn!(
            "this run trains {total} steps ({} epochs of {per_epoch} batches of {}): too few for most strategies' schedules and for the optimizer; set --steps (e.g. --steps 1000) or raise --epochs",
            cfg.train.epochs,
            cfg.train.batch_size
        );
    }
    cfg
}

/// The stages of a run, written into its staging directory.
fn stages(
    cfg: &RunConfig,
    v: &Validated,
    data_dir: &DataDir,
    rd: &RunDir,
    state: Option<&State>,
    progress: bool,
) -> Result<Metrics> {
    let out = rd.staging();
    let domains = load_domains(cfg, v, data_dir)?;
    check_test_splits(v, &domains)?;
    let resolved = with_steps_resolved(cfg, domains.source.train.len());
    let cfg = &resolved;
    let model = build_model(cfg, v, &domains.source)?;
    let mut strategy = build_strategy(cfg, v, model, &domains)?;
    let report = train_strategy(
        cfg,
        v,
        strategy.as_mut(),
        &domains,
        progress,
        (state, &rd.checkpoint()),
    )?;
    let measured = evaluate_strategy(cfg, v, strategy.as_ref(), &domains)?;
    let metrics = write_results(cfg, v, strategy.as_ref(), &domains, report, measured, out)?;
    if cfg.train.validate {
        // Last, so that a run directory with validation.json is complete.
        let report = crate::validation::validate_model(
            strategy.model(),
            &domains.source.test,
            &domains.target.train.without_labels(),
            cfg.train.seed,
            &v.device,
        )?;
        crate::validation::write_report(&report, out)?;
    }
    Ok(metrics)
}

/// Scores a finished run in `dir` (its `config.toml` and `model.safetensors`) with every
/// validator, reading its domains as the run did; `data_dir` overrides the run's data directory.
pub fn validate_run(dir: &Path, data_dir: Option<&Path>) -> Result<crate::validation::ValidationReport> {
    let mut cfg = RunConfig::from_toml_file(&dir.join("config.toml"))?;
    if let Some(d) = data_dir {
        cfg.data.data_dir = Some(d.to_path_buf());
    }
    let v = validate(&cfg)?;
    let data_dir = DataDir::resolve(cfg.data.data_dir.as_deref())?;
    let domains = load_domains(&cfg, &v, &data_dir)?;
    let (model, _) = Classifier::load(&dir.join("model.safetensors"), &v.device)?;
    crate::validation::validate_model(
        &model,
        &domains.source.test,
        &domains.target.train.without_labels(),
        cfg.train.seed,
        &v.device,
    )
}

/// The result of evaluating a checkpoint on one domain's test split (`dtl eval`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The checkpoint.
    pub checkpoint: String,
    /// The domain.
    pub domain: String,
    /// Its data.
    pub data: DataRecord,
    /// Evaluation on the test split.
    pub test: Evaluation,
    /// With `--gap-from`: the representation gap between that domain's test split and this one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature_gap: Option<FeatureGap>,
}

/// Evaluates a checkpoint on the test split of `domain`. The canvas size comes from the
/// checkpoint; the placement too unless `placement` is given. With `gap_from`, the report also
/// holds the [`FeatureGap`] between that domain's test split and `domain`'s (as a run's
/// `metrics.json` holds it between its source and target).
pub fn evaluate_checkpoint(
    checkpoint: &Path,
    domain: &str,
    data_dir: Option<&Path>,
    placement: Option<&str>,
    gap_from: Option<&str>,
    device: &Device,
) -> Result<EvalReport> {
    let (model, meta) = Classifier::load(checkpoint, device)?;
    let placement: Placement = match placement.or(meta.get("dtl.placement").map(String::as_str)) {
        Some(p) => p.parse().map_err(|e| field_err("placement", e))?,
        None => Placement::Fill,
    };
    let data_dir = DataDir::resolve(data_dir)?;
    let fit = fit_of(&model, &meta)?;
    let d = load_for(&model, domain, &data_dir, placement, fit)?;
    let test = dtl_strategies::evaluate(
        |xs| model.forward(xs, false).map_err(dtl_backbones::Error::into_core),
        &d.test,
        500,
        device,
    )?;
    let feature_gap = match gap_from {
        Some(from) => {
            let f = load_for(&model, from, &data_dir, placement, fit)?;
            Some(dtl_strategies::feature_gap(
                &model, &f.test, &d.test, 1000, device,
            )?)
        }
        None => None,
    };
    Ok(EvalReport {
        checkpoint: checkpoint.display().to_string(),
        domain: d.name(),
        data: DataRecord::of(&d),
        test,
        feature_gap,
    })
}

/// How a checkpoint's training run fitted folder images (`dtl.fit`; older checkpoints: the
/// backbone's default).
pub fn fit_of(model: &Classifier, meta: &std::collections::HashMap<String, String>) -> Result<Fit> {
    match meta.get("dtl.fit") {
        Some(f) => f.parse().map_err(|e| field_err("dtl.fit", e)),
        None if model.spec().backbone.is_imagenet() => Ok(Fit::Crop),
        None => Ok(Fit::Stretch),
    }
}

/// Loads `domain` at the checkpoint's canvas size, checking channels and classes.
fn load_for(
    model: &Classifier,
    domain: &str,
    data_dir: &DataDir,
    placement: Placement,
    fit: Fit,
) -> Result<Domain> {
    let id: DomainSource = domain.parse().map_err(|e| field_err("domain", e))?;
    let (c, h, _) = model.spec().input_shape;
    let d = Domain::load_source(
        &id,
        Some(data_dir),
        &LoadOptions {
            image_size: h,
            placement,
            channels: matches!(id, DomainSource::Folder(_)).then_some(c),
            fit,
            ..Default::default()
        },
    )?;
    let d = match id {
        DomainSource::Folder(_) => d.relabelled_to(&model.spec().class_names)?,
        DomainSource::Builtin(_) => d,
    };
    // A colour model replicates grayscale images (Classifier::prepare_input).
    if d.test.image_shape().0 != c && !(c == 3 && d.test.image_shape().0 == 1) {
        return Err(Error::Config {
            field: "domain".into(),
            message: format!(
                "{id} has {} channels, the checkpoint takes {c}",
                d.test.image_shape().0
            ),
        });
    }
    if d.class_names != model.spec().class_names {
        return Err(Error::Config {
            field: "domain".into(),
            message: format!("{id}'s classes differ from the checkpoint's"),
        });
    }
    Ok(d)
}
