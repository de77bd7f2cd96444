//! The [`Classifier`]: a backbone, an optional adaptation layer and a head, built from a
//! [`ModelSpec`] and initialised from a seed. Its spec and architecture (`spec.rs`), its taps
//! (`taps.rs`) and its checkpoints and published weights (`checkpoint.rs`) are files of their own.

//! A backbone with a linear classifier head, and its safetensors checkpoints.

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dtl_core::seed::Stream;
use dtl_core::Backbone;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::alexnet::{AlexNet, AlexNetConfig};
use crate::convnet::ConvNet8;
use crate::init::{uniform_param, Param};
use crate::lenet::LeNet;
use crate::resnet::{ResNet, ResNetConfig};
use crate::{Error, Result};

mod checkpoint;
mod spec;
mod taps;

pub use checkpoint::{imagenet_classes, read_safetensors, PretrainedLoad};
pub use spec::{BackboneKind, ModelSpec, Normalize, CHECKPOINT_FORMAT, IMAGENET_NORMALIZE};
pub use taps::{Tap, Taps};

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
            BackboneKind::LeNet => Box::new(LeNet::new(
                spec.lenet_config(),
                &varmap,
                &mut rng,
                dropout_seed,
                device,
            )?),
            BackboneKind::ConvNet8 => Box::new(ConvNet8::new(
                spec.convnet_config(),
                &varmap,
                &mut rng,
                dropout_seed,
                device,
            )?),
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

    /// Writes its parameters, batch-norm buffers and dropout stream into a training run's
    /// `state`, under `prefix` (`model.`).
    pub fn save_state(&self, state: &mut dtl_core::state::State, prefix: &str) -> Result<()> {
        state.put_varmap(prefix, &self.varmap)?;
        if let Some(rng) = self.backbone.dropout_rng() {
            let rng = rng.lock().unwrap_or_else(|e| e.into_inner());
            state.put_rng(&format!("{prefix}#dropout"), &rng)?;
        }
        Ok(())
    }

    /// Restores what [`Classifier::save_state`] wrote under `prefix`.
    pub fn load_state(&self, state: &dtl_core::state::State, prefix: &str) -> Result<()> {
        state.load_varmap(prefix, &self.varmap)?;
        if let Some(rng) = self.backbone.dropout_rng() {
            let saved = state.rng(&format!("{prefix}#dropout"))?;
            *rng.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        }
        Ok(())
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
}
