//! Training on bundled data: learning well beyond chance, and exact repeatability from a seed.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::augment::Augment;
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::{build, evaluate, train, LoopConfig, OptimSettings, StrategyConfig};

fn optdigits16() -> Domain {
    Domain::load(
        DomainId::Optdigits,
        None,
        &LoadOptions {
            image_size: 16,
            ..Default::default()
        },
    )
    .unwrap()
}

type Outcome = (f64, Vec<(String, candle_core::Tensor)>, (f64, f64));

fn run(data: &Domain, seed: u64, epochs: usize) -> Outcome {
    run_with(data, seed, epochs, None)
}

fn run_with(data: &Domain, seed: u64, epochs: usize, augment: Option<Augment>) -> Outcome {
    let dev = Device::Cpu;
    let model = Classifier::new(ModelSpec::lenet_digits(16), seed, &dev).unwrap();
    let optim = OptimSettings {
        lr: 0.05,
        ..Default::default()
    };
    let mut s = build(
        &StrategyConfig::SourceOnly(Default::default()),
        model,
        &optim,
        seed,
    )
    .unwrap();
    let cfg = LoopConfig {
        epochs,
        batch_size: 32,
        seed,
        progress: false,
        augment,
    };
    let report = train(s.as_mut(), &data.train, None, &cfg, &dev).unwrap();
    let acc = evaluate(|xs| s.predict(xs), &data.test, 200, &dev)
        .unwrap()
        .accuracy;
    let losses = (
        report.epochs[0].means["loss_cls"],
        report.epochs.last().unwrap().means["loss_cls"],
    );
    (
        acc,
        dtl_core::params::snapshot(s.model().varmap()).unwrap(),
        losses,
    )
}

#[test]
fn source_only_learns_optdigits_far_beyond_chance() {
    let data = optdigits16();
    let (acc, _, (first, last)) = run(&data, 0, 6);
    // Ten balanced classes: chance is 0.10 and the untrained loss ln 10 = 2.30.
    assert!(acc > 0.85, "test accuracy {acc}");
    assert!(
        last < first / 2.0,
        "mean loss went from {first} (epoch 1) to {last} (epoch 6)"
    );
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let data = optdigits16();
    let (acc_a, wa, _) = run(&data, 3, 1);
    let (acc_b, wb, _) = run(&data, 3, 1);
    let (_, wc, _) = run(&data, 4, 1);
    assert_eq!(acc_a, acc_b);
    for ((n, a), (_, b)) in wa.iter().zip(&wb) {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_eq!(d, 0.0, "{n} differs between two runs with the same seed");
    }
    let d = (&wa[0].1 - &wc[0].1)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(d > 0.0);
}

#[test]
fn loop_settings_are_validated() {
    let data = optdigits16();
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &Device::Cpu).unwrap();
    let mut s = build(
        &StrategyConfig::SourceOnly(Default::default()),
        model,
        &OptimSettings::default(),
        0,
    )
    .unwrap();
    let cfg = LoopConfig {
        epochs: 0,
        batch_size: 32,
        seed: 0,
        progress: false,
        augment: None,
    };
    let err = train(s.as_mut(), &data.train, None, &cfg, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("epochs"), "{err}");
    let err = StrategyConfig::from_name("dann-typo").unwrap_err().to_string();
    assert!(err.contains("dann-typo") && err.contains("source-only"), "{err}");
}

/// Augmented training draws its crops and flips from the run's seed: it repeats exactly, differs
/// from training on the plain images, and still learns.
#[test]
fn augmented_training_repeats_and_differs_from_plain() {
    let data = optdigits16();
    let aug = Augment {
        crop_scale: (0.7, 1.0),
        crop_ratio: (0.9, 1.1),
        flip: false,
        ..Augment::default()
    };
    let (acc, a, _) = run_with(&data, 4, 2, Some(aug));
    let (_, b, _) = run_with(&data, 4, 2, Some(aug));
    let (_, plain, _) = run(&data, 4, 2);
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for ((n, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(flat(x), flat(y), "{n} differs between two augmented runs");
    }
    assert_ne!(flat(&a[0].1), flat(&plain[0].1), "augmentation changed nothing");
    assert!(acc > 0.5, "augmented test accuracy {acc}");
}
