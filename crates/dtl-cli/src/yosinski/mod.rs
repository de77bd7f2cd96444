//! The layer-transferability experiment of Yosinski, Clune, Bengio & Lipson (2014, "How
//! transferable are features in deep neural networks?") on digits.
//!
//! The ten digit classes are split into two 5-class tasks A and B. A base network is trained on
//! each (`baseA`, `baseB`); then, for every n, four networks are trained on B with their first n
//! layers copied from a base network: `BnB` (from baseB, frozen), `BnB+` (from baseB, fine-tuned),
//! `AnB` (from baseA, frozen), `AnB+` (from baseA, fine-tuned), plus `RnB`, a control whose first n
//! layers are random and frozen. Layers are [`ConvNet8`](dtl_backbones::ConvNet8)'s: `conv1` ..
//! `conv5`, `fc6`, `fc7`, then the 5-way head, which is always new.
//!
//! Two splits: `random` (the digits shuffled by the seed, first five to A, the rest to B, both from
//! the same data set: similar tasks, as the paper's random ImageNet halves) and `dissimilar`
//! (A = digits 0-4 of MNIST, B = digits 5-9 of another data set: other classes *and* another
//! domain, the paper's man-made / natural split carried to digits). Every number is top-1 accuracy
//! on B's (or A's, for baseA) test split after the last epoch.

pub mod figure;

use dtl_core::seed::Stream;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use dtl_backbones::{BackboneKind, Classifier, ModelSpec};
use dtl_data::{DataDir, Domain, DomainId, LoadOptions};
use dtl_strategies::{
    evaluate, train, BuildContext, FinetuneConfig, LoopConfig, OptimSettings, StrategyConfig,
    TransferStrategy,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How the classes are divided between tasks A and B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Digits shuffled by the seed, five to A and five to B, one data set.
    Random,
    /// A = digits 0-4 of MNIST, B = digits 5-9 of the other data set.
    Dissimilar,
}

impl Split {
    /// Its name in files.
    pub fn as_str(&self) -> &'static str {
        match self {
            Split::Random => "random",
            Split::Dissimilar => "dissimilar",
        }
    }
}

/// The settings of a sweep; written as `config.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// Where tasks come from: `quick` (bundled data: `mnist-small`, and `optdigits` for the
    /// dissimilar B) or `full` (MNIST, and USPS for the dissimilar B, from the data directory).
    pub data: String,
    /// Data directory for `full`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// The splits to run.
    pub splits: Vec<Split>,
    /// Seeds (network initialisation, batch order and the random split).
    pub seeds: Vec<u64>,
    /// Numbers of transferred layers.
    pub ns: Vec<usize>,
    /// Epochs of every training.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Learning rate (SGD, momentum 0.9, weight decay 5e-4).
    pub lr: f64,
    /// Canvas side.
    pub image_size: usize,
    /// Cap on B's training images (the few-labels setting); `None` for all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_train_size: Option<usize>,
    /// Learning-rate multiplier of copied layers in the fine-tuned settings.
    pub transferred_lr_mult: f64,
    /// Train the random-frozen-layers control `RnB`.
    pub random_control: bool,
}

impl Default for SweepConfig {
    /// The quick preset: bundled data at 16x16, both splits, seed 0, n = 1..7, 6 epochs.
    fn default() -> Self {
        Self {
            data: "quick".into(),
            data_dir: None,
            splits: vec![Split::Random, Split::Dissimilar],
            seeds: vec![0],
            ns: (1..=7).collect(),
            epochs: 6,
            batch_size: 64,
            lr: 0.02,
            image_size: 16,
            b_train_size: None,
            transferred_lr_mult: 1.0,
            random_control: true,
        }
    }
}

impl SweepConfig {
    /// The full preset: MNIST (and USPS) from the data directory at 28x28, seeds 0-2, 2 epochs.
    ///
    /// Two epochs because a sweep is 37 trainings per split and seed and the random split's B is
    /// 30,000 images: about 75 minutes per seed on 2 CPU cores, where baseB is at 0.99 after two
    /// epochs (docs/yosinski.md).
    pub fn full(data_dir: Option<PathBuf>) -> Self {
        Self {
            data: "full".into(),
            data_dir,
            seeds: vec![0, 1, 2],
            epochs: 2,
            batch_size: 128,
            lr: 0.01,
            image_size: 28,
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| {
            Err(Error::Config {
                field: f.into(),
                message: m,
            })
        };
        if self.data != "quick" && self.data != "full" {
            return bad("data", format!("`{}` is neither quick nor full", self.data));
        }
        if self.splits.is_empty() || self.seeds.is_empty() {
            return bad("splits", "a sweep needs at least one split and one seed".into());
        }
        if let Some(n) = self.ns.iter().find(|&&n| n == 0 || n > 7) {
            return bad("ns", format!("{n} is not a number of transferable layers (1..7)"));
        }
        if self.epochs == 0 || self.batch_size == 0 {
            return bad("epochs", "epochs and batch size must be at least 1".into());
        }
        Ok(())
    }
}

/// One trained network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// `random` or `dissimilar`.
    pub split: String,
    /// `baseA`, `baseB`, `BnB`, `BnB+`, `AnB`, `AnB+` or `RnB`.
    pub setting: String,
    /// Layers transferred (0 for the base networks).
    pub n: usize,
    /// Seed.
    pub seed: u64,
    /// Top-1 accuracy on the test split of its task.
    pub top1: f64,
}

/// Mean and sample standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one value).
    pub std: f64,
}

impl Stat {
    fn of(v: &[f64]) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let std = if v.len() > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, std })
    }
}

/// Per n: each setting's mean and the paper's three differences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerSummary {
    /// Layers transferred.
    pub n: usize,
    /// Mean and std per setting.
    pub settings: BTreeMap<String, Stat>,
    /// `baseB - BnB`: fragile co-adaptation of layers n and n+1.
    pub co_adaptation_drop: Option<f64>,
    /// `BnB - AnB`: how specific to A the first n layers are.
    pub specificity_drop: Option<f64>,
    /// `AnB+ - baseB`: what transfer plus fine-tuning gains.
    pub fine_tuning_gain: Option<f64>,
}

/// The summary of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitSummary {
    /// The split.
    pub split: String,
    /// Classes of A and B per seed, and the data sets used.
    pub tasks: Vec<String>,
    /// baseA on A's test split.
    pub base_a: Stat,
    /// baseB on B's test split.
    pub base_b: Stat,
    /// Per n.
    pub layers: Vec<LayerSummary>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// dtl's version.
    pub dtl_version: String,
    /// Git revision of the sources, when known.
    pub git_rev: Option<String>,
    /// Host.
    pub host: String,
    /// Seconds the sweep took.
    pub seconds: f64,
    /// Per split.
    pub splits: Vec<SplitSummary>,
}

/// Tasks A and B of `split` for `seed`: the two domains restricted to their classes, and a
/// description.
fn tasks(
    cfg: &SweepConfig,
    split: Split,
    seed: u64,
    dir: Option<&DataDir>,
) -> Result<(Domain, Domain, String)> {
    let full = cfg.data == "full";
    let opts = LoadOptions {
        image_size: cfg.image_size,
        seed,
        ..Default::default()
    };
    let mnist = if full {
        DomainId::Mnist
    } else {
        DomainId::MnistSmall
    };
    let other = if full { DomainId::Usps } else { DomainId::Optdigits };
    let (a_dom, b_dom, a_cls, b_cls): (DomainId, DomainId, Vec<u32>, Vec<u32>) = match split {
        Split::Random => {
            let mut digits: Vec<u32> = (0..10).collect();
            digits.shuffle(&mut ChaCha8Rng::seed_from_u64(Stream::ClassSplit.seed(seed)));
            let (mut a, mut b) = (digits[..5].to_vec(), digits[5..].to_vec());
            a.sort_unstable();
            b.sort_unstable();
            (mnist, mnist, a, b)
        }
        Split::Dissimilar => (mnist, other, (0..5).collect(), (5..10).collect()),
    };
    let a_full = Domain::load(a_dom, dir, &opts)?;
    let b_full = if b_dom == a_dom {
        a_full.clone()
    } else {
        Domain::load(b_dom, dir, &opts)?
    };
    let a = a_full.with_classes(&a_cls)?;
    let mut b = b_full.with_classes(&b_cls)?;
    if let Some(cap) = cfg.b_train_size {
        if cap < b.train.len() {
            let mut idx: Vec<usize> = (0..b.train.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(Stream::TaskImages.seed(seed)));
            idx.truncate(cap);
            b.train = b.train.subset(&idx)?;
        }
    }
    let desc = format!(
        "seed {seed}: A = {a_dom} {a_cls:?} ({} train, {} test), B = {b_dom} {b_cls:?} ({} train, {} test)",
        a.train.len(),
        a.test.len(),
        b.train.len(),
        b.test.len()
    );
    Ok((a, b, desc))
}

fn spec(cfg: &SweepConfig, classes: &[String]) -> ModelSpec {
    ModelSpec {
        backbone: BackboneKind::ConvNet8,
        input_shape: (1, cfg.image_size, cfg.image_size),
        class_names: classes.to_vec(),
        adapt_width: None,
        normalize: None,
    }
}

/// Trains a network on `task` from `seed`, its first `n` layers copied from `from` (frozen or
/// fine-tuned: the `finetune` strategy) when given, else `source-only`; returns the trained
/// strategy and its test accuracy.
fn train_net(
    cfg: &SweepConfig,
    task: &Domain,
    seed: u64,
    from: Option<(&Classifier, usize, bool)>,
    dev: &Device,
) -> Result<(Box<dyn TransferStrategy>, f64)> {
    let model = Classifier::new(spec(cfg, &task.class_names), seed, dev)?;
    let optim = OptimSettings {
        lr: cfg.lr,
        ..Default::default()
    };
    let strategy = match from {
        Some((_, n, freeze)) => StrategyConfig::Finetune(FinetuneConfig {
            transfer_layers: n,
            freeze,
            transferred_lr_mult: cfg.transferred_lr_mult,
        }),
        None => StrategyConfig::SourceOnly(Default::default()),
    };
    let mut ctx = BuildContext::new(model, &optim, seed);
    if let Some((source, ..)) = from {
        ctx = ctx.with_init(source, Path::new("<base network>"));
    }
    let mut strategy = strategy.build(ctx)?;
    let loop_cfg = LoopConfig {
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        seed,
        progress: false,
        augment: None,
    };
    train(strategy.as_mut(), &task.train, None, &loop_cfg, dev)?;
    let e = evaluate(|xs| strategy.predict(xs), &task.test, 500, dev)?;
    Ok((strategy, e.accuracy))
}

/// Runs the sweep, calling `progress` after every trained network, and returns every network's
/// row and the summary (without writing anything).
pub fn sweep(cfg: &SweepConfig, progress: impl FnMut(&RunRow)) -> Result<(Vec<RunRow>, Summary)> {
    sweep_resuming(cfg, &[], progress)
}

/// [`sweep`] that takes the networks in `previous` (rows of an interrupted sweep of the same
/// config) as done: their rows are reused, not retrained. A split and seed with every row done
/// is skipped whole; otherwise its two base networks are trained again (the later networks copy
/// their layers; training repeats exactly from the seed, so the result is the uninterrupted
/// sweep's).
pub fn sweep_resuming(
    cfg: &SweepConfig,
    previous: &[RunRow],
    mut progress: impl FnMut(&RunRow),
) -> Result<(Vec<RunRow>, Summary)> {
    cfg.validate()?;
    let started = Instant::now();
    let dev = Device::Cpu;
    let dir = match cfg.data.as_str() {
        "full" => Some(DataDir::resolve(cfg.data_dir.as_deref())?),
        _ => None,
    };
    let mut rows = Vec::new();
    let mut summaries = Vec::new();
    for &split in &cfg.splits {
        let mut descs = Vec::new();
        let first = rows.len();
        for &seed in &cfg.seeds {
            let have = |setting: &str, n: usize| {
                previous
                    .iter()
                    .find(|r| r.split == split.as_str() && r.seed == seed && r.setting == setting && r.n == n)
                    .map(|r| r.top1)
            };
            let names: &[&str] = if cfg.random_control {
                &["BnB", "BnB+", "AnB", "AnB+", "RnB"]
            } else {
                &["BnB", "BnB+", "AnB", "AnB+"]
            };
            let all_done = have("baseA", 0).is_some()
                && have("baseB", 0).is_some()
                && cfg.ns.iter().all(|&n| names.iter().all(|s| have(s, n).is_some()));
            let (a, b, desc) = tasks(cfg, split, seed, dir.as_ref())?;
            tracing::info!("{} split, {desc}", split.as_str());
            descs.push(desc);
            let mut push = |setting: &str, n: usize, top1: f64| {
                let row = RunRow {
                    split: split.as_str().into(),
                    setting: setting.into(),
                    n,
                    seed,
                    top1,
                };
                progress(&row);
                rows.push(row);
            };
            if all_done {
                tracing::info!(
                    "{} split, seed {seed}: every network done before, reused",
                    split.as_str()
                );
                push("baseA", 0, have("baseA", 0).expect("checked"));
                push("baseB", 0, have("baseB", 0).expect("checked"));
                for &n in &cfg.ns {
                    for s in names {
                        push(s, n, have(s, n).expect("checked"));
                    }
                }
                continue;
            }
            let (base_a, acc) = train_net(cfg, &a, seed, None, &dev)?;
            push("baseA", 0, acc);
            // baseB from another initialisation than the B networks' fresh layers.
            let (base_b, acc) = train_net(cfg, &b, Stream::NetworkB.seed(seed), None, &dev)?;
            push("baseB", 0, acc);
            let random = Classifier::new(spec(cfg, &b.class_names), Stream::RandomLayers.seed(seed), &dev)?;
            for &n in &cfg.ns {
                let mut settings = vec![
                    ("BnB", base_b.model(), true),
                    ("BnB+", base_b.model(), false),
                    ("AnB", base_a.model(), true),
                    ("AnB+", base_a.model(), false),
                ];
                if cfg.random_control {
                    settings.push(("RnB", &random, true));
                }
                for (name, from, freeze) in settings {
                    if let Some(acc) = have(name, n) {
                        push(name, n, acc);
                        continue;
                    }
                    let (_, acc) = train_net(cfg, &b, seed, Some((from, n, freeze)), &dev)?;
                    push(name, n, acc);
                }
            }
        }
        summaries.push(summarise(split, descs, &rows[first..]));
    }
    let summary = Summary {
        dtl_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: crate::git_rev(),
        host: format!(
            "{} {} ({} CPUs)",
            std::env::consts::OS,
            std::env::consts::ARCH,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        ),
        seconds: started.elapsed().as_secs_f64(),
        splits: summaries,
    };
    Ok((rows, summary))
}

fn summarise(split: Split, tasks: Vec<String>, rows: &[RunRow]) -> SplitSummary {
    let values = |setting: &str, n: usize| -> Vec<f64> {
        rows.iter()
            .filter(|r| r.setting == setting && r.n == n)
            .map(|r| r.top1)
            .collect()
    };
    let zero = Stat { mean: 0.0, std: 0.0 };
    let base_a = Stat::of(&values("baseA", 0)).unwrap_or(zero);
    let base_b = Stat::of(&values("baseB", 0)).unwrap_or(zero);
    let mut ns: Vec<usize> = rows.iter().filter(|r| r.n > 0).map(|r| r.n).collect();
    ns.sort_unstable();
    ns.dedup();
    let layers = ns
        .into_iter()
        .map(|n| {
            let settings: BTreeMap<String, Stat> = ["BnB", "BnB+", "AnB", "AnB+", "RnB"]
                .iter()
                .filter_map(|s| Stat::of(&values(s, n)).map(|st| (s.to_string(), st)))
                .collect();
            let m = |s: &str| settings.get(s).map(|st| st.mean);
            LayerSummary {
                n,
                co_adaptation_drop: m("BnB").map(|v| base_b.mean - v),
                specificity_drop: m("BnB").zip(m("AnB")).map(|(b, a)| b - a),
                fine_tuning_gain: m("AnB+").map(|v| v - base_b.mean),
                settings,
            }
        })
        .collect();
    SplitSummary {
        split: split.as_str().into(),
        tasks,
        base_a,
        base_b,
        layers,
    }
}

/// `runs.csv`: `split,setting,n,seed,top1`, every accuracy in full (the shortest decimal that
/// reads back as the same f64), so that a resumed sweep's summary is the uninterrupted one's bit
/// for bit.
pub fn runs_csv(rows: &[RunRow]) -> String {
    let mut s = String::from("split,setting,n,seed,top1\n");
    for r in rows {
        let _ = writeln!(s, "{},{},{},{},{}", r.split, r.setting, r.n, r.seed, r.top1);
    }
    s
}

/// The settings of a sweep's rows besides the base networks.
const SETTINGS: [&str; 5] = ["BnB", "BnB+", "AnB", "AnB+", "RnB"];

/// What [`reproduce_in`] does with a sweep already in its output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse to write into a directory that holds a sweep.
    Refuse,
    /// Discard the sweep it holds and run a new one.
    Overwrite,
    /// Continue it ([`sweep_resuming`]).
    Resume,
}

/// Files of a sweep in its output directory.
const SWEEP_FILES: [&str; 5] = [
    "config.toml",
    "runs.csv",
    "summary.json",
    "figure.svg",
    "figure.png",
];

/// Runs the sweep and writes `config.toml`, `runs.csv` (as it goes), `summary.json`,
/// `figure.svg` and `figure.png` into `out`, which must not hold a sweep.
pub fn reproduce(cfg: &SweepConfig, out: &Path) -> Result<Summary> {
    reproduce_in(cfg, out, Existing::Refuse)
}

/// [`reproduce`]; with `resume`, an interrupted sweep in `out` (its `config.toml` must equal
/// `cfg`) continues: the networks in its `runs.csv` are not trained again ([`sweep_resuming`]).
pub fn reproduce_resuming(cfg: &SweepConfig, out: &Path, resume: bool) -> Result<Summary> {
    reproduce_in(
        cfg,
        out,
        if resume {
            Existing::Resume
        } else {
            Existing::Refuse
        },
    )
}

/// [`reproduce`], doing with a sweep already in `out` what `existing` says. On resume the rows of
/// its `runs.csv` are checked against `cfg` (each split, setting, layer count and seed one of the
/// config's, once) before they are reused; `runs.csv` keeps every finished row however often the
/// sweep is interrupted.
pub fn reproduce_in(cfg: &SweepConfig, out: &Path, existing: Existing) -> Result<Summary> {
    cfg.validate()?;
    let resume = existing == Existing::Resume;
    let held: Vec<&str> = SWEEP_FILES
        .iter()
        .copied()
        .filter(|f| out.join(f).exists())
        .collect();
    if !held.is_empty() {
        match existing {
            Existing::Refuse => {
                return Err(Error::Output {
                    path: out.to_path_buf(),
                    message: format!(
                        "holds a sweep ({}); continue it with --resume, replace it with --overwrite, or choose another --out",
                        held.join(", ")
                    ),
                })
            }
            Existing::Overwrite => {
                for f in &held {
                    let path = out.join(f);
                    std::fs::remove_file(&path).map_err(|e| Error::Io { path, source: e })?;
                }
            }
            Existing::Resume => {}
        }
    }
    let previous = if resume {
        let read = |name: &str| -> Result<Option<String>> {
            let path = out.join(name);
            match std::fs::read_to_string(&path) {
                Ok(t) => Ok(Some(t)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::Io { path, source: e }),
            }
        };
        let config = read("config.toml")?.ok_or_else(|| Error::Config {
            field: "resume".into(),
            message: format!("{} holds no config.toml: nothing to resume", out.display()),
        })?;
        let before: SweepConfig = toml::from_str(&config).map_err(|e| Error::Config {
            field: out.join("config.toml").display().to_string(),
            message: e.to_string(),
        })?;
        if &before != cfg {
            return Err(Error::Config {
                field: "resume".into(),
                message: format!(
                    "{} was started with another config; resume it with the same flags (or --config {})",
                    out.display(),
                    out.join("config.toml").display()
                ),
            });
        }
        match read("runs.csv")? {
            Some(text) => {
                let rows = parse_runs_csv(&text, &out.join("runs.csv"))?;
                check_rows_fit(&rows, cfg, &out.join("runs.csv"))?;
                rows
            }
            None => Vec::new(),
        }
    } else {
        Vec::new()
    };
    if resume {
        tracing::info!(
            "resuming {}: {} networks done before",
            out.display(),
            previous.len()
        );
    }
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        dtl_core::write_atomic(&path, bytes).map_err(|e| Error::Io { path, source: e })
    };
    write(
        "config.toml",
        toml::to_string_pretty(cfg)
            .expect("a sweep config serialises")
            .as_bytes(),
    )?;
    let mut done = Vec::new();
    let (rows, summary) = sweep_resuming(cfg, &previous, |row| {
        tracing::info!(
            "{} {} n={} seed {}: top-1 {:.4}",
            row.split,
            row.setting,
            row.n,
            row.seed,
            row.top1
        );
        done.push(row.clone());
        // Partial results survive an interrupted sweep, the earlier run's rows not reached yet
        // included.
        let same = |a: &RunRow, b: &RunRow| {
            (&a.split, &a.setting, a.n, a.seed) == (&b.split, &b.setting, b.n, b.seed)
        };
        let mut rows = done.clone();
        rows.extend(
            previous
                .iter()
                .filter(|p| !done.iter().any(|d| same(d, p)))
                .cloned(),
        );
        let _ = dtl_core::write_atomic(&out.join("runs.csv"), runs_csv(&rows).as_bytes());
    })?;
    write_results(out, &rows, &summary)?;
    Ok(summary)
}

/// Writes `runs.csv`, `summary.json` and the figure of a finished sweep into `out`.
fn write_results(out: &Path, rows: &[RunRow], summary: &Summary) -> Result<()> {
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        dtl_core::write_atomic(&path, bytes).map_err(|e| Error::Io { path, source: e })
    };
    write("runs.csv", runs_csv(rows).as_bytes())?;
    write(
        "summary.json",
        serde_json::to_string_pretty(summary)
            .expect("summary serialises")
            .as_bytes(),
    )?;
    write_figures(out, rows, summary)
}

/// The `runs.csv` rows and `summary.json` of a finished sweep in `dir`.
fn read_finished(dir: &Path) -> Result<(Vec<RunRow>, Summary)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| Error::Io { path, source: e })
    };
    let rows = parse_runs_csv(&read("runs.csv")?, &dir.join("runs.csv"))?;
    let summary: Summary = serde_json::from_str(&read("summary.json")?).map_err(|e| Error::Config {
        field: dir.join("summary.json").display().to_string(),
        message: e.to_string(),
    })?;
    Ok((rows, summary))
}

fn write_figures(out: &Path, rows: &[RunRow], summary: &Summary) -> Result<()> {
    let svg = figure::yosinski_svg(rows, summary);
    let write = |name: &str, bytes: &[u8]| {
        let path = out.join(name);
        dtl_core::write_atomic(&path, bytes).map_err(|e| Error::Io { path, source: e })
    };
    write("figure.svg", svg.as_bytes())?;
    let png = crate::figure::svg_to_png(&svg, 2.0).map_err(|m| Error::Config {
        field: "figure".into(),
        message: m,
    })?;
    write("figure.png", &png)
}

/// Parses `runs.csv` as [`runs_csv`] writes it; `path` names the file in errors.
pub fn parse_runs_csv(text: &str, path: &Path) -> Result<Vec<RunRow>> {
    let bad = |line: usize, message: String| Error::Config {
        field: format!("{}:{line}", path.display()),
        message,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, "split,setting,n,seed,top1")) => {}
        other => {
            return Err(bad(
                1,
                format!(
                    "header `{}` is not `split,setting,n,seed,top1`",
                    other.map_or("", |(_, l)| l)
                ),
            ))
        }
    }
    lines
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != 5 {
                return Err(bad(i + 1, format!("{} fields, expected 5", f.len())));
            }
            let num = |k: usize, what: &str| {
                f[k].trim()
                    .parse::<f64>()
                    .map_err(|_| bad(i + 1, format!("{what} `{}` is not a number", f[k])))
            };
            let n = f[2]
                .trim()
                .parse()
                .map_err(|_| bad(i + 1, format!("n `{}` is not a layer count", f[2])))?;
            let seed = f[3]
                .trim()
                .parse()
                .map_err(|_| bad(i + 1, format!("seed `{}` is not a seed", f[3])))?;
            let top1 = num(4, "top1")?;
            if !(0.0..=1.0).contains(&top1) {
                return Err(bad(i + 1, format!("top1 {top1} is not an accuracy in [0, 1]")));
            }
            let split = f[0].trim();
            if !["random", "dissimilar"].contains(&split) {
                return Err(bad(
                    i + 1,
                    format!("split `{split}` is neither random nor dissimilar"),
                ));
            }
            let setting = f[1].trim();
            match setting {
                "baseA" | "baseB" if n != 0 => {
                    return Err(bad(i + 1, format!("{setting} has n = {n}: base networks have 0")))
                }
                "baseA" | "baseB" => {}
                s if SETTINGS.contains(&s) && (1..=7).contains(&n) => {}
                s if SETTINGS.contains(&s) => {
                    return Err(bad(
                        i + 1,
                        format!("n = {n} is not a number of transferable layers (1..7)"),
                    ))
                }
                s => {
                    return Err(bad(
                        i + 1,
                        format!(
                            "setting `{s}` is not one of baseA, baseB, {}",
                            SETTINGS.join(", ")
                        ),
                    ))
                }
            }
            Ok(RunRow {
                split: split.into(),
                setting: setting.into(),
                n,
                seed,
                top1,
            })
        })
        .collect::<Result<Vec<RunRow>>>()
        .and_then(|rows| {
            for (i, r) in rows.iter().enumerate() {
                if rows[..i]
                    .iter()
                    .any(|q| (&q.split, &q.setting, q.n, q.seed) == (&r.split, &r.setting, r.n, r.seed))
                {
                    return Err(Error::Config {
                        field: path.display().to_string(),
                        message: format!(
                            "{} {} n={} seed {} appears twice",
                            r.split, r.setting, r.n, r.seed
                        ),
                    });
                }
            }
            Ok(rows)
        })
}

/// Checks that every row of an interrupted sweep's `runs.csv` belongs to `cfg`.
fn check_rows_fit(rows: &[RunRow], cfg: &SweepConfig, path: &Path) -> Result<()> {
    for r in rows {
        let fits = cfg.splits.iter().any(|s| s.as_str() == r.split)
            && cfg.seeds.contains(&r.seed)
            && (r.n == 0 || cfg.ns.contains(&r.n))
            && (cfg.random_control || r.setting != "RnB");
        if !fits {
            return Err(Error::Config {
                field: path.display().to_string(),
                message: format!(
                    "{} {} n={} seed {} is not a network of this sweep's config",
                    r.split, r.setting, r.n, r.seed
                ),
            });
        }
    }
    Ok(())
}

/// Merges finished sweeps of disjoint seeds (run separately, on other machines or in other
/// sessions) into one in `out`: their rows together in `runs.csv`, a `summary.json` whose means
/// and standard deviations cover every seed (seconds added up, the host of the first, every
/// distinct revision joined by `+`), and the figure. Each directory needs `runs.csv` and
/// `summary.json`; a seed that appears in two of them is an error.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Summary> {
    let mut rows: Vec<RunRow> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    for dir in dirs {
        let (these, summary) = read_finished(dir)?;
        if let Some(r) = these
            .iter()
            .find(|r| rows.iter().any(|o| o.seed == r.seed && o.split == r.split))
        {
            return Err(Error::Config {
                field: "merge".into(),
                message: format!(
                    "seed {} of the {} split is in more than one directory ({})",
                    r.seed,
                    r.split,
                    dir.display()
                ),
            });
        }
        rows.extend(these);
        summaries.push(summary);
    }
    let first = summaries.first().ok_or_else(|| Error::Config {
        field: "merge".into(),
        message: "no sweep directories given".into(),
    })?;
    let mut splits = Vec::new();
    for split in [Split::Random, Split::Dissimilar] {
        let of_split: Vec<RunRow> = rows
            .iter()
            .filter(|r| r.split == split.as_str())
            .cloned()
            .collect();
        if of_split.is_empty() {
            continue;
        }
        let tasks: Vec<String> = summaries
            .iter()
            .flat_map(|s| s.splits.iter().filter(|x| x.split == split.as_str()))
            .flat_map(|x| x.tasks.clone())
            .collect();
        splits.push(summarise(split, tasks, &of_split));
    }
    let summary = Summary {
        dtl_version: first.dtl_version.clone(),
        git_rev: {
            let mut revs: Vec<String> = Vec::new();
            for r in summaries.iter().filter_map(|s| s.git_rev.clone()) {
                if !revs.contains(&r) {
                    revs.push(r);
                }
            }
            (!revs.is_empty()).then(|| revs.join("+"))
        },
        host: first.host.clone(),
        seconds: summaries.iter().map(|s| s.seconds).sum(),
        splits,
    };
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    write_results(out, &rows, &summary)?;
    Ok(summary)
}

/// Redraws `figure.svg` and `figure.png` of a finished sweep in `dir` from its `runs.csv` and
/// `summary.json` (after a change to the figure's style, without retraining).
pub fn replot(dir: &Path) -> Result<Summary> {
    let (rows, summary) = read_finished(dir)?;
    write_figures(dir, &rows, &summary)?;
    Ok(summary)
}
