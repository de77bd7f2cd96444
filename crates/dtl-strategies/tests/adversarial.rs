//! ADDA and DANN on bundled data (MNIST's first 2,000 images -> UCI optdigits, 16x16): ADDA's stage
//! 1 is source-only training, its stage 2 moves nothing but the target encoder's own layers and the
//! discriminator, and DANN confuses its discriminator and pulls the domains together.

use std::collections::HashMap;

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::{
    build, feature_gap, train, Adda, AddaConfig, DannConfig, LoopConfig, OptimSettings, StrategyConfig,
    TransferStrategy,
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

fn optim() -> OptimSettings {
    OptimSettings {
        lr: 0.05,
        ..Default::default()
    }
}

fn loop_cfg(epochs: usize) -> LoopConfig {
    LoopConfig {
        epochs,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    }
}

fn weights(model: &Classifier) -> HashMap<String, Vec<f32>> {
    dtl_core::params::snapshot(model.varmap())
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

#[test]
fn adda_stage1_is_source_only_and_stage2_moves_only_the_target_encoder() {
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let model = || Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();

    // Stage 1 alone (2 epochs) against source-only for 2 epochs: the same weights, bit for bit.
    let mut so = build(
        &StrategyConfig::SourceOnly(Default::default()),
        model(),
        &optim(),
        0,
    )
    .unwrap();
    train(
        so.as_mut(),
        &source.train,
        Some(&target.train),
        &loop_cfg(2),
        &dev,
    )
    .unwrap();
    let cfg = AddaConfig {
        source_epochs: 2,
        shared_layers: 1,
        ..Default::default()
    };
    let mut adda: Adda = cfg.build(model(), &optim(), 0).unwrap();
    train(
        &mut adda,
        &source.train,
        Some(&target.train),
        &loop_cfg(2 + 1),
        &dev,
    )
    .unwrap();
    let after_stage1 = weights(so.model());
    let source_after = weights(adda.source_model());
    assert_eq!(
        after_stage1, source_after,
        "stage 1 differs from source-only, or stage 2 moved the source model"
    );

    // Stage 2: the target encoder started as a copy; its shared first layer and the classifier
    // head are still the source's, its own layers moved.
    let target = weights(adda.target_model().expect("stage 2 ran"));
    for name in ["conv1.weight", "conv1.bias", "head.weight", "head.bias"] {
        assert_eq!(target[name], source_after[name], "{name} moved in stage 2");
    }
    for name in ["conv2.weight", "fc1.weight", "fc1.bias"] {
        assert_ne!(target[name], source_after[name], "{name} did not move in stage 2");
    }
    // The run's model is the target model.
    assert_eq!(weights(adda.model()), target);
}

#[test]
fn adda_needs_epochs_left_for_adaptation_and_layers_that_exist() {
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let model = || Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let mut adda = AddaConfig {
        source_epochs: 3,
        ..Default::default()
    }
    .build(model(), &optim(), 0)
    .unwrap();
    let err = train(&mut adda, &source.train, Some(&target.train), &loop_cfg(3), &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("source-epochs"), "{err}");
    let err = AddaConfig {
        shared_layers: 4,
        ..Default::default()
    }
    .build(model(), &optim(), 0)
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("shared-layers") && err.contains("conv1, conv2, fc1"),
        "{err}"
    );
}

#[test]
fn dann_confuses_its_discriminator_and_pulls_the_domains_together() {
    let (source, target) = (load(DomainId::MnistSmall), load(DomainId::Optdigits));
    let dev = Device::Cpu;
    let run = |cfg: &StrategyConfig| {
        let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
        let mut s = build(cfg, model, &optim(), 0).unwrap();
        let report = train(s.as_mut(), &source.train, Some(&target.train), &loop_cfg(4), &dev).unwrap();
        let gap = feature_gap(s.model(), &source.test, &target.test, 400, &dev).unwrap();
        (report, gap)
    };
    let (report, dann) = run(&StrategyConfig::Dann(DannConfig::default()));
    let (_, baseline) = run(&StrategyConfig::SourceOnly(Default::default()));
    let last = &report.epochs.last().unwrap().means;
    eprintln!("dann {last:?} {dann:?}; source-only {baseline:?}");
    assert!(last["loss_cls"] < 1.5, "source loss {}", last["loss_cls"]);
    // A fooled discriminator sits near chance; its loss near ln 2.
    assert!(
        last["disc_acc"] < 0.75,
        "discriminator accuracy {}",
        last["disc_acc"]
    );
    assert!((last["grl_coeff"] - DannConfig::default().coeff(0.99)).abs() < 0.01);
    assert!(
        dann.mmd2 < baseline.mmd2,
        "MMD^2 {} vs source-only {}",
        dann.mmd2,
        baseline.mmd2
    );
}
