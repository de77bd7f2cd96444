//! LeNet and ConvNet8 forward, loss and gradients against PyTorch (fixtures made by
//! `scripts/make_lenet_fixture.py`), plus checkpoint round trips and their error paths.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use dtl_backbones::{Classifier, Error, ModelSpec};
use dtl_data::{Domain, DomainId, LoadOptions};

fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/lenet_pytorch.json")).unwrap()
}

fn convnet8_fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/convnet8_pytorch.json")).unwrap()
}

/// The closed-form weights the fixture script uses: `sin(1.3 i + 0.7 k + 0.1) / sqrt(fan_in)`.
fn formula_weights(model: &Classifier, order: &[String]) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for (name, var) in dtl_core::params::all(model.varmap()) {
        let k = order.iter().position(|n| *n == name).unwrap() as f64;
        let layer = name.split('.').next().unwrap();
        let w = dtl_core::params::all(model.varmap())
            .into_iter()
            .find(|(n, _)| *n == format!("{layer}.weight"))
            .unwrap()
            .1;
        let fan_in: usize = w.dims()[1..].iter().product();
        let n: usize = var.dims().iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((1.3 * i as f64 + 0.7 * k + 0.1).sin() / (fan_in as f64).sqrt()) as f32)
            .collect();
        out.insert(name, Tensor::from_vec(v, var.dims(), &Device::Cpu).unwrap());
    }
    out
}

#[test]
fn lenet_matches_pytorch() -> anyhow::Result<()> {
    matches_pytorch(&fixture(), ModelSpec::lenet_digits(28), 1e-4)
}

#[test]
fn convnet8_matches_pytorch() -> anyhow::Result<()> {
    let mut spec = ModelSpec::lenet_digits(28);
    spec.backbone = dtl_backbones::BackboneKind::ConvNet8;
    let model = Classifier::new(spec.clone(), 0, &Device::Cpu)?;
    assert_eq!(
        model.layers(),
        ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "head"]
    );
    // Through five convolutions the early layers' gradients are small sums of cancelling terms:
    // PyTorch's own f32 gradients of this network differ from its f64 ones by up to 0.76% of a
    // tensor's largest entry and 0.09% in sum of squares (conv3), so the bar is 1% and 0.2%.
    matches_pytorch(&convnet8_fixture(), spec, 1e-2)
}

/// Logits, loss and every gradient of `spec` with the formula weights against the fixture; gradient
/// entries within `rel` of the tensor's largest one.
fn matches_pytorch(fx: &serde_json::Value, spec: ModelSpec, rel: f64) -> anyhow::Result<()> {
    let order: Vec<String> = serde_json::from_value(fx["param_order"].clone())?;
    let model = Classifier::new(spec, 0, &Device::Cpu)?;
    let mut names: Vec<String> = dtl_core::params::all(model.varmap())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.sort();
    assert_eq!(names, order, "parameter names follow PyTorch's module names");
    model.load_tensors(&formula_weights(&model, &order), std::path::Path::new("formula"))?;

    let data = Domain::load(DomainId::MnistSmall, None, &LoadOptions::default())?;
    let (xs, ys) = data.train.batch(&[0, 1, 2, 3], &Device::Cpu)?;
    let labels: Vec<u32> = serde_json::from_value(fx["labels"].clone())?;
    assert_eq!(ys.to_vec1::<u32>()?, labels);

    let logits = model.forward(&xs, false)?;
    let got = logits.flatten_all()?.to_vec1::<f32>()?;
    let want: Vec<f64> = serde_json::from_value(fx["logits"].clone())?;
    for (g, w) in got.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4, "logit {g} vs PyTorch {w}");
    }
    let loss = candle_nn::loss::cross_entropy(&logits, &ys)?;
    let l = loss.to_scalar::<f32>()? as f64;
    assert!((l - fx["loss"].as_f64().unwrap()).abs() < 1e-5, "loss {l}");

    let grads = loss.backward()?;
    for (name, var) in dtl_core::params::all(model.varmap()) {
        let g = grads
            .get(&var)
            .unwrap()
            .flatten_all()?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?;
        let entry = &fx["grads"][&name];
        let sum_sq: f64 = g.iter().map(|v| v * v).sum();
        let want_sq = entry["sum_sq"].as_f64().unwrap();
        assert!(
            (sum_sq - want_sq).abs() <= (rel / 5.0).max(1e-4) * want_sq.max(1e-8),
            "{name}: sum of squares {sum_sq} vs {want_sq}"
        );
        let values: Vec<f64> = serde_json::from_value(entry["values"].clone())?;
        let indices: Vec<usize> = match entry.get("indices") {
            Some(i) => serde_json::from_value(i.clone())?,
            None => (0..g.len()).collect(),
        };
        let scale = values.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        for (&i, w) in indices.iter().zip(&values) {
            assert!(
                (g[i] - w).abs() < rel * scale + 1e-7,
                "{name}[{i}]: {} vs PyTorch {w}",
                g[i]
            );
        }
    }
    Ok(())
}

#[test]
fn checkpoints_round_trip_exactly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    let a = Classifier::new(ModelSpec::lenet_digits(28), 7, &Device::Cpu)?;
    a.save(&path, &[("dtl.source", "mnist".to_string())])?;
    let (b, meta) = Classifier::load(&path, &Device::Cpu)?;
    assert_eq!(meta["dtl.source"], "mnist");
    let sa = dtl_core::params::snapshot(a.varmap())?;
    let sb = dtl_core::params::snapshot(b.varmap())?;
    for ((na, ta), (nb, tb)) in sa.iter().zip(&sb) {
        assert_eq!(na, nb);
        let diff = (ta - tb)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{na}");
    }
    // Different seeds give different weights, the same seed the same.
    let c = Classifier::new(ModelSpec::lenet_digits(28), 7, &Device::Cpu)?;
    let d = Classifier::new(ModelSpec::lenet_digits(28), 8, &Device::Cpu)?;
    let first = |m: &Classifier| {
        dtl_core::params::snapshot(m.varmap()).unwrap()[0]
            .1
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(first(&a), first(&c));
    assert_ne!(first(&a), first(&d));
    Ok(())
}

#[test]
fn checkpoints_that_do_not_fit_are_named_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = Classifier::new(ModelSpec::lenet_digits(28), 1, &Device::Cpu)?;
    let mut tensors: HashMap<String, Tensor> =
        dtl_core::params::snapshot(model.varmap())?.into_iter().collect();
    let origin = dir.path().join("x.safetensors");

    tensors.insert(
        "fc1.weight".into(),
        Tensor::zeros((500, 801), DType::F32, &Device::Cpu)?,
    );
    let err = model.load_tensors(&tensors, &origin).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::TensorShape { .. }), "{msg}");
    assert!(
        msg.contains("fc1.weight") && msg.contains("[500, 800]") && msg.contains("[500, 801]"),
        "{msg}"
    );

    tensors.remove("fc1.weight");
    let msg = model.load_tensors(&tensors, &origin).unwrap_err().to_string();
    assert!(msg.contains("`fc1.weight` is missing"), "{msg}");

    let mut extra: HashMap<String, Tensor> =
        dtl_core::params::snapshot(model.varmap())?.into_iter().collect();
    extra.insert("fc9.weight".into(), Tensor::zeros(3, DType::F32, &Device::Cpu)?);
    let msg = model.load_tensors(&extra, &origin).unwrap_err().to_string();
    assert!(msg.contains("unexpected tensor `fc9.weight`"), "{msg}");

    // A file that is not safetensors, and one without dtl metadata.
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello")?;
    let msg = Classifier::load(&junk, &Device::Cpu).err().unwrap().to_string();
    assert!(
        msg.contains("junk.safetensors") && msg.contains("not a safetensors file"),
        "{msg}"
    );
    let plain = dir.path().join("plain.safetensors");
    candle_core::safetensors::save(&extra, &plain)?;
    let msg = Classifier::load(&plain, &Device::Cpu).err().unwrap().to_string();
    assert!(msg.contains("dtl.format"), "{msg}");
    let missing = dir.path().join("absent.safetensors");
    let msg = Classifier::load(&missing, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("absent.safetensors"), "{msg}");
    Ok(())
}
