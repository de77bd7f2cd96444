//! The `dtl` command-line tool.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dtl_cli::experiment::{self, Assignment, RunConfig, RunOptions};
use dtl_strategies::{OptimizerKind, StrategyConfig};

/// mimalloc keeps freed memory in the process: with the system allocator about a quarter of a CPU
/// training step went to the kernel zeroing and unmapping freshly allocated tensor buffers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dtl",
    version,
    about = "Deep transfer learning and domain adaptation on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a strategy on a source domain and measure it on the source and target test splits.
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on one domain's test split; prints JSON.
    Eval(EvalArgs),
    /// Download a data set into the data directory, verifying its checksums.
    Fetch(FetchArgs),
    /// Label image files with a trained model; prints one JSON line per image.
    Predict(PredictArgs),
    /// Yosinski et al. 2014's layer-transfer sweep (baseA, baseB, BnB, BnB+, AnB, AnB+, RnB per n).
    Yosinski(YosinskiArgs),
    /// Run every configuration of a sweep spec and choose among them without target labels:
    /// runs.csv, selection.json, report.md and a figure.
    Sweep(SweepArgs),
    /// Score a finished run with every label-free validator; prints JSON.
    Validate(ValidateArgs),
    /// A trained model's accuracy per subgroup (folders, or a CSV of file attributes), with 95%
    /// intervals, the worst group and the gap: audit.json, audit.md and a figure.
    Audit(AuditArgs),
    /// One run of a sweep, as a Slurm array task runs it (`dtl sweep --backend slurm`).
    #[command(hide = true)]
    SweepTask(SweepTaskArgs),
}

#[derive(Args)]
struct SweepTaskArgs {
    /// The sweep directory.
    #[arg(long)]
    out: PathBuf,
    /// The run's id.
    id: String,
}

#[derive(Args)]
struct AuditArgs {
    /// Checkpoint written by `dtl train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// A group as NAME=FOLDER (PATH/<class>/* or PATH/{train,test}/<class>/*; every image
    /// counted); repeat for each group.
    #[arg(long, value_name = "NAME=FOLDER")]
    group: Vec<String>,
    /// Instead of --group: one image folder whose images' attributes are in --attributes.
    #[arg(long, value_name = "FOLDER", conflicts_with = "group", requires_all = ["attributes", "by"])]
    images: Option<PathBuf>,
    /// CSV of attributes: a `path` column relative to --images, one row per image.
    #[arg(long, value_name = "CSV", requires = "images")]
    attributes: Option<PathBuf>,
    /// The attribute columns whose combinations make the groups (e.g. sex,ethnicity).
    #[arg(long, value_name = "COLUMN,..", value_delimiter = ',', requires = "images")]
    by: Vec<String>,
    /// Match folder class names to the model's: NAME=CLASS pairs, comma-separated.
    #[arg(long, value_name = "NAME=CLASS,..", value_delimiter = ',')]
    class_map: Vec<String>,
    /// How images of another size are fitted (default: as the model was trained).
    #[arg(long)]
    fit: Option<String>,
    /// Write audit.json, audit.md, audit.svg and audit.png here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct SweepArgs {
    /// The sweep spec (TOML: seeds, [base], [[grid]], [[random]], [slurm]; see models/sweeps/).
    #[arg(required_unless_present = "status")]
    spec: Option<PathBuf>,
    /// Output directory (on a Slurm cluster: on the filesystem every node shares).
    #[arg(long, required_unless_present = "status")]
    out: Option<PathBuf>,
    /// Print the state of every run of the sweep in DIR (done, pending, running, interrupted,
    /// failed with its log's last line) from its run directories and squeue; trains nothing.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["spec", "out", "resume", "dry_run"])]
    status: Option<PathBuf>,
    /// Where the runs train: local (this machine, --jobs at a time) or slurm (one job array,
    /// submitted with sbatch; --resume resubmits the unfinished runs and, once all are done,
    /// writes the report) [default: local].
    #[arg(long, default_value = "local", value_parser = ["local", "slurm"])]
    backend: String,
    /// Slurm partition of every run (else the spec's [slurm] partition, else the default).
    #[arg(long)]
    partition: Option<String>,
    /// Slurm time limit of every run, e.g. 1:00:00 (else the spec's).
    #[arg(long)]
    time: Option<String>,
    /// CPUs (and threads) per run on Slurm (else the spec's, else 1).
    #[arg(long)]
    cpus_per_run: Option<usize>,
    /// GPUs per run on Slurm (else the spec's, else none).
    #[arg(long)]
    gpus_per_run: Option<usize>,
    /// With --backend slurm: print the job script instead of submitting it; writes nothing.
    #[arg(long)]
    dry_run: bool,

    /// Runs at a time, the machine's threads divided between them [default: one run per core,
    /// one thread each: the fastest split measured (docs/performance.md, "Sweep throughput");
    /// --jobs 1 gives each run every core and the least memory].
    #[arg(long)]
    jobs: Option<usize>,
    /// Continue a stopped sweep in --out: finished runs are kept, interrupted ones start again.
    #[arg(long)]
    resume: bool,
    /// Data directory for every run (else $DTL_DATA_DIR, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct ValidateArgs {
    /// A run directory written by `dtl train` (config.toml, model.safetensors).
    run: PathBuf,
    /// Data directory (else the run's own).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Also write the report as RUN/validation.json.
    #[arg(long)]
    write: bool,
}

#[derive(Args)]
struct YosinskiArgs {
    /// The full preset (MNIST and USPS from the data directory, 28x28, seeds 0-2); default: the
    /// quick one on bundled data.
    #[arg(long)]
    full: bool,
    /// TOML sweep config to start from (the fields of the written config.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory for --full (else $DTL_DATA_DIR, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',')]
    seeds: Option<Vec<u64>>,
    /// Splits, comma-separated: random, dissimilar.
    #[arg(long, value_delimiter = ',')]
    splits: Option<Vec<String>>,
    /// Numbers of transferred layers, comma-separated (1..7).
    #[arg(long, value_delimiter = ',')]
    ns: Option<Vec<usize>>,
    /// Epochs of every training.
    #[arg(long)]
    epochs: Option<usize>,
    /// Use at most N labelled B training images (the few-labels setting).
    #[arg(long, value_name = "N")]
    b_train_size: Option<usize>,
    /// Skip the random-frozen-layers control.
    #[arg(long)]
    no_random_control: bool,
    /// Output directory (config.toml, runs.csv, summary.json, figure.svg).
    #[arg(long)]
    out: PathBuf,
    /// Train nothing: redraw figure.svg and figure.png of the finished sweep in --out from its
    /// runs.csv and summary.json.
    #[arg(long)]
    replot: bool,
    /// Continue an interrupted sweep in --out (same flags): the networks in its runs.csv are not
    /// trained again.
    #[arg(long, conflicts_with = "replot")]
    resume: bool,
    /// Discard the sweep already in --out and run a new one.
    #[arg(long, conflicts_with_all = ["replot", "resume"])]
    overwrite: bool,
    /// Train nothing: merge these finished sweeps of other seeds (comma-separated directories)
    /// into --out, with means and std over all their seeds.
    #[arg(long, value_delimiter = ',', value_name = "DIR,..", conflicts_with_all = ["replot", "resume"])]
    merge: Option<Vec<PathBuf>>,
}

#[derive(Args, Clone)]
struct TrainArgs {
    /// TOML config to start from (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Source domain: mnist, usps, optdigits, mnist-small, or folder:PATH (one subfolder per class).
    #[arg(long)]
    source: Option<String>,
    /// Target domain: mnist, usps, optdigits, mnist-small, or folder:PATH (classes matched by name).
    #[arg(long)]
    target: Option<String>,
    /// Strategy (the list is the registry's, filled in by main).
    #[arg(long)]
    strategy: Option<String>,
    /// Weight of the adaptation loss (ddc 0.25, dan 1, coral 25 by default).
    #[arg(long)]
    lambda: Option<f64>,
    /// How the adaptation loss weight is brought in: ramp (from 0, DANN's schedule) or constant.
    #[arg(long)]
    lambda_schedule: Option<String>,
    /// Width of the adaptation layer before the head, 0 for none (ddc 256, dan and coral 0).
    #[arg(long, value_name = "N")]
    adapt_width: Option<usize>,
    /// Layers whose outputs are adapted, comma-separated: features, adapt, logits.
    #[arg(long, value_delimiter = ',', value_name = "LAYERS")]
    adapt_layers: Option<Vec<String>>,
    /// MMD kernel of ddc: linear (DDC's) or gaussian (median-heuristic multi-kernel).
    #[arg(long)]
    mmd_kernel: Option<String>,
    /// MMD estimator of ddc and dan: biased, unbiased, linear.
    #[arg(long)]
    mmd_estimator: Option<String>,
    /// adda: epochs of source pre-training before adaptation (0 with --init-from a source model).
    #[arg(long, value_name = "N")]
    source_epochs: Option<usize>,
    /// adda: backbone layers the target encoder shares with (keeps frozen at) the source encoder.
    #[arg(long, value_name = "N")]
    shared_layers: Option<usize>,
    /// finetune: layers copied from --init-from, counted from the first (see the backbone's layers).
    #[arg(long, value_name = "N")]
    transfer_layers: Option<usize>,
    /// finetune: keep the copied layers frozen.
    #[arg(long)]
    freeze: bool,
    /// Keep this share of each source class's training samples, comma-separated, one per class
    /// (e.g. 1,1,1,1,1,0.1,0.1,0.1,0.1,0.1: a prior-shifted source).
    #[arg(long, value_delimiter = ',', value_name = "F,..")]
    source_class_fractions: Option<Vec<f64>>,
    /// The same for the target's training split.
    #[arg(long, value_delimiter = ',', value_name = "F,..")]
    target_class_fractions: Option<Vec<f64>>,
    /// iw: instance-weight estimator: ratio (domain classifier), kmm, kliep. With ddc, dan, coral
    /// or dann (as with the next two flags): weight their source loss too.
    #[arg(long)]
    estimator: Option<String>,
    /// iw (and ddc, dan, coral, dann): estimate the weights on pixels or on the model's features.
    #[arg(long)]
    weights_on: Option<String>,
    /// iw (and ddc, dan, coral, dann): re-estimate the weights every K epochs (on features only;
    /// pixels never change and are estimated once).
    #[arg(long, value_name = "K")]
    reweight_every: Option<usize>,
    /// tradaboost: labelled target training samples to use (a seeded subset) [default: 100].
    #[arg(long, value_name = "N")]
    labelled_target: Option<usize>,
    /// finetune: learning-rate multiplier of the copied layers.
    #[arg(long, value_name = "X")]
    transferred_lr_mult: Option<f64>,
    /// Start from the weights of a checkpoint written by `dtl train` (same architecture and classes;
    /// with finetune, only its first --transfer-layers layers).
    #[arg(long, value_name = "FILE")]
    init_from: Option<PathBuf>,
    /// Backbone: lenet, convnet8, alexnet, resnet18, resnet34, resnet50.
    #[arg(long)]
    backbone: Option<String>,
    /// Published weights for the backbone: a safetensors path or hf:ORG/NAME[@REVISION][/FILE]
    /// (torchvision's or timm's names, e.g. hf:timm/resnet18.a1_in1k).
    #[arg(long, value_name = "SPEC", conflicts_with = "init_from")]
    pretrained: Option<String>,
    /// Folder images of another size: stretch, or crop (resize the shorter side, keep the centre)
    /// [default: crop for ImageNet backbones, else stretch].
    #[arg(long)]
    fit: Option<String>,
    /// After training, importance-weighted validation on the source test split with weights from
    /// this estimator (ratio, kmm, kliep) against the target's training images: a label-free
    /// estimate of the target loss and error (metrics.json `iwcv`) for choosing settings.
    #[arg(long, value_name = "ESTIMATOR")]
    iwcv: Option<String>,
    /// Save the run's whole state every N steps as well as at the end of every epoch, so that a
    /// killed run loses at most N steps (`--resume`).
    #[arg(long, value_name = "N")]
    checkpoint_every: Option<usize>,
    /// Augment training batches with a preset: `imagenet` (the default when no preset is named:
    /// random resized crops of 8%-100% of the area at ratios 3/4-4/3 and horizontal flips,
    /// torchvision's ImageNet training transform), `digits` (shifts of up to 2 pixels and
    /// rotations of up to 10 degrees) or `faces` (flips, crops of 80%-100% of the area resized
    /// back, shifts of 2 pixels, rotations of 10 degrees: small portraits). `[data.augment]` in a config sets each field.
    #[arg(long, value_name = "PRESET", num_args = 0..=1, default_missing_value = "imagenet")]
    augment: Option<String>,
    /// Passes over the source training split [default: 10].
    #[arg(long)]
    epochs: Option<usize>,
    /// A step budget instead of --epochs: ceil(N / steps per epoch) whole passes over the source
    /// (small data sets need hundreds of steps, not ten passes).
    #[arg(long, value_name = "N")]
    steps: Option<usize>,
    /// How the target is evaluated: holdout (its test split, unseen in training) or all (adapt
    /// on every target image without labels and report accuracy on all of them: the
    /// transductive protocol for small target domains) [default: holdout].
    #[arg(long, value_name = "HOW")]
    target_eval: Option<String>,
    /// Match class names through a map instead of renaming folders: FOLDER=CLASS pairs,
    /// comma-separated (e.g. sadness=sad,happiness=happy); `[data.class_map]` in a config.
    #[arg(long, value_name = "NAME=CLASS,..", value_delimiter = ',')]
    class_map: Vec<String>,
    /// Batch size [default: 128].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Learning rate [default: 0.01].
    #[arg(long, allow_negative_numbers = true)]
    lr: Option<f64>,
    /// Optimizer: sgd (momentum 0.9) or adam [default: sgd].
    #[arg(long)]
    optimizer: Option<String>,
    /// Momentum of SGD.
    #[arg(long, allow_negative_numbers = true)]
    momentum: Option<f64>,
    /// L2 weight decay [default: 0.0005].
    #[arg(long, allow_negative_numbers = true)]
    weight_decay: Option<f64>,
    /// Seed of initialisation, dropout, batch order and size caps [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Data directory (else $DTL_DATA_DIR, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use at most N source training samples (a seeded subset).
    #[arg(long, value_name = "N")]
    source_train_size: Option<usize>,
    /// Use at most N target training samples (a seeded subset).
    #[arg(long, value_name = "N")]
    target_train_size: Option<usize>,
    /// Common image side [default: 28].
    #[arg(long)]
    image_size: Option<usize>,
    /// Placement of non-MNIST digits: fill (resize to the canvas) or box (20/28 box, padded).
    #[arg(long)]
    placement: Option<String>,
    /// Channels of folder domains' images: 1 (luma) or 3 (RGB) [default: 3 if the source folder
    /// holds colour images, else 1].
    #[arg(long)]
    channels: Option<usize>,
    /// Folder domains: skip images that do not decode (with a warning) instead of stopping.
    #[arg(long)]
    skip_bad_images: bool,
    /// Device: cpu, cuda, cuda:N, metal [default: cpu].
    #[arg(long)]
    device: Option<String>,
    /// Output directory for config.toml, model.safetensors and metrics.json.
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Replace a previous run's files in --out (and start an interrupted one over).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the interrupted run of this output directory from its last saved state, with
    /// its saved config; it ends as the uninterrupted run would have (bit for bit on the CPU).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "config"])]
    resume: Option<PathBuf>,
    /// Set any key of the run config, after the config file and the flags above: `--set
    /// strategy.max-coeff=0.5`, `--set data.placement=box` (repeatable; the keys are those of the
    /// written config.toml: sections data, model, optim, train, strategy).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

#[derive(Args)]
struct EvalArgs {
    /// Checkpoint written by `dtl train`.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Domain whose test split to evaluate.
    #[arg(long)]
    domain: String,
    /// Data directory (else $DTL_DATA_DIR, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Placement of non-MNIST digits (default: the one the checkpoint was trained with).
    #[arg(long)]
    placement: Option<String>,
    /// Also measure the feature gap (MMD^2, CORAL) between this domain's test split and --domain's.
    #[arg(long, value_name = "DOMAIN")]
    gap_from: Option<String>,
    /// Device: cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct PredictArgs {
    /// Checkpoint written by `dtl train`: a path or hf:ORG/NAME[@REVISION][/FILE].
    #[arg(long, required_unless_present = "pretrained", conflicts_with_all = ["pretrained", "backbone"])]
    checkpoint: Option<String>,
    /// Architecture of --pretrained: alexnet, resnet18, resnet34, resnet50.
    #[arg(long, requires = "pretrained")]
    backbone: Option<String>,
    /// Published weights with their classifier head (torchvision's or timm's ImageNet
    /// checkpoints): a path or hf:ORG/NAME[@REVISION][/FILE]; needs --backbone.
    #[arg(long, value_name = "SPEC", requires = "backbone")]
    pretrained: Option<String>,
    /// Input side for --pretrained.
    #[arg(long, default_value_t = 224)]
    image_size: usize,
    /// Images of another size: stretch or crop [default: the checkpoint's; crop for ImageNet
    /// backbones].
    #[arg(long)]
    fit: Option<String>,
    /// An image file, or a directory searched recursively for image files (PNG, JPEG, TIFF, BMP,
    /// GIF, WebP, PNM).
    #[arg(long)]
    input: PathBuf,
    /// How many classes to print per image, most probable first.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Also print the raw logits.
    #[arg(long)]
    logits: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Device: cpu, cuda, cuda:N, metal.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Args)]
struct FetchArgs {
    /// Domain to download: mnist, usps, optdigits.
    domain: String,
    /// Data directory (else $DTL_DATA_DIR, else the per-user cache directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// URL prefix of a mirror holding the same files (https://, http:// or file://).
    #[arg(long)]
    mirror: Option<String>,
}

fn main() -> Result<()> {
    // First, while this is the only thread: see dtl_ops::keep_candle_elementwise_on_caller.
    let candle_threads = dtl_ops::keep_candle_elementwise_on_caller();
    dtl_ops::allocator::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    tracing::debug!("candle elementwise threads: {candle_threads}");
    // The strategy list comes from the registry, so that a new strategy is in the help as soon as
    // it is registered.
    let strategies = format!("Strategy: {}", StrategyConfig::NAMES.join(", "));
    let cli = Cli::command().mut_subcommand("train", |c| c.mut_arg("strategy", |a| a.help(strategies)));
    let command = match Cli::from_arg_matches(&cli.get_matches()) {
        Ok(c) => c.command,
        Err(e) => e.exit(),
    };
    // The work runs on a rayon worker thread, so that dtl's kernels do not wake and wait for the
    // pool at every op (see dtl_ops::in_worker_pool).
    dtl_ops::in_worker_pool(move || match command {
        Command::Train(a) => train(*a),
        Command::Eval(a) => eval(a),
        Command::Fetch(a) => fetch(a),
        Command::Predict(a) => predict(a),
        Command::Yosinski(a) => yosinski(a),
        Command::Sweep(a) => sweep(a),
        Command::Validate(a) => validate(a),
        Command::Audit(a) => audit(a),
        Command::SweepTask(a) => {
            let exe = std::env::current_exe().context("locating the dtl executable")?;
            Ok(dtl_cli::sweep::run_task(&a.out, &a.id, &exe)?)
        }
    })
}

/// Parses a kebab-case enum value the way configs spell it.
fn parse_choice<T: serde::de::DeserializeOwned>(flag: &str, value: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|e| anyhow::anyhow!("invalid value for `{flag}`: `{value}` ({e})"))
}

/// The flags of `dtl train` as assignments to the config tree, in the order they apply: the
/// strategy first (switching strategy starts from its defaults), then every other flag; the
/// instance-weight flags go where the chosen strategy keeps its weights (`weights_key`).
fn flag_assignments(a: &TrainArgs, weights_key: Option<&str>) -> Result<Vec<Assignment>> {
    use dtl_core::config::Value;
    let mut out = Vec::new();
    let mut put = |flag: &str, key: &str, value: Value| {
        out.push(Assignment {
            key: key.to_string(),
            value,
            origin: format!("--{flag}"),
        })
    };
    let s = |v: &str| Value::String(v.to_string());
    let n = |v: usize| Value::Integer(v as i64);
    let f = Value::Float;
    let path = |p: &std::path::Path| Value::String(p.to_string_lossy().into_owned());
    if let Some(v) = &a.strategy {
        put("strategy", "strategy.name", s(v));
    }
    macro_rules! flag {
        ($field:ident, $flag:literal, $key:literal, $conv:expr) => {
            if let Some(v) = &a.$field {
                put($flag, $key, $conv(v));
            }
        };
    }
    flag!(source, "source", "data.source", |v: &String| s(v));
    flag!(target, "target", "data.target", |v: &String| s(v));
    flag!(image_size, "image-size", "data.image_size", |v: &usize| n(*v));
    flag!(placement, "placement", "data.placement", |v: &String| s(v));
    flag!(
        source_train_size,
        "source-train-size",
        "data.source_train_size",
        |v: &usize| n(*v)
    );
    flag!(
        target_train_size,
        "target-train-size",
        "data.target_train_size",
        |v: &usize| n(*v)
    );
    let fractions = |v: &Vec<f64>| Value::Array(v.iter().map(|x| Value::Float(*x)).collect());
    flag!(
        source_class_fractions,
        "source-class-fractions",
        "data.source_class_fractions",
        fractions
    );
    flag!(
        target_class_fractions,
        "target-class-fractions",
        "data.target_class_fractions",
        fractions
    );
    flag!(channels, "channels", "data.channels", |v: &usize| n(*v));
    if a.skip_bad_images {
        put("skip-bad-images", "data.skip_bad_images", Value::Boolean(true));
    }
    flag!(data_dir, "data-dir", "data.data_dir", |v: &PathBuf| path(v));
    flag!(fit, "fit", "data.fit", |v: &String| s(v));
    if let Some(preset) = &a.augment {
        let aug = dtl_data::augment::Augment::preset(preset).map_err(|e| anyhow::anyhow!("{e}"))?;
        put("augment", "data.augment", table(&aug));
    }
    flag!(backbone, "backbone", "model.backbone", |v: &String| s(v));
    flag!(init_from, "init-from", "model.init_from", |v: &PathBuf| path(v));
    flag!(pretrained, "pretrained", "model.pretrained", |v: &String| s(v));
    flag!(lr, "lr", "optim.lr", |v: &f64| f(*v));
    flag!(weight_decay, "weight-decay", "optim.weight_decay", |v: &f64| f(
        *v
    ));
    if let Some(o) = &a.optimizer {
        let kind = match o.as_str() {
            "sgd" => OptimizerKind::sgd(),
            "adam" => OptimizerKind::adam(),
            _ => anyhow::bail!("invalid value for `optimizer`: `{o}` is not one of sgd, adam"),
        };
        put("optimizer", "optim.optimizer", table(&kind));
    }
    flag!(momentum, "momentum", "optim.optimizer.momentum", |v: &f64| f(*v));
    flag!(epochs, "epochs", "train.epochs", |v: &usize| n(*v));
    flag!(steps, "steps", "train.steps", |v: &usize| n(*v));
    flag!(target_eval, "target-eval", "data.target_eval", |v: &String| s(v));
    for pair in &a.class_map {
        let Some((from, to)) = pair.split_once('=') else {
            anyhow::bail!("invalid value for `--class-map`: `{pair}` is not NAME=CLASS");
        };
        put(
            "class-map",
            &format!("data.class_map.{}", from.trim()),
            Value::String(to.trim().to_string()),
        );
    }
    flag!(batch_size, "batch-size", "train.batch_size", |v: &usize| n(*v));
    flag!(seed, "seed", "train.seed", |v: &u64| Value::Integer(*v as i64));
    flag!(device, "device", "train.device", |v: &String| s(v));
    flag!(iwcv, "iwcv", "train.iwcv", |v: &String| s(v));
    flag!(
        checkpoint_every,
        "checkpoint-every",
        "train.checkpoint_every",
        |v: &usize| n(*v)
    );
    // The strategy's own settings, by the key each flag names in its section.
    flag!(lambda, "lambda", "strategy.lambda", |v: &f64| f(*v));
    flag!(
        lambda_schedule,
        "lambda-schedule",
        "strategy.schedule",
        |v: &String| s(v)
    );
    flag!(adapt_width, "adapt-width", "strategy.adapt-width", |v: &usize| n(
        *v
    ));
    flag!(adapt_layers, "adapt-layers", "strategy.layers", |v: &Vec<
        String,
    >| {
        Value::Array(v.iter().map(|l| s(l)).collect())
    });
    flag!(mmd_kernel, "mmd-kernel", "strategy.kernel", |v: &String| s(v));
    flag!(
        mmd_estimator,
        "mmd-estimator",
        "strategy.estimator",
        |v: &String| s(v)
    );
    flag!(
        source_epochs,
        "source-epochs",
        "strategy.source-epochs",
        |v: &usize| n(*v)
    );
    flag!(
        shared_layers,
        "shared-layers",
        "strategy.shared-layers",
        |v: &usize| n(*v)
    );
    flag!(
        transfer_layers,
        "transfer-layers",
        "strategy.transfer-layers",
        |v: &usize| n(*v)
    );
    if a.freeze {
        put("freeze", "strategy.freeze", Value::Boolean(true));
    }
    flag!(
        transferred_lr_mult,
        "transferred-lr-mult",
        "strategy.transferred-lr-mult",
        |v: &f64| f(*v)
    );
    flag!(
        labelled_target,
        "labelled-target",
        "strategy.labelled-target",
        |v: &usize| n(*v)
    );
    let weights = [
        (
            "estimator",
            a.estimator.as_ref().map(|e| {
                let mut t = dtl_core::config::Table::new();
                t.insert("kind".into(), s(e));
                ("estimator", Value::Table(t))
            }),
        ),
        ("weights-on", a.weights_on.as_ref().map(|w| ("weights-on", s(w)))),
        ("reweight-every", a.reweight_every.map(|k| ("every", n(k)))),
    ];
    for (flag, set) in weights {
        let Some((key, value)) = set else { continue };
        match weights_key {
            Some("") => put(flag, &format!("strategy.{key}"), value),
            Some(section) => put(flag, &format!("strategy.{section}.{key}"), value),
            None => anyhow::bail!(
                "invalid value for `{flag}`: the strategy has no instance weights (iw has them, and ddc, dan, coral and dann weight their source loss with them)"
            ),
        }
    }
    Ok(out)
}

/// A setting's default as a TOML table (the augmentation's and the optimizer's).
fn table<T: serde::Serialize>(v: &T) -> dtl_core::config::Value {
    dtl_core::config::Value::try_from(v).expect("settings serialise as TOML")
}

fn train(a: TrainArgs) -> Result<()> {
    let sets: Vec<Assignment> = a
        .set
        .iter()
        .map(|s| {
            let (key, value) = dtl_core::config::parse_assignment(s)?;
            Ok(Assignment {
                key,
                value,
                origin: "--set".into(),
            })
        })
        .collect::<Result<_>>()?;
    // Once without the instance-weight flags, to learn where the chosen strategy keeps them.
    let mut all = flag_assignments(&a, Some(""))?;
    let weight_flags = a.estimator.is_some() || a.weights_on.is_some() || a.reweight_every.is_some();
    if weight_flags {
        let mut base = flag_assignments(
            &TrainArgs {
                estimator: None,
                weights_on: None,
                reweight_every: None,
                ..a.clone()
            },
            None,
        )?;
        base.extend(sets.iter().cloned());
        let cfg = RunConfig::load(a.config.as_deref(), &base)?;
        let name = cfg.strategy.name();
        let key = cfg.strategy.settings().instance_weights_key();
        all = flag_assignments(&a, key).map_err(|e| anyhow::anyhow!("{e} (strategy `{name}`)"))?;
    }
    all.extend(sets);
    let progress = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let (m, out) = match &a.resume {
        Some(dir) => {
            if let Some(first) = all.first() {
                anyhow::bail!(
                    "--resume continues {} with its saved config; `{}` cannot change it (start a new run with --out instead)",
                    dir.display(),
                    first.origin
                );
            }
            let (m, from) = experiment::resume(dir, progress)?;
            match from {
                Some(at) => println!(
                    "resumed {} from its checkpoint at epoch {}/{}, step {}/{}",
                    dir.display(),
                    at.epoch.min(at.epochs - 1) + 1,
                    at.epochs,
                    if at.finished() {
                        at.steps_per_epoch
                    } else {
                        at.step
                    },
                    at.steps_per_epoch
                ),
                None => println!("started {} over (it had no checkpoint)", dir.display()),
            }
            (m, dir.clone())
        }
        None => {
            let out = a.out.clone().expect("clap requires --out without --resume");
            let cfg = RunConfig::load(a.config.as_deref(), &all)?;
            let opts = RunOptions {
                overwrite: a.overwrite,
                progress,
            };
            (experiment::run(&cfg, &out, opts)?, out)
        }
    };
    let ci = |e: &dtl_strategies::Evaluation| {
        format!(
            "{:.4} [95% CI {:.4}-{:.4}, n={}]",
            e.accuracy, e.ci95[0], e.ci95[1], e.n
        )
    };
    let target_split = if m.target_eval == "all" {
        "all images (unlabelled in training)"
    } else {
        "test"
    };
    println!(
        "{} {} -> {}: source {} test accuracy {}, target {} {target_split} accuracy {}, drop {:.4} ({} steps, {:.1} s/epoch, last epoch)",
        m.strategy,
        m.source,
        m.target,
        m.source,
        ci(&m.source_test),
        m.target,
        ci(&m.target_test),
        m.drop,
        m.steps,
        m.seconds_per_epoch
    );
    println!("wrote {}", out.display());
    Ok(())
}

fn sweep(a: SweepArgs) -> Result<()> {
    if let Some(dir) = &a.status {
        let runs = dtl_cli::sweep::sweep_status(dir)?;
        let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
        for r in &runs {
            *counts.entry(r.state.as_str()).or_default() += 1;
            match &r.detail {
                Some(d) => println!("{:<32} {:<12} {d}", r.id, r.state),
                None => println!("{:<32} {}", r.id, r.state),
            }
        }
        let summary: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        println!("{} runs: {}", runs.len(), summary.join(", "));
        if runs.iter().all(|r| r.state == "done") {
            println!(
                "all done: `dtl sweep SPEC --out {} --resume` writes the report",
                dir.display()
            );
        }
        return Ok(());
    }
    let (spec, out) = (
        a.spec.clone().expect("clap requires SPEC"),
        a.out.clone().expect("clap requires --out"),
    );
    let backend = match a.backend.as_str() {
        "slurm" => dtl_cli::sweep::Backend::Slurm(dtl_cli::sweep::SlurmOptions {
            partition: a.partition.clone(),
            time: a.time.clone(),
            cpus_per_run: a.cpus_per_run,
            gpus_per_run: a.gpus_per_run,
            dry_run: a.dry_run,
        }),
        _ => {
            if a.partition.is_some()
                || a.time.is_some()
                || a.cpus_per_run.is_some()
                || a.gpus_per_run.is_some()
                || a.dry_run
            {
                anyhow::bail!(
                    "--partition, --time, --cpus-per-run, --gpus-per-run and --dry-run go with --backend slurm"
                );
            }
            dtl_cli::sweep::Backend::Local
        }
    };
    let opts = dtl_cli::sweep::SweepOptions {
        jobs: a
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        resume: a.resume,
        data_dir: a.data_dir.clone(),
        exe: std::env::current_exe().context("locating the dtl executable")?,
        progress: std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        backend,
    };
    let o = dtl_cli::sweep::run_sweep(&spec, &out, &opts)?;
    if let Some(script) = &o.script {
        print!("{script}");
        return Ok(());
    }
    if let Some(sub) = &o.submitted {
        println!(
            "submitted job {} ({} runs{}); `dtl sweep --status {}` follows them, `dtl sweep {} --out {} --backend slurm --resume` resubmits what stops and writes the report once all are done",
            sub.job_id,
            sub.runs.len(),
            if o.queued > 0 { format!(", {} more still queued", o.queued) } else { String::new() },
            out.display(),
            spec.display(),
            out.display()
        );
        return Ok(());
    }
    if o.selection.is_none() && o.queued > 0 {
        println!(
            "{} runs still queued or running; nothing submitted (`dtl sweep --status {}`)",
            o.queued,
            out.display()
        );
        return Ok(());
    }
    if let Some(sel) = &o.selection {
        println!(
            "{} runs ({} trained now, {} kept); oracle {} at {:.4} (mean {:.4})",
            o.planned, o.trained, o.reused, sel.oracle, sel.oracle_accuracy, sel.mean_accuracy
        );
        println!("  validator    selected                      target acc  gap     Spearman");
        for c in &sel.choices {
            println!(
                "  {:<12} {:<29} {:.4}      {:.4}  {}{}{}",
                c.validator,
                c.selected,
                c.selected_accuracy,
                c.oracle_gap,
                c.spearman.map_or("-".into(), |s| format!("{s:+.3}")),
                if c.selected_collapsed { "  collapsed" } else { "" },
                if c.selected_unreliable { "  unreliable" } else { "" }
            );
        }
    }
    println!("wrote {}", out.display());
    if !o.failed.is_empty() {
        for (id, e) in &o.failed {
            eprintln!("run {id} failed: {e}");
        }
        anyhow::bail!(
            "{} of {} runs failed (rerun with --resume to retry them)",
            o.failed.len(),
            o.planned
        );
    }
    Ok(())
}

fn validate(a: ValidateArgs) -> Result<()> {
    let report = experiment::validate_run(&a.run, a.data_dir.as_deref())?;
    if a.write {
        dtl_cli::validation::write_report(&report, &a.run)?;
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn audit(a: AuditArgs) -> Result<()> {
    use dtl_cli::audit::Groups;
    let device = experiment::parse_device(&a.device)?;
    let pairs = |flag: &str, list: &[String]| -> Result<Vec<(String, String)>> {
        list.iter()
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => anyhow::bail!("invalid value for `--{flag}`: `{p}` is not NAME=VALUE"),
            })
            .collect()
    };
    let groups = match &a.images {
        Some(images) => Groups::Attributes {
            images: images.clone(),
            csv: a.attributes.clone().expect("clap requires --attributes"),
            by: a.by.clone(),
        },
        None => Groups::Folders(
            pairs("group", &a.group)?
                .into_iter()
                .map(|(n, p)| (n, PathBuf::from(p.strip_prefix("folder:").unwrap_or(&p))))
                .collect(),
        ),
    };
    let class_map = pairs("class-map", &a.class_map)?.into_iter().collect();
    let fit = a.fit.as_deref().map(str::parse).transpose()?;
    let report = dtl_cli::audit::audit(&a.checkpoint, &groups, &class_map, fit, &device)?;
    print!("{}", dtl_cli::audit::markdown(&report));
    if let Some(out) = &a.out {
        dtl_cli::audit::write(&report, out)?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn eval(a: EvalArgs) -> Result<()> {
    let device = experiment::parse_device(&a.device)?;
    let report = experiment::evaluate_checkpoint(
        &a.checkpoint,
        &a.domain,
        a.data_dir.as_deref(),
        a.placement.as_deref(),
        a.gap_from.as_deref(),
        &device,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn predict(a: PredictArgs) -> Result<()> {
    let device = experiment::parse_device(&a.device)?;
    let (model, fit) = match (&a.checkpoint, &a.backbone, &a.pretrained) {
        (Some(c), _, _) => {
            let path = c.parse::<dtl_backbones::hub::Pretrained>()?.resolve()?;
            let (model, meta) = dtl_backbones::Classifier::load(&path, &device)?;
            let fit = experiment::fit_of(&model, &meta)?;
            (model, fit)
        }
        (None, Some(b), Some(p)) => {
            let kind: dtl_backbones::BackboneKind = b.parse()?;
            let path = p.parse::<dtl_backbones::hub::Pretrained>()?.resolve()?;
            let (model, _) = dtl_backbones::Classifier::from_pretrained(kind, a.image_size, &path, &device)?;
            let fit = experiment::fit_of(&model, &Default::default())?;
            (model, fit)
        }
        _ => anyhow::bail!("give --checkpoint FILE, or --backbone NAME with --pretrained SPEC"),
    };
    let fit = match &a.fit {
        Some(f) => f.parse()?,
        None => fit,
    };
    let images = dtl_data::images::list_images(&a.input)?;
    if images.is_empty() {
        anyhow::bail!(
            "{}: no image files (PNG, JPEG, TIFF, BMP, GIF, WebP, PNM) found",
            a.input.display()
        );
    }
    let preds =
        dtl_cli::predict::predict_images(&model, &images, a.top_k, a.logits, a.batch_size, fit, &device)?;
    let mut out = std::io::stdout().lock();
    for p in preds {
        use std::io::Write as _;
        writeln!(out, "{}", serde_json::to_string(&p)?)?;
    }
    Ok(())
}

fn fetch(a: FetchArgs) -> Result<()> {
    let id: dtl_data::DomainId = a.domain.parse()?;
    let dir = dtl_data::DataDir::resolve(a.data_dir.as_deref())?;
    let source = match a.mirror {
        Some(base) => dtl_data::download::Source { base },
        None => dtl_data::download::Source::public(id)?,
    };
    let files = dtl_data::download::download(id, &dir, &source)
        .with_context(|| format!("fetching {id} into {}", dir.path().display()))?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn yosinski(a: YosinskiArgs) -> Result<()> {
    use dtl_cli::yosinski::{replot, reproduce_in, Existing, Split, SweepConfig};
    if let Some(dirs) = &a.merge {
        let summary = dtl_cli::yosinski::merge(dirs, &a.out)?;
        print_sweep(&summary);
        println!("wrote {}", a.out.display());
        return Ok(());
    }
    if a.replot {
        let summary = replot(&a.out)?;
        print_sweep(&summary);
        println!("redrew {}/figure.svg and figure.png", a.out.display());
        return Ok(());
    }
    let mut cfg = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", p.display()))?
        }
        None if a.full => SweepConfig::full(None),
        None => SweepConfig::default(),
    };
    if a.data_dir.is_some() {
        cfg.data_dir = a.data_dir.clone();
    }
    if let Some(v) = a.seeds {
        cfg.seeds = v;
    }
    if let Some(v) = a.splits {
        cfg.splits = v
            .iter()
            .map(|s| parse_choice::<Split>("splits", s))
            .collect::<Result<_>>()?;
    }
    if let Some(v) = a.ns {
        cfg.ns = v;
    }
    if let Some(v) = a.epochs {
        cfg.epochs = v;
    }
    if a.b_train_size.is_some() {
        cfg.b_train_size = a.b_train_size;
    }
    if a.no_random_control {
        cfg.random_control = false;
    }
    let existing = match (a.resume, a.overwrite) {
        (true, _) => Existing::Resume,
        (false, true) => Existing::Overwrite,
        (false, false) => Existing::Refuse,
    };
    let summary = reproduce_in(&cfg, &a.out, existing)?;
    print_sweep(&summary);
    println!("wrote {} ({:.0} s)", a.out.display(), summary.seconds);
    Ok(())
}

/// The sweep's table of means, as `dtl yosinski` prints it.
fn print_sweep(summary: &dtl_cli::yosinski::Summary) {
    for split in &summary.splits {
        println!(
            "{} split: baseA {:.4}, baseB {:.4} +- {:.4}",
            split.split, split.base_a.mean, split.base_b.mean, split.base_b.std
        );
        println!("  n   BnB     BnB+    AnB     AnB+    RnB");
        for l in &split.layers {
            let m = |s: &str| {
                l.settings
                    .get(s)
                    .map(|st| format!("{:.4}", st.mean))
                    .unwrap_or("-".into())
            };
            println!(
                "  {}   {}  {}  {}  {}  {}",
                l.n,
                m("BnB"),
                m("BnB+"),
                m("AnB"),
                m("AnB+"),
                m("RnB")
            );
        }
    }
}
