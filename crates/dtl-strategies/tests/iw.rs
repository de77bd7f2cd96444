//! The `iw` strategy on a prior shift built from real digits: the source holds all ten optdigits
//! classes, the target only 0-4. The density ratio is then zero on the classes the target lacks
//! (a known property of the data, not a fitted value), so the estimated weights must concentrate
//! on classes 0-4; training runs with them and reports them.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::weighting::iw::{IwConfig, WeightsOn};
use dtl_strategies::weighting::{Estimator, KliepConfig, KmmConfig};
use dtl_strategies::{build_with_data, train, LoopConfig, OptimSettings, StrategyConfig};

/// Optdigits at 16x16 and, as the target, its training images of classes 0-4.
fn prior_shift() -> (Domain, dtl_data::Dataset) {
    let data = Domain::load(
        DomainId::Optdigits,
        None,
        &LoadOptions {
            image_size: 16,
            ..Default::default()
        },
    )
    .unwrap();
    let target = data.train.with_classes(&[0, 1, 2, 3, 4]).unwrap();
    (data, target)
}

/// The loop every test here trains with: batches of 64, seed 0.
fn loop_config(epochs: usize) -> LoopConfig {
    LoopConfig {
        epochs,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    }
}

/// The mean weight of the source samples of `classes`.
fn mean_weight(stats: &dtl_strategies::weighting::WeightStats, classes: std::ops::Range<usize>) -> f64 {
    let (mut w, mut n) = (0.0, 0);
    for c in &stats.per_class[classes] {
        w += c.mean * c.n as f64;
        n += c.n;
    }
    w / n as f64
}

#[test]
fn iw_weights_concentrate_on_the_targets_classes() {
    let dev = Device::Cpu;
    let (data, target) = prior_shift();
    for (estimator, on) in [
        (Estimator::default(), WeightsOn::Pixels),
        (Estimator::default(), WeightsOn::Features),
        (Estimator::Kliep(KliepConfig::default()), WeightsOn::Pixels),
        (Estimator::Kmm(KmmConfig::default()), WeightsOn::Pixels),
    ] {
        let cfg = StrategyConfig::Iw(IwConfig {
            estimator: estimator.clone(),
            weights_on: on,
            ..IwConfig::default()
        });
        let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
        let optim = OptimSettings {
            lr: 0.05,
            ..Default::default()
        };
        let mut s = build_with_data(&cfg, model, &optim, 0, &data.train, &target).unwrap();
        // On features the first estimate comes after one epoch of equal weights.
        let epochs = if on == WeightsOn::Features { 2 } else { 1 };
        let loop_cfg = loop_config(epochs);
        let report = train(s.as_mut(), &data.train, None, &loop_cfg, &dev).unwrap();
        assert!(report.epochs[0].means.contains_key("loss_iw"));
        let stats = s.weight_stats().expect("iw reports its weights").clone();
        let mean = |classes: std::ops::Range<usize>| mean_weight(&stats, classes);
        let (kept, dropped) = (mean(0..5), mean(5..10));
        println!(
            "{} on {on:?}: mean weight classes 0-4 {kept:.3}, 5-9 {dropped:.3}, ESS {:.0}",
            estimator.name(),
            stats.ess
        );
        // Equal class sizes: the true weights are 2 on 0-4 and 0 on 5-9.
        assert!(kept > 3.0 * dropped, "{}: {kept} vs {dropped}", estimator.name());
        assert!(stats.ess < data.train.len() as f64);
    }
}

/// On features the first epoch trains with equal weights: after one epoch nothing has been
/// estimated yet; on pixels the weights exist from the start, and a re-estimation schedule on
/// pixels (which never change) is refused, naming the setting.
#[test]
fn feature_weights_wait_for_one_epoch() {
    let dev = Device::Cpu;
    let (data, target) = prior_shift();
    for (on, estimated) in [(WeightsOn::Features, false), (WeightsOn::Pixels, true)] {
        let cfg = StrategyConfig::Iw(IwConfig {
            weights_on: on,
            ..IwConfig::default()
        });
        let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
        let mut s = build_with_data(&cfg, model, &OptimSettings::default(), 0, &data.train, &target).unwrap();
        let loop_cfg = loop_config(1);
        train(s.as_mut(), &data.train, None, &loop_cfg, &dev).unwrap();
        assert_eq!(s.weight_stats().is_some(), estimated, "{on:?}");
        let every = IwConfig {
            weights_on: on,
            every: 2,
            ..IwConfig::default()
        };
        let built = every.weighter(&data.train, &target, 0);
        match on {
            WeightsOn::Features => assert!(built.is_ok()),
            WeightsOn::Pixels => {
                let err = built.expect_err("pixels with reweight-every").to_string();
                assert!(err.contains("reweight-every") && err.contains("pixels"), "{err}");
            }
        }
    }
}

/// Instance weights combine with the adaptation losses: `ddc` and `dann` with `instance-weights`
/// on the same prior shift weight their source loss (logged as `loss_iw` next to their own
/// losses), and the weights concentrate on the target's classes as `iw`'s do.
#[test]
fn adaptation_strategies_take_instance_weights() {
    use dtl_strategies::{DannConfig, DdcConfig};
    let dev = Device::Cpu;
    let (data, target) = prior_shift();
    let weights = Some(IwConfig::default());
    for (cfg, own_loss) in [
        (
            StrategyConfig::Ddc(DdcConfig {
                instance_weights: weights.clone(),
                ..DdcConfig::default()
            }),
            "mmd2_adapt",
        ),
        (
            StrategyConfig::Dann(DannConfig {
                instance_weights: weights.clone(),
                ..DannConfig::default()
            }),
            "loss_domain",
        ),
    ] {
        let spec = ModelSpec::lenet_digits(16).with_adapt_width(cfg.adapt_width());
        let model = Classifier::new(spec.clone(), 0, &dev).unwrap();
        // Without the data the weights cannot be estimated: a clear error, not a silent
        // unweighted run.
        let other = Classifier::new(spec, 0, &dev).unwrap();
        let err = dtl_strategies::build(&cfg, other, &OptimSettings::default(), 0)
            .err()
            .expect("build refuses instance weights without data")
            .to_string();
        assert!(err.contains("instance-weights"), "{err}");
        let mut s = build_with_data(&cfg, model, &OptimSettings::default(), 0, &data.train, &target).unwrap();
        let loop_cfg = loop_config(1);
        let report = train(s.as_mut(), &data.train, Some(&target), &loop_cfg, &dev).unwrap();
        let means = &report.epochs[0].means;
        assert!(means.contains_key("loss_iw"), "{}: {means:?}", cfg.name());
        assert!(means.contains_key(own_loss), "{}: {means:?}", cfg.name());
        let stats = s.weight_stats().expect("the weights are reported").clone();
        let mean = |classes: std::ops::Range<usize>| mean_weight(&stats, classes);
        assert!(mean(0..5) > 3.0 * mean(5..10), "{}", cfg.name());
    }
}

/// Importance-weighted validation estimates the target error without target labels: a model
/// trained on optdigits 5-9 only is always wrong on 0-4, the target's classes, so its true target
/// error is about 1 while its plain error on the balanced source validation split is about 1/2.
/// Weights that favour 0-4 must move the estimate towards the truth.
#[test]
fn importance_weighted_validation_tracks_the_target_error() {
    use dtl_strategies::weighting::validate;
    let dev = Device::Cpu;
    let (data, target) = prior_shift();
    // Subsets keep the ten labels (`with_classes` would renumber them).
    let of = |d: &dtl_data::Dataset, lo: u32, hi: u32| {
        let idx: Vec<usize> = (0..d.len())
            .filter(|&i| (lo..hi).contains(&d.labels()[i]))
            .collect();
        d.subset(&idx).unwrap()
    };
    let upper = of(&data.train, 5, 10);
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &dev).unwrap();
    let optim = OptimSettings {
        lr: 0.05,
        ..Default::default()
    };
    let mut s =
        dtl_strategies::build(&StrategyConfig::SourceOnly(Default::default()), model, &optim, 0).unwrap();
    let loop_cfg = loop_config(10);
    train(s.as_mut(), &upper, None, &loop_cfg, &dev).unwrap();
    let predict = |xs: &candle_core::Tensor| s.predict(xs);
    let truth = 1.0
        - dtl_strategies::evaluate(predict, &of(&data.test, 0, 5), 256, &dev)
            .unwrap()
            .accuracy;
    let v = validate(
        predict,
        &data.test,
        &target.without_labels(),
        &Estimator::default(),
        5000,
        0,
        &dev,
    )
    .unwrap();
    let plain = 1.0
        - dtl_strategies::evaluate(predict, &data.test, 256, &dev)
            .unwrap()
            .accuracy;
    println!(
        "target error {truth:.3}, weighted {:.3}, plain {:.3}",
        v.error, v.plain_error
    );
    assert!(
        (v.plain_error - plain).abs() < 1e-9,
        "{} vs {plain}",
        v.plain_error
    );
    assert!(truth > 0.95, "the model never saw 0-4: {truth}");
    assert!(v.error > v.plain_error + 0.1, "{} vs {}", v.error, v.plain_error);
    assert!((v.error - truth).abs() < (v.plain_error - truth).abs());
    assert_eq!((v.n, v.target_n), (data.test.len(), target.len()));
    assert!(v.loss > v.plain_loss);
}
