//! `cdan`: Conditional Domain Adversarial Networks with entropy conditioning, CDAN+E (Long et al.
//! 2018, "Conditional Adversarial Domain Adaptation", NeurIPS).
//!
//! As DANN, one shared encoder is trained against a domain discriminator through gradient
//! reversal; the discriminator reads, instead of the features `f`, their multilinear map with the
//! classifier's predictions `g = softmax(logits)` (held fixed, as the paper's code does): the
//! outer product `f ⊗ g`, or, when `d_f d_g` exceeds `max-multilinear` (the paper's 4096), its
//! randomized estimate `(f R_f) ⊙ (g R_g) / sqrt(d)` with fixed standard-normal `R_f`, `R_g` of
//! `randomized-dim` columns (1024). Aligning the joint distribution of features and predictions
//! captures the multimodal structure a plain feature discriminator misses. With
//! `entropy-conditioning` (CDAN+E) each sample's discriminator loss is weighted by
//! `1 + exp(-H(g))`, so that uncertain predictions count less. The reversal coefficient and
//! learning rate follow DANN's schedules; `[strategy.mcc]` adds minimum class confusion (Jin et
//! al. 2020's CDAN+MCC).

use candle_core::{Device, Tensor};
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_losses::conditional::softmax;
use dtl_losses::{
    entropy_weights, grad_reverse, multilinear_map, randomized_multilinear_map, weighted_discriminator_loss,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adversarial::{
    check_disc_hidden, loss_err, lr_factor, reversal_coeff, Discriminator, SharedEncoderStep,
};
use crate::loss::{cross_entropy_with_accuracy, MccTerm};
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `cdan`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CdanConfig {
    /// Hidden widths of the domain discriminator.
    pub disc_hidden: Vec<usize>,
    /// The reversal coefficient reached at the end of training.
    pub max_coeff: f64,
    /// Steepness of the coefficient's schedule (0: `max-coeff` from the first step).
    pub gamma: f64,
    /// Anneal the learning rate as `lr / (1 + alpha p)^beta`.
    pub anneal_lr: bool,
    /// `alpha` of the annealing.
    pub alpha: f64,
    /// `beta` of the annealing.
    pub beta: f64,
    /// CDAN+E: weight each sample's discriminator loss by `1 + exp(-H(g))`.
    pub entropy_conditioning: bool,
    /// The widest multilinear map used as it is; wider ones are randomized.
    pub max_multilinear: usize,
    /// Columns of the randomized map.
    pub randomized_dim: usize,
    /// Add minimum class confusion on the target predictions ([`crate::loss::MccTerm`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcc: Option<MccTerm>,
}

impl Default for CdanConfig {
    /// CDAN+E as the paper and TLlib's digits recipe run it: a 1024-1024 discriminator, DANN's
    /// schedules, the randomized map beyond 4096 dimensions with 1024 columns.
    fn default() -> Self {
        Self {
            disc_hidden: vec![1024, 1024],
            max_coeff: 1.0,
            gamma: 10.0,
            anneal_lr: true,
            alpha: 10.0,
            beta: 0.75,
            entropy_conditioning: true,
            max_multilinear: 4096,
            randomized_dim: 1024,
            mcc: None,
        }
    }
}

impl StrategySettings for CdanConfig {
    fn validate(&self) -> Result<()> {
        check_disc_hidden(&self.disc_hidden)?;
        let bad = |f: &str, m: String| Err(Error::Core(dtl_core::Error::config(f, m)));
        for (field, v) in [
            ("max-coeff", self.max_coeff),
            ("gamma", self.gamma),
            ("alpha", self.alpha),
            ("beta", self.beta),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(field, format!("{v} is not a non-negative number"));
            }
        }
        if self.randomized_dim == 0 || self.randomized_dim > 1 << 16 {
            return bad(
                "randomized-dim",
                format!("{} is not a width of 1 to 65536", self.randomized_dim),
            );
        }
        if self.max_multilinear > 1 << 20 {
            return bad(
                "max-multilinear",
                format!("{} is above 2^20 dimensions", self.max_multilinear),
            );
        }
        if let Some(t) = &self.mcc {
            t.validate("mcc.")?;
        }
        Ok(())
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        Ok(Box::new(Cdan::new(
            self.clone(),
            ctx.model,
            &ctx.optim,
            ctx.seed,
        )?))
    }
}

/// How the discriminator's input is made from features and predictions.
enum Map {
    /// `f ⊗ g`.
    Multilinear,
    /// `(f R_f) ⊙ (g R_g) / sqrt(d)`.
    Randomized {
        /// `(D, d)`.
        rf: Tensor,
        /// `(C, d)`.
        rg: Tensor,
    },
}

/// `rows x cols` standard-normal values (Box-Muller on the ChaCha stream).
fn standard_normal(rng: &mut ChaCha8Rng, rows: usize, cols: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), device)?)
}

/// CDAN(+E): a shared encoder against a discriminator conditioned on the predictions.
pub struct Cdan {
    cfg: CdanConfig,
    model: Classifier,
    disc: Discriminator,
    map: Map,
    opt: Optimizer,
    base_lr: f64,
}

impl Cdan {
    /// The strategy around `model`; the discriminator and the random map are seeded from `seed`.
    pub fn new(cfg: CdanConfig, model: Classifier, optim: &OptimSettings, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let d = model.spec().adapt_width.unwrap_or(model.backbone().feature_dim());
        let c = model.spec().num_classes();
        let (map, input) = if d * c <= cfg.max_multilinear {
            (Map::Multilinear, d * c)
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(Stream::RandomMap.seed(seed));
            let rf = standard_normal(&mut rng, d, cfg.randomized_dim, model.device())?;
            let rg = standard_normal(&mut rng, c, cfg.randomized_dim, model.device())?;
            (Map::Randomized { rf, rg }, cfg.randomized_dim)
        };
        let disc = Discriminator::new(input, &cfg.disc_hidden, seed, model.device())?;
        let mut vars = params::trainable(model.varmap());
        vars.extend(disc.params());
        let opt = Optimizer::new(
            optim.kind,
            optim.lr,
            optim.weight_decay,
            vec![ParamGroup::new(vars)],
        )?;
        Ok(Self {
            cfg,
            model,
            disc,
            map,
            opt,
            base_lr: optim.lr,
        })
    }

    /// Whether the discriminator reads the randomized map.
    pub fn randomized(&self) -> bool {
        matches!(self.map, Map::Randomized { .. })
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let xt = batch.target_images("cdan")?;
        let (n, m) = (xs.dim(0)?, xt.dim(0)?);
        let p = batch.progress;
        let coeff = reversal_coeff(self.cfg.max_coeff, self.cfg.gamma, p);
        let lr = self.base_lr * lr_factor(self.cfg.anneal_lr, self.cfg.alpha, self.cfg.beta, p);
        self.opt.set_lr(lr);
        let taps = self.model.forward_taps(&Tensor::cat(&[xs, xt], 0)?, true)?;
        let (loss_cls, acc) = cross_entropy_with_accuracy(&taps.logits.narrow(0, 0, n)?, ys)?;
        let g = softmax(&taps.logits, 1.0).map_err(loss_err)?.detach();
        let f = taps.hidden();
        let h = match &self.map {
            Map::Multilinear => multilinear_map(f, &g),
            Map::Randomized { rf, rg } => randomized_multilinear_map(f, &g, rf, rg),
        }
        .map_err(loss_err)?;
        let d = self.disc.forward(&grad_reverse(&h, coeff).map_err(loss_err)?)?;
        let (d_s, d_t) = (d.narrow(0, 0, n)?, d.narrow(0, n, m)?);
        let w = if self.cfg.entropy_conditioning {
            entropy_weights(&g).map_err(loss_err)?
        } else {
            (Tensor::ones(n + m, g.dtype(), g.device())? / (n + m) as f64)?
        };
        let loss_domain = weighted_discriminator_loss(&d_s, &d_t, &w).map_err(loss_err)?;
        let mut stats = StepStats::new();
        stats.push("loss_cls", loss_cls.to_scalar::<f32>()? as f64);
        SharedEncoderStep {
            loss_cls,
            loss_domain,
            d_s,
            d_t,
            target_logits: taps.logits.narrow(0, n, m)?,
            mcc: self.cfg.mcc.as_ref(),
            coeff,
            lr,
            acc,
        }
        .finish(&mut self.opt, stats)
    }
}

impl Strategy for Cdan {
    fn name(&self) -> &str {
        "cdan"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        state.put_varmap("disc.", self.disc.varmap())?;
        crate::strategy::save_trained(state, &self.model, &self.opt, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        state.load_varmap("disc.", self.disc.varmap())?;
        crate::strategy::load_trained(state, &self.model, &mut self.opt, None)
    }
}

impl TransferStrategy for Cdan {
    fn model(&self) -> &Classifier {
        &self.model
    }
}
