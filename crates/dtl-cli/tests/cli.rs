//! The `dtl` command line end to end on bundled data, and its error paths.

mod common;

use std::path::Path;
use std::process::Output;

use common::{dtl, small_train, stderr};

/// A small, fast run: 512 bundled MNIST images at 16x16, 2 epochs.
fn quick_train(out: &Path, extra: &[&str]) -> Output {
    quick_train_env(out, extra, &[])
}

fn quick_train_env(out: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut args = vec!["--source-train-size", "512"];
    args.extend_from_slice(extra);
    small_train("mnist-small", "optdigits", "2", out, &args, env)
}

#[test]
fn train_writes_config_model_and_metrics_and_eval_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = quick_train(&out, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("target optdigits test accuracy"), "{stdout}");

    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    for key in [
        "strategy",
        "source",
        "target",
        "seed",
        "epochs",
        "train_seconds",
        "data",
        "source_test",
        "target_test",
    ] {
        assert!(m.get(key).is_some(), "metrics.json lacks `{key}`");
    }
    assert_eq!(m["strategy"], "source-only");
    assert_eq!(m["epochs"], 2);
    // The revision the binary was built from: the checkout's, as git itself says.
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(rev) => assert_eq!(m["git_rev"], rev.as_str()),
        None => assert!(m["git_rev"].is_null()),
    }
    assert_eq!(m["data"]["mnist-small"]["train_size"], 512);
    assert_eq!(m["data"]["mnist-small"]["full_train_size"], 2000);
    assert_eq!(m["data"]["optdigits"]["test_size"], 450);
    assert_eq!(
        m["data"]["optdigits"]["files"][0]["sha256"],
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
    );
    let confusion = m["target_test"]["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 450);
    assert_eq!(m["source_test"]["per_class"].as_array().unwrap().len(), 10);
    assert_eq!(m["history"].as_array().unwrap().len(), 2);

    // config.toml holds every setting, defaults included, and reads back.
    let cfg: dtl_cli::experiment::RunConfig =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg.data.source_train_size, Some(512));
    assert_eq!(cfg.data.target_train_size, None);
    assert!(cfg.data.data_dir.is_some());
    let text = std::fs::read_to_string(out.join("config.toml")).unwrap();
    for key in [
        "weight_decay",
        "momentum",
        "placement",
        "target_train_size = \"all\"",
        "[strategy]",
    ] {
        assert!(text.contains(key), "config.toml lacks {key}:\n{text}");
    }

    // eval on the target reproduces the run's own target accuracy.
    let ckpt = out.join("model.safetensors");
    let o = dtl(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--domain",
        "optdigits",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["domain"], "optdigits");
    assert_eq!(e["test"]["accuracy"], m["target_test"]["accuracy"]);
    assert_eq!(e["test"]["confusion"], m["target_test"]["confusion"]);

    // The same config replayed through --config gives the same numbers.
    let again = tmp.path().join("again");
    let o = dtl(&[
        "train",
        "--config",
        out.join("config.toml").to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m2["target_test"], m["target_test"]);
}

#[test]
fn a_previous_run_is_kept_unless_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.json"), b"{\"keep\": true}").unwrap();
    let o = quick_train(&out, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("previous run") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("metrics.json")).unwrap(),
        b"{\"keep\": true}"
    );
    let o = quick_train(&out, &["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("model.safetensors").is_file());
}

#[test]
fn bad_input_is_a_clear_error_with_a_nonzero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("x");
    let out = out.to_str().unwrap();

    let o = dtl(&["train", "--source", "svhn", "--target", "usps", "--out", out]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("unknown domain `svhn`"), "{}", stderr(&o));

    let o = dtl(&["train", "--source", "mnist", "--epochz", "3", "--out", out]);
    assert_eq!(o.status.code(), Some(2), "clap rejects unknown flags");
    assert!(stderr(&o).contains("--epochz"));

    let o = dtl(&[
        "train",
        "--source",
        "mnist-small",
        "--target",
        "optdigits",
        "--epochs",
        "0",
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("epochs"), "{}", stderr(&o));

    let o = dtl(&["train", "--strategy", "magic", "--out", out]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("`magic` is not a known strategy"),
        "{}",
        stderr(&o)
    );

    // Missing data names the path looked for and where the files come from.
    let empty = tmp.path().join("empty-data");
    std::fs::create_dir_all(&empty).unwrap();
    let o = dtl(&[
        "train",
        "--source",
        "usps",
        "--target",
        "mnist",
        "--data-dir",
        empty.to_str().unwrap(),
        "--out",
        out,
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&empty.join("usps").join("usps.bz2").display().to_string()),
        "{err}"
    );
    assert!(err.contains("dtl fetch usps"), "{err}");

    // A config file with an unknown key names the file and the key.
    let bad_cfg = tmp.path().join("bad.toml");
    std::fs::write(&bad_cfg, "epochz = 3\n").unwrap();
    let o = dtl(&["train", "--config", bad_cfg.to_str().unwrap(), "--out", out]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("bad.toml") && err.contains("epochz"), "{err}");

    // eval of a file that is not a checkpoint.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"junk").unwrap();
    let o = dtl(&[
        "eval",
        "--checkpoint",
        junk.to_str().unwrap(),
        "--domain",
        "optdigits",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("junk.safetensors"), "{}", stderr(&o));
}

#[test]
fn adaptation_strategies_take_their_settings_from_flags_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ddc");
    let o = quick_train(
        &out,
        &[
            "--strategy",
            "ddc",
            "--lambda",
            "0.5",
            "--adapt-width",
            "64",
            "--mmd-kernel",
            "gaussian",
            "--lambda-schedule",
            "constant",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
    let cfg: toml::Table = toml::from_str(&written).unwrap();
    let s = cfg["strategy"].as_table().unwrap();
    assert_eq!(s["name"].as_str(), Some("ddc"));
    assert_eq!(s["lambda"].as_float(), Some(0.5));
    assert_eq!(s["adapt-width"].as_integer(), Some(64));
    assert_eq!(s["kernel"].as_str(), Some("gaussian"));
    assert_eq!(s["schedule"].as_str(), Some("constant"));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["strategy"], "ddc");
    assert_eq!(metrics["feature_gap"]["layer"], "adapt");
    let logged = metrics["history"][0]["means"].as_object().unwrap();
    for key in ["loss_cls", "mmd2_adapt", "loss_total", "lambda", "acc_source"] {
        assert!(logged.contains_key(key), "{key} not logged: {logged:?}");
    }
    // The checkpoint carries the adaptation layer: eval rebuilds it and agrees.
    let o = dtl(&[
        "eval",
        "--checkpoint",
        out.join("model.safetensors").to_str().unwrap(),
        "--domain",
        "optdigits",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["test"]["accuracy"], metrics["target_test"]["accuracy"]);

    // The written config runs again as it is, flags still override it.
    let again = tmp.path().join("again");
    let o = quick_train(
        &again,
        &[
            "--config",
            out.join("config.toml").to_str().unwrap(),
            "--lambda",
            "0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written = std::fs::read_to_string(again.join("config.toml")).unwrap();
    assert!(written.contains("adapt-width = 64"), "{written}");
    assert!(written.contains("lambda = 0.1"), "{written}");

    // Settings a strategy does not have, and values it does not know, are named.
    let bad = tmp.path().join("bad");
    let o = quick_train(&bad, &["--lambda", "1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("lambda") && stderr(&o).contains("source-only"),
        "{}",
        stderr(&o)
    );
    let o = quick_train(&bad, &["--strategy", "dan", "--adapt-layers", "features,fc7"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("fc7"), "{}", stderr(&o));
    let o = quick_train(&bad, &["--strategy", "coral", "--mmd-kernel", "gaussian"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("mmd-kernel"), "{}", stderr(&o));
}

#[test]
fn adda_stage2_runs_from_a_source_checkpoint_and_dann_logs_its_game() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("source");
    let o = quick_train(&src, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = src.join("model.safetensors");

    // Stage 2 only, from the source-only checkpoint.
    let adda = tmp.path().join("adda");
    let o = quick_train(
        &adda,
        &[
            "--strategy",
            "adda",
            "--init-from",
            ckpt.to_str().unwrap(),
            "--source-epochs",
            "0",
            "--shared-layers",
            "1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(adda.join("metrics.json")).unwrap()).unwrap();
    let first = metrics["history"][0]["means"].as_object().unwrap();
    for key in ["loss_disc", "loss_gen", "disc_acc"] {
        assert!(first.contains_key(key), "{key} not logged: {first:?}");
    }
    let written = std::fs::read_to_string(adda.join("config.toml")).unwrap();
    assert!(
        written.contains("init_from") && written.contains("shared-layers = 1"),
        "{written}"
    );

    // A checkpoint of another architecture is refused by name.
    let o = quick_train(
        &tmp.path().join("bad"),
        &["--init-from", ckpt.to_str().unwrap(), "--strategy", "ddc"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("init-from"), "{}", stderr(&o));

    // Sequential transfer from the same checkpoint: the first two layers copied and frozen.
    let ft = tmp.path().join("finetune");
    let o = quick_train(
        &ft,
        &[
            "--strategy",
            "finetune",
            "--init-from",
            ckpt.to_str().unwrap(),
            "--transfer-layers",
            "2",
            "--freeze",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |p: &std::path::Path| candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    let (before, after) = (read(&ckpt), read(&ft.join("model.safetensors")));
    let same = |n: &str| {
        before[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            == after[n].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert!(same("conv1.weight") && same("conv2.bias"), "frozen layers moved");
    assert!(!same("fc1.weight"), "fc1 was not retrained");

    // The same checkpoint published on the hub, served offline from a local hub cache.
    let hf_home = tmp.path().join("hf-home");
    let repo = hf_home.join("hub").join("models--dtl-rs--digits-source");
    let commit = "89abcdef0123456789abcdef0123456789abcdef";
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), commit).unwrap();
    std::fs::create_dir_all(repo.join("snapshots").join(commit)).unwrap();
    std::fs::copy(
        &ckpt,
        repo.join("snapshots").join(commit).join("model.safetensors"),
    )
    .unwrap();
    let offline = Path::new("1");
    let env = [("HF_HOME", hf_home.as_path()), ("HF_HUB_OFFLINE", offline)];
    let ft_hub = tmp.path().join("finetune-hub");
    let args = [
        "--strategy",
        "finetune",
        "--init-from",
        "hf:dtl-rs/digits-source",
        "--transfer-layers",
        "2",
        "--freeze",
    ];
    let o = quick_train_env(&ft_hub, &args, &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let hub_after = read(&ft_hub.join("model.safetensors"));
    for (name, t) in &after {
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            hub_after[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}: the run from the hub differs from the run from the file"
        );
    }
    let o = quick_train_env(
        &tmp.path().join("finetune-hub-missing"),
        &[
            "--strategy",
            "finetune",
            "--init-from",
            "hf:dtl-rs/absent@v2",
            "--transfer-layers",
            "2",
        ],
        &env,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("hf:dtl-rs/absent@v2/model.safetensors") && stderr(&o).contains("HF_HUB_OFFLINE"),
        "{}",
        stderr(&o)
    );
    let o = quick_train(
        &tmp.path().join("ft-bad"),
        &["--strategy", "finetune", "--transfer-layers", "2"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--init-from"), "{}", stderr(&o));
    let o = quick_train(&tmp.path().join("ft-bad"), &["--freeze"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("freeze"), "{}", stderr(&o));

    let dann = tmp.path().join("dann");
    let o = quick_train(&dann, &["--strategy", "dann"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dann.join("metrics.json")).unwrap()).unwrap();
    let last = metrics["history"][1]["means"].as_object().unwrap();
    for key in ["loss_cls", "loss_domain", "disc_acc", "grl_coeff", "lr"] {
        assert!(last.contains_key(key), "{key} not logged: {last:?}");
    }
}

/// `--backbone resnet18 --pretrained FILE` on grayscale digits: the published weights (here all
/// zero but the head's bias) initialise the backbone, the 1000-class head is replaced by a new
/// 10-class one, grayscale batches are replicated to the model's 3 channels, and the checkpoint
/// records the run (training batches augmented). `conv1` stays exactly zero: behind a zero batch-norm scale it gets no
/// gradient, where a fresh initialisation would be non-zero.
#[test]
fn train_from_published_imagenet_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("resnet18.safetensors");
    common::write_constant_resnet18(&weights, 207, 10.0);
    let out = tmp.path().join("run");
    let o = common::dtl(&[
        "train",
        "--source",
        "mnist-small",
        "--target",
        "optdigits",
        "--backbone",
        "resnet18",
        "--pretrained",
        weights.to_str().unwrap(),
        "--augment",
        "--image-size",
        "32",
        "--source-train-size",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ckpt = out.join("model.safetensors");
    let t = candle_core::safetensors::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["head.weight"].dims(), &[10, 512]);
    assert_eq!(t["conv1.weight"].dims(), &[64, 3, 7, 7]);
    let conv1 = t["conv1.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(
        conv1.iter().all(|&v| v == 0.0),
        "conv1 did not come from the published weights"
    );
    let (_, meta) = dtl_backbones::Classifier::load(&ckpt, &candle_core::Device::Cpu).unwrap();
    assert_eq!(meta["dtl.fit"], "crop");
    assert_eq!(meta["dtl.normalize_mean"], "0.485,0.456,0.406");
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("pretrained = ") && config.contains("[data.augment]"),
        "{config}"
    );

    // Published weights and a dtl checkpoint together are refused.
    let o = common::dtl(&[
        "train",
        "--backbone",
        "resnet18",
        "--pretrained",
        weights.to_str().unwrap(),
        "--init-from",
        ckpt.to_str().unwrap(),
        "--out",
        tmp.path().join("both").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// `--source-class-fractions` keeps that share of each source class (here classes 0-4 whole,
/// 5-9 none): the run trains on exactly those samples and records their number; with the same
/// domain as the balanced target, both records are kept.
#[test]
fn source_class_fractions_skew_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("skewed");
    let o = common::small_train(
        "mnist-small",
        "optdigits",
        "1",
        &out,
        &["--source-class-fractions", "1,1,1,1,1,0,0,0,0,0"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let d = common::domain_at(dtl_data::DomainId::MnistSmall, 16);
    let want: usize = d.train.class_counts()[..5].iter().sum();
    assert_eq!(m["data"]["mnist-small"]["train_size"], want);

    let same = tmp.path().join("same-domain");
    let o = common::small_train(
        "mnist-small",
        "mnist-small",
        "1",
        &same,
        &["--source-class-fractions", "1,1,1,1,1,0,0,0,0,0"],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(same.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(m["data"]["mnist-small (source)"]["train_size"], want);
    assert_eq!(m["data"]["mnist-small (target)"]["train_size"], d.train.len());
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("source_class_fractions"), "{config}");
}

#[test]
fn instance_weights_from_flags_for_iw_and_the_adaptation_strategies() {
    let tmp = tempfile::tempdir().unwrap();
    for (strategy, own_loss) in [("iw", None), ("dann", Some("loss_domain"))] {
        let out = tmp.path().join(strategy);
        let o = quick_train(
            &out,
            &["--strategy", strategy, "--estimator", "kliep", "--iwcv", "ratio"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let written = std::fs::read_to_string(out.join("config.toml")).unwrap();
        let cfg: toml::Table = toml::from_str(&written).unwrap();
        let s = cfg["strategy"].as_table().unwrap();
        // iw's settings are the strategy's own; dann keeps them under instance-weights.
        let w = if strategy == "iw" {
            s
        } else {
            s["instance-weights"].as_table().unwrap()
        };
        assert_eq!(w["estimator"]["kind"].as_str(), Some("kliep"), "{written}");
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        let weights = &m["source_weights"];
        assert_eq!(weights["per_class"].as_array().unwrap().len(), 10, "{m}");
        let ess = weights["ess"].as_f64().unwrap();
        assert!(ess > 0.0 && ess <= 512.0 + 1e-6, "{ess}");
        let logged = m["history"][0]["means"].as_object().unwrap();
        assert!(logged.contains_key("loss_iw"), "{logged:?}");
        if let Some(key) = own_loss {
            assert!(logged.contains_key(key), "{logged:?}");
        }
        // Importance-weighted validation on the source test split: its unweighted error is the
        // source test error itself.
        let v = &m["iwcv"];
        assert_eq!(v["estimator"], "ratio");
        assert_eq!(v["n"], m["source_test"]["n"]);
        let plain = v["plain_error"].as_f64().unwrap();
        let source_acc = m["source_test"]["accuracy"].as_f64().unwrap();
        assert!((plain + source_acc - 1.0).abs() < 1e-9, "{v}");
        assert!((0.0..=1.0).contains(&v["error"].as_f64().unwrap()), "{v}");
        // The written config runs again as it is.
        let again = tmp.path().join(format!("{strategy}-again"));
        let o = quick_train(&again, &["--config", out.join("config.toml").to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        let rewritten: toml::Table =
            toml::from_str(&std::fs::read_to_string(again.join("config.toml")).unwrap()).unwrap();
        assert_eq!(rewritten["strategy"], cfg["strategy"]);
    }
    // An unknown estimator is named.
    let o = quick_train(&tmp.path().join("bad-iwcv"), &["--iwcv", "oracle"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("iwcv") && stderr(&o).contains("oracle"),
        "{}",
        stderr(&o)
    );
    // Strategies whose source loss cannot be weighted name the flag.
    let o = quick_train(&tmp.path().join("bad"), &["--weights-on", "features"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("weights-on") && stderr(&o).contains("source-only"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn tradaboost_runs_from_flags_and_names_bad_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tradaboost");
    let o = quick_train(&out, &["--strategy", "tradaboost", "--labelled-target", "50"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["strategy"]["labelled-target"].as_integer(), Some(50));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    // Two epochs: one boosting round, whose source weights are reported.
    assert_eq!(
        m["source_weights"]["per_class"].as_array().unwrap().len(),
        10,
        "{m}"
    );
    let logged = m["history"][1]["means"].as_object().unwrap();
    assert!(logged.contains_key("loss_target"), "{logged:?}");
    // More labelled samples than the target's training split holds, and the setting on a
    // strategy without it, are named.
    let o = quick_train(
        &tmp.path().join("bad"),
        &["--strategy", "tradaboost", "--labelled-target", "100000"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("labelled-target"), "{}", stderr(&o));
    let o = quick_train(&tmp.path().join("bad2"), &["--labelled-target", "5"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("labelled-target"), "{}", stderr(&o));
}

/// Every registered strategy is named in `dtl train --help` and has a row in README.md's strategy
/// table; neither names a strategy the registry lacks.
#[test]
fn every_registered_strategy_is_in_the_help_and_the_readme() {
    let names = dtl_strategies::StrategyConfig::NAMES;
    let o = dtl(&["train", "--help"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let help = String::from_utf8_lossy(&o.stdout).to_string();
    let listed = help
        .split("Strategy: ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .map(|line| line.trim_end_matches('.'))
        .unwrap_or_else(|| panic!("no strategy list in the help:\n{help}"));
    let listed: Vec<&str> = listed.split(',').map(|s| s.trim()).collect();
    assert_eq!(listed, names, "the help's strategy list");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let table = readme
        .split("| `--strategy` |")
        .nth(1)
        .expect("README.md has the strategy table");
    let rows: Vec<&str> = table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    let mut rows_sorted = rows.clone();
    rows_sorted.sort_unstable();
    let mut want: Vec<&str> = names.to_vec();
    want.sort_unstable();
    assert_eq!(rows_sorted, want, "README.md's strategy rows");
}

/// A setting that cannot run, or a key that does not exist, is refused before the output
/// directory is made or any data is read; `--set` reaches any key and names it when wrong.
#[test]
fn bad_settings_are_refused_before_any_work_and_set_reaches_every_key() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("adda");
    // Two epochs of pre-training in a run of two: nothing left to adapt.
    let o = quick_train(&out, &["--strategy", "adda", "--source-epochs", "2"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("source-epochs"), "{}", stderr(&o));
    assert!(!out.exists(), "the refused run made {}", out.display());
    let o = quick_train(&out, &["--strategy", "dann", "--set", "strategy.max-cof=0.5"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("strategy.max-cof") && err.contains("did you mean `max-coeff`"),
        "{err}"
    );
    assert!(!out.exists());
    // A key of a section, and a strategy's own key with no flag of its own.
    let o = quick_train(
        &out,
        &[
            "--strategy",
            "dann",
            "--set",
            "strategy.max-coeff=0.5",
            "--set",
            "data.placement=box",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let written: toml::Table =
        toml::from_str(&std::fs::read_to_string(out.join("config.toml")).unwrap()).unwrap();
    assert_eq!(written["strategy"]["max-coeff"].as_float(), Some(0.5));
    assert_eq!(written["data"]["placement"].as_str(), Some("box"));
}
