//! `dtl predict` on image files made at test time from bundled MNIST digits: the probabilities it
//! prints are the softmax of the library's logits on the same digits loaded as a domain (PNG files
//! at MNIST's 28x28, resized to the model's 16x16 as domain loading resizes them), top-k order,
//! logits, colour files, and the errors for unreadable files and empty folders.

mod common;

use std::path::Path;
use std::process::Output;

use common::{
    dtl, dtl_env, mnist_small_test_logits, native, put_in_hub_cache, small_model, write_constant_resnet18,
    write_png,
};

use candle_core::D;
use dtl_data::DomainId;

/// `dtl predict --checkpoint ckpt --input input` plus `extra`.
fn predict(ckpt: &Path, input: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "predict",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dtl(&args)
}

/// A 28x28 MNIST digit as PNG; MNIST's values are k / 255, which the PNG holds exactly.
fn write_digit(path: &Path, pixels: &[f32], rgb: bool) {
    assert!(pixels
        .iter()
        .all(|&v| ((v * 255.0).round() / 255.0 - v).abs() < 1e-7));
    write_png(path, pixels, 28, rgb);
}

#[test]
fn predict_prints_the_models_probabilities_for_image_files() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = small_model(tmp.path());

    // Twelve test digits as PNG files at 28x28 (two of them RGB), in a nested folder.
    let at28 = native(DomainId::MnistSmall);
    let imgs = tmp.path().join("imgs");
    std::fs::create_dir_all(imgs.join("more")).unwrap();
    let n = 12;
    let path_of = |i: usize| {
        let dir = if i.is_multiple_of(2) {
            imgs.clone()
        } else {
            imgs.join("more")
        };
        dir.join(format!("digit{i:02}.png"))
    };
    for i in 0..n {
        write_digit(&path_of(i), at28.test.image(i), i.is_multiple_of(5));
    }
    std::fs::write(imgs.join("notes.txt"), "not an image").unwrap();

    // The reference: the same digits loaded as a domain at 16x16, through the library.
    let logits = mnist_small_test_logits(&ckpt, n);
    let probs = candle_nn::ops::softmax(&logits, D::Minus1)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let logits = logits.to_vec2::<f32>().unwrap();

    let o = predict(&ckpt, &imgs, &["--top-k", "3", "--logits"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n, "one line per image, the text file skipped");
    let mut seen = 0;
    for line in &lines {
        let path = Path::new(line["path"].as_str().unwrap());
        let i: usize = path.file_stem().unwrap().to_str().unwrap()[5..].parse().unwrap();
        assert_eq!(path, path_of(i));
        seen |= 1 << i;
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| probs[i][b].total_cmp(&probs[i][a]));
        for (rank, entry) in top.iter().enumerate() {
            let class: usize = entry["class"].as_str().unwrap().parse().unwrap();
            assert_eq!(class, order[rank], "image {i} rank {rank}");
            let p = entry["prob"].as_f64().unwrap() as f32;
            assert!(
                (p - probs[i][class]).abs() < 1e-5,
                "image {i}: {p} vs {}",
                probs[i][class]
            );
        }
        let got: Vec<f32> = line["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (g, w) in got.iter().zip(&logits[i]) {
            assert!(
                (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                "image {i} logits {got:?} vs {:?}",
                logits[i]
            );
        }
    }
    assert_eq!(seen, (1 << n) - 1);

    // One file; no logits unless asked; k capped at the number of classes.
    let o = predict(&ckpt, &path_of(0), &["--top-k", "50"]);
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["top"].as_array().unwrap().len(), 10);
    assert!(line.get("logits").is_none());

    // A broken image is named; so is a folder without images.
    std::fs::write(imgs.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let o = predict(&ckpt, &imgs, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("broken.png") && err.contains("not a readable image"),
        "{err}"
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = predict(&ckpt, &empty, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no image files"));
}

/// `--backbone resnet18 --pretrained hf:ORG/NAME` served offline from a local hub cache: the
/// classes are ImageNet's, and with every weight zero but the head's bias (10 at "golden
/// retriever", index 207) the probabilities are the closed-form softmax of that bias, whatever
/// the image (here 40x30 colour, cropped to the input). A checkpoint of another architecture, or
/// a repository not in the cache, is an error that names it.
#[test]
fn predict_with_published_imagenet_weights_from_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = tmp.path().join("resnet18.safetensors");
    write_constant_resnet18(&ckpt, 207, 10.0);
    let hf_home = tmp.path().join("hf-home");
    put_in_hub_cache(&hf_home, "timm/resnet18.a1_in1k", &ckpt, "model.safetensors");
    let img = tmp.path().join("photo.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 128]))
        .save(&img)
        .unwrap();
    let offline = Path::new("1");
    let env = [("HF_HOME", hf_home.as_path()), ("HF_HUB_OFFLINE", offline)];
    let run = |backbone: &str, spec: &str| {
        dtl_env(
            &[
                "predict",
                "--backbone",
                backbone,
                "--pretrained",
                spec,
                "--image-size",
                "64",
                "--top-k",
                "2",
                "--input",
                img.to_str().unwrap(),
            ],
            &env,
        )
    };
    let o = run("resnet18", "hf:timm/resnet18.a1_in1k");
    assert!(o.status.success(), "{}", common::stderr(&o));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e10 = 10f64.exp();
    let top = line["top"].as_array().unwrap();
    assert_eq!(top[0]["class"], "golden retriever");
    assert!((top[0]["prob"].as_f64().unwrap() - e10 / (e10 + 999.0)).abs() < 1e-5);
    // The 999 others tie; the lowest index comes first: ImageNet's class 0.
    assert_eq!(top[1]["class"], "tench");
    assert!((top[1]["prob"].as_f64().unwrap() - 1.0 / (e10 + 999.0)).abs() < 1e-6);

    let o = run("resnet50", "hf:timm/resnet18.a1_in1k");
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(
        err.contains("`layer1.0.conv1.weight` has shape [64, 64, 3, 3], a resnet50 expects [64, 64, 1, 1]"),
        "{err}"
    );

    let o = run("resnet50", "hf:timm/resnet50.a1_in1k");
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(
        err.contains("timm/resnet50.a1_in1k") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );

    let o = dtl(&["predict", "--pretrained", "x.safetensors", "--input", "."]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("--backbone"),
        "{}",
        common::stderr(&o)
    );
}
