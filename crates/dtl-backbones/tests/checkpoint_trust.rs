//! Checkpoints that cannot mislead: metadata whose input size does not describe the weights is
//! refused before a model of that size is allocated, non-float and non-finite weights are refused
//! naming the tensor, and a bit flipped in the tensor data is caught by the recorded SHA-256.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use dtl_backbones::{Classifier, ModelSpec};

fn saved(dir: &Path, extra: &[(&str, String)]) -> std::path::PathBuf {
    let model = Classifier::new(ModelSpec::lenet_digits(16), 1, &Device::Cpu).unwrap();
    let path = dir.join("model.safetensors");
    model.save(&path, extra).unwrap();
    path
}

fn load_err(path: &Path) -> String {
    match Classifier::load(path, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// Rewrites the checkpoint at `path` with its tensors changed by `edit`, metadata kept.
fn rewrite(path: &Path, edit: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone();
    let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
    edit(&mut tensors);
    let out = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), meta).unwrap();
    std::fs::write(path, out).unwrap();
}

#[test]
fn an_input_size_that_does_not_describe_the_weights_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    // A LeNet at 4000x4000 would allocate a 100 GB fc1 before comparing it with the file's.
    let path = saved(dir.path(), &[("dtl.input_shape", "1,4000,4000".into())]);
    let err = load_err(&path);
    assert!(
        err.contains("dtl.input_shape") && err.contains("fc1.weight") && err.contains("[500, 50]"),
        "{err}"
    );
    let path = saved(dir.path(), &[("dtl.input_shape", "1,20,20".into())]);
    let err = load_err(&path);
    assert!(err.contains("fc1.weight"), "{err}");
}

#[test]
fn non_float_and_non_finite_weights_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path(), &[]);
    rewrite(&path, |t| {
        let b = t["conv1.bias"].to_dtype(DType::U8).unwrap();
        t.insert("conv1.bias".into(), b);
    });
    let err = load_err(&path);
    assert!(err.contains("conv1.bias") && err.contains("U8"), "{err}");

    for bad in [f32::NAN, f32::INFINITY] {
        let path = saved(dir.path(), &[]);
        rewrite(&path, |t| {
            let mut v = t["fc1.bias"].to_vec1::<f32>().unwrap();
            v[3] = bad;
            t.insert("fc1.bias".into(), Tensor::new(v, &Device::Cpu).unwrap());
        });
        let err = load_err(&path);
        // The recorded SHA-256 catches the edit first; without it, the values are named.
        assert!(err.contains("SHA-256"), "{err}");
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        meta.remove("dtl.sha256");
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        let out = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta)).unwrap();
        std::fs::write(&path, out).unwrap();
        let err = load_err(&path);
        assert!(
            err.contains("fc1.bias") && err.contains("NaN or infinite"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn a_flipped_bit_in_the_weights_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let path = saved(dir.path(), &[]);
    assert!(Classifier::load(&path, &Device::Cpu).is_ok());
    let mut bytes = std::fs::read(&path).unwrap();
    let i = bytes.len() - 7;
    bytes[i] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("SHA-256") && err.contains("model.safetensors"),
        "{err}"
    );
}

#[test]
fn class_names_given_twice_or_empty_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (names, want) in [
        ("0\n1\n2\n3\n4\n5\n6\n7\n3\n9", "`3` a second time"),
        ("0\n1\n2\n3\n4\n\n6\n7\n8\n9", "empty string"),
    ] {
        let path = saved(dir.path(), &[("dtl.class_names", names.to_string())]);
        let err = load_err(&path);
        assert!(err.contains("dtl.class_names") && err.contains(want), "{err}");
    }
}

/// A small LeNet file whose metadata names a ResNet-50 or AlexNet is refused before the 100 to
/// 250 MB model is built: it lacks the architecture's largest tensors.
#[test]
fn a_header_naming_a_large_backbone_needs_its_largest_tensors() {
    let dir = tempfile::tempdir().unwrap();
    for (backbone, tensor) in [("resnet50", "layer4.2.conv2.weight"), ("alexnet", "fc6.weight")] {
        let path = saved(dir.path(), &[("dtl.backbone", backbone.to_string())]);
        let err = load_err(&path);
        assert!(err.contains(tensor) && err.contains(backbone), "{err}");
    }
}
