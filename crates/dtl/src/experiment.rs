//! A complete run: load the domains, train a strategy, evaluate on both test splits, and write
//! `config.toml`, `model.safetensors` and `metrics.json` into an output directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dtl_backbones::{BackboneKind, Classifier, ModelSpec};
use dtl_data::augment::Augment;
use dtl_data::images::Fit;
use dtl_data::{DataDir, Domain, DomainSource, FileRecord, LoadOptions, Placement};
use dtl_strategies::{
    EpochLog, Evaluation, FeatureGap, LoopConfig, OptimSettings, OptimizerKind, StrategyConfig,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Files a run writes; a directory holding any of them holds a previous run.
pub const RUN_FILES: [&str; 3] = ["config.toml", "metrics.json", "model.safetensors"];

/// Every setting of a run. Read from TOML (`dtl train --config FILE`), overridden by flags, and
/// written back in full as `config.toml` next to the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Source domain (labelled): `mnist`, `usps`, `optdigits`, `mnist-small`, or `folder:PATH`
    /// (one subfolder per class, [`dtl_data::folder`]).
    pub source: String,
    /// Target domain (its test split measures transfer); a folder's classes are matched to the
    /// source's by name.
    pub target: String,
    /// Backbone architecture.
    pub backbone: String,
    /// Passes over the source training split.
    pub epochs: usize,
    /// Batch size (source and target).
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Seed of initialisation, dropout, batch order and size caps.
    pub seed: u64,
    /// Common canvas side for all domains.
    pub image_size: usize,
    /// How non-MNIST digits are placed on the canvas: `fill` or `box` (20/28 box, padded).
    pub placement: String,
    /// Cap on source training samples (seeded subset), `"all"` for none.
    #[serde(with = "size_cap")]
    pub source_train_size: Option<usize>,
    /// Cap on target training samples (seeded subset), `"all"` for none.
    #[serde(with = "size_cap")]
    pub target_train_size: Option<usize>,
    /// Share of each source class's training samples to keep (one value per class, seeded): a
    /// source with a skewed class composition (prior shift, the case instance weighting is for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_class_fractions: Option<Vec<f64>>,
    /// The same for the target's training split (its test split is never changed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_class_fractions: Option<Vec<f64>>,
    /// Channels of folder domains' images (1: luma, 3: RGB); unset: 3 if the source folder holds
    /// colour images, else 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<usize>,
    /// Folder domains: skip undecodable images with a warning instead of stopping.
    pub skip_bad_images: bool,
    /// Data directory; unset means `$DTL_DATA_DIR`, else the per-user cache. The written config
    /// holds the directory actually used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Device: `cpu`, `cuda` / `cuda:N` (feature `cuda`), `metal` (feature `metal`).
    pub device: String,
    /// Initial weights: a checkpoint written by `dtl train` whose architecture and classes match
    /// the run's (for example a source model for `adda` with `source-epochs = 0`), as a path or as
    /// `hf:ORG/NAME[@REVISION][/FILE]` on the Hugging Face hub ([`dtl_backbones::hub`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
    /// Published weights for the backbone (torchvision's or timm's ImageNet checkpoints, e.g.
    /// `hf:timm/resnet18.a1_in1k`, or a path): the backbone starts from them, the head from the
    /// seed unless its classes match. Exclusive with `init_from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// How folder images of another size become the canvas: `stretch` or `crop` (torchvision's
    /// resize-and-centre-crop); unset: `crop` for the ImageNet backbones, else `stretch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<String>,
    /// Augment training batches (random resized crop, horizontal flip; [`dtl_data::augment`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// After training, importance-weighted validation (Sugiyama et al. 2007) of the model on the
    /// source test split, with weights from this estimator (`ratio`, `kmm`, `kliep`, on pixels)
    /// against the target's training images: a label-free estimate of the target loss and error
    /// for choosing settings, written to `metrics.json` as `iwcv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iwcv: Option<String>,
    /// Update rule and its constants.
    pub optimizer: OptimizerKind,
    /// The strategy and its own settings.
    pub strategy: StrategyConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        let optim = OptimSettings::default();
        Self {
            source: "mnist".into(),
            target: "usps".into(),
            backbone: "lenet".into(),
            epochs: 10,
            batch_size: 128,
            lr: optim.lr,
            weight_decay: optim.weight_decay,
            seed: 0,
            image_size: 28,
            placement: "fill".into(),
            source_train_size: None,
            target_train_size: None,
            source_class_fractions: None,
            target_class_fractions: None,
            channels: None,
            skip_bad_images: false,
            data_dir: None,
            device: "cpu".into(),
            init_from: None,
            pretrained: None,
            fit: None,
            augment: None,
            iwcv: None,
            optimizer: optim.kind,
            strategy: StrategyConfig::SourceOnly,
        }
    }
}

/// Serialises an optional size cap as a number or `"all"`, so that the written config names it.
mod size_cap {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n as u64),
            None => s.serialize_str("all"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Cap {
            N(usize),
            S(String),
        }
        match Cap::deserialize(d)? {
            Cap::N(n) => Ok(Some(n)),
            Cap::S(s) if s == "all" => Ok(None),
            Cap::S(s) => Err(serde::de::Error::custom(format!(
                "`{s}` is neither a number nor \"all\""
            ))),
        }
    }
}

/// A run's configuration after validation.
struct Validated {
    source: DomainSource,
    target: DomainSource,
    backbone: BackboneKind,
    placement: Placement,
    fit: Fit,
    device: Device,
    iwcv: Option<dtl_strategies::weighting::Estimator>,
}

impl RunConfig {
    /// Reads a config from a TOML file; missing fields take their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        toml::from_str(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    fn validate(&self) -> Result<Validated> {
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
        positive("epochs", self.epochs)?;
        positive("batch-size", self.batch_size)?;
        positive("source-train-size", self.source_train_size.unwrap_or(1))?;
        positive("target-train-size", self.target_train_size.unwrap_or(1))?;
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::Config {
                field: "lr".into(),
                message: format!("{} is not a positive number", self.lr),
            });
        }
        self.optimizer.validate()?;
        if self.pretrained.is_some() && self.init_from.is_some() {
            return Err(Error::Config {
                field: "pretrained".into(),
                message: "give either pretrained (published weights for the backbone) or init-from (a checkpoint written by dtl train), not both".into(),
            });
        }
        let backbone: BackboneKind = self.backbone.parse()?;
        let fit = match &self.fit {
            Some(f) => f.parse().map_err(|e| field_err("fit", e))?,
            None if backbone.is_imagenet() => Fit::Crop,
            None => Fit::Stretch,
        };
        Ok(Validated {
            source: self.source.parse().map_err(|e| field_err("source", e))?,
            target: self.target.parse().map_err(|e| field_err("target", e))?,
            backbone,
            fit,
            placement: self.placement.parse().map_err(|e| field_err("placement", e))?,
            device: parse_device(&self.device)?,
            iwcv: self
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

/// Checks that `out` can receive a run: refuses a directory holding a previous run's files unless
/// `overwrite`.
pub fn prepare_output(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() && !out.is_dir() {
        return Err(Error::Output {
            path: out.to_path_buf(),
            message: "exists and is not a directory".into(),
        });
    }
    let previous: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if !previous.is_empty() && !overwrite {
        return Err(Error::Output {
            path: out.to_path_buf(),
            message: format!(
                "holds a previous run ({}); choose another --out or pass --overwrite",
                previous.join(", ")
            ),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e,
    })
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    dtl_core::write_atomic(path, bytes).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

/// Runs `cfg` and writes its results into `out`.
pub fn run(cfg: &RunConfig, out: &Path, opts: RunOptions) -> Result<Metrics> {
    let v = cfg.validate()?;
    prepare_output(out, opts.overwrite)?;
    let data_dir = DataDir::resolve(cfg.data_dir.as_deref())?;
    let mut written = cfg.clone();
    written.data_dir = Some(data_dir.path().to_path_buf());
    write_file(&out.join("config.toml"), written.to_toml().as_bytes())?;

    let load = |src: &DomainSource,
                cap: Option<usize>,
                salt: u64,
                channels: Option<usize>,
                class_fractions: Option<Vec<f64>>| {
        Domain::load_source(
            src,
            Some(&data_dir),
            &LoadOptions {
                image_size: cfg.image_size,
                placement: v.placement,
                train_size: cap,
                seed: cfg.seed.wrapping_add(salt),
                channels,
                skip_bad_images: cfg.skip_bad_images,
                fit: v.fit,
                class_fractions,
                ..Default::default()
            },
        )
        .map_err(Error::from)
    };
    let source = load(
        &v.source,
        cfg.source_train_size,
        0,
        cfg.channels,
        cfg.source_class_fractions.clone(),
    )?;
    let target = if v.target == v.source
        && cfg.target_train_size == cfg.source_train_size
        && cfg.target_class_fractions == cfg.source_class_fractions
    {
        source.clone()
    } else {
        // The target is read at the source's canvas, channels included.
        let target = load(
            &v.target,
            cfg.target_train_size,
            1,
            Some(source.train.image_shape().0),
            cfg.target_class_fractions.clone(),
        )?;
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

    let spec = ModelSpec::new(v.backbone, source.train.image_shape(), source.class_names.clone())
        .with_adapt_width(cfg.strategy.adapt_width());
    let model = Classifier::new(spec, cfg.seed, &v.device)?;
    if let Some(spec) = &cfg.pretrained {
        let path = spec.parse::<dtl_backbones::hub::Pretrained>()?.resolve()?;
        let tensors = dtl_backbones::read_safetensors(&path, &v.device)?;
        let report = model.load_pretrained(&tensors, &path)?;
        tracing::info!(
            "backbone from {spec} ({} tensors; head {})",
            report.loaded,
            if report.head { "from the checkpoint" } else { "new" }
        );
    }
    // A path, or hf:ORG/NAME[@REVISION][/FILE] from the hub (cache first).
    let init_from = cfg
        .init_from
        .as_ref()
        .map(|p| {
            p.to_string_lossy()
                .parse::<dtl_backbones::hub::Pretrained>()
                .and_then(|src| src.resolve())
        })
        .transpose()?;
    match (&init_from, &cfg.strategy) {
        (Some(path), StrategyConfig::Finetune(ft)) => {
            // Sequential transfer: the first n layers from the checkpoint, the rest from the seed.
            let (init, _) = Classifier::load(path, &v.device)?;
            let copied = model.transfer_from(&init, ft.transfer_layers, path)?;
            tracing::info!("copied [{}] from {}", copied.join(", "), path.display());
        }
        (None, StrategyConfig::Finetune(_)) => {
            return Err(Error::Config {
                field: "init-from".into(),
                message: "finetune copies layers from a checkpoint: give --init-from FILE".into(),
            });
        }
        (Some(path), _) => {
            let (init, _) = Classifier::load(path, &v.device)?;
            if init.spec() != model.spec() {
                return Err(Error::Config {
                    field: "init-from".into(),
                    message: format!(
                        "{} holds a {:?}, the run needs a {:?}",
                        path.display(),
                        init.spec(),
                        model.spec()
                    ),
                });
            }
            let tensors: std::collections::HashMap<String, candle_core::Tensor> =
                dtl_core::params::snapshot(init.varmap())?.into_iter().collect();
            model.load_tensors(&tensors, path)?;
            tracing::info!("initialised from {}", path.display());
        }
        (None, _) => {}
    }
    let optim = OptimSettings {
        kind: cfg.optimizer,
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
    };
    let mut strategy = dtl_strategies::build_with_data(
        &cfg.strategy,
        model,
        &optim,
        cfg.seed,
        &source.train,
        &target.train,
    )?;
    let loop_cfg = LoopConfig {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        progress: opts.progress,
        augment: cfg.augment,
    };
    tracing::info!(
        "training {} on {} ({} images) -> {} ({} images), {} epochs",
        cfg.strategy.name(),
        v.source,
        source.train.len(),
        v.target,
        target.train.len(),
        cfg.epochs
    );
    let started = Instant::now();
    let report = dtl_strategies::train(
        strategy.as_mut(),
        &source.train,
        Some(&target.train),
        &loop_cfg,
        &v.device,
    )?;
    tracing::info!("trained in {:.1} s", started.elapsed().as_secs_f64());

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
                &target.train,
                estimator,
                5000,
                cfg.seed,
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

    strategy.model().save(
        &out.join("model.safetensors"),
        &[
            ("dtl.strategy", cfg.strategy.name().to_string()),
            ("dtl.source", v.source.to_string()),
            ("dtl.target", v.target.to_string()),
            ("dtl.placement", v.placement.as_str().to_string()),
            ("dtl.fit", v.fit.as_str().to_string()),
            ("dtl.seed", cfg.seed.to_string()),
        ],
    )?;

    let mut data = BTreeMap::new();
    // One domain on both sides (a prior shift made with class fractions) keeps both records.
    let (source_key, target_key) = if v.source == v.target {
        (format!("{} (source)", v.source), format!("{} (target)", v.target))
    } else {
        (v.source.to_string(), v.target.to_string())
    };
    data.insert(source_key, DataRecord::of(&source));
    data.insert(target_key, DataRecord::of(&target));
    let metrics = Metrics {
        dtl_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: crate::git_rev(),
        strategy: cfg.strategy.name().into(),
        source: v.source.to_string(),
        target: v.target.to_string(),
        backbone: v.backbone.as_str().into(),
        seed: cfg.seed,
        epochs: cfg.epochs,
        train_seconds: report.seconds,
        seconds_per_epoch: report.seconds / cfg.epochs as f64,
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
            device: cfg.device.clone(),
        },
    };
    let json = serde_json::to_string_pretty(&metrics).expect("metrics always serialise");
    write_file(&out.join("metrics.json"), json.as_bytes())?;
    Ok(metrics)
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
