//! `dtl sweep --backend slurm`: the job-array script (always tested), and, on a real Slurm
//! cluster (`scripts/slurm-local.sh start` makes a one-node one; `.ci/run` runs the ignored test
//! with `--ignored`), a sweep of six runs submitted as an array, one task cancelled with `scancel`
//! between two checkpoints, resumed by resubmission, and a report equal to the local backend's.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{dtl, dtl_env, stderr};

const SPEC: &str = r#"
seeds = [0, 1]

[base.data]
source = "mnist-small"
target = "optdigits"
image_size = 16
source_train_size = 512

[base.train]
epochs = 1
batch_size = 32
checkpoint_every = 2

[base.optim]
lr = 0.05

[[grid]]
"strategy.name" = ["source-only", "ddc", "dann"]

[slurm]
time = "10:00"
partition = "spec-partition"
"#;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_dry_run_prints_one_array_task_per_run_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    std::fs::write(&spec, SPEC).unwrap();
    // A sweep directory whose name needs quoting in the shell.
    let out = tmp.path().join("it's a sweep");
    let s = |extra: &[&str]| {
        let mut args = vec!["sweep", spec.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        dtl(&args)
    };
    let o = s(&[
        "--backend",
        "slurm",
        "--dry-run",
        "--cpus-per-run",
        "2",
        "--time",
        "30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8_lossy(&o.stdout).into_owned();
    for line in [
        "#SBATCH --array=0-5",
        "#SBATCH --cpus-per-task=2",
        // The flag over the spec's time; the spec's partition.
        "#SBATCH --time=30",
        "#SBATCH --partition=spec-partition",
        "RUNS=('r000-source-only-s0' 'r001-source-only-s1' 'r002-ddc-s0' 'r003-ddc-s1' 'r004-dann-s0' 'r005-dann-s1')",
    ] {
        assert!(script.lines().any(|l| l == line), "no `{line}` in\n{script}");
    }
    assert!(!script.contains("--gpus-per-task"), "{script}");
    assert!(
        script.contains(r"'\''s a sweep"),
        "the quote is escaped: {script}"
    );
    assert!(script.contains(r#"sweep-task --out "#) && script.contains(r#""${RUNS[$SLURM_ARRAY_TASK_ID]}""#));
    assert!(!out.exists(), "a dry run writes nothing");
    // A value that would break out of its #SBATCH line is refused, naming the flag.
    let o = s(&["--backend", "slurm", "--dry-run", "--partition", "a\nrm -rf /"]);
    assert!(
        !o.status.success() && stderr(&o).contains("`partition`"),
        "{}",
        stderr(&o)
    );
    // Slurm's flags mean nothing to the local backend.
    let o = s(&["--partition", "gpu"]);
    assert!(stderr(&o).contains("go with --backend slurm"), "{}", stderr(&o));
    // A task of a run the sweep does not have is named.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("spec.toml"), SPEC).unwrap();
    let o = dtl(&["sweep-task", "--out", out.to_str().unwrap(), "r999-x-s0"]);
    assert!(stderr(&o).contains("`r999-x-s0` is not a run"), "{}", stderr(&o));
    // Nothing submitted, nothing run: every run is `not started`.
    let o = dtl(&["sweep", "--status", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 runs: 6 not started"));
}

/// Runs `cmd` and returns its standard output (panics with its error output if it fails).
fn sh(cmd: &str, args: &[&str]) -> String {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Polls `f` every 20 ms until it holds, failing after `limit`.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(out: &Path) -> String {
    let o = dtl(&["sweep", "--status", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
#[ignore = "needs a running Slurm cluster: scripts/slurm-local.sh start (run by .ci/run)"]
fn a_sweep_on_slurm_survives_a_cancelled_task_and_reports_as_local() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("spec.toml");
    // The tasks run on this one node; no partition but the default.
    std::fs::write(&spec, SPEC.replace("partition = \"spec-partition\"\n", "")).unwrap();
    let spec = spec.to_str().unwrap();
    let (local, cluster) = (tmp.path().join("local"), tmp.path().join("cluster"));

    let o = dtl(&["sweep", spec, "--out", local.to_str().unwrap(), "--jobs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Every checkpoint is followed by a pause, so that a task can be cancelled between two.
    let pause = Path::new("400");
    let env = [("DTL_TEST_PAUSE_AFTER_CHECKPOINT", pause)];
    let submit = || {
        dtl_env(
            &[
                "sweep",
                spec,
                "--out",
                cluster.to_str().unwrap(),
                "--backend",
                "slurm",
                "--resume",
            ],
            &env,
        )
    };
    let o = submit();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("(6 runs)"));
    let subs: serde_json::Value = serde_json::from_str(&read(&cluster.join("slurm.json"))).unwrap();
    let job = subs[0]["job_id"].as_str().unwrap().to_string();
    assert_eq!(subs[0]["runs"][4], "r004-dann-s0");

    // Cancel array task 4 (dann, seed 0) once it has saved a checkpoint.
    let ckpt = cluster.join("runs/.r004-dann-s0.partial/checkpoint.safetensors");
    wait_for("r004's first checkpoint", Duration::from_secs(300), || {
        ckpt.is_file()
    });
    sh("scancel", &[&format!("{job}_4")]);
    wait_for("the array to leave the queue", Duration::from_secs(300), || {
        sh("squeue", &["-h", "-j", &job]).trim().is_empty()
    });
    let s = status(&cluster);
    assert!(
        s.lines()
            .any(|l| l.starts_with("r004-dann-s0") && l.contains("interrupted")),
        "{s}"
    );
    assert!(s.contains("6 runs: 5 done, 1 interrupted"), "{s}");

    // Resubmitted: only the interrupted run, which continues from its checkpoint.
    let o = submit();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("(1 runs)"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    wait_for("the resubmitted run", Duration::from_secs(300), || {
        status(&cluster).contains("6 runs: 6 done")
    });
    let log = read(&cluster.join("runs/r004-dann-s0.log"));
    assert!(log.contains("from its checkpoint at epoch 1/1"), "{log}");

    // All done: the report, as the local backend made it.
    let o = submit();
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["runs.csv", "selection.json", "report.md"] {
        assert_eq!(read(&cluster.join(f)), read(&local.join(f)), "{f}");
    }
    assert_eq!(
        std::fs::read(cluster.join("runs/r004-dann-s0/model.safetensors")).unwrap(),
        std::fs::read(local.join("runs/r004-dann-s0/model.safetensors")).unwrap(),
        "the cancelled and resumed run ends as the uninterrupted one"
    );
}

/// Every sweep spec committed in `models/sweeps/` plans runs whose configs all pass the checks
/// (a dry run checks every run's config before printing its script): a renamed key or a bad
/// value in a published spec fails here, not hours into a sweep.
#[test]
fn every_committed_sweep_spec_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/sweeps");
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let spec = entry.unwrap().path();
        if spec.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = tmp.path().join(spec.file_stem().unwrap());
        let o = dtl(&[
            "sweep",
            spec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--backend",
            "slurm",
            "--dry-run",
        ]);
        assert!(o.status.success(), "{}: {}", spec.display(), stderr(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("#SBATCH --array=0-"),
            "{}",
            spec.display()
        );
        n += 1;
    }
    assert!(n >= 10, "{n} specs");
}
