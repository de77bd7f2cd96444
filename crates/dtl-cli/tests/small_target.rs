//! Small target domains as the portrait case has them: a target folder of a few dozen images whose
//! class folders are named otherwise than the source's (`--class-map`), evaluated on all of its
//! images (`--target-eval all`) or on its held-out split, with a confidence interval on every
//! accuracy, trained for a step budget (`--steps`) and warned about when too short.

mod common;

use std::path::{Path, PathBuf};

use common::{dtl, native, small_train, stderr, write_png, write_split};
use dtl_data::DomainId;

/// A source folder of MNIST digits (`train/` 160 images, `test/` 40, classes `0`..`9`) and a
/// pooled target folder of 40 optdigits 3s and 40 7s under the names `three` and `seven`.
fn folders(root: &Path) -> (String, String) {
    let mnist = native(DomainId::MnistSmall);
    let src = root.join("src");
    write_split(&src, "train", &mnist.train, 160);
    write_split(&src, "test", &mnist.test, 40);
    let opt = native(DomainId::Optdigits);
    let tgt = root.join("tgt");
    let mut per_class = [0usize; 10];
    for i in 0..opt.train.len() {
        let l = opt.train.labels()[i] as usize;
        let name = match l {
            3 => "three",
            7 => "seven",
            _ => continue,
        };
        if per_class[l] < 40 {
            write_png(
                &tgt.join(name).join(format!("{i}.png")),
                opt.train.image(i),
                8,
                false,
            );
            per_class[l] += 1;
        }
    }
    (
        format!("folder:{}", src.display()),
        format!("folder:{}", tgt.display()),
    )
}

fn metrics(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

#[test]
fn a_small_target_is_evaluated_on_all_its_images_with_an_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, tgt) = folders(tmp.path());
    let run = |name: &str, extra: &[&str]| -> (PathBuf, std::process::Output) {
        let out = tmp.path().join(name);
        let o = small_train(&src, &tgt, "1", &out, extra, &[]);
        (out, o)
    };

    // Held out: 20% of each 40-image class; all: the 80 images, also the adaptation set. 160
    // source images in batches of 32 are 5 steps a pass: 20 steps are 4 passes, 21 are 5.
    let (held, o) = run(
        "holdout",
        &[
            "--class-map",
            "three=3,seven=7",
            "--steps",
            "21",
            "--strategy",
            "dann",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&held);
    assert_eq!(
        (m["target_eval"].as_str(), m["target_test"]["n"].as_u64()),
        (Some("holdout"), Some(16))
    );
    assert_eq!((m["epochs"].as_u64(), m["steps"].as_u64()), (Some(5), Some(25)));
    let (all, o) = run(
        "all",
        &[
            "--class-map",
            "three=3,seven=7",
            "--steps",
            "20",
            "--strategy",
            "dann",
            "--target-eval",
            "all",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = metrics(&all);
    assert_eq!(
        (m["target_eval"].as_str(), m["target_test"]["n"].as_u64()),
        (Some("all"), Some(80))
    );
    assert_eq!((m["epochs"].as_u64(), m["steps"].as_u64()), (Some(4), Some(20)));
    let config = std::fs::read_to_string(all.join("config.toml")).unwrap();
    assert!(
        config.contains("target_eval = \"all\"") && config.contains("three = \"3\""),
        "{config}"
    );
    // Only classes 3 and 7 are measured, under the source's indices.
    let per_class = m["target_test"]["per_class"].as_array().unwrap();
    for (c, v) in per_class.iter().enumerate() {
        assert_eq!(v.is_null(), c != 3 && c != 7, "class {c}: {v}");
    }
    // Every accuracy carries its 95% interval: around the accuracy, and for 80 images wide (the
    // narrowest Wilson interval of a proportion of 80 is at 0/80 or 80/80: 1.96^2 / (80 +
    // 1.96^2) = 0.0458).
    for key in ["source_test", "target_test"] {
        let acc = m[key]["accuracy"].as_f64().unwrap();
        let [lo, hi] = [0, 1].map(|i| m[key]["ci95"][i].as_f64().unwrap());
        assert!(
            lo <= acc && acc <= hi && lo >= 0.0 && hi <= 1.0,
            "{key}: {acc} [{lo}, {hi}]"
        );
    }
    let [lo, hi] = [0, 1].map(|i| m["target_test"]["ci95"][i].as_f64().unwrap());
    assert!(hi - lo >= 0.0458, "[{lo}, {hi}]");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("all images (unlabelled in training) accuracy") && out.contains("n=80]"),
        "{out}"
    );
    // 20 steps is short: the run says so.
    assert!(stderr(&o).contains("trains 20 steps"), "{}", stderr(&o));
}

#[test]
fn class_maps_and_evaluation_choices_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, tgt) = folders(tmp.path());
    let refused = |extra: &[&str]| -> String {
        let o = small_train(&src, &tgt, "1", &tmp.path().join("run"), extra, &[]);
        assert!(!o.status.success(), "{extra:?} ran");
        stderr(&o)
    };
    // Without the map the target's classes are not the source's.
    assert!(refused(&[]).contains("class `seven`"));
    // A key that names no folder is a typo, named.
    let e = refused(&["--class-map", "three=3,sevn=7"]);
    assert!(e.contains("class_map.sevn") || e.contains("class `seven`"), "{e}");
    let e = refused(&["--class-map", "three=3,seven=7,eight=8"]);
    assert!(
        e.contains("class_map.eight") && e.contains("matched no class"),
        "{e}"
    );
    // Two folders read as one class.
    let e = refused(&["--class-map", "three=3,seven=3"]);
    assert!(e.contains("`seven` and `three` would both be read as `3`"), "{e}");
    assert!(refused(&["--class-map", "three"]).contains("NAME=CLASS"));
    // tradaboost trains on target labels: not with the images it is evaluated on.
    let e = refused(&[
        "--class-map",
        "three=3,seven=7",
        "--strategy",
        "tradaboost",
        "--target-eval",
        "all",
    ]);
    assert!(e.contains("target_eval"), "{e}");
    let e = refused(&["--target-eval", "everything"]);
    assert!(e.contains("everything") && e.contains("target_eval"), "{e}");
    assert!(refused(&["--steps", "0"]).contains("steps"));
    let o = dtl(&["train", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for flag in ["--steps", "--target-eval", "--class-map"] {
        assert!(help.contains(flag), "{flag} not in the help");
    }
}
