//! Issue 18's reproductions of inputs that crashed, hung or misled, each now a clear error that
//! names the flag, key or file: sizes from flags and checkpoint metadata are bounded before
//! anything is allocated, a negative learning rate reaches the check that names `lr`, and a run
//! whose loss explodes stops as diverged instead of writing a model.

mod common;

use candle_core::Device;
use common::{dtl, stderr};
use dtl_backbones::{Classifier, ModelSpec};

/// `dtl train` on bundled data at 16x16, batch 32, with `extra` flags (learning rate included).
fn train(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--source",
        "mnist-small",
        "--target",
        "optdigits",
        "--image-size",
        "16",
        "--batch-size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    dtl(&args)
}

#[test]
fn an_image_size_beyond_any_image_is_refused_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = dtl(&[
        "train",
        "--source",
        "mnist-small",
        "--target",
        "optdigits",
        "--image-size",
        "100000",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("image-size") && err.contains("4096"), "{err}");
    assert!(!out.join("model.safetensors").exists());
}

#[test]
fn checkpoint_input_shapes_are_bounded_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Classifier::new(ModelSpec::lenet_digits(16), 0, &Device::Cpu).unwrap();
    for (shape, want) in [("1,100000,100000", "4096"), ("7,16,16", "channels")] {
        let path = tmp.path().join("huge.safetensors");
        model
            .save(&path, &[("dtl.input_shape", shape.to_string())])
            .unwrap();
        let o = dtl(&[
            "eval",
            "--checkpoint",
            path.to_str().unwrap(),
            "--domain",
            "optdigits",
        ]);
        assert!(!o.status.success(), "{shape}");
        let err = stderr(&o);
        assert!(
            err.contains("huge.safetensors") && err.contains(want),
            "{shape}: {err}"
        );
    }
}

#[test]
fn a_negative_learning_rate_is_named_not_taken_for_a_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = train(&out, &["--lr", "-1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("lr") && err.contains("-1 is not a positive number"),
        "{err}"
    );
    let o = train(&out, &["--lr", "0.05", "--weight-decay", "NaN"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("weight") && err.contains("NaN is not a number"),
        "{err}"
    );
}

/// Adam at a learning rate of 1000 used to end "successfully" with a loss of 5e16; it now stops
/// with the scalar that exploded, and no model is written.
#[test]
fn an_exploding_loss_stops_the_run_as_diverged() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = train(
        &out,
        &[
            "--optimizer",
            "adam",
            "--lr",
            "1000",
            "--epochs",
            "3",
            "--source-train-size",
            "256",
        ],
    );
    assert!(!o.status.success(), "a diverged run must fail");
    let err = stderr(&o);
    assert!(err.contains("diverged") && err.contains("`loss"), "{err}");
    assert!(!out.join("model.safetensors").exists());
}

/// A target whose test split holds one image: refused before training (it used to fail after
/// training, in the feature gap, and the trained model was lost).
#[test]
fn a_test_split_too_small_to_evaluate_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let pixels = |k: usize| -> Vec<f32> { (0..256).map(|i| ((i * (k + 3)) % 256) as f32 / 255.0).collect() };
    for (class, n) in [("a", 12), ("b", 12)] {
        for k in 0..n {
            common::write_png(
                &tmp.path().join("src").join(class).join(format!("{k}.png")),
                &pixels(k),
                16,
                false,
            );
        }
    }
    for (class, n) in [("a", 2), ("b", 1)] {
        for k in 0..n {
            common::write_png(
                &tmp.path().join("tgt").join(class).join(format!("{k}.png")),
                &pixels(k),
                16,
                false,
            );
        }
    }
    let out = tmp.path().join("run");
    let src = format!("folder:{}", tmp.path().join("src").display());
    let tgt = format!("folder:{}", tmp.path().join("tgt").display());
    let o = dtl(&[
        "train",
        "--source",
        &src,
        "--target",
        &tgt,
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("`target`") && err.contains("1 test image"), "{err}");
    let staging = tmp.path().join(".run.partial");
    assert!(
        !staging.join("checkpoint.safetensors").exists(),
        "it trained first"
    );
}

/// Class fractions name the run config's key of the side at fault and the value that is wrong.
#[test]
fn class_fractions_name_their_key_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (set, want) in [
        (
            "data.target_class_fractions=[0.5]",
            "1 values given, the data set has 10 classes",
        ),
        (
            "data.source_class_fractions=[1,1,1,1,1,1,1,1,1,2]",
            "the fraction of class 9 is 2",
        ),
    ] {
        let o = train(&out, &["--epochs", "1", "--set", set]);
        assert!(!o.status.success());
        let err = stderr(&o);
        let key = set.split('=').next().unwrap();
        assert!(err.contains(key) && err.contains(want), "{err}");
    }
}
