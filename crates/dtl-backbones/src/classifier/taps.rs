//! Where a loss reads a [`super::Classifier`]'s representation ([`Tap`]) and the outputs at every
//! tap of one forward pass ([`Taps`]).

use candle_core::Tensor;

use crate::{Error, Result};

/// Where a discrepancy or adversarial loss can read a [`crate::Classifier`]'s representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tap {
    /// The backbone's features: its last hidden layer (LeNet's `fc1`).
    Features,
    /// The adaptation layer's output (needs [`crate::ModelSpec::adapt_width`]).
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
