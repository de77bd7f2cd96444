//! The run config: one typed tree of sections (`data`, `model`, `optim`, `train`, `strategy`),
//! read from TOML, set from the command line (`--set section.key=value`, and the common flags as
//! shorthands for keys), deserialised once, and checked as a whole before any file is written or
//! any data loaded.
//!
//! ```
//! use dtl_cli::experiment::RunConfig;
//!
//! let cfg = RunConfig::from_assignments(None, &[("train.epochs", "3"), ("strategy.name", "dann"),
//!     ("strategy.max-coeff", "0.5")])?;
//! assert_eq!(cfg.train.epochs, 3);
//! assert_eq!(cfg.strategy.name(), "dann");
//! cfg.check()?;
//!
//! let err = RunConfig::from_assignments(None, &[("strategy.name", "dann"), ("strategy.max-cof", "1")])
//!     .unwrap_err()
//!     .to_string();
//! assert!(err.contains("strategy.max-cof") && err.contains("did you mean `max-coeff`"), "{err}");
//! # Ok::<(), dtl_cli::Error>(())
//! ```

use std::path::{Path, PathBuf};

use dtl_backbones::BackboneKind;
use dtl_core::config::{self as tree, Table, Value};
use dtl_data::augment::Augment;
use dtl_data::images::Fit;
use dtl_data::Placement;
use dtl_strategies::{OptimSettings, OptimizerKind, RunFacts, StrategyConfig};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Every setting of a run, by section. Read from TOML (`dtl train --config FILE`), set by flags
/// and `--set`, and written back in full as `config.toml` next to the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The domains and how their images are read.
    pub data: DataConfig,
    /// The network and its initial weights.
    pub model: ModelConfig,
    /// The optimizer.
    pub optim: OptimConfig,
    /// The training loop and its seed.
    pub train: TrainConfig,
    /// The strategy and its own settings (`name` and the strategy's keys).
    pub strategy: StrategyConfig,
}

/// `[data]`: the source and target domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Source domain (labelled): `mnist`, `usps`, `optdigits`, `mnist-small`, or `folder:PATH`
    /// (one subfolder per class, [`dtl_data::folder`]).
    pub source: String,
    /// Target domain (its test split measures transfer); a folder's classes are matched to the
    /// source's by name.
    pub target: String,
    /// Common canvas side for all domains.
    pub image_size: usize,
    /// How non-MNIST digits are placed on the canvas: `fill` or `box` (20/28 box, padded).
    pub placement: Placement,
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
    /// How folder images of another size become the canvas: `stretch` or `crop` (torchvision's
    /// resize-and-centre-crop); unset: `crop` for the ImageNet backbones, else `stretch`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fit: Option<Fit>,
    /// Augment training batches (random resized crop, horizontal flip; [`dtl_data::augment`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
    /// How the target is evaluated: `holdout` (its test split, never seen in training) or `all`
    /// (the transductive protocol of small target domains: every target image, training and test
    /// split together, is both the unlabelled adaptation set and the evaluation set).
    pub target_eval: TargetEval,
    /// Class names matched through a map (`{ sadness = "sad" }`): a folder class named by a key
    /// is read as the class its value names, in either domain, instead of renaming folders.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub class_map: std::collections::BTreeMap<String, String>,
}

/// How a run evaluates its target domain (`data.target_eval`, `--target-eval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetEval {
    /// Accuracy on the target's test split, which training never sees (the default).
    #[default]
    Holdout,
    /// Adapt on all target images without their labels and report accuracy on all of them (the
    /// transductive protocol: every image of a small target counts, the interval narrows).
    All,
}

impl TargetEval {
    /// The name configs and `metrics.json` use.
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetEval::Holdout => "holdout",
            TargetEval::All => "all",
        }
    }
}

/// `[model]`: the architecture and where its weights start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Backbone architecture.
    pub backbone: BackboneKind,
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
}

/// `[optim]`: the update rule and its rates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Base learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Update rule and its constants (`[optim.optimizer]`, `kind = "sgd" | "adam"`).
    pub optimizer: OptimizerKind,
}

/// `[train]`: the loop, the seed and the device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the source training split.
    pub epochs: usize,
    /// A step budget instead of `epochs`: the run trains `ceil(steps / steps per epoch)` whole
    /// passes over the source (at least `steps` steps; schedules see whole passes), resolved once
    /// the source's size is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Batch size (source and target).
    pub batch_size: usize,
    /// The run seed: every random choice derives its own stream from it ([`dtl_core::seed`]).
    pub seed: u64,
    /// Device: `cpu`, `cuda` / `cuda:N` (feature `cuda`), `metal` (feature `metal`).
    pub device: String,
    /// After training, importance-weighted validation (Sugiyama et al. 2007) of the model on the
    /// source test split, with weights from this estimator (`ratio`, `kmm`, `kliep`, on pixels)
    /// against the target's training images: a label-free estimate of the target loss and error
    /// for choosing settings, written to `metrics.json` as `iwcv`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iwcv: Option<String>,
    /// After training, score the model with every label-free validator (`dtl_select`) on the
    /// source test split (labelled) and the target's training images (no labels), into
    /// `validation.json`; sweeps set it on every run.
    pub validate: bool,
    /// Save the run's whole state every this many steps as well as at the end of every epoch
    /// (`checkpoint.safetensors`, for `dtl train --resume`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: "mnist".into(),
            target: "usps".into(),
            image_size: 28,
            placement: Placement::Fill,
            source_train_size: None,
            target_train_size: None,
            source_class_fractions: None,
            target_class_fractions: None,
            channels: None,
            skip_bad_images: false,
            data_dir: None,
            fit: None,
            augment: None,
            target_eval: TargetEval::Holdout,
            class_map: Default::default(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: BackboneKind::LeNet,
            init_from: None,
            pretrained: None,
        }
    }
}

impl Default for OptimConfig {
    fn default() -> Self {
        let optim = OptimSettings::default();
        Self {
            lr: optim.lr,
            weight_decay: optim.weight_decay,
            optimizer: optim.kind,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            steps: None,
            batch_size: 128,
            seed: 0,
            device: "cpu".into(),
            iwcv: None,
            checkpoint_every: None,
            validate: false,
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            data: DataConfig::default(),
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            train: TrainConfig::default(),
            strategy: StrategyConfig::SourceOnly(Default::default()),
        }
    }
}

impl OptimConfig {
    /// The settings the strategies take.
    pub fn settings(&self) -> OptimSettings {
        OptimSettings {
            kind: self.optimizer,
            lr: self.lr,
            weight_decay: self.weight_decay,
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

/// The sections of the tree and, for the flat layout of configs written before the sections,
/// which section each of its top-level keys belongs to.
const SECTIONS: [(&str, &[&str]); 4] = [
    (
        "data",
        &[
            "source",
            "target",
            "image_size",
            "placement",
            "source_train_size",
            "target_train_size",
            "source_class_fractions",
            "target_class_fractions",
            "channels",
            "skip_bad_images",
            "data_dir",
            "fit",
            "augment",
        ],
    ),
    ("model", &["backbone", "init_from", "pretrained"]),
    ("optim", &["lr", "weight_decay", "optimizer"]),
    (
        "train",
        &[
            "epochs",
            "batch_size",
            "seed",
            "device",
            "iwcv",
            "validate",
            "checkpoint_every",
        ],
    ),
];

/// Moves the top-level keys of a flat (pre-section) config into their sections; a config
/// already in sections is returned as it is.
fn migrate_flat(mut t: Table) -> Result<Table> {
    for (section, keys) in SECTIONS {
        for key in keys {
            if let Some(v) = t.remove(*key) {
                let path = format!("{section}.{key}");
                if tree::get(&t, &path).is_some() {
                    return Err(Error::Config {
                        field: path,
                        message: format!("given twice: as `{key}` (the flat layout) and in [{section}]"),
                    });
                }
                tree::set(&mut t, &path, v)?;
            }
        }
    }
    Ok(t)
}

/// Spells a key as its section does: `_` within the run's sections, `-` within the strategy's
/// (so that `train.batch-size` and `strategy.adapt_width` are understood).
fn normalise_key(key: &str) -> String {
    match key.split_once('.') {
        Some(("strategy", rest)) => format!("strategy.{}", rest.replace('_', "-")),
        Some((section, rest)) if SECTIONS.iter().any(|(s, _)| *s == section) => {
            format!("{section}.{}", rest.replace('-', "_"))
        }
        _ => key.to_string(),
    }
}

/// Deserialises a complete tree: the run's sections through their types, the strategy's keys
/// through the settings type its `name` chooses, every error naming its dotted key.
fn from_tree(mut t: Table) -> Result<RunConfig> {
    let strategy = match t.remove("strategy") {
        None => None,
        Some(Value::Table(mut s)) => {
            let name = match s.remove("name") {
                None => "source-only".to_string(),
                Some(Value::String(n)) => n,
                Some(other) => {
                    return Err(Error::Config {
                        field: "strategy.name".into(),
                        message: format!("a {} where a strategy name belongs", other.type_str()),
                    })
                }
            };
            // The name first: an unknown one lists the known ones.
            StrategyConfig::from_name(&name)?;
            let settings = tree::deserialize_at("strategy", Value::Table(s), |d| {
                StrategyConfig::deserialize_named(&name, d)
            });
            Some(settings.map_err(|e| match e {
                dtl_core::Error::Config { field, message } => Error::Config {
                    field,
                    message: format!("{message}, in the settings of strategy `{name}`"),
                },
                other => other.into(),
            })?)
        }
        Some(other) => {
            return Err(Error::Config {
                field: "strategy".into(),
                message: format!("a {} where the [strategy] table belongs", other.type_str()),
            })
        }
    };
    let mut cfg: RunConfig = tree::from_tree(t)?;
    if let Some(s) = strategy {
        cfg.strategy = s;
    }
    Ok(cfg)
}

/// One setting from the command line: the dotted key it sets, its value, and the flag it came
/// from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The dotted key.
    pub key: String,
    /// Its value.
    pub value: Value,
    /// The flag that set it (`--lambda`, or `--set`).
    pub origin: String,
}

impl RunConfig {
    /// Reads a config from a TOML file (sections, or the flat layout of earlier configs); missing
    /// keys take their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        Self::load(Some(path), &[])
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// The config from an optional file and then `(key, value)` pairs as `--set` gives them.
    pub fn from_assignments(file: Option<&Path>, sets: &[(&str, &str)]) -> Result<Self> {
        let sets: Vec<Assignment> = sets
            .iter()
            .map(|(k, v)| Assignment {
                key: k.to_string(),
                value: tree::parse_value(v),
                origin: "--set".into(),
            })
            .collect();
        Self::load(file, &sets)
    }

    /// The config from an optional file, then each assignment in order, deserialised once.
    /// Setting `strategy.name` to another strategy than the file's starts that strategy from its
    /// defaults; an error in a key set by a flag names the flag.
    pub fn load(file: Option<&Path>, sets: &[Assignment]) -> Result<Self> {
        let t = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
                toml::from_str::<Table>(&text).map_err(|e| Error::ConfigFile {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
            None => Table::new(),
        };
        Self::load_tree(t, file, sets)
    }

    /// [`RunConfig::load`] from a tree already read (a sweep's base config); `file` names where it
    /// came from in errors. A tree in the flat layout of earlier versions is migrated.
    pub fn load_tree(t: Table, file: Option<&Path>, sets: &[Assignment]) -> Result<Self> {
        let mut t = match file {
            Some(path) => migrate_flat(t).map_err(|e| in_file(path, e))?,
            None => migrate_flat(t)?,
        };
        for a in sets {
            let key = normalise_key(&a.key);
            if key == "strategy.name" {
                let current = tree::get(&t, "strategy.name").and_then(Value::as_str);
                if current != a.value.as_str() {
                    t.insert("strategy".into(), Value::Table(Table::new()));
                }
            }
            tree::set(&mut t, &key, a.value.clone()).map_err(|e| from_flag(a, e.into()))?;
        }
        match from_tree(t) {
            Ok(cfg) => Ok(cfg),
            Err(e) => {
                // Name the flag behind a refused key, and the file otherwise.
                let field = match &e {
                    Error::Config { field, .. } => Some(field.clone()),
                    Error::Core(dtl_core::Error::Config { field, .. }) => Some(field.clone()),
                    Error::Strategy(dtl_strategies::Error::Core(dtl_core::Error::Config {
                        field, ..
                    })) => Some(field.clone()),
                    _ => None,
                };
                let by = field.and_then(|f| sets.iter().rev().find(|a| normalise_key(&a.key) == f));
                Err(match (by, file) {
                    (Some(a), _) => from_flag(a, e),
                    (None, Some(path)) => in_file(path, e),
                    (None, None) => e,
                })
            }
        }
    }

    /// The facts the strategy's settings are checked against.
    pub fn run_facts(&self) -> RunFacts {
        RunFacts {
            epochs: self.train.epochs,
            init_from: self.model.init_from.is_some(),
        }
    }

    /// Checks every setting and their combinations, naming the key at fault; nothing is read or
    /// written. [`crate::experiment::run`] calls it before touching the output directory.
    pub fn check(&self) -> Result<()> {
        crate::experiment::validate(self).map(|_| ())
    }
}

/// `e`, said of the flag (or `--set`) that made assignment `a`.
fn from_flag(a: &Assignment, e: Error) -> Error {
    let (field, message) = match e {
        Error::Config { field, message } => (field, message),
        Error::Core(dtl_core::Error::Config { field, message }) => (field, message),
        Error::Strategy(dtl_strategies::Error::Core(dtl_core::Error::Config { field, message })) => {
            (field, message)
        }
        other => return other,
    };
    let origin = if a.origin == "--set" {
        format!("--set {}", a.key)
    } else {
        a.origin.clone()
    };
    Error::Config {
        field,
        message: format!("{message} (set by {origin})"),
    }
}

/// `e`, said of the config file `path`.
fn in_file(path: &Path, e: Error) -> Error {
    Error::ConfigFile {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flat_layout_moves_into_sections() {
        let flat: Table = toml::from_str(
            "source = \"usps\"\nepochs = 3\nbatch_size = 64\nbackbone = \"convnet8\"\nlr = 0.1\n\n[optimizer]\nkind = \"adam\"\nbeta1 = 0.9\nbeta2 = 0.999\neps = 1e-8\n\n[strategy]\nname = \"ddc\"\nlambda = 0.5\n",
        )
        .unwrap();
        let cfg = from_tree(migrate_flat(flat).unwrap()).unwrap();
        assert_eq!(cfg.data.source, "usps");
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.train.batch_size, 64);
        assert_eq!(cfg.model.backbone, BackboneKind::ConvNet8);
        assert_eq!(cfg.optim.lr, 0.1);
        assert!(matches!(cfg.optim.optimizer, OptimizerKind::Adam { .. }));
        match &cfg.strategy {
            StrategyConfig::Ddc(d) => assert_eq!(d.lambda, 0.5),
            other => panic!("{other:?}"),
        }
        // Written back in sections, it reads back the same.
        let again: Table = toml::from_str(&cfg.to_toml()).unwrap();
        assert!(again.contains_key("data") && !again.contains_key("source"));
        assert_eq!(from_tree(again).unwrap(), cfg);
    }

    #[test]
    fn keys_are_checked_with_their_paths() {
        let err = RunConfig::from_assignments(None, &[("train.epochz", "3")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.epochz") && err.contains("did you mean `epochs`"),
            "{err}"
        );
        let err = RunConfig::from_assignments(None, &[("strategy.name", "ddc"), ("strategy.lamda", "1")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("strategy.lamda") && err.contains("did you mean `lambda`"),
            "{err}"
        );
        let err = RunConfig::from_assignments(None, &[("data.placement", "middle")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("data.placement") && err.contains("middle"), "{err}");
        let err = RunConfig::from_assignments(None, &[("strategy.name", "magic")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`magic` is not a known strategy"), "{err}");
        // Either spelling of a key.
        let cfg = RunConfig::from_assignments(
            None,
            &[
                ("train.batch-size", "7"),
                ("strategy.name", "ddc"),
                ("strategy.adapt_width", "8"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.train.batch_size, 7);
        assert_eq!(cfg.strategy.adapt_width(), Some(8));
    }

    #[test]
    fn settings_a_strategy_does_not_have_are_refused_naming_it() {
        let err = RunConfig::from_assignments(None, &[("strategy.lambda", "1.0")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("lambda") && err.contains("source-only"), "{err}");
        // ddc measures its MMD on one layer: `layer`, not `layers`.
        let err = RunConfig::from_assignments(
            None,
            &[
                ("strategy.name", "ddc"),
                ("strategy.layers", "[\"features\", \"logits\"]"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("strategy.layers") && err.contains("did you mean `layer`"),
            "{err}"
        );
    }

    /// Every registered strategy runs with its defaults and the run's (finetune and shot given
    /// the checkpoint they start from); a combination that cannot run is refused by `check`,
    /// before any work, naming the key.
    #[test]
    fn every_strategys_defaults_pass_the_check_and_bad_combinations_do_not() {
        for &name in StrategyConfig::NAMES {
            let mut cfg = RunConfig::from_assignments(None, &[("strategy.name", name)]).unwrap();
            if name == "finetune" || name == "shot" {
                let err = cfg.check().unwrap_err().to_string();
                assert!(err.contains("init-from"), "{err}");
                cfg.model.init_from = Some("source/model.safetensors".into());
            }
            cfg.check()
                .unwrap_or_else(|e| panic!("{name} with its defaults: {e}"));
        }
        let cfg = RunConfig::from_assignments(
            None,
            &[
                ("strategy.name", "adda"),
                ("train.epochs", "4"),
                ("strategy.source-epochs", "4"),
            ],
        )
        .unwrap();
        let err = cfg.check().unwrap_err().to_string();
        assert!(
            err.contains("source-epochs") && err.contains("the run has 4"),
            "{err}"
        );
        // An estimator's settings, deep in the strategy's, are checked too.
        let cfg = RunConfig::from_assignments(
            None,
            &[
                ("strategy.name", "ddc"),
                (
                    "strategy.instance-weights.estimator",
                    "{ kind = \"kmm\", bound = 0.5 }",
                ),
            ],
        )
        .unwrap();
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains("estimator") && err.contains("bound > 1"), "{err}");
        let cfg = RunConfig::from_assignments(None, &[("strategy.name", "dann"), ("strategy.gamma", "-1")])
            .unwrap();
        assert!(cfg.check().unwrap_err().to_string().contains("gamma"));
    }

    #[test]
    fn switching_strategy_starts_from_its_defaults_and_keeps_the_same_ones() {
        let cfg = RunConfig::from_assignments(
            None,
            &[
                ("strategy.name", "ddc"),
                ("strategy.lambda", "2"),
                ("strategy.name", "ddc"),
            ],
        )
        .unwrap();
        match cfg.strategy {
            StrategyConfig::Ddc(d) => assert_eq!(d.lambda, 2.0),
            other => panic!("{other:?}"),
        }
        let cfg = RunConfig::from_assignments(
            None,
            &[
                ("strategy.name", "ddc"),
                ("strategy.lambda", "2"),
                ("strategy.name", "coral"),
            ],
        )
        .unwrap();
        assert_eq!(cfg.strategy, StrategyConfig::from_name("coral").unwrap());
    }
}
