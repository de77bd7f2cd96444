//! A [`crate::Classifier`] on disk and from elsewhere: safetensors checkpoints with their metadata
//! (written with a canonical header, read with errors naming the file and tensor), the first `n`
//! layers of another model (sequential transfer), and published ImageNet weights under
//! torchvision's or timm's names (name translation, [`BackboneKind::translate_external`]).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use dtl_core::params;

use super::{BackboneKind, Classifier, ModelSpec};
use crate::{Error, Result};

/// What [`crate::Classifier::load_pretrained`] took from a checkpoint.
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

impl BackboneKind {
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

impl Classifier {
    /// Writes the parameters and the architecture (plus `extra` metadata) to a safetensors file,
    /// atomically: an existing file at `path` is replaced only by a complete new one.
    pub fn save(&self, path: &Path, extra: &[(&str, String)]) -> Result<()> {
        let tensors = params::snapshot(&self.varmap)?;
        let mut meta = self.spec.to_metadata();
        for (k, v) in extra {
            meta.insert((*k).to_string(), v.clone());
        }
        meta.insert(
            "dtl.sha256".into(),
            dtl_core::state::tensors_sha256(tensors.iter().map(|(n, t)| (n.as_str(), t)))?,
        );
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

    /// Reads a checkpoint written by [`crate::Classifier::save`]: rebuilds the architecture from its
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
        // The tensors' kinds, and the metadata's input size against the tensor it sizes, before
        // a model of that size is allocated.
        let infos = header.tensors();
        let mut names: Vec<&String> = infos.keys().collect();
        names.sort();
        for name in names {
            let info = &infos[name];
            if !matches!(
                info.dtype,
                safetensors::Dtype::F32
                    | safetensors::Dtype::F64
                    | safetensors::Dtype::F16
                    | safetensors::Dtype::BF16
            ) {
                return Err(bad(format!(
                    "tensor `{name}` holds {:?} values; a model's weights are floating point",
                    info.dtype
                )));
            }
        }
        for (param, shape) in spec.signature_params() {
            match infos.get(param) {
                Some(info) if info.shape == shape => {}
                found => {
                    return Err(bad(format!(
                        "`dtl.backbone` {} needs tensor `{param}` of shape {shape:?}, the file has {}",
                        spec.backbone.as_str(),
                        found.map_or("none".to_string(), |i| format!("{:?}", i.shape))
                    )))
                }
            }
        }
        for (param, dim, len) in spec.metadata_sized_params()? {
            match infos.get(param) {
                Some(info) if info.shape.get(dim) != Some(&len) => {
                    let from = match param {
                        "head.weight" => "`dtl.class_names`",
                        "adapt.weight" => "`dtl.adapt_width`",
                        _ => "`dtl.input_shape`",
                    };
                    return Err(bad(format!(
                        "{from} gives `{param}` {len} in dimension {dim}, the tensor is {:?}: the metadata does not describe these weights",
                        info.shape
                    )));
                }
                Some(_) => {}
                None => {
                    return Err(bad(format!(
                        "tensor `{param}` is missing (a {} needs it)",
                        spec.backbone.as_str()
                    )))
                }
            }
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        if let Some(recorded) = meta.get("dtl.sha256") {
            let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            let digest = dtl_core::state::tensors_sha256(sorted.into_iter().map(|(n, t)| (n.as_str(), t)))?;
            if &digest != recorded {
                return Err(bad(
                    "the tensors do not match the SHA-256 recorded when the checkpoint was written (`dtl.sha256`): the file is damaged".into(),
                ));
            }
        }
        let model = Self::new(spec, 0, device)?;
        model.load_tensors(&tensors, path)?;
        Ok((model, meta))
    }

    /// Copies the parameters of the first `n` layers of [`crate::Classifier::layers`] from `source`
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
    /// (torchvision's, timm's, or dtl's names; see [`crate::Classifier::load_pretrained`]), head
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
        let mut converted = Vec::with_capacity(vars.len());
        for (name, _) in &vars {
            let t = &tensors[name];
            if !t.dtype().is_float() {
                return Err(Error::Checkpoint {
                    path: origin.to_path_buf(),
                    message: format!(
                        "tensor `{name}` holds {:?} values; a model's weights are floating point",
                        t.dtype()
                    ),
                });
            }
            let t = t.to_dtype(DType::F32)?.to_device(&self.device)?;
            // 0 x is 0 for every finite x and NaN for NaN and the infinities.
            let finite = (&t * 0.0)?.sum_all()?.to_scalar::<f32>()? == 0.0;
            if !finite {
                return Err(Error::Checkpoint {
                    path: origin.to_path_buf(),
                    message: format!("tensor `{name}` holds NaN or infinite values"),
                });
            }
            converted.push(t);
        }
        for ((_, var), t) in vars.iter().zip(converted) {
            var.set(&t)?;
        }
        Ok(())
    }
}
