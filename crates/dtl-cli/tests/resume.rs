//! Runs that survive: `dtl train` killed (SIGKILL, or aborted halfway through writing a
//! checkpoint) and continued with `--resume` writes the model bytes and metrics of the run that
//! was never interrupted; a failed `--overwrite` leaves the previous run intact; a failed run is
//! replaced without `--overwrite`; an interrupted one is never replaced by accident.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{dtl, dtl_env, stderr};
use dtl_core::state::State;

/// The `dtl train` arguments of a small run of `strategy` into `out`, a checkpoint every 3 steps.
fn args(strategy: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = [
        "train",
        "--source",
        "mnist-small",
        "--target",
        "optdigits",
        "--image-size",
        "16",
        "--source-train-size",
        "320",
        "--target-train-size",
        "200",
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--epochs",
        "6",
        "--checkpoint-every",
        "3",
        "--strategy",
        strategy,
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.to_str().unwrap().to_string());
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn run(args: &[String], env: &[(&str, &Path)]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    dtl_env(&refs, env)
}

fn staging(out: &Path) -> PathBuf {
    out.with_file_name(format!(".{}.partial", out.file_name().unwrap().to_str().unwrap()))
}

/// The model's bytes and the metrics without their timings.
fn outcome(out: &Path) -> (Vec<u8>, serde_json::Value) {
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let o = m.as_object_mut().unwrap();
    o.remove("train_seconds");
    o.remove("seconds_per_epoch");
    for e in o["history"].as_array_mut().unwrap() {
        e.as_object_mut().unwrap().remove("seconds");
    }
    (model, m)
}

/// Starts the run, waits for a checkpoint saved in 0-based epoch `epoch` or later, then kills it
/// (SIGKILL).
fn kill_after_checkpoint(args: &[String], out: &Path, epoch: usize) {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(&refs)
        .env("RUST_LOG", "warn")
        .env_remove("DTL_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = staging(out).join("checkpoint.safetensors");
    let started = Instant::now();
    let reached = || {
        let Ok(state) = State::load(&ckpt, &candle_core::Device::Cpu) else {
            return false;
        };
        state.get::<serde_json::Value>("loop.position").unwrap()["epoch"]
            .as_u64()
            .unwrap() as usize
            >= epoch
    };
    while !reached() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before epoch {epoch}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn check_killed_runs_resume_exactly(strategy: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let o = run(&args(strategy, &reference, extra), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = outcome(&reference);
    for epoch in [0, 3] {
        let out = tmp.path().join(format!("killed{epoch}"));
        kill_after_checkpoint(&args(strategy, &out, extra), &out, epoch);
        assert!(
            !out.exists(),
            "{strategy}: the run finished before the kill (in epoch {epoch}): make it longer"
        );
        // A new run on the same directory would lose the interrupted one: refused.
        let o = run(&args(strategy, &out, extra), &[]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
        let o = dtl(&["train", "--resume", out.to_str().unwrap()]);
        assert!(o.status.success(), "{strategy}: {}", stderr(&o));
        assert!(outcome(&out) == want, "{strategy}: killed in epoch {epoch}");
        assert!(!staging(&out).exists());
        let names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }
}

#[test]
fn source_only_and_iw_killed_resume_exactly() {
    check_killed_runs_resume_exactly("source-only", &[]);
    check_killed_runs_resume_exactly("iw", &["--weights-on", "features", "--reweight-every", "2"]);
}

#[test]
fn dann_and_adda_killed_resume_exactly() {
    check_killed_runs_resume_exactly("dann", &[]);
    check_killed_runs_resume_exactly("adda", &["--source-epochs", "2"]);
}

#[test]
fn a_run_killed_while_writing_a_checkpoint_resumes_from_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let o = run(&args("dann", &reference, &[]), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let want = outcome(&reference);
    let out = tmp.path().join("aborted");
    // The 4th checkpoint: the 3rd (after step 9, mid-epoch 1) is the last whole one.
    let o = Command::new(env!("CARGO_BIN_EXE_dtl"))
        .args(args("dann", &out, &[]))
        .env("RUST_LOG", "warn")
        .env_remove("DTL_DATA_DIR")
        .env("DTL_TEST_ABORT_IN_CHECKPOINT", "4")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let left: Vec<String> = std::fs::read_dir(staging(&out))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .any(|n| n.starts_with(".checkpoint.safetensors.") && n.ends_with(".partial")),
        "a half-written checkpoint: {left:?}"
    );
    let o = dtl(&["train", "--resume", staging(&out).to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(outcome(&out) == want);
    assert!(!staging(&out).exists());
}

#[test]
fn failed_runs_keep_what_the_user_had() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = run(&args("source-only", &out, &["--set", "train.epochs=1"]), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = outcome(&out);
    let config = std::fs::read(out.join("config.toml")).unwrap();
    // An --overwrite that diverges: the previous run stays, whole.
    let diverging = [
        "--optimizer",
        "adam",
        "--set",
        "optim.lr=1000",
        "--set",
        "train.checkpoint_every=1",
        "--overwrite",
    ];
    let o = run(&args("source-only", &out, &diverging), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("diverged"), "{}", stderr(&o));
    assert!(outcome(&out) == before);
    assert_eq!(std::fs::read(out.join("config.toml")).unwrap(), config);
    let failed = std::fs::read_to_string(staging(&out).join("failed")).unwrap();
    assert!(failed.contains("diverged"), "{failed}");
    // ... and its last good checkpoint is kept.
    assert!(staging(&out).join("checkpoint.safetensors").is_file());
    // A failed run is rerun without --overwrite.
    let other = tmp.path().join("other");
    let o = run(&args("source-only", &other, &diverging[..6]), &[]);
    assert!(!o.status.success());
    assert!(!other.exists());
    let o = run(&args("source-only", &other, &["--set", "train.epochs=1"]), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(outcome(&other) == before);
    // Nothing to resume in a finished run.
    let o = dtl(&["train", "--resume", other.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("finished run"), "{}", stderr(&o));
}
