//! The domain discriminator shared by the adversarial strategies ([`adda`], [`dann`]): a multilayer perceptron from a representation to one logit, the belief that
//! the input comes from the source domain.

pub mod adda;
pub mod cdan;
pub mod dann;
pub mod mcd;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use dtl_backbones::init::{uniform_param, Param};
use dtl_core::params;
use dtl_core::seed::Stream;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// Checks a discriminator's hidden widths (none may be 0).
pub(crate) fn check_disc_hidden(hidden: &[usize]) -> Result<()> {
    match hidden.iter().position(|&w| w == 0) {
        Some(i) => Err(Error::Core(dtl_core::Error::config(
            "disc-hidden",
            format!("hidden layer {} has width 0", i + 1),
        ))),
        None => Ok(()),
    }
}

/// An MLP `in -> hidden[0] -> ... -> 1` with ReLU between layers, its parameters in its own
/// [`VarMap`] as `disc.fc{i}.weight` / `.bias` (the last layer `disc.out`), initialised as PyTorch's
/// `nn.Linear` from `seed`.
pub struct Discriminator {
    layers: Vec<Param>,
    varmap: VarMap,
}

impl Discriminator {
    /// A discriminator over `input` features with `hidden` layer widths (ADDA's is `[500, 500]`).
    pub fn new(input: usize, hidden: &[usize], seed: u64, device: &Device) -> Result<Self> {
        check_disc_hidden(hidden)?;
        let varmap = VarMap::new();
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::Discriminator.seed(seed));
        let mut layers = Vec::new();
        let mut width = input;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(uniform_param(
                &varmap,
                &format!("disc.fc{}", i + 1),
                &[h, width],
                &mut rng,
                device,
            )?);
            width = h;
        }
        layers.push(uniform_param(&varmap, "disc.out", &[1, width], &mut rng, device)?);
        Ok(Self { layers, varmap })
    }

    /// Logits `(n,)` of representations `(n, input)`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x = xs.clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.linear(&x)?;
            if i < last {
                x = x.relu()?;
            }
        }
        Ok(x.flatten_all()?)
    }

    /// Its parameters.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Its trainable parameters, by name.
    pub fn params(&self) -> Vec<(String, candle_core::Var)> {
        params::trainable(&self.varmap)
    }
}

/// DANN's reversal coefficient at training progress `p`: `max (2 / (1 + exp(-gamma p)) - 1)`
/// (Ganin & Lempitsky 2015), `max` throughout when `gamma` is 0.
pub(crate) fn reversal_coeff(max: f64, gamma: f64, p: f64) -> f64 {
    if gamma == 0.0 {
        max
    } else {
        max * (2.0 / (1.0 + (-gamma * p).exp()) - 1.0)
    }
}

/// DANN's learning-rate factor at progress `p`: `(1 + alpha p)^-beta` when annealing, else 1.
pub(crate) fn lr_factor(anneal: bool, alpha: f64, beta: f64, p: f64) -> f64 {
    if anneal {
        (1.0 + alpha * p).powf(-beta)
    } else {
        1.0
    }
}

/// The end of one step of a shared-encoder adversarial strategy (`dann`, `cdan`): the source
/// and domain losses, the discriminator's logits on each domain, the target logits for an MCC
/// term, and the step's schedule values.
pub(crate) struct SharedEncoderStep<'a> {
    pub(crate) loss_cls: Tensor,
    pub(crate) loss_domain: Tensor,
    pub(crate) d_s: Tensor,
    pub(crate) d_t: Tensor,
    pub(crate) target_logits: Tensor,
    pub(crate) mcc: Option<&'a crate::loss::MccTerm>,
    pub(crate) coeff: f64,
    pub(crate) lr: f64,
    pub(crate) acc: f64,
}

impl SharedEncoderStep<'_> {
    /// Adds the MCC term when asked, logs the step's scalars into `stats` and takes `opt`'s step
    /// on the sum.
    pub(crate) fn finish(
        self,
        opt: &mut crate::optim::Optimizer,
        mut stats: dtl_core::StepStats,
    ) -> Result<dtl_core::StepStats> {
        let disc_acc =
            dtl_losses::discriminator_accuracy(&self.d_s.detach(), &self.d_t.detach()).map_err(loss_err)?;
        let mut loss = (&self.loss_cls + &self.loss_domain)?;
        if let Some(t) = self.mcc {
            loss = (loss + t.loss(&self.target_logits, &mut stats)?)?;
        }
        stats
            .push("loss_domain", self.loss_domain.to_scalar::<f32>()? as f64)
            .push("disc_acc", disc_acc)
            .push("grl_coeff", self.coeff)
            .push("lr", self.lr)
            .push("acc_source", self.acc);
        opt.backward_step(&loss)?;
        Ok(stats)
    }
}

/// Converts a losses-crate error.
pub(crate) fn loss_err(e: dtl_losses::Error) -> Error {
    match e {
        dtl_losses::Error::Core(c) => Error::Core(c),
        dtl_losses::Error::Candle(c) => Error::Core(dtl_core::Error::Candle(c)),
        other => Error::Core(dtl_core::Error::Msg(other.to_string())),
    }
}
