//! The `tradaboost` strategy on real digits: its weight updates follow the paper's formulas for
//! the network's own errors, and source samples whose labels disagree with the target concept
//! (labels corrupted here, a known property of the constructed data) lose their weight.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_core::Strategy;
use dtl_data::{Dataset, Domain, DomainId, LoadOptions};
use dtl_strategies::{train, LoopConfig, OptimSettings, Tradaboost, TradaboostConfig, TransferStrategy};

fn optdigits() -> Domain {
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

fn run(source: &Dataset, target: &Dataset, epochs: usize) -> Tradaboost {
    let dev = Device::Cpu;
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let optim = OptimSettings {
        lr: 0.05,
        ..Default::default()
    };
    let mut s = TradaboostConfig::default()
        .build(model, &optim, source, target, 0)
        .unwrap();
    let loop_cfg = LoopConfig {
        epochs,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    };
    let report = train(&mut s, source, None, &loop_cfg, &dev).unwrap();
    assert_eq!(s.name(), "tradaboost");
    for key in ["loss_source", "loss_target", "loss_total", "acc_source"] {
        assert!(report.epochs[0].means.contains_key(key), "{key}");
    }
    s
}

/// After one round from uniform weights: source `w = beta^e`, target `w = beta_t^-e`, with
/// `eps` the target error, `beta_t = eps / (1 - eps)` and `beta = 1 / (1 + sqrt(2 ln n / N))`,
/// `N = epochs - 1 = 1`; the errors are the network's own, recomputed here from its predictions.
#[test]
fn one_round_follows_the_paper() {
    let data = optdigits();
    let t = run(&data.train, &data.test, 2);
    let (es, et) = t.last_errors().expect("one round ran");
    let (es, et) = (es.to_vec(), et.to_vec());
    assert_eq!(et.len(), 100);
    assert!(es.iter().chain(&et).all(|&e| e == 0.0 || e == 1.0));
    let n = data.train.len() as f64;
    let beta = 1.0 / (1.0 + (2.0 * n.ln() / 1.0).sqrt());
    let eps = (et.iter().sum::<f64>() / et.len() as f64).clamp(1e-10, 0.499);
    let beta_t = eps / (1.0 - eps);
    let (ws, wt) = t.weights();
    for (w, e) in ws.iter().zip(&es) {
        assert!((w - beta.powf(*e)).abs() < 1e-12);
    }
    for (w, e) in wt.iter().zip(&et) {
        assert!((w - beta_t.powf(-*e)).abs() < 1e-9 * w.abs().max(1.0));
    }
    assert_eq!(t.rounds().len(), 1);
    assert!(t.weight_stats().is_some());
}

/// A third of the source has wrong labels (`(y + 1) mod 10`); the labelled target samples are
/// right. The network, trained mostly on right labels, disagrees with the wrong ones, which then
/// lose weight round after round (three rounds: `beta^3 = 0.03` for one misfit in every round).
#[test]
fn wrongly_labelled_source_samples_lose_weight() {
    let data = optdigits();
    let train = &data.train;
    let pixels: Vec<f32> = (0..train.len()).flat_map(|i| train.image(i).to_vec()).collect();
    let corrupted: Vec<bool> = (0..train.len()).map(|i| i.is_multiple_of(3)).collect();
    let labels: Vec<u32> = train
        .labels()
        .iter()
        .zip(&corrupted)
        .map(|(&y, &c)| if c { (y + 1) % 10 } else { y })
        .collect();
    let source = Dataset::new(pixels, labels, train.image_shape(), 10).unwrap();
    let t = run(&source, &data.test, 4);
    let (ws, _) = t.weights();
    let mean = |bad: bool| {
        let v: Vec<f64> = ws
            .iter()
            .zip(&corrupted)
            .filter(|(_, &c)| c == bad)
            .map(|(w, _)| *w)
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let (clean, wrong) = (mean(false), mean(true));
    println!("mean weight: clean {clean:.4}, wrong labels {wrong:.4}");
    // Measured: 0.30 of the clean samples' mean weight (clean samples lose some weight too, in
    // the early rounds whose network still errs on them); half is a clear separation.
    assert!(wrong < 0.5 * clean, "{wrong} vs {clean}");
}
