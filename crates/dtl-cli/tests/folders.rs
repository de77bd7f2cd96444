//! `dtl train` between image folders made at test time from bundled digits written as PNG files:
//! MNIST digits as a pre-split labelled source, optdigits' 3s and 7s as a pooled target whose
//! classes are matched to the source's by name; `dtl eval` on a folder agrees with the run; a target
//! class the source lacks is named.

mod common;

use std::path::Path;

use common::{dtl, native, small_train, stderr, write_png, write_split};

use dtl_data::DomainId;

#[test]
fn train_and_eval_run_between_image_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let mnist = native(DomainId::MnistSmall);
    let src = tmp.path().join("src");
    write_split(&src, "train", &mnist.train, 600);
    write_split(&src, "test", &mnist.test, 200);
    let opt = native(DomainId::Optdigits);
    let tgt = tmp.path().join("tgt");
    let mut per_class = [0usize; 10];
    for i in 0..opt.train.len() {
        let l = opt.train.labels()[i] as usize;
        if (l == 3 || l == 7) && per_class[l] < 40 {
            write_png(
                &tgt.join(l.to_string()).join(format!("{i}.png")),
                opt.train.image(i),
                8,
                false,
            );
            per_class[l] += 1;
        }
    }
    let run = tmp.path().join("run");
    let (src_s, tgt_s) = (
        format!("folder:{}", src.display()),
        format!("folder:{}", tgt.display()),
    );
    let train = |target: &str, out: &Path| small_train(&src_s, target, "2", out, &[], &[]);
    let o = train(&tgt_s, &run);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["source_test"]["n"], 200);
    // 20% of each 40-image class held out; only classes 3 and 7 measured, under the source's indices.
    assert_eq!(metrics["target_test"]["n"], 16);
    let pc = metrics["target_test"]["per_class"].as_array().unwrap();
    for (c, v) in pc.iter().enumerate() {
        assert_eq!(v.is_null(), c != 3 && c != 7, "class {c}: {v}");
    }
    // Labels follow the images (chance is 0.1; two short epochs reach about 0.4).
    assert!(
        metrics["source_test"]["accuracy"].as_f64().unwrap() > 0.3,
        "{}",
        metrics["source_test"]
    );
    let files = &metrics["data"][&src_s]["files"];
    assert!(
        files[0]["path"].as_str().unwrap().contains("(600 images)"),
        "{files}"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains(&src_s) && config.contains(&tgt_s), "{config}");

    // dtl eval on the source folder reproduces the run's source accuracy.
    let ckpt = run.join("model.safetensors");
    let o = dtl(&["eval", "--checkpoint", ckpt.to_str().unwrap(), "--domain", &src_s]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["test"]["accuracy"], metrics["source_test"]["accuracy"]);

    // A target class the source does not have is named.
    std::fs::create_dir_all(tgt.join("smiley")).unwrap();
    write_png(&tgt.join("smiley").join("a.png"), opt.train.image(0), 8, false);
    write_png(&tgt.join("smiley").join("b.png"), opt.train.image(1), 8, false);
    let o = train(&tgt_s, &tmp.path().join("bad"));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("`smiley`"), "{}", stderr(&o));
}
