//! Sequential transfer (Yosinski et al. 2014): copying the first n layers, freezing them
//! bit-identically with no optimizer state, or fine-tuning them at a multiplied rate.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};
use dtl_strategies::{train, FinetuneConfig, LoopConfig, OptimSettings, TransferStrategy};

fn weights(model: &Classifier) -> HashMap<String, Vec<f32>> {
    dtl_core::params::snapshot(model.varmap())
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

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

#[test]
fn copying_the_first_layers_takes_theirs_and_keeps_the_rest() {
    let dev = Device::Cpu;
    let source = Classifier::new(ModelSpec::lenet_digits(16), 1, &dev).unwrap();
    let target = Classifier::new(ModelSpec::lenet_digits(16), 2, &dev).unwrap();
    let before = weights(&target);
    let copied = target
        .transfer_from(&source, 2, Path::new("src.safetensors"))
        .unwrap();
    assert_eq!(copied, ["conv1", "conv2"]);
    let (s, t) = (weights(&source), weights(&target));
    for name in ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias"] {
        assert_eq!(t[name], s[name], "{name} not copied");
    }
    for name in ["fc1.weight", "fc1.bias", "head.weight", "head.bias"] {
        assert_eq!(t[name], before[name], "{name} changed");
        assert_ne!(t[name], s[name], "{name} equals the source's");
    }

    // Too many layers, and a head for other classes, are named errors that change nothing.
    let err = target
        .transfer_from(&source, 5, Path::new("src.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("transfer-layers") && err.contains("conv1, conv2, fc1, head"),
        "{err}"
    );
    let mut five = ModelSpec::lenet_digits(16);
    five.class_names.truncate(5);
    let small = Classifier::new(five, 3, &dev).unwrap();
    let err = small
        .transfer_from(&source, 4, Path::new("src.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("src.safetensors") && err.contains("head"), "{err}");
    // Fewer layers from a 10-class model into a 5-class one: fine, the head is new.
    assert_eq!(
        small
            .transfer_from(&source, 3, Path::new("src.safetensors"))
            .unwrap()
            .len(),
        3
    );
    let mut wide = ModelSpec::lenet_digits(16);
    wide.adapt_width = Some(32);
    let wide = Classifier::new(wide, 0, &dev).unwrap();
    let err = wide
        .transfer_from(&source, 4, Path::new("src.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("adapt"), "{err}");
}

#[test]
fn frozen_layers_stay_bit_identical_without_optimizer_state_and_tuned_ones_move() {
    let dev = Device::Cpu;
    let data = optdigits16();
    let source = Classifier::new(ModelSpec::lenet_digits(16), 1, &dev).unwrap();
    let cfg = LoopConfig {
        epochs: 1,
        batch_size: 64,
        seed: 0,
        progress: false,
        augment: None,
    };
    for (freeze, mult) in [(true, 1.0), (false, 0.1)] {
        let model = Classifier::new(ModelSpec::lenet_digits(16), 2, &dev).unwrap();
        model.transfer_from(&source, 2, Path::new("src")).unwrap();
        let start = weights(&model);
        let ft = FinetuneConfig {
            transfer_layers: 2,
            freeze,
            transferred_lr_mult: mult,
        };
        let mut s = ft.build(model, &OptimSettings::default()).unwrap();
        let in_opt: HashMap<&str, f64> = s.optimizer().params().into_iter().collect();
        if freeze {
            assert!(
                in_opt
                    .keys()
                    .all(|n| n.starts_with("fc1.") || n.starts_with("head.")),
                "{in_opt:?}"
            );
        } else {
            assert_eq!(in_opt["conv1.weight"], 0.1);
            assert_eq!(in_opt["fc1.weight"], 1.0);
        }
        assert_eq!(in_opt.len(), if freeze { 4 } else { 8 });
        train(&mut s, &data.train, None, &cfg, &dev).unwrap();
        let end = weights(s.model());
        for name in ["conv1.weight", "conv2.bias"] {
            assert_eq!(end[name] == start[name], freeze, "{name}, freeze = {freeze}");
        }
        for name in ["fc1.weight", "head.bias"] {
            assert_ne!(end[name], start[name], "{name} did not train");
        }
    }
}
