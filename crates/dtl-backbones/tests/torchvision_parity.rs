//! Parity with torchvision: AlexNet and ResNet-18/34/50 with weights under torchvision's names
//! (which timm's ResNets share; `scripts/make_backbone_fixture.py` checks that), written to a
//! safetensors file and read back through the real loader, give torchvision's logits.
//!
//! The weights follow a closed formula of each tensor's published name, computed here and in the
//! script (see its docstring); the fixture holds only the names, shapes and float64 logits of
//! PyTorch 2.15 / torchvision 0.29.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use dtl_backbones::hub::Pretrained;
use dtl_backbones::{read_safetensors, BackboneKind, Classifier, ModelSpec};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The script's integer hash: uniform in [-1, 1).
fn hash_unit(j: u64, c: u64) -> f64 {
    let mut h = (j.wrapping_mul(2654435761).wrapping_add(c * 40503)) & 0xFFFF_FFFF;
    h ^= h >> 15;
    h = (h * 2246822519) & 0xFFFF_FFFF;
    h ^= h >> 13;
    h as f64 / 4294967296.0 * 2.0 - 1.0
}

/// The script's value of tensor `name` of `shape`.
fn formula(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let c = name.bytes().map(u64::from).sum::<u64>() % 997;
    let leaf = name.rsplit('.').next().unwrap();
    let fan_in: usize = shape.iter().skip(1).product();
    (0..n as u64)
        .map(|j| {
            let u = hash_unit(j, c);
            let v = match leaf {
                "weight" if shape.len() >= 2 => (6.0 / fan_in as f64).sqrt() * u,
                "weight" => 0.6 + 0.1 * u,
                "bias" | "running_mean" => 0.1 * u,
                "running_var" => 1.0 + 0.5 * u * u,
                other => panic!("no formula for `{other}`"),
            };
            v as f32
        })
        .collect()
}

/// The script's input batch of 2 images `3 x size x size` in [0, 1].
fn inputs(size: usize) -> Result<Tensor> {
    let n = 2 * 3 * size * size;
    let v: Vec<f32> = (0..n)
        .map(|j| (0.5 + 0.5 * (0.37 * j as f64).sin()) as f32)
        .collect();
    Ok(Tensor::from_vec(v, (2, 3, size, size), &Device::Cpu)?)
}

struct Fixture {
    /// Per architecture: (name, shape, dtype) of every tensor of torchvision's state dict.
    tensors: HashMap<String, Vec<(String, Vec<usize>, String)>>,
    logits: HashMap<String, Tensor>,
}

fn fixture() -> Result<Fixture> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        fixtures().join("torchvision_parity.json"),
    )?)?;
    let mut tensors = HashMap::new();
    for (arch, list) in json["tensors"].as_object().context("tensors")? {
        let entries = list
            .as_array()
            .context("list")?
            .iter()
            .map(|e| {
                let name = e[0].as_str().unwrap().to_string();
                let shape = e[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                (name, shape, e[2].as_str().unwrap().to_string())
            })
            .collect();
        tensors.insert(arch.clone(), entries);
    }
    let logits = read_safetensors(&fixtures().join("torchvision_parity.safetensors"), &Device::Cpu)?;
    Ok(Fixture { tensors, logits })
}

/// torchvision's state dict of `arch` with the formula's values, written to a safetensors file
/// in `dir` (with the int64 `num_batches_tracked` buffers torchvision saves).
fn write_weights(fx: &Fixture, arch: &str, dir: &Path) -> Result<PathBuf> {
    let mut map = HashMap::new();
    for (name, shape, dtype) in &fx.tensors[arch] {
        let t = if dtype == "int64" {
            Tensor::zeros(shape.as_slice(), DType::I64, &Device::Cpu)?
        } else {
            Tensor::from_vec(formula(name, shape), shape.as_slice(), &Device::Cpu)?
        };
        map.insert(name.clone(), t);
    }
    let path = dir.join(format!("{arch}.safetensors"));
    candle_core::safetensors::save(&map, &path)?;
    Ok(path)
}

fn imagenet_model(kind: BackboneKind, size: usize, classes: usize) -> Result<Classifier> {
    let names = (0..classes).map(|i| format!("class{i}")).collect();
    Ok(Classifier::new(
        ModelSpec::new(kind, (3, size, size), names),
        7,
        &Device::Cpu,
    )?)
}

/// Loads `file` through the path form of `--pretrained` into a 1000-class `kind` model at
/// `size` and checks its eval-mode logits against torchvision's, within 1e-4 of the largest
/// reference logit.
fn check_logits(fx: &Fixture, kind: BackboneKind, file: &Path, size: usize) -> Result<()> {
    let resolved = file.display().to_string().parse::<Pretrained>()?.resolve()?;
    let model = imagenet_model(kind, size, 1000)?;
    let report = model.load_pretrained(&read_safetensors(&resolved, &Device::Cpu)?, &resolved)?;
    assert!(report.head, "{kind:?}: the 1000-class head loads");
    assert!(report.skipped.iter().all(|s| s.ends_with("num_batches_tracked")));
    let got = model
        .forward(&inputs(size)?, false)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let want = fx.logits[&format!("{}_{size}", kind.as_str())]
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{} at {size}: max |dtl - torchvision| = {worst}, 1e-4 of max |logit| {scale} allowed",
        kind.as_str()
    );
    Ok(())
}

#[test]
fn alexnet_matches_torchvision() -> Result<()> {
    let fx = fixture()?;
    let dir = tempfile::tempdir()?;
    let file = write_weights(&fx, "alexnet", dir.path())?;
    // 224: the last map is 6x6 already; 127: adaptive average pooling from 3x3.
    for size in [224, 127] {
        check_logits(&fx, BackboneKind::AlexNet, &file, size)?;
    }
    Ok(())
}

#[test]
fn resnets_match_torchvision_and_reject_each_other() -> Result<()> {
    let fx = fixture()?;
    let dir = tempfile::tempdir()?;
    let r18 = write_weights(&fx, "resnet18", dir.path())?;
    let r34 = write_weights(&fx, "resnet34", dir.path())?;
    let r50 = write_weights(&fx, "resnet50", dir.path())?;
    check_logits(&fx, BackboneKind::ResNet18, &r18, 64)?;
    check_logits(&fx, BackboneKind::ResNet34, &r34, 64)?;
    check_logits(&fx, BackboneKind::ResNet50, &r50, 64)?;

    // A ResNet-50 checkpoint in a ResNet-18: the first tensor in forward order that does not
    // fit is the first block's 1x1 bottleneck convolution.
    let model = imagenet_model(BackboneKind::ResNet18, 64, 1000)?;
    let before = dtl_core::params::snapshot(model.varmap())?;
    let err = model
        .load_pretrained(&read_safetensors(&r50, &Device::Cpu)?, &r50)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resnet50.safetensors"), "{err}");
    assert!(
        err.contains("`layer1.0.conv1.weight` has shape [64, 64, 1, 1]"),
        "{err}"
    );
    assert!(err.contains("expects [64, 64, 3, 3]"), "{err}");
    // Nothing changed.
    for ((n, a), (_, b)) in before.iter().zip(dtl_core::params::snapshot(model.varmap())?) {
        let flat = |t: &Tensor| t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>();
        assert_eq!(flat(a)?, flat(&b)?, "{n} moved");
    }
    // A ResNet-34 checkpoint in a ResNet-18: every ResNet-18 tensor fits; the extra blocks are
    // named.
    let err = model
        .load_pretrained(&read_safetensors(&r34, &Device::Cpu)?, &r34)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`layer1.2.bn1.bias` has no place in a resnet18"),
        "{err}"
    );
    // Torchvision's ResNet-18 in a 3-class model: the backbone loads, the head stays new, and the
    // features are those of the 1000-class model.
    let small = imagenet_model(BackboneKind::ResNet18, 64, 3)?;
    let tensors = read_safetensors(&r18, &Device::Cpu)?;
    let report = small.load_pretrained(&tensors, &r18)?;
    assert!(!report.head);
    assert!(report.skipped.contains(&"fc.weight".to_string()));
    model.load_pretrained(&tensors, &r18)?;
    let x = inputs(64)?;
    let a = small.features(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
    let b = model.features(&x, false)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(a, b);
    Ok(())
}

/// Tensor names of other architectures are rejected by name: AlexNet's in a ResNet.
#[test]
fn alexnet_names_in_a_resnet_are_named() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut map = HashMap::new();
    map.insert(
        "features.0.weight".to_string(),
        Tensor::zeros((64, 3, 11, 11), DType::F32, &Device::Cpu)?,
    );
    let path = dir.path().join("alex.safetensors");
    candle_core::safetensors::save(&map, &path)?;
    let model = imagenet_model(BackboneKind::ResNet18, 64, 10)?;
    let err = model
        .load_pretrained(&read_safetensors(&path, &Device::Cpu)?, &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `conv1.weight` is missing: not a checkpoint of a resnet18"),
        "{err}"
    );
    Ok(())
}
