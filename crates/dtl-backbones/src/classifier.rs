//! A backbone with a linear classifier head, and its safetensors checkpoints.

use dtl_core::seed::Stream;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use dtl_core::{params, Backbone};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::alexnet::{AlexNet, AlexNetConfig};
use crate::convnet::{ConvNet8, ConvNet8Config};
use crate::init::{uniform_param, Param};
use crate::lenet::{LeNet, LeNetConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::{Error, Result};

/// Format version written into checkpoints as `dtl.format`.
pub const CHECKPOINT_FORMAT: &str = "1";

/// The architectures dtl can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackboneKind {
    /// [`LeNet`] as ADDA uses it.
    LeNet,
    /// [`ConvNet8`], the 8-layer network of the Yosinski experiment.
    ConvNet8,
    /// [`AlexNet`] in torchvision's layout.
    AlexNet,
    /// torchvision's ResNet-18 ([`ResNet`]).
    ResNet18,
    /// torchvision's ResNet-34.
    ResNet34,
    /// torchvision's ResNet-50 (bottleneck blocks).
    ResNet50,
}

/// In configs by [`BackboneKind::as_str`]'s name, the one the command line parses.
impl serde::Serialize for BackboneKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for BackboneKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// ImageNet's per-channel mean and standard deviation (RGB, on pixels in `[0, 1]`), with which
/// torchvision's and timm's ImageNet weights were trained.
pub const IMAGENET_NORMALIZE: Normalize = Normalize {
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
};

/// Per-channel input normalisation `(x - mean) / std` of a 3-channel model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Per-channel mean.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
}

impl BackboneKind {
    /// Every architecture.
    pub const ALL: [BackboneKind; 6] = [
        BackboneKind::LeNet,
        BackboneKind::ConvNet8,
        BackboneKind::AlexNet,
        BackboneKind::ResNet18,
        BackboneKind::ResNet34,
        BackboneKind::ResNet50,
    ];

    /// The name used in configs, on the command line and in checkpoints.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackboneKind::LeNet => "lenet",
            BackboneKind::ConvNet8 => "convnet8",
            BackboneKind::AlexNet => "alexnet",
            BackboneKind::ResNet18 => "resnet18",
            BackboneKind::ResNet34 => "resnet34",
            BackboneKind::ResNet50 => "resnet50",
        }
    }

    /// Whether this is an ImageNet architecture (3-channel inputs, normalised with
    /// [`IMAGENET_NORMALIZE`], 224x224 by default).
    pub fn is_imagenet(&self) -> bool {
        !matches!(self, BackboneKind::LeNet | BackboneKind::ConvNet8)
    }

    /// The input normalisation a model of this kind applies by default: ImageNet's for the
    /// ImageNet architectures, none for the digit networks.
    pub fn default_normalize(&self) -> Option<Normalize> {
        self.is_imagenet().then_some(IMAGENET_NORMALIZE)
    }

    /// dtl's name for the tensor `name` of a published checkpoint of this architecture
    /// (torchvision's or timm's state dict), or `None` for a tensor dtl does not keep
    /// (`num_batches_tracked`). Names dtl already uses map to themselves.
    ///
    /// AlexNet: `features.{0,3,6,8,10}` -> `conv1` .. `conv5`, `classifier.1` -> `fc6`,
    /// `classifier.4` -> `fc7`, `classifier.6` -> `head`. ResNet: `fc` -> `head`, every other name
    /// as it is (torchvision and timm name ResNets alike).
    pub fn translate_external(&self, name: &str) -> Option<String> {
        if name.ends_with(".num_batches_tracked") {
            return None;
        }
        let (layer, param) = name.rsplit_once('.')?;
        let mapped = match (self, layer) {
            (BackboneKind::AlexNet, "features.0") => "conv1",
            (BackboneKind::AlexNet, "features.3") => "conv2",
            (BackboneKind::AlexNet, "features.6") => "conv3",
            (BackboneKind::AlexNet, "features.8") => "conv4",
            (BackboneKind::AlexNet, "features.10") => "conv5",
            (BackboneKind::AlexNet, "classifier.1") => "fc6",
            (BackboneKind::AlexNet, "classifier.4") => "fc7",
            (BackboneKind::AlexNet, "classifier.6") => "head",
            (BackboneKind::ResNet18 | BackboneKind::ResNet34 | BackboneKind::ResNet50, "fc") => "head",
            _ => return Some(name.to_string()),
        };
        Some(format!("{mapped}.{param}"))
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase().replace(['-', '_'], "");
        BackboneKind::ALL
            .into_iter()
            .find(|k| k.as_str() == lower)
            .ok_or_else(|| {
                Error::Core(dtl_core::Error::config(
                    "backbone",
                    format!(
                        "`{s}` is not a known backbone (known: {})",
                        BackboneKind::ALL.map(|k| k.as_str()).join(", ")
                    ),
                ))
            })
    }
}

/// Everything needed to rebuild a [`Classifier`]'s architecture: stored in each checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The backbone architecture.
    pub backbone: BackboneKind,
    /// Input shape `(C, H, W)`.
    pub input_shape: (usize, usize, usize),
    /// Class names, index = label; their number is the head's width.
    pub class_names: Vec<String>,
    /// Width of an adaptation layer (linear + ReLU) between the backbone's features and the head,
    /// as DDC's bottleneck `fc_adapt` (Tzeng et al. 2014, "Deep domain confusion"); `None` for none.
    pub adapt_width: Option<usize>,
    /// Per-channel normalisation applied to the input before the backbone (ImageNet's for
    /// ImageNet weights, see [`BackboneKind::default_normalize`]); `None` for none.
    pub normalize: Option<Normalize>,
}

impl ModelSpec {
    /// A LeNet for `size x size` single-channel digits with classes `0..=9`.
    pub fn lenet_digits(size: usize) -> Self {
        Self {
            backbone: BackboneKind::LeNet,
            input_shape: (1, size, size),
            class_names: (0..10).map(|d| d.to_string()).collect(),
            adapt_width: None,
            normalize: None,
        }
    }

    /// A model of `backbone` on inputs of `input_shape` for `class_names`, without adaptation
    /// layer, normalising its input as the architecture's published weights expect
    /// ([`BackboneKind::default_normalize`]). ImageNet architectures always take 3 channels: a
    /// 1-channel `input_shape` is widened (and grayscale batches are replicated to 3 channels).
    pub fn new(backbone: BackboneKind, input_shape: (usize, usize, usize), class_names: Vec<String>) -> Self {
        let (c, h, w) = input_shape;
        let c = if backbone.is_imagenet() && c == 1 { 3 } else { c };
        Self {
            backbone,
            input_shape: (c, h, w),
            class_names,
            adapt_width: None,
            normalize: backbone.default_normalize(),
        }
    }

    /// The same architecture with an adaptation layer of `width` units (`None`: without one).
    pub fn with_adapt_width(mut self, width: Option<usize>) -> Self {
        self.adapt_width = width;
        self
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    fn to_metadata(&self) -> HashMap<String, String> {
        let (c, h, w) = self.input_shape;
        let mut meta = HashMap::from([
            ("dtl.format".to_string(), CHECKPOINT_FORMAT.to_string()),
            ("dtl.backbone".to_string(), self.backbone.as_str().to_string()),
            ("dtl.input_shape".to_string(), format!("{c},{h},{w}")),
            ("dtl.class_names".to_string(), self.class_names.join("\n")),
        ]);
        if let Some(width) = self.adapt_width {
            meta.insert("dtl.adapt_width".to_string(), width.to_string());
        }
        if let Some(n) = &self.normalize {
            let join = |v: &[f32; 3]| v.map(|x| x.to_string()).join(",");
            meta.insert("dtl.normalize_mean".to_string(), join(&n.mean));
            meta.insert("dtl.normalize_std".to_string(), join(&n.std));
        }
        meta
    }

    fn from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("metadata has no `{k}`: not a checkpoint written by dtl"),
            })
        };
        let format = get("dtl.format")?;
        if format != CHECKPOINT_FORMAT {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("checkpoint format {format}, this dtl reads format {CHECKPOINT_FORMAT}"),
            });
        }
        let backbone = get("dtl.backbone")?.parse()?;
        let dims: Vec<usize> = get("dtl.input_shape")?
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("bad `dtl.input_shape`: {e}"),
            })?;
        let [c, h, w] = dims[..] else {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("`dtl.input_shape` has {} dimensions, expected 3", dims.len()),
            });
        };
        let class_names: Vec<String> = get("dtl.class_names")?.split('\n').map(str::to_string).collect();
        let adapt_width = match meta.get("dtl.adapt_width") {
            None => None,
            Some(v) => Some(v.trim().parse::<usize>().map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("bad `dtl.adapt_width` `{v}`: {e}"),
            })?),
        };
        let triple = |key: &str| -> Result<Option<[f32; 3]>> {
            let Some(v) = meta.get(key) else {
                return Ok(None);
            };
            let parsed: Vec<f32> = v
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("bad `{key}` `{v}`: {e}"),
                })?;
            <[f32; 3]>::try_from(parsed)
                .map(Some)
                .map_err(|p| Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!("`{key}` has {} values, expected 3", p.len()),
                })
        };
        let normalize = match (triple("dtl.normalize_mean")?, triple("dtl.normalize_std")?) {
            (Some(mean), Some(std)) => Some(Normalize { mean, std }),
            (None, None) => None,
            _ => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: "`dtl.normalize_mean` and `dtl.normalize_std` come together".into(),
                })
            }
        };
        Ok(Self {
            backbone,
            input_shape: (c, h, w),
            class_names,
            adapt_width,
            normalize,
        })
    }
}

/// What [`Classifier::load_pretrained`] took from a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PretrainedLoad {
    /// Tensors loaded.
    pub loaded: usize,
    /// Whether the head came from the checkpoint (same number of classes).
    pub head: bool,
    /// The checkpoint's tensors left out (`num_batches_tracked`, a head of another width), by
    /// their names in the file.
    pub skipped: Vec<String>,
}

/// ImageNet-1k's class names in index order (torchvision's list; `scripts/make_backbone_fixture.py`
/// writes it), the classes of torchvision's and timm's ImageNet heads.
pub fn imagenet_classes() -> Vec<String> {
    include_str!("imagenet_classes.txt")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Rewrites a safetensors file's JSON header with its keys sorted (the metadata map comes out of
/// the `safetensors` crate in hash order), keeping its length: two identical models then give
/// byte-identical files, whose checksums can be published.
fn canonical_header(mut bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let n = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        .ok_or("serialised checkpoint shorter than its header")?;
    let header = bytes
        .get(8..8 + n)
        .ok_or("serialised checkpoint shorter than its header")?;
    // serde_json's map is ordered by key (no `preserve_order`), so this sorts every level.
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut sorted = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    if sorted.len() > n {
        return Err(format!(
            "sorted header is {} bytes, the original {n}",
            sorted.len()
        ));
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

/// Reads every tensor of a safetensors file; errors name the file.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| Error::Checkpoint {
        path: path.to_path_buf(),
        message: format!("not a readable safetensors file: {e}"),
    })
}

/// Where a discrepancy or adversarial loss can read a [`Classifier`]'s representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tap {
    /// The backbone's features: its last hidden layer (LeNet's `fc1`).
    Features,
    /// The adaptation layer's output (needs [`ModelSpec::adapt_width`]).
    Adapt,
    /// The head's class logits (DAN's `fc8`).
    Logits,
}

impl Tap {
    /// Every tap, bottom to top.
    pub const ALL: [Tap; 3] = [Tap::Features, Tap::Adapt, Tap::Logits];

    /// The name configs and logs use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tap::Features => "features",
            Tap::Adapt => "adapt",
            Tap::Logits => "logits",
        }
    }
}

impl std::fmt::Display for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tap {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Tap::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            Error::Core(dtl_core::Error::config(
                "layer",
                format!("`{s}` is not a layer to adapt (known: features, adapt, logits)"),
            ))
        })
    }
}

/// The outputs of one forward pass at every [`Tap`].
#[derive(Debug, Clone)]
pub struct Taps {
    /// Backbone features `(B, D)`.
    pub features: Tensor,
    /// Adaptation layer output `(B, A)`, when the model has one.
    pub adapt: Option<Tensor>,
    /// Class logits `(B, K)`.
    pub logits: Tensor,
}

impl Taps {
    /// The output at `tap`; an error names a missing adaptation layer.
    pub fn get(&self, tap: Tap) -> Result<&Tensor> {
        match tap {
            Tap::Features => Ok(&self.features),
            Tap::Logits => Ok(&self.logits),
            Tap::Adapt => self.adapt.as_ref().ok_or_else(|| {
                Error::Core(dtl_core::Error::config(
                    "layer",
                    "`adapt` was asked for but the model has no adaptation layer (set adapt-width)",
                ))
            }),
        }
    }

    /// The last hidden representation: the adaptation layer's output if there is one, else the
    /// backbone's features.
    pub fn hidden(&self) -> &Tensor {
        self.adapt.as_ref().unwrap_or(&self.features)
    }

    /// Rows `start..start + len` of every output (to split a joint source + target pass).
    pub fn narrow(&self, start: usize, len: usize) -> Result<Self> {
        Ok(Self {
            features: self.features.narrow(0, start, len)?,
            adapt: self.adapt.as_ref().map(|a| a.narrow(0, start, len)).transpose()?,
            logits: self.logits.narrow(0, start, len)?,
        })
    }
}

/// A backbone, an optional adaptation layer `adapt` (linear + ReLU) and a linear head `head`
/// producing class logits.
///
/// Its parameters live in one [`VarMap`] under `{layer}.{param}` names; [`Classifier::layers`] lists
/// the backbone's layers, then `adapt` when present, then `head`.
pub struct Classifier {
    spec: ModelSpec,
    backbone: Box<dyn Backbone>,
    adapt: Option<Param>,
    head: Param,
    varmap: VarMap,
    layers: Vec<String>,
    device: Device,
    frozen_prefix: usize,
}

impl Classifier {
    /// Builds a classifier, initialising every parameter from `seed`.
    pub fn new(spec: ModelSpec, seed: u64, device: &Device) -> Result<Self> {
        if spec.class_names.len() < 2 {
            return Err(Error::Core(dtl_core::Error::config(
                "classes",
                format!(
                    "a classifier needs at least 2 classes, got {}",
                    spec.class_names.len()
                ),
            )));
        }
        let varmap = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::Init.seed(seed));
        let (c, h, w) = spec.input_shape;
        if h != w {
            return Err(Error::Core(dtl_core::Error::config(
                "input_shape",
                format!("{} takes square images, got {h}x{w}", spec.backbone.as_str()),
            )));
        }
        let dropout_seed = Stream::Dropout.seed(seed);
        let backbone: Box<dyn Backbone> = match spec.backbone {
            BackboneKind::LeNet => {
                let cfg = LeNetConfig {
                    in_channels: c,
                    input_size: h,
                    ..Default::default()
                };
                Box::new(LeNet::new(cfg, &varmap, &mut rng, dropout_seed, device)?)
            }
            BackboneKind::ConvNet8 => {
                let cfg = ConvNet8Config {
                    in_channels: c,
                    input_size: h,
                    ..Default::default()
                };
                Box::new(ConvNet8::new(cfg, &varmap, &mut rng, dropout_seed, device)?)
            }
            BackboneKind::AlexNet => {
                let cfg = AlexNetConfig {
                    in_channels: c,
                    input_size: h,
                    ..Default::default()
                };
                Box::new(AlexNet::new(cfg, &varmap, &mut rng, dropout_seed, device)?)
            }
            BackboneKind::ResNet18 | BackboneKind::ResNet34 | BackboneKind::ResNet50 => {
                let depth = match spec.backbone {
                    BackboneKind::ResNet18 => 18,
                    BackboneKind::ResNet34 => 34,
                    _ => 50,
                };
                let cfg = ResNetConfig::torchvision(depth, c, h)?;
                Box::new(ResNet::new(cfg, &varmap, &mut rng, device)?)
            }
        };
        if let Some(n) = &spec.normalize {
            if c != 3 {
                return Err(Error::Core(dtl_core::Error::config(
                    "normalize",
                    format!("per-channel normalisation needs 3 input channels, the model takes {c}"),
                )));
            }
            if n.std.iter().any(|&s| s <= 0.0 || !s.is_finite()) || n.mean.iter().any(|m| !m.is_finite()) {
                return Err(Error::Core(dtl_core::Error::config(
                    "normalize",
                    format!("std must be positive and finite, mean finite: {n:?}"),
                )));
            }
        }
        let hidden = spec.adapt_width.unwrap_or(backbone.feature_dim());
        if hidden == 0 {
            return Err(Error::Core(dtl_core::Error::config(
                "adapt-width",
                "an adaptation layer needs at least 1 unit",
            )));
        }
        let head = uniform_param(&varmap, "head", &[spec.num_classes(), hidden], &mut rng, device)?;
        // Drawn after the head so that a model without an adaptation layer is initialised exactly
        // as before the layer existed.
        let adapt = spec
            .adapt_width
            .map(|w| uniform_param(&varmap, "adapt", &[w, backbone.feature_dim()], &mut rng, device))
            .transpose()?;
        let mut layers = backbone.layers().to_vec();
        if adapt.is_some() {
            layers.push("adapt".into());
        }
        layers.push("head".into());
        Ok(Self {
            spec,
            backbone,
            adapt,
            head,
            varmap,
            layers,
            device: device.clone(),
            frozen_prefix: 0,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The backbone.
    pub fn backbone(&self) -> &dyn Backbone {
        self.backbone.as_ref()
    }

    /// The parameter store.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Ordered layer names: the backbone's, then `head`.
    pub fn layers(&self) -> &[String] {
        &self.layers
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The backbone's input for images `xs`: grayscale batches replicated to the 3 channels of
    /// a colour model, then normalised per channel when the model does ([`ModelSpec::normalize`]).
    pub fn prepare_input(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x = xs.clone();
        if self.spec.input_shape.0 == 3 && x.rank() == 4 && x.dim(1)? == 1 {
            x = x.repeat((1, 3, 1, 1))?;
        }
        if let Some(n) = &self.spec.normalize {
            if x.rank() == 4 && x.dim(1)? == 3 {
                let dev = x.device();
                let mean = Tensor::new(&n.mean, dev)?
                    .reshape((1, 3, 1, 1))?
                    .to_dtype(x.dtype())?;
                let inv = Tensor::new(&n.std.map(|s| 1.0 / s), dev)?
                    .reshape((1, 3, 1, 1))?
                    .to_dtype(x.dtype())?;
                x = x.broadcast_sub(&mean)?.broadcast_mul(&inv)?;
            }
        }
        Ok(x)
    }

    /// Features `(B, D)` of images `(B, C, H, W)` (see [`Classifier::prepare_input`]), with the
    /// gradient stopped behind the frozen prefix, if any.
    pub fn features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let xs = self.prepare_input(xs)?;
        Ok(match self.frozen_prefix {
            0 => self.backbone.features(&xs, train)?,
            n => self.backbone.features_frozen_prefix(&xs, train, n)?,
        })
    }

    /// Declares the first `n` layers of [`Classifier::layers`] frozen (no optimizer updates them),
    /// so that backward passes stop behind them: the same values, less work. Only the backbone's
    /// layers count; `0` undoes it. Whoever freezes the layers (the `finetune` strategy) calls
    /// this; it changes no parameter.
    pub fn set_frozen_prefix(&mut self, n: usize) {
        self.frozen_prefix = n.min(self.backbone.layers().len());
    }

    /// The number of leading backbone layers whose gradient is stopped.
    pub fn frozen_prefix(&self) -> usize {
        self.frozen_prefix
    }

    /// Logits `(B, K)` of backbone features `(B, D)` (through the adaptation layer if any).
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        match &self.adapt {
            Some(a) => Ok(self.head.linear(&a.linear(features)?.relu()?)?),
            None => Ok(self.head.linear(features)?),
        }
    }

    /// Logits `(B, K)` of images `(B, C, H, W)`.
    pub fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&self.features(xs, train)?)
    }

    /// One forward pass of images `(B, C, H, W)` keeping the output at every [`Tap`].
    pub fn forward_taps(&self, xs: &Tensor, train: bool) -> Result<Taps> {
        let features = self.features(xs, train)?;
        let adapt = match &self.adapt {
            Some(a) => Some(a.linear(&features)?.relu()?),
            None => None,
        };
        let logits = self.head.linear(adapt.as_ref().unwrap_or(&features))?;
        Ok(Taps {
            features,
            adapt,
            logits,
        })
    }

    /// Writes the parameters and the architecture (plus `extra` metadata) to a safetensors file,
    /// atomically: an existing file at `path` is replaced only by a complete new one.
    pub fn save(&self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        let tensors = params::snapshot(&self.varmap)?;
        let mut meta = self.spec.to_metadata();
        for (k, v) in extra {
            meta.insert((*k).to_string(), v.clone());
        }
        let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
            .map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let bytes = canonical_header(bytes).map_err(|message| Error::Checkpoint {
            path: path.to_path_buf(),
            message,
        })?;
        dtl_core::write_atomic(path, &bytes).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        tracing::info!("saved checkpoint {}", path.display());
        Ok(())
    }

    /// Reads a checkpoint written by [`Classifier::save`]: rebuilds the architecture from its
    /// metadata and loads every parameter. Returns the classifier and the file's metadata.
    pub fn load(path: &Path, device: &Device) -> Result<(Self, HashMap<String, String>)> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let bad = |m: String| Error::Checkpoint {
            path: path.to_path_buf(),
            message: m,
        };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let spec = ModelSpec::from_metadata(&meta, path)?;
        let model = Self::new(spec, 0, device)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        model.load_tensors(&tensors, path)?;
        Ok((model, meta))
    }

    /// Copies the parameters of the first `n` layers of [`Classifier::layers`] from `source`
    /// (Yosinski et al. 2014's transfer of "the first n layers"); the other layers keep their own
    /// initialisation. Returns the names of the layers copied.
    ///
    /// The two models must list the same layers up to `n`, with parameters of the same shapes; the
    /// head can be copied only when the classes agree. Errors name the layer or tensor that does
    /// not fit, and nothing is changed then.
    pub fn transfer_from(&self, source: &Classifier, n: usize, origin: &Path) -> Result<Vec<String>> {
        let bad = |message: String| Error::Checkpoint {
            path: origin.to_path_buf(),
            message,
        };
        if n > self.layers.len() {
            return Err(Error::Core(dtl_core::Error::config(
                "transfer-layers",
                format!(
                    "{n} layers asked, the model has {} ({})",
                    self.layers.len(),
                    self.layers.join(", ")
                ),
            )));
        }
        let layers = &self.layers[..n];
        if source.layers.get(..n) != Some(layers) {
            return Err(bad(format!(
                "its first {n} layers are [{}], the model's are [{}]",
                source
                    .layers
                    .iter()
                    .take(n)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                layers.join(", ")
            )));
        }
        if layers.iter().any(|l| l == "head") && source.spec.class_names != self.spec.class_names {
            return Err(bad(format!(
                "its head classifies [{}], the model's classes are [{}]: transfer fewer layers, the head is then new",
                source.spec.class_names.join(", "),
                self.spec.class_names.join(", ")
            )));
        }
        // Every tensor of the layers, batch-norm running statistics included.
        let of_layers = |vm: &VarMap| -> Vec<(String, candle_core::Var)> {
            params::all(vm)
                .into_iter()
                .filter(|(name, _)| layers.iter().any(|l| params::belongs_to(name, l)))
                .collect()
        };
        let mine = of_layers(&self.varmap);
        let theirs: HashMap<String, Tensor> = of_layers(&source.varmap)
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().clone()))
            .collect();
        for (name, var) in &mine {
            let Some(t) = theirs.get(name) else {
                return Err(bad(format!("tensor `{name}` is missing")));
            };
            if t.dims() != var.dims() {
                return Err(Error::TensorShape {
                    path: origin.to_path_buf(),
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
        }
        for (name, var) in &mine {
            var.set(&theirs[name].copy()?)?;
        }
        Ok(layers.to_vec())
    }

    /// Loads published weights (torchvision's or timm's state dict, or dtl's own names) into the
    /// backbone, translating names with [`BackboneKind::translate_external`].
    ///
    /// Every backbone tensor must be present with its exact shape; the error names the first one
    /// (layer by layer in forward order, by the checkpoint's own name) that does not fit, else
    /// the first missing one, which is how a checkpoint of another architecture shows. The head is taken when its shape matches
    /// (the same number of classes), else it keeps its fresh initialisation, as does an adaptation
    /// layer the checkpoint lacks. Tensors the model has no place for are an error. Nothing is
    /// changed on error.
    pub fn load_pretrained(
        &self,
        tensors: &HashMap<String, Tensor>,
        origin: &Path,
    ) -> Result<PretrainedLoad> {
        let kind = self.spec.backbone;
        let bad = |message: String| Error::Checkpoint {
            path: origin.to_path_buf(),
            message,
        };
        let mut skipped = Vec::new();
        // dtl name -> (the checkpoint's name, tensor)
        let mut by_ours: HashMap<String, (&String, &Tensor)> = HashMap::new();
        for (name, t) in tensors {
            match kind.translate_external(name) {
                Some(ours) => {
                    by_ours.insert(ours, (name, t));
                }
                None => skipped.push(name.clone()),
            }
        }
        let vars = params::all(&self.varmap);
        let mut plan: Vec<(&candle_core::Var, &Tensor)> = Vec::new();
        let mut head = true;
        let mut first_missing: Option<&String> = None;
        let optional = |layer: &str| layer == "head" || layer == "adapt";
        for layer in &self.layers {
            let mine: Vec<&(String, candle_core::Var)> = vars
                .iter()
                .filter(|(n, _)| params::belongs_to(n, layer))
                .collect();
            if optional(layer) {
                let fits = mine
                    .iter()
                    .all(|(n, v)| by_ours.get(n).is_some_and(|(_, t)| t.dims() == v.dims()));
                if fits {
                    plan.extend(mine.iter().map(|(n, v)| (v, by_ours[n].1)));
                } else {
                    if layer == "head" {
                        head = false;
                    }
                    for (n, _) in &mine {
                        if let Some((ext, t)) = by_ours.get(n) {
                            tracing::info!(
                                "{}: `{ext}` {:?} does not fit the model's `{n}`; {layer} stays newly initialised",
                                origin.display(),
                                t.dims()
                            );
                            skipped.push((*ext).clone());
                        }
                    }
                }
                continue;
            }
            for (n, v) in mine {
                let Some((ext, t)) = by_ours.get(n) else {
                    first_missing.get_or_insert(n);
                    continue;
                };
                if t.dims() != v.dims() {
                    return Err(bad(format!(
                        "tensor `{ext}` has shape {:?}, a {} expects {:?} for `{n}`: the checkpoint holds another architecture",
                        t.dims(),
                        kind.as_str(),
                        v.dims()
                    )));
                }
                plan.push((v, t));
            }
        }
        // A tensor of the wrong shape says more about the file than a missing one: it is
        // reported first.
        if let Some(n) = first_missing {
            return Err(bad(format!(
                "tensor `{n}` is missing: not a checkpoint of a {} (torchvision or timm names, or dtl's)",
                kind.as_str()
            )));
        }
        let mut unexpected: Vec<&String> = by_ours
            .iter()
            .filter(|(ours, _)| !vars.iter().any(|(n, _)| n == *ours))
            .map(|(_, (ext, _))| *ext)
            .collect();
        unexpected.sort();
        if let Some(first) = unexpected.first() {
            return Err(bad(format!(
                "tensor `{first}` has no place in a {} ({} such tensors): the checkpoint holds another architecture",
                kind.as_str(),
                unexpected.len()
            )));
        }
        let loaded = plan.len();
        for (var, t) in plan {
            var.set(&t.to_dtype(DType::F32)?.to_device(&self.device)?)?;
        }
        skipped.sort();
        tracing::info!(
            "loaded {loaded} tensors from {} ({}head from the checkpoint)",
            origin.display(),
            if head { "" } else { "no " }
        );
        Ok(PretrainedLoad {
            loaded,
            head,
            skipped,
        })
    }

    /// Builds a `kind` classifier on `3 x size x size` images from a published checkpoint
    /// (torchvision's, timm's, or dtl's names; see [`Classifier::load_pretrained`]), head
    /// included: the head's width is the checkpoint's number of classes, named by
    /// [`imagenet_classes`] for 1000 classes, else `0`, `1`, ...
    pub fn from_pretrained(
        kind: BackboneKind,
        size: usize,
        path: &Path,
        device: &Device,
    ) -> Result<(Self, PretrainedLoad)> {
        let tensors = read_safetensors(path, device)?;
        let head = tensors
            .iter()
            .find(|(n, _)| kind.translate_external(n).as_deref() == Some("head.weight"))
            .map(|(_, t)| t.dims().to_vec());
        let classes = match head.as_deref() {
            Some([k, _]) => *k,
            _ => {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "no classifier head for a {} (`fc.weight` for ResNets, `classifier.6.weight` for AlexNet, or `head.weight`): train one with `dtl train --pretrained`",
                        kind.as_str()
                    ),
                })
            }
        };
        let names = if classes == 1000 {
            imagenet_classes()
        } else {
            (0..classes).map(|i| i.to_string()).collect()
        };
        let model = Self::new(ModelSpec::new(kind, (3, size, size), names), 0, device)?;
        let report = model.load_pretrained(&tensors, path)?;
        Ok((model, report))
    }

    /// Replaces every parameter with the tensor of the same name in `tensors`.
    ///
    /// Every parameter must be present with its exact shape, and `tensors` may hold nothing else;
    /// otherwise the error names the first tensor that does not fit (and nothing is changed).
    pub fn load_tensors(&self, tensors: &HashMap<String, Tensor>, origin: &Path) -> Result<()> {
        let vars = params::all(&self.varmap);
        for (name, var) in &vars {
            let Some(t) = tensors.get(name) else {
                return Err(Error::Checkpoint {
                    path: origin.to_path_buf(),
                    message: format!(
                        "tensor `{name}` is missing (a {} needs it)",
                        self.spec.backbone.as_str()
                    ),
                });
            };
            if t.dims() != var.dims() {
                return Err(Error::TensorShape {
                    path: origin.to_path_buf(),
                    name: name.clone(),
                    expected: var.dims().to_vec(),
                    found: t.dims().to_vec(),
                });
            }
        }
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !vars.iter().any(|(n, _)| n == *k))
            .collect();
        extra.sort();
        if let Some(name) = extra.first() {
            return Err(Error::Checkpoint {
                path: origin.to_path_buf(),
                message: format!(
                    "unexpected tensor `{name}`: not a parameter of this {} ({} unexpected in all)",
                    self.spec.backbone.as_str(),
                    extra.len()
                ),
            });
        }
        for (name, var) in &vars {
            let t = tensors[name].to_dtype(DType::F32)?.to_device(&self.device)?;
            var.set(&t)?;
        }
        Ok(())
    }
}
