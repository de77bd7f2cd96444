//! MCC and CDAN+E on bundled data (MNIST's first 2,000 images -> UCI optdigits, 16x16): both learn
//! the source far beyond chance; MCC lowers the target's class confusion as it trains; CDAN reads
//! the randomized map when features x classes exceed 4096 and the exact map otherwise; the MCC
//! term added to DANN and CDAN is logged and trained.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::{
    build, evaluate, train, Cdan, CdanConfig, DannConfig, LoopConfig, MccConfig, MccTerm, OptimSettings,
    StrategyConfig, TrainReport,
};

fn load(id: DomainId) -> Domain {
    Domain::load(
        id,
        None,
        &LoadOptions {
            image_size: 16,
            ..Default::default()
        },
    )
    .unwrap()
}

fn run(cfg: &StrategyConfig, epochs: usize) -> (f64, TrainReport) {
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let optim = OptimSettings {
        lr: 0.05,
        ..Default::default()
    };
    let mut s = build(cfg, model, &optim, 0).unwrap();
    let loop_cfg = LoopConfig {
        epochs,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    };
    let report = train(s.as_mut(), &source.train, Some(&target.train), &loop_cfg, &dev).unwrap();
    let acc = evaluate(|xs| s.predict(xs), &source.test, 500, &dev)
        .unwrap()
        .accuracy;
    (acc, report)
}

#[test]
fn mcc_learns_the_source_and_lowers_the_targets_class_confusion() {
    let (acc, report) = run(&StrategyConfig::Mcc(MccConfig::default()), 4);
    assert!(acc > 0.8, "source test accuracy {acc}");
    let first = report.epochs[0].means["loss_mcc"];
    let last = report.epochs.last().unwrap().means["loss_mcc"];
    // Ten classes: fully confused predictions give 0.9.
    assert!(
        first > 0.85 && last < first - 0.1,
        "class confusion {first} -> {last}"
    );
}

#[test]
fn cdan_learns_the_source_with_either_map() {
    // LeNet's 500 features x 10 classes = 5,000 > 4,096: the randomized map.
    let (acc, report) = run(&StrategyConfig::Cdan(CdanConfig::default()), 4);
    // Chance is 0.1; DANN's test on the same data asks for a source loss under 1.5.
    assert!(acc > 0.5, "source test accuracy {acc}");
    let log = &report.epochs.last().unwrap().means;
    // A fooled discriminator sits near chance, its loss near ln 2.
    assert!(log["disc_acc"] < 0.75 && log["loss_domain"] > 0.5, "{log:?}");
    let dev = Device::Cpu;
    let model = || Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let opt = OptimSettings::default();
    assert!(Cdan::new(CdanConfig::default(), model(), &opt, 0)
        .unwrap()
        .randomized());
    let exact = CdanConfig {
        max_multilinear: 5000,
        ..Default::default()
    };
    assert!(!Cdan::new(exact.clone(), model(), &opt, 0).unwrap().randomized());
    let (acc, _) = run(&StrategyConfig::Cdan(exact), 2);
    assert!(acc > 0.3, "source test accuracy with the exact map {acc}");
}

#[test]
fn the_mcc_term_trains_with_dann_and_cdan() {
    let term = Some(MccTerm::default());
    for cfg in [
        StrategyConfig::Dann(DannConfig {
            mcc: term,
            ..Default::default()
        }),
        StrategyConfig::Cdan(CdanConfig {
            mcc: term,
            ..Default::default()
        }),
    ] {
        let (acc, report) = run(&cfg, 2);
        assert!(acc > 0.3, "{}: source test accuracy {acc}", cfg.name());
        let confusion = report.epochs.last().unwrap().means["loss_mcc"];
        assert!(confusion > 0.0 && confusion < 0.9, "{}: {confusion}", cfg.name());
    }
    let bad = StrategyConfig::Dann(DannConfig {
        mcc: Some(MccTerm {
            temperature: 0.0,
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("mcc.temperature"), "{err}");
}

/// MCD: the source is learnt, and within step C the generator's updates lower the classifiers'
/// discrepancy on the target that step B raised.
#[test]
fn mcd_learns_the_source_in_three_step_turns() {
    let (acc, report) = run(&StrategyConfig::Mcd(Default::default()), 3);
    assert!(acc > 0.5, "source test accuracy {acc}");
    for e in &report.epochs {
        let m = &e.means;
        assert!(
            m["discrepancy_c_last"] < m["discrepancy_c_first"],
            "epoch {}: {m:?}",
            e.epoch
        );
    }
    let err = StrategyConfig::Mcd(dtl_strategies::McdConfig {
        num_k: 0,
        ..Default::default()
    })
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("num-k"), "{err}");
}

/// SHOT adapts a trained source model on target images alone: its head (the source hypothesis)
/// does not move, the predictions' mean entropy falls while they keep spreading over the classes,
/// and without a source model it is refused, naming `init-from`.
#[test]
fn shot_adapts_a_source_model_with_its_head_fixed() {
    use dtl_strategies::{BuildContext, ShotConfig, StrategySettings, TransferStrategy};
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let optim = OptimSettings {
        lr: 0.05,
        ..Default::default()
    };
    let loop_cfg = |epochs| LoopConfig {
        epochs,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    };
    let mut src = build(
        &StrategyConfig::SourceOnly(Default::default()),
        Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap(),
        &optim,
        0,
    )
    .unwrap();
    train(src.as_mut(), &source.train, None, &loop_cfg(4), &dev).unwrap();
    let head = |m: &dyn TransferStrategy| {
        dtl_core::params::select(m.model().varmap(), &["head"])
            .into_iter()
            .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let cfg = StrategyConfig::Shot(ShotConfig::default());
    let ctx = BuildContext::new(
        Classifier::new(ModelSpec::lenet_digits(16), 1, &dev).unwrap(),
        &optim,
        0,
    )
    .with_data(&source.train, &target.train)
    .with_init(src.model(), std::path::Path::new("source.safetensors"));
    let mut shot = cfg.build(ctx).unwrap();
    assert_eq!(
        head(shot.as_ref()),
        head(src.as_ref()),
        "starts from the source model"
    );
    let report = train(
        shot.as_mut(),
        &source.train,
        Some(&target.train),
        &loop_cfg(3),
        &dev,
    )
    .unwrap();
    assert_eq!(
        head(shot.as_ref()),
        head(src.as_ref()),
        "the source hypothesis moved"
    );
    let (first, last) = (&report.epochs[0].means, &report.epochs.last().unwrap().means);
    assert!(last["loss_ent"] < first["loss_ent"], "{first:?} -> {last:?}");
    // Ten classes: the mean prediction's entropy stays near ln 10 = 2.30.
    assert!(last["diversity"] > 2.0, "{last:?}");
    let err = ShotConfig::default()
        .check_run(&dtl_strategies::RunFacts {
            epochs: 3,
            init_from: false,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("init-from"), "{err}");
}

/// Self-ensembling: the student learns the source; after every step the teacher is exactly the
/// moving average `a t + (1 - a) s` of its previous weights and the student's new ones; the teacher
/// is the model that predicts.
#[test]
fn self_ensembling_keeps_a_mean_teacher() {
    use dtl_core::{DomainBatch, Strategy};
    use dtl_strategies::{SelfEnsembling, SelfEnsemblingConfig, TransferStrategy};
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let cfg = SelfEnsemblingConfig::default();
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let mut s = SelfEnsembling::new(cfg.clone(), model, &OptimSettings::default(), 0).unwrap();
    let flat = |m: &Classifier| {
        dtl_core::params::snapshot(m.varmap())
            .unwrap()
            .into_iter()
            .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<f32>>()
    };
    let teacher0 = flat(s.model());
    assert_eq!(teacher0, flat(s.student()), "the teacher starts as the student");
    let idx: Vec<usize> = (0..32).collect();
    let (xs, ys) = source.train.batch(&idx, &dev).unwrap();
    let (xt, _) = target.train.batch(&idx, &dev).unwrap();
    let batch = DomainBatch {
        source: (xs, ys),
        source_indices: idx.clone(),
        target: Some(xt),
        target_indices: idx,
        target_labels: None,
        progress: 0.0,
    };
    let stats = s.train_step(&batch).unwrap();
    assert!((0.0..=1.0).contains(&stats.get("confident").unwrap()));
    let (teacher1, student1) = (flat(s.model()), flat(s.student()));
    assert_ne!(student1, teacher0, "the student moved");
    for ((t1, t0), s1) in teacher1.iter().zip(&teacher0).zip(&student1) {
        let want = cfg.ema as f32 * t0 + (1.0 - cfg.ema as f32) * s1;
        assert!((t1 - want).abs() <= 1e-6 * want.abs().max(1.0), "{t1} vs {want}");
    }
    let (acc, report) = run(&StrategyConfig::SelfEnsembling(cfg), 3);
    assert!(acc > 0.5, "the teacher's source test accuracy {acc}");
    assert!(report.epochs.last().unwrap().means["loss_cls"] < report.epochs[0].means["loss_cls"]);
}
