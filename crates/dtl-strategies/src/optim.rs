//! Optimizers with PyTorch's update rules: SGD with momentum (and Nesterov) and Adam, with L2
//! weight decay and a learning-rate multiplier per parameter group.
//!
//! candle's own `SGD` has no momentum. Optimizer state here is kept detached from every graph:
//! gradients returned by `backward()` hold their graph alive, and state built from them without
//! `detach()` grows memory by the size of the graph at every step.

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which update rule, with its own constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum OptimizerKind {
    /// SGD with momentum, PyTorch's form: `b = m b + g; p -= lr b` (`g + m b` for Nesterov).
    Sgd {
        /// Momentum factor `m` (0 for plain SGD).
        momentum: f64,
        /// Nesterov momentum.
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (Kingma & Ba 2015) with bias correction.
    Adam {
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Added to the denominator.
        eps: f64,
    },
}

impl OptimizerKind {
    /// SGD with momentum 0.9.
    pub fn sgd() -> Self {
        OptimizerKind::Sgd {
            momentum: 0.9,
            nesterov: false,
        }
    }

    /// Adam with PyTorch's defaults (0.9, 0.999, 1e-8).
    pub fn adam() -> Self {
        OptimizerKind::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Checks the constants.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, m: String| Err(Error::Core(dtl_core::Error::config(f, m)));
        match *self {
            OptimizerKind::Sgd { momentum, .. } if !(0.0..1.0).contains(&momentum) => {
                bad("momentum", format!("{momentum} is not in [0, 1)"))
            }
            OptimizerKind::Adam { beta1, beta2, eps } => {
                if !(0.0..1.0).contains(&beta1) {
                    bad("beta1", format!("{beta1} is not in [0, 1)"))
                } else if !(0.0..1.0).contains(&beta2) {
                    bad("beta2", format!("{beta2} is not in [0, 1)"))
                } else if eps <= 0.0 || !eps.is_finite() {
                    bad("eps", format!("{eps} is not positive"))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }
}

/// Parameters that share a learning-rate multiplier.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// The parameters, with their names (for messages).
    pub vars: Vec<(String, Var)>,
    /// The group's learning rate is `lr * lr_mult`.
    pub lr_mult: f64,
}

impl ParamGroup {
    /// A group with multiplier 1.
    pub fn new(vars: Vec<(String, Var)>) -> Self {
        Self { vars, lr_mult: 1.0 }
    }
}

/// An optimizer over groups of parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    groups: Vec<ParamGroup>,
    /// Per parameter: momentum buffer (SGD) or first moment (Adam), and second moment (Adam).
    state: Vec<Vec<(Option<Tensor>, Option<Tensor>)>>,
    steps: usize,
    /// Updates f32 CPU parameters with `dtl_ops::optim`'s fused kernels (off only in tests, to
    /// compare them with the composed ops).
    fused: bool,
}

impl Optimizer {
    /// An optimizer with base learning rate `lr` and L2 weight decay `weight_decay` (added to the
    /// gradient, as PyTorch's `SGD` and `Adam` do).
    pub fn new(kind: OptimizerKind, lr: f64, weight_decay: f64, groups: Vec<ParamGroup>) -> Result<Self> {
        kind.validate()?;
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "lr",
                format!("{lr} is not positive"),
            )));
        }
        if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
            return Err(Error::Core(dtl_core::Error::config(
                "weight_decay",
                if weight_decay.is_nan() {
                    "NaN is not a number: give a decay of 0 or more".to_string()
                } else if weight_decay.is_infinite() {
                    format!("{weight_decay} is not finite")
                } else {
                    format!("{weight_decay} is negative")
                },
            )));
        }
        let state = groups.iter().map(|g| vec![(None, None); g.vars.len()]).collect();
        Ok(Self {
            kind,
            lr,
            weight_decay,
            groups,
            state,
            steps: 0,
            fused: true,
        })
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Changes the base learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// The parameters it updates (and keeps state for), by name, with their learning-rate
    /// multipliers.
    pub fn params(&self) -> Vec<(&str, f64)> {
        self.groups
            .iter()
            .flat_map(|g| g.vars.iter().map(move |(n, _)| (n.as_str(), g.lr_mult)))
            .collect()
    }

    /// Number of steps taken.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Writes its state into a training run's `state` under `prefix`: the step count, the base
    /// learning rate (schedules change it), the names of its parameters and every moment.
    pub fn save_state(&self, state: &mut dtl_core::state::State, prefix: &str) -> Result<()> {
        state.put(&format!("{prefix}steps"), &self.steps)?;
        state.put(&format!("{prefix}lr"), &self.lr)?;
        let names: Vec<&str> = self.params().into_iter().map(|(n, _)| n).collect();
        state.put(&format!("{prefix}params"), &names)?;
        for (g, (group, states)) in self.groups.iter().zip(&self.state).enumerate() {
            for ((name, _), (s1, s2)) in group.vars.iter().zip(states) {
                for (moment, t) in [("m1", s1), ("m2", s2)] {
                    if let Some(t) = t {
                        state.put_tensor(&format!("{prefix}{g}.{name}.{moment}"), t)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Restores what [`Optimizer::save_state`] wrote under `prefix`, into an optimizer over the
    /// same parameters.
    pub fn load_state(&mut self, state: &dtl_core::state::State, prefix: &str) -> Result<()> {
        let key = format!("{prefix}params");
        let saved: Vec<String> = state.get(&key)?;
        let names: Vec<&str> = self.params().into_iter().map(|(n, _)| n).collect();
        if saved != names {
            return Err(Error::Core(dtl_core::Error::State {
                key,
                message: format!(
                    "the saved optimizer updated {} parameters, this one updates {} (another strategy or setting?)",
                    saved.len(),
                    names.len()
                ),
            }));
        }
        let mut restored = Vec::with_capacity(self.state.len());
        for (g, group) in self.groups.iter().enumerate() {
            let mut moments = Vec::with_capacity(group.vars.len());
            for (name, var) in &group.vars {
                let mut pair = [None, None];
                for (slot, moment) in pair.iter_mut().zip(["m1", "m2"]) {
                    let key = format!("{prefix}{g}.{name}.{moment}");
                    if state.contains(&key) {
                        let t = state.tensor_like(&key, var.dims(), var.dtype())?;
                        // A copy: the fused update writes the moments in place.
                        *slot = Some(t.to_device(var.device())?.copy()?);
                    }
                }
                let [m1, m2] = pair;
                moments.push((m1, m2));
            }
            restored.push(moments);
        }
        self.steps = state.get(&format!("{prefix}steps"))?;
        self.lr = state.get(&format!("{prefix}lr"))?;
        self.state = restored;
        Ok(())
    }

    /// Computes the gradients of `loss` and takes one step.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        for (group, states) in self.groups.iter().zip(self.state.iter_mut()) {
            let lr = self.lr * group.lr_mult;
            for ((_, var), (s1, s2)) in group.vars.iter().zip(states.iter_mut()) {
                let Some(g) = grads.get(var) else { continue };
                if self.fused
                    && dtl_ops::optim::fusable(
                        [var.as_tensor(), g].into_iter().chain(s1.iter()).chain(s2.iter()),
                    )
                {
                    // One to three parallel passes in place, bit for bit the ops below.
                    let g = g.detach();
                    match self.kind {
                        OptimizerKind::Sgd { momentum, nesterov } => {
                            let c = dtl_ops::optim::SgdStep {
                                lr,
                                momentum,
                                weight_decay: self.weight_decay,
                                nesterov,
                            };
                            *s1 = dtl_ops::optim::sgd_step(var.as_tensor(), &g, s1.take(), c)?;
                        }
                        OptimizerKind::Adam { beta1, beta2, eps } => {
                            let c = dtl_ops::optim::AdamStep {
                                lr,
                                beta1,
                                beta2,
                                eps,
                                weight_decay: self.weight_decay,
                                t,
                            };
                            let moments = s1.take().zip(s2.take());
                            let (m, v) = dtl_ops::optim::adam_step(var.as_tensor(), &g, moments, c)?;
                            *s1 = Some(m);
                            *s2 = Some(v);
                        }
                    }
                    continue;
                }
                let p = var.as_tensor().detach();
                let mut g = g.detach();
                if self.weight_decay > 0.0 {
                    g = (g + (&p * self.weight_decay)?)?;
                }
                let update = match self.kind {
                    OptimizerKind::Sgd { momentum, nesterov } => {
                        if momentum == 0.0 {
                            g
                        } else {
                            let buf = match s1.take() {
                                Some(b) => ((b * momentum)? + &g)?,
                                None => g.clone(),
                            };
                            let u = if nesterov {
                                (&g + (&buf * momentum)?)?
                            } else {
                                buf.clone()
                            };
                            *s1 = Some(buf.detach());
                            u
                        }
                    }
                    OptimizerKind::Adam { beta1, beta2, eps } => {
                        let m = match s1.take() {
                            Some(m) => ((m * beta1)? + (&g * (1.0 - beta1))?)?,
                            None => (&g * (1.0 - beta1))?,
                        };
                        let v = match s2.take() {
                            Some(v) => ((v * beta2)? + (g.sqr()? * (1.0 - beta2))?)?,
                            None => (g.sqr()? * (1.0 - beta2))?,
                        };
                        let mhat = (&m / (1.0 - beta1.powi(t)))?;
                        let denom = ((&v / (1.0 - beta2.powi(t)))?.sqrt()? + eps)?;
                        *s1 = Some(m.detach());
                        *s2 = Some(v.detach());
                        (mhat / denom)?
                    }
                };
                var.set(&(p - (update * lr)?)?)?;
            }
        }
        Ok(())
    }
}

/// Optimizer settings shared by the strategies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimSettings {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

impl Default for OptimSettings {
    /// SGD, momentum 0.9, learning rate 0.01, weight decay 5e-4.
    fn default() -> Self {
        Self {
            kind: OptimizerKind::sgd(),
            lr: 0.01,
            weight_decay: 5e-4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Minimises `f(p) = 0.5 * a * p^2` (gradient `a p`) from `p0` and compares with the update
    /// rules written out by hand in f64.
    fn run(kind: OptimizerKind, lr: f64, wd: f64, steps: usize) -> Vec<f64> {
        let var = Var::new(&[2.0f32, -1.0], &Device::Cpu).unwrap();
        let a = Tensor::new(&[1.5f32, 0.5], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(
            kind,
            lr,
            wd,
            vec![ParamGroup::new(vec![("p".into(), var.clone())])],
        )
        .unwrap();
        for _ in 0..steps {
            let loss = ((var.as_tensor().sqr().unwrap() * &a).unwrap().sum_all().unwrap() * 0.5).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        var.as_tensor()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect()
    }

    /// The fused in-place updates give bit for bit the values of the composed tensor ops, for
    /// every rule and setting, on a parameter large enough to be split across threads and on a
    /// small one, over several steps (gradients drawn at random, so every moment path is used).
    #[test]
    fn fused_updates_match_composed_ops_bit_for_bit() {
        use rand::{Rng, SeedableRng};
        let kinds = [
            (
                OptimizerKind::Sgd {
                    momentum: 0.0,
                    nesterov: false,
                },
                0.0,
            ),
            (
                OptimizerKind::Sgd {
                    momentum: 0.0,
                    nesterov: false,
                },
                5e-4,
            ),
            (
                OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                5e-4,
            ),
            (
                OptimizerKind::Sgd {
                    momentum: 0.9,
                    nesterov: false,
                },
                0.0,
            ),
            (
                OptimizerKind::Sgd {
                    momentum: 0.5,
                    nesterov: true,
                },
                1e-2,
            ),
            (OptimizerKind::adam(), 0.0),
            (
                OptimizerKind::Adam {
                    beta1: 0.5,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                5e-4,
            ),
        ];
        for (kind, wd) in kinds {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
            let mut draw =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
            let sizes = [70_001usize, 37];
            let init: Vec<Vec<f32>> = sizes.iter().map(|&n| draw(n)).collect();
            let grads: Vec<Vec<Vec<f32>>> =
                (0..4).map(|_| sizes.iter().map(|&n| draw(n)).collect()).collect();
            let run = |fused: bool| -> Vec<Vec<u32>> {
                let vars: Vec<Var> = init
                    .iter()
                    .map(|v| Var::from_vec(v.clone(), v.len(), &Device::Cpu).unwrap())
                    .collect();
                let named = vars
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("p{i}"), v.clone()))
                    .collect();
                let mut group = ParamGroup::new(named);
                group.lr_mult = 0.3;
                let mut opt = Optimizer::new(kind, 0.05, wd, vec![group]).unwrap();
                opt.fused = fused;
                for step in &grads {
                    // loss = sum_i <p_i, r_i>: the gradient of p_i is r_i exactly.
                    let mut loss: Option<Tensor> = None;
                    for (v, r) in vars.iter().zip(step) {
                        let r = Tensor::from_vec(r.clone(), r.len(), &Device::Cpu).unwrap();
                        let term = (v.as_tensor() * r).unwrap().sum_all().unwrap();
                        loss = Some(match loss {
                            None => term,
                            Some(l) => (l + term).unwrap(),
                        });
                    }
                    opt.backward_step(&loss.unwrap()).unwrap();
                }
                vars.iter()
                    .map(|v| {
                        v.as_tensor()
                            .to_vec1::<f32>()
                            .unwrap()
                            .iter()
                            .map(|x| x.to_bits())
                            .collect()
                    })
                    .collect()
            };
            let (fused, composed) = (run(true), run(false));
            assert_eq!(fused, composed, "{kind:?} with weight decay {wd}");
            assert_ne!(
                fused[0][..8],
                init[0][..8].iter().map(|x| x.to_bits()).collect::<Vec<_>>()[..]
            );
        }
    }

    #[test]
    fn sgd_momentum_follows_pytorch_recurrence() {
        let (lr, m, wd) = (0.1, 0.9, 0.01);
        let got = run(
            OptimizerKind::Sgd {
                momentum: m,
                nesterov: false,
            },
            lr,
            wd,
            5,
        );
        for (i, (&p0, &a)) in [2.0, -1.0].iter().zip(&[1.5, 0.5]).enumerate() {
            let (mut p, mut b): (f64, Option<f64>) = (p0, None);
            for _ in 0..5 {
                let g = a * p + wd * p;
                let nb = b.map_or(g, |b| m * b + g);
                b = Some(nb);
                p -= lr * nb;
            }
            assert!((got[i] - p).abs() < 1e-5, "{} vs {p}", got[i]);
        }
    }

    #[test]
    fn adam_follows_its_definition() {
        let (lr, b1, b2, eps) = (0.05, 0.9, 0.999, 1e-8);
        let got = run(
            OptimizerKind::Adam {
                beta1: b1,
                beta2: b2,
                eps,
            },
            lr,
            0.0,
            4,
        );
        for (i, (&p0, &a)) in [2.0, -1.0].iter().zip(&[1.5, 0.5]).enumerate() {
            let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
            for t in 1..=4 {
                let g = a * p;
                m = b1 * m + (1.0 - b1) * g;
                v = b2 * v + (1.0 - b2) * g * g;
                let mh = m / (1.0 - f64::powi(b1, t));
                let vh = v / (1.0 - f64::powi(b2, t));
                p -= lr * mh / (vh.sqrt() + eps);
            }
            assert!((got[i] - p).abs() < 1e-5, "{} vs {p}", got[i]);
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let err = Optimizer::new(OptimizerKind::sgd(), -1.0, 0.0, vec![])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("lr"), "{err}");
        let err = Optimizer::new(
            OptimizerKind::Sgd {
                momentum: 1.5,
                nesterov: false,
            },
            0.1,
            0.0,
            vec![],
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("momentum"), "{err}");
    }
}
