//! Resumable training: a run continued from any state it saved ends with the model and the epoch
//! log of the run that was never interrupted, bit for bit, for every strategy; and saving the
//! state changes nothing.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_core::state::State;
use dtl_data::augment::Augment;
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::weighting::iw::{IwConfig, WeightsOn};
use dtl_strategies::{
    build_with_data, train, train_resumable, AddaConfig, BuildContext, Checkpointing, DannConfig, LoopConfig,
    OptimSettings, Position, StrategyConfig, TradaboostConfig, TrainReport, TransferStrategy,
};

fn domain(id: DomainId, n: usize) -> Domain {
    Domain::load(
        id,
        None,
        &LoadOptions {
            image_size: 16,
            train_size: Some(n),
            ..Default::default()
        },
    )
    .unwrap()
}

struct Setup {
    source: Domain,
    target: Domain,
    cfg: LoopConfig,
}

impl Setup {
    fn new(augment: bool) -> Self {
        Setup {
            source: domain(DomainId::MnistSmall, 150),
            target: domain(DomainId::Optdigits, 110),
            cfg: LoopConfig {
                epochs: 3,
                batch_size: 32,
                seed: 5,
                progress: false,
                augment: augment.then(Augment::default),
            },
        }
    }

    fn strategy(&self, cfg: &StrategyConfig) -> Box<dyn TransferStrategy> {
        let spec = ModelSpec::lenet_digits(16).with_adapt_width(cfg.adapt_width());
        let model = Classifier::new(spec, self.cfg.seed, &Device::Cpu).unwrap();
        let optim = OptimSettings {
            lr: 0.05,
            ..Default::default()
        };
        if cfg.name() == "shot" {
            // A source-free strategy adapts a given model (any will do here).
            let init = Classifier::new(ModelSpec::lenet_digits(16), 77, &Device::Cpu).unwrap();
            let ctx = BuildContext::new(model, &optim, self.cfg.seed)
                .with_data(&self.source.train, &self.target.train)
                .with_init(&init, std::path::Path::new("source.safetensors"));
            return cfg.build(ctx).unwrap();
        }
        build_with_data(
            cfg,
            model,
            &optim,
            self.cfg.seed,
            &self.source.train,
            &self.target.train,
        )
        .unwrap()
    }

    /// Trains, from `resume` when given, collecting every state saved every `every` steps.
    fn train(
        &self,
        s: &mut dyn TransferStrategy,
        resume: Option<&State>,
        every: Option<usize>,
    ) -> (TrainReport, Vec<(Position, State)>) {
        let mut states = Vec::new();
        let mut save = |st: &State, at: Position| {
            // Through the file format, as a resumed process reads it.
            let bytes = st.to_bytes().unwrap();
            states.push((at, State::from_bytes(&bytes, &Device::Cpu, "state").unwrap()));
            Ok(())
        };
        let report = train_resumable(
            s,
            &self.source.train,
            Some(&self.target.train),
            &self.cfg,
            &Device::Cpu,
            Checkpointing {
                resume,
                every_steps: every,
                save: Some(&mut save),
            },
        )
        .unwrap();
        (report, states)
    }
}

/// Every parameter and buffer, as bits.
fn bits(s: &dyn TransferStrategy) -> Vec<(String, Vec<u32>)> {
    dtl_core::params::snapshot(s.model().varmap())
        .unwrap()
        .into_iter()
        .map(|(n, t)| {
            let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            (n, v.iter().map(|x| x.to_bits()).collect())
        })
        .collect()
}

/// One epoch's number, steps and means (as bits).
type EpochBits = (usize, usize, Vec<(String, u64)>);

/// The epoch log without its timings.
fn log(r: &TrainReport) -> Vec<EpochBits> {
    r.epochs
        .iter()
        .map(|e| {
            let means = e.means.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect();
            (e.epoch, e.steps, means)
        })
        .collect()
}

fn check_resumes_exactly(name: &str, cfg: StrategyConfig, augment: bool) {
    let setup = Setup::new(augment);
    // The run as `train` makes it, without saving anything.
    let mut plain = setup.strategy(&cfg);
    let plain_report = train(
        plain.as_mut(),
        &setup.source.train,
        Some(&setup.target.train),
        &setup.cfg,
        &Device::Cpu,
    )
    .unwrap();
    // The same run saving its state every 2 steps (5 steps an epoch: mid-epoch and epoch ends).
    let mut saving = setup.strategy(&cfg);
    let (report, states) = setup.train(saving.as_mut(), None, Some(2));
    assert_eq!(
        bits(saving.as_ref()),
        bits(plain.as_ref()),
        "{name}: saving changed the run"
    );
    assert_eq!(log(&report), log(&plain_report), "{name}");
    let ends = states.iter().filter(|(at, _)| at.step == 0).count();
    assert_eq!(ends, 3, "{name}: a state at every epoch end");
    assert!(states.len() > 8, "{name}: {} states", states.len());
    // Resumed from each saved state but the last (the finished run), in a fresh strategy.
    for (at, state) in &states[..states.len() - 1] {
        let mut resumed = setup.strategy(&cfg);
        let (r, _) = setup.train(resumed.as_mut(), Some(state), None);
        assert_eq!(
            bits(resumed.as_ref()),
            bits(plain.as_ref()),
            "{name}: resumed from {at:?}"
        );
        assert_eq!(log(&r), log(&plain_report), "{name}: resumed from {at:?}");
    }
}

#[test]
fn source_only_resumes_exactly_with_augmentation() {
    check_resumes_exactly(
        "source-only",
        StrategyConfig::from_name("source-only").unwrap(),
        true,
    );
}

#[test]
fn discrepancy_strategies_resume_exactly() {
    for name in ["ddc", "dan", "coral"] {
        check_resumes_exactly(name, StrategyConfig::from_name(name).unwrap(), false);
    }
}

#[test]
fn dann_with_reestimated_instance_weights_resumes_exactly() {
    let features = IwConfig {
        weights_on: WeightsOn::Features,
        every: 1,
        ..Default::default()
    };
    check_resumes_exactly("dann", StrategyConfig::Dann(DannConfig::default()), false);
    check_resumes_exactly(
        "dann+iw",
        StrategyConfig::Dann(DannConfig {
            instance_weights: Some(features),
            ..Default::default()
        }),
        false,
    );
}

#[test]
fn the_newer_methods_resume_exactly() {
    for name in ["cdan", "mcc", "mcd", "shot", "self-ensembling"] {
        check_resumes_exactly(name, StrategyConfig::from_name(name).unwrap(), false);
    }
    check_resumes_exactly(
        "dann+mcc",
        StrategyConfig::Dann(DannConfig {
            mcc: Some(Default::default()),
            ..Default::default()
        }),
        false,
    );
}

#[test]
fn adda_resumes_exactly_in_both_stages() {
    // Stage 1 in epoch 1, stage 2 from epoch 2: states of both stages and of the switch.
    check_resumes_exactly(
        "adda",
        StrategyConfig::Adda(AddaConfig {
            source_epochs: 1,
            ..Default::default()
        }),
        false,
    );
}

#[test]
fn instance_weighting_and_tradaboost_resume_exactly() {
    check_resumes_exactly(
        "iw",
        StrategyConfig::Iw(IwConfig {
            weights_on: WeightsOn::Features,
            every: 1,
            ..Default::default()
        }),
        false,
    );
    check_resumes_exactly("iw (pixels)", StrategyConfig::from_name("iw").unwrap(), false);
    check_resumes_exactly(
        "tradaboost",
        StrategyConfig::Tradaboost(TradaboostConfig {
            labelled_target: 30,
            target_batch: 8,
        }),
        false,
    );
}

#[test]
fn a_state_of_another_run_is_refused_by_name() {
    let setup = Setup::new(false);
    let mut dann = setup.strategy(&StrategyConfig::from_name("dann").unwrap());
    let (_, states) = setup.train(dann.as_mut(), None, Some(4));
    let state = &states[0].1;
    // The error of resuming `name` from `state` with loop settings `cfg`.
    let refusal = |name: &str, cfg: &LoopConfig| {
        let mut s = setup.strategy(&StrategyConfig::from_name(name).unwrap());
        let resume = Checkpointing {
            resume: Some(state),
            ..Default::default()
        };
        let r = train_resumable(
            s.as_mut(),
            &setup.source.train,
            Some(&setup.target.train),
            cfg,
            &Device::Cpu,
            resume,
        );
        r.err().unwrap().to_string()
    };
    // Another strategy: the loop's settings name it.
    let err = refusal("coral", &setup.cfg);
    assert!(err.contains("loop.settings") && err.contains("coral"), "{err}");
    // The same strategy with another batch size.
    let mut cfg = setup.cfg.clone();
    cfg.batch_size = 16;
    let err = refusal("dann", &cfg);
    assert!(err.contains("batch_size: 16"), "{err}");
}
