//! The engine shared by the discrepancy-based strategies ([`ddc`], [`dan`], [`coral`]): minimise `L = L_source_CE + lambda * sum_l D(phi_l(X_S), phi_l(X_T))` over one
//! network whose weights both domains share, where `phi_l` is the output at layer `l` and `D` a
//! distance between the two samples (MMD^2 or CORAL).
//!
//! Source and target batches go through the network in one joint pass (one batch of `B + B'`
//! images, split afterwards), so that every layer sees both domains at once.

/// The [`StrategySettings`](crate::StrategySettings) of a discrepancy strategy's settings
/// `$cfg` (fields `lambda`, `adapt_width`, `instance_weights` and a `build(model, optim)`), named
/// `$name`, adapting the layers `$layers` computes from the settings `$s`.
macro_rules! discrepancy_settings {
    ($cfg:ty, $name:literal, |$s:ident| $layers:expr) => {
        impl $crate::strategy::StrategySettings for $cfg {
            fn validate(&self) -> $crate::Result<()> {
                let $s = self;
                $crate::discrepancy::validate_settings(
                    $name,
                    self.lambda,
                    $layers,
                    self.adapt_width,
                    self.instance_weights.as_ref(),
                )
            }

            fn adapt_layer(&self) -> $crate::strategy::AdaptLayer {
                $crate::strategy::AdaptLayer::Exactly(self.adapt_width())
            }

            fn instance_weights(&self) -> Option<&$crate::weighting::iw::IwConfig> {
                self.instance_weights.as_ref()
            }

            fn instance_weights_key(&self) -> Option<&'static str> {
                Some("instance-weights")
            }

            fn build_strategy(
                &self,
                ctx: $crate::strategy::BuildContext<'_>,
            ) -> $crate::Result<Box<dyn $crate::strategy::TransferStrategy>> {
                $crate::discrepancy::build_discrepancy(ctx, self.instance_weights.as_ref(), |model, optim| {
                    self.build(model, optim)
                })
            }
        }
    };
}

pub mod coral;
pub mod dan;
pub mod ddc;

use candle_core::Tensor;
use dtl_backbones::{Classifier, Tap, Taps};
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_losses::{Estimator, MmdKernel};
use serde::{Deserialize, Serialize};

use crate::loss::source_loss;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::BuildContext;
use crate::weighting::iw::{IwConfig, SourceWeighter};
use crate::weighting::WeightStats;
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Which MMD estimator a strategy uses (see [`dtl_losses::Estimator`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EstimatorChoice {
    /// The V-statistic (never negative).
    Biased,
    /// The U-statistic.
    Unbiased,
    /// The linear-time estimator (Gretton et al. 2012, as DAN trains with).
    Linear,
}

impl From<EstimatorChoice> for Estimator {
    fn from(e: EstimatorChoice) -> Self {
        match e {
            EstimatorChoice::Biased => Estimator::Biased,
            EstimatorChoice::Unbiased => Estimator::Unbiased,
            EstimatorChoice::Linear => Estimator::Linear,
        }
    }
}

/// The distance between the domains' representations.
#[derive(Debug, Clone, PartialEq)]
pub enum Distance {
    /// MMD^2 under a kernel, with an estimator.
    Mmd {
        /// The kernel.
        kernel: MmdKernel,
        /// The estimator.
        estimator: Estimator,
    },
    /// The CORAL loss (Sun & Saenko 2016).
    Coral,
}

impl Distance {
    /// The name of its logged value (`mmd2` or `coral`).
    pub fn label(&self) -> &'static str {
        match self {
            Distance::Mmd { .. } => "mmd2",
            Distance::Coral => "coral",
        }
    }

    /// The distance between source `(n, d)` and target `(m, d)` representations; inputs of more
    /// than two dimensions are flattened per sample.
    pub fn between(&self, xs: &Tensor, xt: &Tensor) -> Result<Tensor> {
        let (xs, xt) = (xs.flatten_from(1)?, xt.flatten_from(1)?);
        let d = match self {
            Distance::Mmd { kernel, estimator } => dtl_losses::mmd2(&xs, &xt, kernel, *estimator),
            Distance::Coral => dtl_losses::coral(&xs, &xt),
        };
        d.map_err(crate::adversarial::loss_err)
    }
}

/// How the weight of the adaptation loss evolves over training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// `lambda` from the first step (the papers' form, on pretrained networks).
    Constant,
    /// `lambda * (2 / (1 + exp(-10 p)) - 1)` at training progress `p`, Ganin & Lempitsky's (2015)
    /// schedule: 0 at the start, `0.46 lambda` at a tenth of training, `0.99 lambda` at half. A
    /// network trained from scratch first learns features before they are pulled together; on
    /// random features a median-heuristic MMD can instead shrink them to nothing.
    Ramp,
}

impl Schedule {
    /// The factor on `lambda` at progress `p` in `[0, 1]`.
    pub fn factor(&self, p: f64) -> f64 {
        match self {
            Schedule::Constant => 1.0,
            Schedule::Ramp => 2.0 / (1.0 + (-10.0 * p).exp()) - 1.0,
        }
    }
}

/// Checks a trade-off weight.
pub(crate) fn check_lambda(lambda: f64) -> Result<()> {
    if lambda >= 0.0 && lambda.is_finite() {
        Ok(())
    } else {
        Err(Error::Core(dtl_core::Error::config(
            "lambda",
            format!("{lambda} is not a non-negative number"),
        )))
    }
}

/// The weight and the adapted layers of a discrepancy strategy `name`: at least one layer, none
/// twice, `adapt` only where the model has an adaptation layer.
fn check_layers(name: &str, lambda: f64, layers: &[Tap], has_adapt_layer: bool) -> Result<()> {
    check_lambda(lambda)?;
    let bad = |m: String| Err(Error::Core(dtl_core::Error::config("layers", m)));
    if layers.is_empty() {
        return bad(format!("{name} needs at least one layer to adapt"));
    }
    for (i, l) in layers.iter().enumerate() {
        if layers[..i].contains(l) {
            return bad(format!("`{l}` is listed twice"));
        }
        if *l == Tap::Adapt && !has_adapt_layer {
            return bad(format!(
                "{name} adapts `adapt` but the model has no adaptation layer (set adapt-width above 0)"
            ));
        }
    }
    Ok(())
}

/// The checks every discrepancy strategy's settings share, before any model exists: the weight,
/// the adapted layers (at least one, none twice, `adapt` only with an adaptation layer), and the
/// instance weights of the source loss.
pub(crate) fn validate_settings(
    name: &str,
    lambda: f64,
    layers: &[Tap],
    adapt_width: usize,
    instance_weights: Option<&IwConfig>,
) -> Result<()> {
    check_layers(name, lambda, layers, adapt_width > 0)?;
    if let Some(w) = instance_weights {
        w.validate()?;
    }
    Ok(())
}

/// A discrepancy strategy from `ctx`, its source loss weighted when `instance_weights` is set
/// (the weighter reads `ctx`'s training data).
pub(crate) fn build_discrepancy(
    ctx: BuildContext<'_>,
    instance_weights: Option<&IwConfig>,
    make: impl FnOnce(Classifier, &OptimSettings) -> Result<Discrepancy>,
) -> Result<Box<dyn TransferStrategy>> {
    let weighter = match instance_weights {
        Some(w) => {
            let data = ctx.training_data("instance weights")?;
            Some(w.weighter(data.source, data.target, ctx.seed)?)
        }
        None => None,
    };
    let strategy = make(ctx.model, &ctx.optim)?;
    Ok(match weighter {
        Some(w) => Box::new(strategy.with_instance_weights(w)),
        None => Box::new(strategy),
    })
}

/// The adaptation layer width a config asks for: 0 means none.
pub(crate) fn adapt_width(width: usize) -> Option<usize> {
    (width > 0).then_some(width)
}

/// Source cross-entropy plus `lambda` times a distance summed over layers, on one shared network;
/// the cross-entropy optionally importance-weighted ([`Discrepancy::with_instance_weights`]).
pub struct Discrepancy {
    name: &'static str,
    model: Classifier,
    opt: Optimizer,
    lambda: f64,
    schedule: Schedule,
    layers: Vec<Tap>,
    distance: Distance,
    weighter: Option<SourceWeighter>,
}

impl Discrepancy {
    /// A strategy called `name` adapting `layers` of `model` with `distance`, weighted by `lambda`
    /// following `schedule`.
    ///
    /// Errors name an empty layer list, a repeated layer, a negative `lambda`, and the `adapt`
    /// layer on a model without an adaptation layer.
    pub fn new(
        name: &'static str,
        model: Classifier,
        optim: &OptimSettings,
        (lambda, schedule): (f64, Schedule),
        layers: Vec<Tap>,
        distance: Distance,
    ) -> Result<Self> {
        check_layers(name, lambda, &layers, model.spec().adapt_width.is_some())?;
        let group = ParamGroup::new(params::trainable(model.varmap()));
        let opt = Optimizer::new(optim.kind, optim.lr, optim.weight_decay, vec![group])?;
        Ok(Self {
            name,
            model,
            opt,
            lambda,
            schedule,
            layers,
            distance,
            weighter: None,
        })
    }

    /// Weights the source cross-entropy by `weighter`'s instance weights (estimated before the
    /// epochs its schedule names), the adaptation loss staying as it is.
    pub fn with_instance_weights(mut self, weighter: SourceWeighter) -> Self {
        self.weighter = Some(weighter);
        self
    }

    /// The instance weighter, if the source loss is weighted.
    pub fn weighter(&self) -> Option<&SourceWeighter> {
        self.weighter.as_ref()
    }

    /// The trade-off weight.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// The adapted layers.
    pub fn layers(&self) -> &[Tap] {
        &self.layers
    }

    /// The distance.
    pub fn distance(&self) -> &Distance {
        &self.distance
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let xs = &batch.source.0;
        let xt = batch.target_images(self.name)?;
        let (source, target) = joint_taps(&self.model, xs, xt, true)?;
        let mut stats = StepStats::new();
        let (loss_cls, acc) = source_loss(self.weighter.as_ref(), &source.logits, batch, &mut stats)?;
        let mut total_distance: Option<Tensor> = None;
        for &layer in &self.layers {
            let d = self.distance.between(source.get(layer)?, target.get(layer)?)?;
            stats.push(
                format!("{}_{}", self.distance.label(), layer),
                d.to_scalar::<f32>()? as f64,
            );
            total_distance = Some(match total_distance {
                None => d,
                Some(acc) => (acc + d)?,
            });
        }
        let total_distance = total_distance.expect("validated: at least one layer");
        let lambda = self.lambda * self.schedule.factor(batch.progress);
        stats.push("lambda", lambda);
        let loss = (&loss_cls + (&total_distance * lambda)?)?;
        stats.push("loss_total", loss.to_scalar::<f32>()? as f64);
        stats.push("acc_source", acc);
        self.opt.backward_step(&loss)?;
        Ok(stats)
    }
}

/// Source and target outputs at every tap from one joint forward pass.
pub(crate) fn joint_taps(model: &Classifier, xs: &Tensor, xt: &Tensor, train: bool) -> Result<(Taps, Taps)> {
    let n = xs.dim(0)?;
    let m = xt.dim(0)?;
    let all = model.forward_taps(&Tensor::cat(&[xs, xt], 0)?, train)?;
    Ok((all.narrow(0, n)?, all.narrow(n, m)?))
}

impl Strategy for Discrepancy {
    fn name(&self) -> &str {
        self.name
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn start_epoch(&mut self, epoch: usize, _epochs: usize) -> dtl_core::Result<()> {
        match &mut self.weighter {
            Some(w) => w.start_epoch(epoch, &self.model).map_err(Error::into_core),
            None => Ok(()),
        }
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::save_trained(state, &self.model, &self.opt, self.weighter.as_ref())
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        crate::strategy::load_trained(state, &self.model, &mut self.opt, self.weighter.as_mut())
    }
}

impl TransferStrategy for Discrepancy {
    fn model(&self) -> &Classifier {
        &self.model
    }

    fn weight_stats(&self) -> Option<&WeightStats> {
        self.weighter.as_ref().and_then(|w| w.stats())
    }
}
