//! `dtl sweep` and `dtl validate` through the binary on bundled data: every run scored by every
//! validator, the selection report, resuming a stopped sweep, and specs refused before any work.

mod common;

use std::path::Path;

use common::{dtl, stderr};

const SPEC: &str = r#"
seeds = [0]

[base.data]
source = "mnist-small"
target = "optdigits"
image_size = 16
source_train_size = 256
target_train_size = 300

[base.train]
epochs = 1
batch_size = 64

[[grid]]
"strategy.name" = ["source-only"]

[[grid]]
"strategy.name" = ["dann"]
"strategy.max-coeff" = [0.1, 1.0]
"#;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_sweep_scores_every_run_reports_the_choice_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = tmp.path().join("sweep");
    let args = [
        "sweep",
        spec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ];
    let o = dtl(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(stdout.contains("3 runs (3 trained now, 0 kept)"), "{stdout}");

    // runs.csv: a row per run, every validator's score, the target accuracy last.
    let csv = read(&out.join("runs.csv"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header.last(), Some(&"target_test_accuracy"));
    for v in [
        "source-acc",
        "entropy",
        "im",
        "bnm",
        "snd",
        "iwcv",
        "dev",
        "classami",
        "mixval",
        "reverse",
    ] {
        assert!(header.contains(&v), "{v} missing from {header:?}");
    }
    assert!(lines[2].starts_with("r001-dann-s0,dann,0,0.1,"), "{}", lines[2]);

    // The selection names a run per validator and the oracle; the report says how.
    let sel: serde_json::Value = serde_json::from_str(&read(&out.join("selection.json"))).unwrap();
    assert_eq!(sel["runs"], 3);
    assert_eq!(sel["choices"].as_array().unwrap().len(), 10);
    let oracle = sel["oracle_accuracy"].as_f64().unwrap();
    for c in sel["choices"].as_array().unwrap() {
        let gap = c["oracle_gap"].as_f64().unwrap();
        let acc = c["selected_accuracy"].as_f64().unwrap();
        assert!(gap >= 0.0 && (oracle - acc - gap).abs() < 1e-12, "{c}");
    }
    assert!(read(&out.join("report.md")).contains("| `source-acc` |"));
    assert!(out.join("selection.svg").is_file());

    // `dtl validate` on a finished run gives the scores its run wrote.
    let run = out.join("runs").join("r002-dann-s0");
    let o = dtl(&["validate", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fresh: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let written: serde_json::Value = serde_json::from_str(&read(&run.join("validation.json"))).unwrap();
    assert_eq!(fresh["scores"], written["scores"]);

    // The same out again is refused without --resume; with it, only the unfinished run trains.
    let o = dtl(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let kept = std::fs::read(out.join("runs/r000-source-only-s0/model.safetensors")).unwrap();
    std::fs::remove_file(run.join("validation.json")).unwrap();
    let mut resume = args.to_vec();
    resume.push("--resume");
    let o = dtl(&resume);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(stdout.contains("3 runs (1 trained now, 2 kept)"), "{stdout}");
    assert_eq!(
        std::fs::read(out.join("runs/r000-source-only-s0/model.safetensors")).unwrap(),
        kept
    );
    let again: serde_json::Value = serde_json::from_str(&read(&run.join("validation.json"))).unwrap();
    assert_eq!(
        again["scores"], written["scores"],
        "a rerun run repeats its scores"
    );
}

#[test]
fn a_spec_with_a_bad_key_is_refused_before_any_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        SPEC.replace("\"strategy.max-coeff\"", "\"strategy.max-cof\""),
    )
    .unwrap();
    let out = tmp.path().join("sweep");
    let o = dtl(&["sweep", spec.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("r001-dann-s0") && err.contains("did you mean `max-coeff`"),
        "{err}"
    );
    assert!(!out.exists(), "a refused sweep made {}", out.display());
}

#[test]
fn runs_killed_with_their_sweep_continue_from_their_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(
        &spec,
        SPEC.replace("batch_size = 64", "batch_size = 64\ncheckpoint_every = 1"),
    )
    .unwrap();
    let sweep = |out: &Path, extra: &[&str], env: &[(&str, &Path)]| {
        let mut args = vec!["sweep", spec.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        common::dtl_env(&args, env)
    };
    let whole = tmp.path().join("whole");
    let o = sweep(&whole, &[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every run dies halfway through writing its 3rd checkpoint (after 2 of its 4 steps).
    let cut = tmp.path().join("cut");
    let o = sweep(&cut, &[], &[("DTL_TEST_ABORT_IN_CHECKPOINT", Path::new("3"))]);
    assert!(!o.status.success());
    let runs = ["r000-source-only-s0", "r001-dann-s0", "r002-dann-s0"];
    for id in runs {
        assert!(!cut.join("runs").join(id).exists(), "{id} finished");
        assert!(cut
            .join("runs")
            .join(format!(".{id}.partial/checkpoint.safetensors"))
            .is_file());
    }
    let o = sweep(&cut, &["--resume"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for id in runs {
        let log = read(&cut.join("runs").join(format!("{id}.log")));
        assert!(log.contains("resumed") && log.contains("step 2/4"), "{id}: {log}");
        let model = |d: &Path| std::fs::read(d.join("runs").join(id).join("model.safetensors")).unwrap();
        assert!(model(&cut) == model(&whole), "{id}: another model after resuming");
    }
    assert_eq!(
        read(&cut.join("selection.json")),
        read(&whole.join("selection.json"))
    );
}
