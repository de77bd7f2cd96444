//! Helpers shared by the command-line tests: running the `dtl` binary and writing digits as PNG.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `dtl args` with quiet logs and no data directory from the environment.
pub fn dtl(args: &[&str]) -> Output {
    dtl_env(args, &[])
}

/// [`dtl`] with extra environment variables (and no `HF_HUB_CACHE` from outside).
pub fn dtl_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dtl"));
    cmd.args(args)
        .env("RUST_LOG", "warn")
        .env_remove("DTL_DATA_DIR")
        .env_remove("HF_HUB_CACHE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the dtl binary runs")
}

/// `dtl train` at the tests' small settings (16x16 images, batch 32, learning rate 0.05) for
/// `epochs` epochs from `source` to `target` into `out`, plus `extra` flags and `env`.
pub fn small_train(
    source: &str,
    target: &str,
    epochs: &str,
    out: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Output {
    let mut args = vec![
        "train",
        "--source",
        source,
        "--target",
        target,
        "--image-size",
        "16",
        "--epochs",
        epochs,
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dtl_env(&args, env)
}

/// The run's standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a `side x side` image of values in `[0, 1]` as an 8-bit PNG (grey, or grey replicated
/// into RGB), creating its folder.
pub fn write_png(path: &Path, pixels: &[f32], side: u32, rgb: bool) {
    let bytes: Vec<u8> = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb {
        let rgb: Vec<u8> = bytes.iter().flat_map(|&b| [b, b, b]).collect();
        image::RgbImage::from_raw(side, side, rgb)
            .unwrap()
            .save(path)
            .unwrap();
    } else {
        image::GrayImage::from_raw(side, side, bytes)
            .unwrap()
            .save(path)
            .unwrap();
    }
}

/// Puts `file` into a local Hugging Face hub cache under `hf_home` as hf-hub lays it out
/// (`hub/models--ORG--NAME/refs/main` naming a commit, `snapshots/COMMIT/NAME`), so that
/// `hf:ORG/NAME/NAME` resolves offline with `HF_HOME=hf_home`.
pub fn put_in_hub_cache(hf_home: &Path, repo_id: &str, file: &Path, name: &str) {
    let repo = hf_home
        .join("hub")
        .join(format!("models--{}", repo_id.replace('/', "--")));
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::copy(file, repo.join("snapshots").join(commit).join(name)).unwrap();
}

/// torchvision's ResNet-18 state dict (names and shapes from the parity fixture of
/// `dtl-backbones`) with every tensor zero except `fc.bias`, which is `bias` at class `class`:
/// whatever the image, the logits are exactly `fc.bias`.
pub fn write_constant_resnet18(path: &Path, class: usize, bias: f32) {
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../dtl-backbones/tests/fixtures/torchvision_parity.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let mut map = std::collections::HashMap::new();
    for e in json["tensors"]["resnet18"].as_array().unwrap() {
        let name = e[0].as_str().unwrap();
        let shape: Vec<usize> = e[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let dev = &candle_core::Device::Cpu;
        let t = if e[2] == "int64" {
            candle_core::Tensor::zeros(shape.as_slice(), candle_core::DType::I64, dev).unwrap()
        } else if name == "fc.bias" {
            let mut v = vec![0f32; shape[0]];
            v[class] = bias;
            candle_core::Tensor::from_vec(v, shape.as_slice(), dev).unwrap()
        } else {
            candle_core::Tensor::zeros(shape.as_slice(), candle_core::DType::F32, dev).unwrap()
        };
        map.insert(name.to_string(), t);
    }
    candle_core::safetensors::save(&map, path).unwrap();
}

/// A bundled domain on a `size x size` canvas.
pub fn domain_at(id: dtl_data::DomainId, size: usize) -> dtl_data::Domain {
    dtl_data::Domain::load(
        id,
        None,
        &dtl_data::LoadOptions {
            image_size: size,
            ..Default::default()
        },
    )
    .unwrap()
}

/// A bundled domain at its own canvas: optdigits at 8x8, the others at 28x28.
pub fn native(id: dtl_data::DomainId) -> dtl_data::Domain {
    domain_at(
        id,
        if id == dtl_data::DomainId::Optdigits {
            8
        } else {
            28
        },
    )
}

/// Writes the first `n` images of `data` (28x28 digits) as PNG files under
/// `root/split/<label>/<i>.png`, a folder domain's pre-split layout.
pub fn write_split(root: &Path, split: &str, data: &dtl_data::Dataset, n: usize) {
    for i in 0..n {
        let p = root
            .join(split)
            .join(data.labels()[i].to_string())
            .join(format!("{i}.png"));
        write_png(&p, data.image(i), 28, false);
    }
}

/// A small source-only model (the bundled MNIST subset, 512 training images, 1 epoch at the
/// tests' settings, 16x16, optdigits as the target) trained into `dir/run`; its checkpoint.
pub fn small_model(dir: &Path) -> std::path::PathBuf {
    let run = dir.join("run");
    let o = small_train(
        "mnist-small",
        "optdigits",
        "1",
        &run,
        &["--source-train-size", "512"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    run.join("model.safetensors")
}

/// The logits `(n, classes)` of the checkpoint `ckpt` (a 16x16 model) on the first `n` test
/// digits of the bundled MNIST subset, loaded as a domain at 16x16 and run through the library:
/// the reference that the commands reading the same digits as image files are checked against.
pub fn mnist_small_test_logits(ckpt: &Path, n: usize) -> candle_core::Tensor {
    let at16 = domain_at(dtl_data::DomainId::MnistSmall, 16);
    let (model, _) = dtl_backbones::Classifier::load(ckpt, &candle_core::Device::Cpu).unwrap();
    let xs = candle_core::Tensor::from_vec(
        at16.test.pixels()[..n * 256].to_vec(),
        (n, 1, 16, 16),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    model.forward(&xs, false).unwrap()
}
