//! The adaptation layer of a [`Classifier`]: its place among the layers, its arithmetic, its
//! checkpoints, and that adding it leaves the backbone's seeded initialisation alone.

use candle_core::{DType, Device, Tensor, D};
use dtl_backbones::{Classifier, ModelSpec, Tap};
use dtl_core::params;

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn adaptation_layer_sits_between_features_and_head() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let spec = ModelSpec::lenet_digits(16).with_adapt_width(Some(64));
    let model = Classifier::new(spec, 7, &dev)?;
    assert_eq!(model.layers(), ["conv1", "conv2", "fc1", "adapt", "head"]);
    let vars: std::collections::HashMap<String, Tensor> =
        params::snapshot(model.varmap())?.into_iter().collect();
    assert_eq!(vars["adapt.weight"].dims(), &[64, 500]);
    assert_eq!(vars["head.weight"].dims(), &[10, 64]);

    let xs = Tensor::rand(0f32, 1f32, (5, 1, 16, 16), &dev)?;
    let taps = model.forward_taps(&xs, false)?;
    // By hand: adapt = relu(features W_a^T + b_a), logits = adapt W_h^T + b_h.
    let by_hand = |x: &Tensor, layer: &str| -> candle_core::Result<Tensor> {
        x.matmul(&vars[&format!("{layer}.weight")].t()?)?
            .broadcast_add(&vars[&format!("{layer}.bias")])
    };
    let adapt = by_hand(&taps.features, "adapt")?.relu()?;
    assert!(max_diff(taps.get(Tap::Adapt)?, &adapt) < 1e-5);
    assert!(max_diff(&taps.logits, &by_hand(&adapt, "head")?) < 1e-5);
    assert!(max_diff(&model.forward(&xs, false)?, &taps.logits) < 1e-6);
    assert_eq!(taps.hidden().dim(D::Minus1)?, 64);
    let half = taps.narrow(2, 3)?;
    assert!(max_diff(&half.logits, &taps.logits.narrow(0, 2, 3)?) == 0.0);

    // Without an adaptation layer, `adapt` is a named error and the hidden layer is the features.
    let plain = Classifier::new(ModelSpec::lenet_digits(16), 7, &dev)?;
    let taps = plain.forward_taps(&xs, false)?;
    let err = taps.get(Tap::Adapt).unwrap_err().to_string();
    assert!(err.contains("adaptation layer"), "{err}");
    assert_eq!(taps.hidden().dim(1)?, 500);
    // ... and the backbone is initialised exactly as with one.
    let a: std::collections::HashMap<String, Tensor> =
        params::snapshot(plain.varmap())?.into_iter().collect();
    for name in ["conv1.weight", "conv2.bias", "fc1.weight"] {
        assert_eq!(max_diff(&a[name], &vars[name]), 0.0, "{name}");
    }
    Ok(())
}

#[test]
fn checkpoints_keep_the_adaptation_layer() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let spec = ModelSpec::lenet_digits(16).with_adapt_width(Some(32));
    let model = Classifier::new(spec.clone(), 3, &dev)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("m.safetensors");
    model.save(&path, &[])?;
    let (again, meta) = Classifier::load(&path, &dev)?;
    assert_eq!(meta["dtl.adapt_width"], "32");
    assert_eq!(again.spec(), &spec);
    let xs = Tensor::ones((2, 1, 16, 16), DType::F32, &dev)?;
    assert_eq!(
        max_diff(&again.forward(&xs, false)?, &model.forward(&xs, false)?),
        0.0
    );

    // A zero-width layer is refused by name.
    let err = Classifier::new(ModelSpec::lenet_digits(16).with_adapt_width(Some(0)), 0, &dev)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("adapt-width"), "{err}");
    Ok(())
}
