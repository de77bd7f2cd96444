//! What a [`super::Classifier`] is made of, as checkpoints record it: the architecture
//! ([`BackboneKind`]), input normalisation, and the [`crate::ModelSpec`] (input shape, classes, adaptation
//! layer) stored in a checkpoint's metadata.

use std::collections::HashMap;
use std::path::Path;

use crate::{Error, Result};

/// Format version written into checkpoints as `dtl.format`.
pub const CHECKPOINT_FORMAT: &str = "1";

/// The architectures dtl can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackboneKind {
    /// [`crate::LeNet`] as ADDA uses it.
    LeNet,
    /// [`crate::ConvNet8`], the 8-layer network of the Yosinski experiment.
    ConvNet8,
    /// [`crate::AlexNet`] in torchvision's layout.
    AlexNet,
    /// torchvision's ResNet-18 ([`crate::ResNet`]).
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

/// Everything needed to rebuild a [`crate::Classifier`]'s architecture: stored in each checkpoint.
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

    pub(super) fn to_metadata(&self) -> HashMap<String, String> {
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

    /// The LeNet settings of this spec (a LeNet backbone's input).
    pub(crate) fn lenet_config(&self) -> crate::lenet::LeNetConfig {
        crate::lenet::LeNetConfig {
            in_channels: self.input_shape.0,
            input_size: self.input_shape.1,
            ..Default::default()
        }
    }

    /// The 8-layer convnet settings of this spec.
    pub(crate) fn convnet_config(&self) -> crate::convnet::ConvNet8Config {
        crate::convnet::ConvNet8Config {
            in_channels: self.input_shape.0,
            input_size: self.input_shape.1,
            ..Default::default()
        }
    }

    /// Tensors every checkpoint of this architecture holds, with their shapes: the largest layers
    /// of the backbones whose size does not depend on the input (AlexNet's `fc6`, the last
    /// blocks of the ResNets). A header that names a backbone but lacks them is refused before
    /// that backbone is built, so that a small file cannot make dtl allocate a large model
    /// (the model is then at most a dozen times the size of the file's tensors).
    pub fn signature_params(&self) -> Vec<(&'static str, Vec<usize>)> {
        match self.backbone {
            BackboneKind::AlexNet => vec![("fc6.weight", vec![4096, 256 * 6 * 6])],
            BackboneKind::ResNet18 => vec![("layer4.1.conv2.weight", vec![512, 512, 3, 3])],
            BackboneKind::ResNet34 => vec![
                ("layer3.5.conv2.weight", vec![256, 256, 3, 3]),
                ("layer4.2.conv2.weight", vec![512, 512, 3, 3]),
            ],
            BackboneKind::ResNet50 => vec![
                ("layer4.2.conv2.weight", vec![512, 512, 3, 3]),
                ("layer4.2.conv3.weight", vec![2048, 512, 1, 1]),
            ],
            BackboneKind::LeNet | BackboneKind::ConvNet8 => Vec::new(),
        }
    }

    /// The parameters whose shapes the spec's sizes decide, each with the dimension and the
    /// length it must have: the input of LeNet's `fc1` and the convnet's `fc6` (from the input
    /// size), the rows of `adapt` (its width) and of `head` (the classes). A checkpoint's
    /// metadata is checked against its own tensors with them before a model of those sizes is
    /// allocated.
    pub fn metadata_sized_params(&self) -> Result<Vec<(&'static str, usize, usize)>> {
        let mut out = Vec::new();
        match self.backbone {
            BackboneKind::LeNet => out.push(("fc1.weight", 1, self.lenet_config().flat_features()?)),
            BackboneKind::ConvNet8 => out.push(("fc6.weight", 1, self.convnet_config().flat_features())),
            _ => {}
        }
        if let Some(w) = self.adapt_width {
            out.push(("adapt.weight", 0, w));
        }
        out.push(("head.weight", 0, self.class_names.len()));
        Ok(out)
    }

    pub(super) fn from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<Self> {
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
        // Bounded before any model of this shape is allocated.
        if !matches!(c, 1 | 3) {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                message: format!("`dtl.input_shape` has {c} channels, dtl models take 1 or 3"),
            });
        }
        for side in [h, w] {
            dtl_core::check_image_side("dtl.input_shape", side, 1).map_err(|e| Error::Checkpoint {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
        let class_names: Vec<String> = get("dtl.class_names")?.split('\n').map(str::to_string).collect();
        for (i, name) in class_names.iter().enumerate() {
            if name.trim().is_empty() || class_names[..i].contains(name) {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    message: format!(
                        "`dtl.class_names` names class {} {}: every class needs a name of its own",
                        i,
                        if name.trim().is_empty() {
                            "with an empty string".to_string()
                        } else {
                            format!("`{name}` a second time")
                        }
                    ),
                });
            }
        }
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
