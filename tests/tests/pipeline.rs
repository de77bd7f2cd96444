//! The whole pipeline through the library: a run on bundled data, its files, and its checkpoint
//! evaluated again; the same on real MNIST -> USPS when the shared data folder is present.

use std::path::Path;

use candle_core::Device;
use dtl::experiment::{evaluate_checkpoint, run, RunConfig, RunOptions};

fn quick(source: &str, target: &str) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.data.source = source.into();
    cfg.data.target = target.into();
    cfg.data.image_size = 16;
    cfg.train.epochs = 3;
    cfg.train.batch_size = 32;
    cfg.optim.lr = 0.05;
    cfg.data.source_train_size = Some(768);
    cfg
}

#[test]
fn bundled_run_shows_a_domain_shift_and_its_checkpoint_reevaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let m = run(&quick("mnist-small", "optdigits"), &out, RunOptions::default()).unwrap();
    // MNIST digits are learnt well beyond chance (0.10) ...
    assert!(
        m.source_test.accuracy > 0.7,
        "source accuracy {}",
        m.source_test.accuracy
    );
    // ... and the upsampled 8x8 optdigits are a shifted domain: accuracy drops.
    assert!(m.drop > 0.05, "drop {}", m.drop);
    assert!((m.drop - (m.source_test.accuracy - m.target_test.accuracy)).abs() < 1e-12);
    for f in dtl::experiment::RUN_FILES {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let e = evaluate_checkpoint(
        &out.join("model.safetensors"),
        "optdigits",
        None,
        None,
        Some("mnist-small"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(e.test, m.target_test);
    // The gap measured again from the checkpoint is the run's.
    assert_eq!(e.feature_gap.as_ref(), Some(&m.feature_gap));
    let e = evaluate_checkpoint(
        &out.join("model.safetensors"),
        "mnist-small",
        None,
        None,
        None,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(e.test, m.source_test);
    assert!(e.feature_gap.is_none());
}

#[test]
fn real_mnist_to_usps_when_the_data_is_there() {
    let Some(dir) = dtl_e2e::shared_data_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = quick("mnist", "usps");
    cfg.data.data_dir = Some(dir.clone());
    cfg.data.target_train_size = Some(500);
    let m = run(&cfg, &tmp.path().join("run"), RunOptions::default()).unwrap();
    assert_eq!(m.data["mnist"].train_size, 768);
    assert_eq!(m.data["mnist"].full_train_size, 60000);
    assert_eq!(m.data["usps"].test_size, 2007);
    assert_eq!(m.data["usps"].train_size, 500);
    assert!(m.data["usps"].files[0]
        .path
        .starts_with(&dir.display().to_string()));
    assert!(m.source_test.accuracy > 0.7, "{}", m.source_test.accuracy);
    assert_eq!(m.target_test.n, 2007);
    assert!(Path::new(&m.data["usps"].files[1].path).is_file());
}
