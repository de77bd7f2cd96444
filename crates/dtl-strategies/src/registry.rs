//! The registry: one declaration lists every strategy by name with its settings type, and
//! generates [`StrategyConfig`] (the tagged settings enum configs and the command line fill),
//! [`StrategyConfig::NAMES`], lookup by name and dispatch to the settings' [`StrategySettings`].
//!
//! Adding a strategy is its file (settings, [`StrategySettings`], the strategy) and one line in
//! the `registry!` invocation below.

use serde::{Deserialize, Serialize};

use crate::strategy::{AdaptLayer, BuildContext, InitialWeights, StrategySettings, TransferStrategy};
use crate::weighting::iw::IwConfig;
use crate::{Error, Result};

macro_rules! registry {
    ($( $(#[$doc:meta])* $name:literal => $variant:ident($settings:ty), )+) => {
        /// A strategy and its own settings, as configs and the command line name it.
        ///
        /// In TOML: `[strategy]` with `name = "ddc"` and the strategy's own fields
        /// (`lambda = 0.25`, ...); fields left out take the strategy's defaults.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "name", deny_unknown_fields)]
        pub enum StrategyConfig {
            $(
                $(#[$doc])*
                #[serde(rename = $name)]
                $variant($settings),
            )+
        }

        impl StrategyConfig {
            /// Every strategy name, in the registry's order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// The strategy's name.
            pub fn name(&self) -> &'static str {
                match self {
                    $(StrategyConfig::$variant(_) => $name,)+
                }
            }

            /// The strategy of that name with its default settings.
            pub fn from_name(name: &str) -> Result<Self> {
                match name {
                    $($name => Ok(StrategyConfig::$variant(<$settings>::default())),)+
                    _ => Err(unknown_strategy(name)),
                }
            }

            /// The settings of strategy `name` from `deserializer` (the strategy's own keys, without
            /// `name`), so that an error in them carries the deserializer's path.
            pub fn deserialize_named<'de, D: serde::Deserializer<'de>>(
                name: &str,
                deserializer: D,
            ) -> std::result::Result<Self, D::Error> {
                match name {
                    $($name => <$settings as Deserialize>::deserialize(deserializer).map(StrategyConfig::$variant),)+
                    _ => Err(serde::de::Error::custom(unknown_strategy(name))),
                }
            }

            /// The settings, behind their trait.
            pub fn settings(&self) -> &dyn StrategySettings {
                match self {
                    $(StrategyConfig::$variant(s) => s,)+
                }
            }
        }
    };
}

registry! {
    /// Train on the source domain only.
    "source-only" => SourceOnly(crate::source_only::SourceOnlyConfig),
    /// Deep Domain Confusion (Tzeng et al. 2014).
    "ddc" => Ddc(crate::discrepancy::ddc::DdcConfig),
    /// Deep Adaptation Networks (Long et al. 2015).
    "dan" => Dan(crate::discrepancy::dan::DanConfig),
    /// Deep CORAL (Sun & Saenko 2016).
    "coral" => Coral(crate::discrepancy::coral::CoralConfig),
    /// Domain-adversarial training with gradient reversal (Ganin & Lempitsky 2015).
    "dann" => Dann(crate::adversarial::dann::DannConfig),
    /// Adversarial discriminative domain adaptation (Tzeng et al. 2017).
    "adda" => Adda(crate::adversarial::adda::AddaConfig),
    /// Sequential transfer: the first layers from a checkpoint, frozen or fine-tuned (Yosinski et
    /// al. 2014).
    "finetune" => Finetune(crate::finetune::FinetuneConfig),
    /// Importance-weighted source risk with instance weights from an estimator (Shimodaira 2000).
    "iw" => Iw(crate::weighting::iw::IwConfig),
    /// TrAdaBoost's weights over the source and a few labelled target samples (Dai et al. 2007).
    "tradaboost" => Tradaboost(crate::weighting::tradaboost::TradaboostConfig),
    /// Conditional adversarial adaptation with entropy conditioning, CDAN+E (Long et al. 2018).
    "cdan" => Cdan(crate::adversarial::cdan::CdanConfig),
    /// Maximum Classifier Discrepancy: two classifiers and a generator in three-step turns (Saito et al. 2018).
    "mcd" => Mcd(crate::adversarial::mcd::McdConfig),
    /// Source-free adaptation of a saved source model: its head fixed, information maximisation and pseudo-labels (Liang et al. 2020).
    "shot" => Shot(crate::shot::ShotConfig),
    /// A mean teacher with confidence thresholding and class balance (French et al. 2018).
    "self-ensembling" => SelfEnsembling(crate::self_ensembling::SelfEnsemblingConfig),
    /// Minimum Class Confusion (Jin et al. 2020): the source cross-entropy plus the target's class confusion.
    "mcc" => Mcc(crate::mcc::MccConfig),
}

fn unknown_strategy(name: &str) -> Error {
    Error::Core(dtl_core::Error::config(
        "strategy",
        format!(
            "`{name}` is not a known strategy (known: {})",
            StrategyConfig::NAMES.join(", ")
        ),
    ))
}

impl StrategyConfig {
    /// The settings' own checks ([`StrategySettings::validate`]).
    pub fn validate(&self) -> Result<()> {
        self.settings().validate()
    }

    /// The instance weights of the source loss: `iw`'s settings, or those a discrepancy strategy
    /// or `dann` was given (`instance-weights`); `None` when the source loss is not weighted.
    pub fn instance_weights(&self) -> Option<&IwConfig> {
        self.settings().instance_weights()
    }

    /// The width of the adaptation layer the strategy's model needs, if any.
    pub fn adapt_width(&self) -> Option<usize> {
        match self.settings().adapt_layer() {
            AdaptLayer::Any => None,
            AdaptLayer::Exactly(w) => w,
        }
    }

    /// Builds the strategy from `ctx`: checks the settings, the model's adaptation layer against
    /// the one the strategy needs, that the data is there when the strategy reads it, and loads
    /// an initial checkpoint the way the strategy uses it.
    pub fn build(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        let s = self.settings();
        s.validate()?;
        if let AdaptLayer::Exactly(want) = s.adapt_layer() {
            if ctx.model.spec().adapt_width != want {
                return Err(Error::Core(dtl_core::Error::config(
                    "adapt-width",
                    format!(
                        "strategy `{}` wants an adaptation layer of {:?} units, the model has {:?}",
                        self.name(),
                        want,
                        ctx.model.spec().adapt_width
                    ),
                )));
            }
        }
        if s.needs_data() && ctx.data.is_none() {
            let (field, what) = match s.instance_weights() {
                Some(_) => ("instance-weights", "instance weights"),
                None => ("strategy", "its samples"),
            };
            return Err(Error::Core(dtl_core::Error::config(
                field,
                format!(
                    "{} estimates {what} from the training data: build it with build_with_data",
                    self.name()
                ),
            )));
        }
        match s.initial_weights() {
            InitialWeights::Whole => ctx.load_initial_weights()?,
            InitialWeights::Own if ctx.init.is_none() => {
                return Err(Error::Core(dtl_core::Error::config(
                    "init-from",
                    format!(
                        "{} copies layers from a checkpoint: give --init-from FILE",
                        self.name()
                    ),
                )))
            }
            InitialWeights::Own => {}
        }
        s.build_strategy(ctx)
    }
}

/// Builds the strategy `cfg` around `model`; `seed` initialises whatever networks the strategy adds
/// (a discriminator). A strategy with an adaptation layer needs the model to have exactly the one
/// [`StrategyConfig::adapt_width`] asks for; `source-only`, `adda` and `finetune` train any model.
/// Strategies that read the training data (`iw`, `tradaboost`, or `instance-weights` set) need
/// [`build_with_data`].
pub fn build(
    cfg: &StrategyConfig,
    model: dtl_backbones::Classifier,
    optim: &crate::OptimSettings,
    seed: u64,
) -> Result<Box<dyn TransferStrategy>> {
    cfg.build(BuildContext::new(model, optim, seed))
}

/// [`build`] for every strategy, including those that read the training data: `source` is the
/// training set the trainer will batch, `target` the target training set (its images; a few of
/// its labels for `tradaboost`).
pub fn build_with_data(
    cfg: &StrategyConfig,
    model: dtl_backbones::Classifier,
    optim: &crate::OptimSettings,
    seed: u64,
    source: &dtl_data::Dataset,
    target: &dtl_data::Dataset,
) -> Result<Box<dyn TransferStrategy>> {
    cfg.build(BuildContext::new(model, optim, seed).with_data(source, target))
}

#[cfg(test)]
mod tests {
    use super::StrategyConfig;

    /// Every registered name resolves to its own variant and back, and the default settings of
    /// every strategy pass their own checks.
    #[test]
    fn names_resolve_to_their_variants_and_defaults_validate() {
        let mut seen = std::collections::HashSet::new();
        for &name in StrategyConfig::NAMES {
            let cfg = StrategyConfig::from_name(name).unwrap();
            assert_eq!(cfg.name(), name);
            assert!(
                seen.insert(std::mem::discriminant(&cfg)),
                "{name} registered twice"
            );
            cfg.validate()
                .unwrap_or_else(|e| panic!("{name}'s defaults: {e}"));
        }
        assert!(StrategyConfig::from_name("magic").is_err());
    }
}
