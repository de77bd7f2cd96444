//! A backbone with a linear classifier head, and its safetensors checkpoints.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use dtl_core::{params, Backbone};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::convnet::{ConvNet8, ConvNet8Config};
use crate::init::{uniform_param, Param};
use crate::lenet::{LeNet, LeNetConfig};
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
}

impl BackboneKind {
    /// The name used in configs, on the command line and in checkpoints.
    pub fn as_str(&self) -> &'static str {
        match self {
            BackboneKind::LeNet => "lenet",
            BackboneKind::ConvNet8 => "convnet8",
        }
    }
}

impl std::str::FromStr for BackboneKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "lenet" => Ok(BackboneKind::LeNet),
            "convnet8" => Ok(BackboneKind::ConvNet8),
            _ => Err(Error::Core(dtl_core::Error::config(
                "backbone",
                format!("`{s}` is not a known backbone (known: lenet, convnet8)"),
            ))),
        }
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
}

impl ModelSpec {
    /// A LeNet for `size x size` single-channel digits with classes `0..=9`.
    pub fn lenet_digits(size: usize) -> Self {
        Self {
            backbone: BackboneKind::LeNet,
            input_shape: (1, size, size),
            class_names: (0..10).map(|d| d.to_string()).collect(),
            adapt_width: None,
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
        Ok(Self {
            backbone,
            input_shape: (c, h, w),
            class_names,
            adapt_width,
        })
    }
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
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (c, h, w) = spec.input_shape;
        if h != w {
            return Err(Error::Core(dtl_core::Error::config(
                "input_shape",
                format!("{} takes square images, got {h}x{w}", spec.backbone.as_str()),
            )));
        }
        let dropout_seed = seed.wrapping_add(0x0d50_0d50);
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
        };
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

    /// Features `(B, D)` of the backbone (gradient stopped behind the frozen prefix, if any).
    pub fn features(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match self.frozen_prefix {
            0 => self.backbone.features(xs, train)?,
            n => self.backbone.features_frozen_prefix(xs, train, n)?,
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
