//! The same seed gives the same bits whatever the thread count: a training run (convolutions,
//! their gradients, the optimizers) and every instance-weight estimator, in rayon pools of 1, 2
//! and 3 threads.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::weighting::iw::IwConfig;
use dtl_strategies::weighting::Estimator;
use dtl_strategies::{build_with_data, train, LoopConfig, OptimSettings, StrategyConfig};

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

/// Every parameter's bits after two epochs of `cfg`.
fn trained_bits(cfg: &StrategyConfig, source: &Domain, target: &Domain) -> Vec<u32> {
    let spec = ModelSpec::lenet_digits(16).with_adapt_width(cfg.adapt_width());
    let model = Classifier::new(spec, 4, &Device::Cpu).unwrap();
    let mut s = build_with_data(
        cfg,
        model,
        &OptimSettings::default(),
        4,
        &source.train,
        &target.train,
    )
    .unwrap();
    let loop_cfg = LoopConfig {
        epochs: 2,
        batch_size: 64,
        seed: 4,
        progress: false,
        augment: None,
    };
    train(
        s.as_mut(),
        &source.train,
        Some(&target.train),
        &loop_cfg,
        &Device::Cpu,
    )
    .unwrap();
    dtl_core::params::snapshot(s.model().varmap())
        .unwrap()
        .into_iter()
        .flat_map(|(_, t)| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn training_and_estimators_repeat_bit_for_bit_in_any_pool() {
    let source = domain(DomainId::MnistSmall, 256);
    let target = domain(DomainId::Optdigits, 200);
    let mut configs = vec![
        StrategyConfig::from_name("dann").unwrap(),
        StrategyConfig::from_name("dan").unwrap(),
    ];
    for estimator in ["ratio", "kmm", "kliep"] {
        configs.push(StrategyConfig::Iw(IwConfig {
            estimator: Estimator::from_name(estimator).unwrap(),
            ..Default::default()
        }));
    }
    for cfg in &configs {
        let runs: Vec<Vec<u32>> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| trained_bits(cfg, &source, &target))
            })
            .collect();
        assert!(runs[0] == runs[1], "{}: 1 and 2 threads differ", cfg.name());
        assert!(runs[0] == runs[2], "{}: 1 and 3 threads differ", cfg.name());
    }
}
