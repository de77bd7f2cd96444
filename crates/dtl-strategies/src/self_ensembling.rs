//! `self-ensembling`: a mean teacher for domain adaptation (French, Mackiewicz & Fisher 2018,
//! "Self-ensembling for visual domain adaptation", ICLR).
//!
//! A student network learns the source labels; a teacher, the exponential moving average of the
//! student's weights (`t <- a t + (1 - a) s`, `a` = 0.99), predicts the target. Each target image
//! is augmented twice, independently (shifts of up to 2 pixels and rotations of up to 10
//! degrees, [`dtl_data::augment::Augment::digits`], from the strategy's own streams); the student
//! sees one copy, the teacher the other, and the student is pulled towards the teacher by the
//! squared difference of their class probabilities, counted only for samples the teacher is
//! confident about (its largest probability above 0.968: confidence thresholding). A class-balance
//! term, the binary cross-entropy between the student's mean target prediction and the uniform
//! distribution, keeps it from collapsing onto few classes. The teacher predicts and is saved.

use candle_core::{Tensor, D};
use dtl_backbones::Classifier;
use dtl_core::seed::Stream;
use dtl_core::{params, DomainBatch, StepStats, Strategy, StrategyNeeds};
use dtl_data::augment::Augment;
use dtl_losses::conditional::softmax;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::adversarial::loss_err;
use crate::loss::cross_entropy_with_accuracy;
use crate::optim::{Optimizer, ParamGroup};
use crate::strategy::{BuildContext, StrategySettings};
use crate::{Error, OptimSettings, Result, TransferStrategy};

/// Settings of `self-ensembling`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelfEnsemblingConfig {
    /// Decay `a` of the teacher's moving average.
    pub ema: f64,
    /// Weight of the consistency loss.
    pub consistency: f64,
    /// The teacher's confidence above which a target sample counts.
    pub threshold: f64,
    /// Weight of the class-balance loss.
    pub class_balance: f64,
    /// The augmentation of the two target copies.
    pub augment: Augment,
}

impl Default for SelfEnsemblingConfig {
    /// French et al.'s digit settings: EMA 0.99, consistency weight 3, confidence threshold
    /// 0.968, class balance 0.005; the digits augmentation.
    fn default() -> Self {
        Self {
            ema: 0.99,
            consistency: 3.0,
            threshold: 0.968,
            class_balance: 0.005,
            augment: Augment::digits(),
        }
    }
}

impl StrategySettings for SelfEnsemblingConfig {
    fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| Err(Error::Core(dtl_core::Error::config(f, m)));
        if !(0.0..1.0).contains(&self.ema) {
            return bad("ema", format!("{} is not in [0, 1)", self.ema));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return bad("threshold", format!("{} is not in [0, 1)", self.threshold));
        }
        for (f, v) in [
            ("consistency", self.consistency),
            ("class-balance", self.class_balance),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return bad(f, format!("{v} is not a non-negative number"));
            }
        }
        self.augment
            .validate()
            .map_err(|e| Error::Core(dtl_core::Error::config("augment", e.to_string())))
    }

    fn build_strategy(&self, ctx: BuildContext<'_>) -> Result<Box<dyn TransferStrategy>> {
        self.validate()?;
        Ok(Box::new(SelfEnsembling::new(
            self.clone(),
            ctx.model,
            &ctx.optim,
            ctx.seed,
        )?))
    }
}

/// A student trained on the source and a mean teacher it is made consistent with on the target.
pub struct SelfEnsembling {
    cfg: SelfEnsemblingConfig,
    student: Classifier,
    teacher: Classifier,
    opt: Optimizer,
    student_rng: ChaCha8Rng,
    teacher_rng: ChaCha8Rng,
}

impl SelfEnsembling {
    /// The strategy around the student `model`; the teacher starts as its copy, the two target
    /// augmentations draw from streams of `seed`.
    pub fn new(
        cfg: SelfEnsemblingConfig,
        model: Classifier,
        optim: &OptimSettings,
        seed: u64,
    ) -> Result<Self> {
        let teacher = Classifier::new(model.spec().clone(), seed, model.device())?;
        let copy: std::collections::HashMap<String, Tensor> =
            params::snapshot(model.varmap())?.into_iter().collect();
        teacher.load_tensors(&copy, std::path::Path::new("<student>"))?;
        let opt = Optimizer::new(
            optim.kind,
            optim.lr,
            optim.weight_decay,
            vec![ParamGroup::new(params::trainable(model.varmap()))],
        )?;
        Ok(Self {
            cfg,
            student: model,
            teacher,
            opt,
            student_rng: ChaCha8Rng::seed_from_u64(Stream::StudentAugment.seed(seed)),
            teacher_rng: ChaCha8Rng::seed_from_u64(Stream::TeacherAugment.seed(seed)),
        })
    }

    /// The student network.
    pub fn student(&self) -> &Classifier {
        &self.student
    }

    fn augmented(aug: &Augment, xs: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let (n, c, h, w) = xs.dims4()?;
        let mut px = xs.flatten_all()?.to_vec1::<f32>()?;
        aug.apply(&mut px, (c, h, w), rng)
            .map_err(|e| Error::Core(dtl_core::Error::Msg(format!("self-ensembling augmentation: {e}"))))?;
        Ok(Tensor::from_vec(px, (n, c, h, w), xs.device())?)
    }

    /// `t <- a t + (1 - a) s` for every variable (parameters and buffers).
    fn update_teacher(&self) -> Result<()> {
        let a = self.cfg.ema;
        for ((_, t), (_, s)) in params::all(self.teacher.varmap())
            .iter()
            .zip(params::all(self.student.varmap()))
        {
            let next = ((t.as_tensor() * a)? + (s.as_tensor().detach() * (1.0 - a))?)?;
            t.set(&next)?;
        }
        Ok(())
    }

    fn step(&mut self, batch: &DomainBatch) -> Result<StepStats> {
        let (xs, ys) = &batch.source;
        let xt = batch.target_images("self-ensembling")?;
        let n = xs.dim(0)?;
        let xt_student = Self::augmented(&self.cfg.augment, xt, &mut self.student_rng)?;
        let xt_teacher = Self::augmented(&self.cfg.augment, xt, &mut self.teacher_rng)?;
        let logits = self.student.forward(&Tensor::cat(&[xs, &xt_student], 0)?, true)?;
        let (loss_cls, acc) = cross_entropy_with_accuracy(&logits.narrow(0, 0, n)?, ys)?;
        let p_student = softmax(&logits.narrow(0, n, xt.dim(0)?)?, 1.0).map_err(loss_err)?;
        let p_teacher =
            softmax(&self.teacher.forward(&xt_teacher, false)?.detach(), 1.0).map_err(loss_err)?;
        // Confidence thresholding: the mean over the batch of the masked squared differences.
        let mask = p_teacher
            .max(D::Minus1)?
            .gt(self.cfg.threshold)?
            .to_dtype(p_student.dtype())?;
        let sq = (&p_student - &p_teacher)?.sqr()?.sum(D::Minus1)?;
        let consistency = (sq * &mask)?.mean_all()?;
        // Class balance: BCE of the mean prediction against the uniform distribution.
        let k = p_student.dim(1)? as f64;
        let mean = p_student.mean(0)?;
        let eps = 1e-6;
        let balance = (((mean.clamp(eps, 1.0 - eps)?.log()? * (1.0 / k))?
            + ((mean.affine(-1.0, 1.0)?.clamp(eps, 1.0)?.log()?) * (1.0 - 1.0 / k))?)?
            .sum_all()?
            .neg())?;
        let loss =
            ((&loss_cls + (&consistency * self.cfg.consistency)?)? + (&balance * self.cfg.class_balance)?)?;
        let mut stats = StepStats::new();
        stats
            .push("loss_cls", loss_cls.to_scalar::<f32>()? as f64)
            .push("loss_consistency", consistency.to_scalar::<f32>()? as f64)
            .push("loss_balance", balance.to_scalar::<f32>()? as f64)
            .push("confident", mask.mean_all()?.to_scalar::<f32>()? as f64)
            .push("acc_source", acc);
        self.opt.backward_step(&loss)?;
        self.update_teacher()?;
        Ok(stats)
    }
}

impl Strategy for SelfEnsembling {
    fn name(&self) -> &str {
        "self-ensembling"
    }

    fn needs(&self) -> StrategyNeeds {
        StrategyNeeds::TARGET
    }

    fn train_step(&mut self, batch: &DomainBatch) -> dtl_core::Result<StepStats> {
        self.step(batch).map_err(Error::into_core)
    }

    fn save_state(&self, state: &mut dtl_core::state::State) -> dtl_core::Result<()> {
        self.teacher
            .save_state(state, "teacher.")
            .map_err(dtl_backbones::Error::into_core)?;
        state.put_rng("augment.student", &self.student_rng)?;
        state.put_rng("augment.teacher", &self.teacher_rng)?;
        crate::strategy::save_trained(state, &self.student, &self.opt, None)
    }

    fn load_state(&mut self, state: &dtl_core::state::State) -> dtl_core::Result<()> {
        self.teacher
            .load_state(state, "teacher.")
            .map_err(dtl_backbones::Error::into_core)?;
        self.student_rng = state.rng("augment.student")?;
        self.teacher_rng = state.rng("augment.teacher")?;
        crate::strategy::load_trained(state, &self.student, &mut self.opt, None)
    }
}

impl TransferStrategy for SelfEnsembling {
    /// The teacher: it predicts the target.
    fn model(&self) -> &Classifier {
        &self.teacher
    }
}
