//! `dtl sweep`: every run of a sweep spec ([`dtl_select::sweep`]) on this machine, `jobs` at a
//! time, each one a `dtl train` process of its own in `OUT/runs/<id>/` (threads divided between
//! them), then the selection report over the finished runs.
//!
//! A sweep survives being stopped: every run is checked before any starts, a run counts as
//! finished only once its `validation.json` (written last) exists, and `--resume` skips finished
//! runs, continues interrupted ones from their last checkpoint (`dtl train --resume`, the same
//! model as an uninterrupted run) and starts failed ones again. `runs.csv` is rewritten after
//! every run.
//!
//! Files in `OUT`: `spec.toml` (the spec as given), `runs/<id>.toml` (each run's full config),
//! `runs/<id>/` (the run's `config.toml`, `model.safetensors`, `metrics.json`,
//! `validation.json`), `runs/<id>.log` (its output), `runs.csv`, `selection.json`, `report.md`,
//! `selection.svg` and `selection.png`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};

use dtl_select::selection::{self, RunRecord, Selection};
use dtl_select::sweep::{value_text, PlannedRun, SweepSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::{Assignment, RunConfig};
use crate::validation::{read_report, ValidationReport};
use crate::{io_err, Error, Result};

/// How `dtl sweep` runs.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    /// Runs at a time.
    pub jobs: usize,
    /// Continue the sweep in the output directory: finished runs are kept.
    pub resume: bool,
    /// Data directory for every run (else each run's own setting).
    pub data_dir: Option<PathBuf>,
    /// The `dtl` executable that trains each run.
    pub exe: PathBuf,
    /// Draw a progress bar.
    pub progress: bool,
}

/// What a sweep did.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    /// Runs in the spec.
    pub planned: usize,
    /// Runs trained now.
    pub trained: usize,
    /// Runs found finished (with `--resume`).
    pub reused: usize,
    /// Runs that failed, with the end of their log.
    pub failed: Vec<(String, String)>,
    /// The selection report over the finished runs.
    pub selection: Option<Selection>,
}

/// A planned run with its full config and where it goes.
struct Job {
    run: PlannedRun,
    config: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    dtl_core::write_atomic(path, bytes).map_err(io_err(path))
}

/// Whether the run in `dir` finished (its validation report, written last, is there).
fn finished(dir: &Path) -> bool {
    dir.join("validation.json").is_file() && dir.join("metrics.json").is_file()
}

/// Runs the sweep `spec` into `out`.
pub fn run_sweep(spec: &Path, out: &Path, opts: &SweepOptions) -> Result<SweepOutcome> {
    let text = std::fs::read_to_string(spec).map_err(io_err(spec))?;
    let parsed = SweepSpec::from_toml(&text, &spec.display().to_string())?;
    let planned = parsed.expand()?;
    let runs_dir = out.join("runs");
    // Every run's config is checked before anything is written or trained.
    let mut jobs = Vec::new();
    for run in &planned {
        let mut sets: Vec<Assignment> = run
            .assignments
            .iter()
            .map(|(k, v)| Assignment {
                key: k.clone(),
                value: v.clone(),
                origin: format!("sweep run {}", run.id),
            })
            .collect();
        sets.push(Assignment {
            key: "train.validate".into(),
            value: dtl_core::config::Value::Boolean(true),
            origin: "dtl sweep".into(),
        });
        if let Some(d) = &opts.data_dir {
            sets.push(Assignment {
                key: "data.data_dir".into(),
                value: dtl_core::config::Value::String(d.to_string_lossy().into_owned()),
                origin: "--data-dir".into(),
            });
        }
        let cfg = RunConfig::load_tree(parsed.base.clone(), Some(spec), &sets)?;
        cfg.check().map_err(|e| Error::Config {
            field: format!("run {}", run.id),
            message: e.to_string(),
        })?;
        jobs.push((run.clone(), cfg));
    }
    let spec_copy = out.join("spec.toml");
    if runs_dir.exists() {
        if !opts.resume {
            return Err(Error::Output {
                path: out.to_path_buf(),
                message: "holds a sweep; pass --resume to continue it, or choose another --out".into(),
            });
        }
        let before = std::fs::read_to_string(&spec_copy).map_err(io_err(&spec_copy))?;
        if before != text {
            return Err(Error::Output {
                path: out.to_path_buf(),
                message: format!(
                    "its sweep was started from another spec ({} differs from {}); resume with the same spec",
                    spec.display(),
                    spec_copy.display()
                ),
            });
        }
    }
    std::fs::create_dir_all(&runs_dir).map_err(io_err(&runs_dir))?;
    write(&spec_copy, text.as_bytes())?;
    let mut todo = Vec::new();
    let mut reused = 0;
    let mut all = Vec::new();
    for (run, cfg) in jobs {
        let job = Job {
            config: runs_dir.join(format!("{}.toml", run.id)),
            dir: runs_dir.join(&run.id),
            log: runs_dir.join(format!("{}.log", run.id)),
            run,
        };
        write(&job.config, cfg.to_toml().as_bytes())?;
        // A run whose commit was cut short is finished once its commit is.
        crate::rundir::RunDir::new(&job.dir)?.recover()?;
        if finished(&job.dir) {
            reused += 1;
        } else {
            todo.push(all.len());
        }
        all.push(job);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs_n = opts.jobs.max(1);
    let threads = (cores / jobs_n).max(1);
    tracing::info!(
        "sweep {}: {} runs ({} finished before), {} at a time with {} threads each",
        spec.display(),
        all.len(),
        reused,
        jobs_n,
        threads
    );
    let bar = if opts.progress {
        ProgressBar::new(all.len() as u64)
    } else {
        ProgressBar::with_draw_target(Some(all.len() as u64), ProgressDrawTarget::hidden())
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} runs [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(reused as u64);
    let queue = Mutex::new(todo.into_iter().rev().collect::<Vec<usize>>());
    let (tx, rx) = mpsc::channel::<(usize, std::result::Result<(), String>)>();
    let mut failed = Vec::new();
    let mut trained = 0;
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..jobs_n {
            let tx = tx.clone();
            let (queue, all, exe) = (&queue, &all, &opts.exe);
            scope.spawn(move || loop {
                let Some(i) = queue.lock().expect("queue").pop() else {
                    break;
                };
                let r = train_one(&all[i], exe, threads);
                if tx.send((i, r)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for (i, r) in rx {
            let job = &all[i];
            match r {
                Ok(()) => {
                    trained += 1;
                    bar.set_message(job.run.id.clone());
                }
                Err(e) => {
                    tracing::warn!("run {} failed: {e}", job.run.id);
                    failed.push((job.run.id.clone(), e));
                }
            }
            bar.inc(1);
            write_table(&all, out)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let (records, _) = write_table(&all, out)?;
    let names = dtl_select::validators::names();
    let selection = selection::select(&records, &names);
    if let Some(sel) = &selection {
        let json = serde_json::to_string_pretty(sel).expect("selections serialise");
        write(&out.join("selection.json"), json.as_bytes())?;
        let title = format!("Label-free selection: {}", spec.display());
        write(
            &out.join("report.md"),
            selection::markdown(sel, &title).as_bytes(),
        )?;
        let svg = selection::figure_svg(&records, sel);
        write(&out.join("selection.svg"), svg.as_bytes())?;
        match crate::figure::svg_to_png(&svg, 2.0) {
            Ok(png) => write(&out.join("selection.png"), &png)?,
            Err(e) => tracing::warn!("selection.png not drawn: {e}"),
        }
    }
    Ok(SweepOutcome {
        planned: all.len(),
        trained,
        reused,
        failed,
        selection,
    })
}

/// Trains one run in a `dtl train` process, its output in the run's log.
fn train_one(job: &Job, exe: &Path, threads: usize) -> std::result::Result<(), String> {
    let log = std::fs::File::create(&job.log).map_err(|e| format!("{}: {e}", job.log.display()))?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("train");
    if crate::experiment::interrupted(&job.dir) {
        // A run killed with the sweep continues from its last checkpoint.
        cmd.arg("--resume").arg(&job.dir);
    } else {
        cmd.arg("--config")
            .arg(&job.config)
            .arg("--out")
            .arg(&job.dir)
            .arg("--overwrite");
    }
    let status = cmd
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .status()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    if status.success() && finished(&job.dir) {
        Ok(())
    } else {
        let text = std::fs::read_to_string(&job.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        Err(format!(
            "{status}; {}: {}",
            job.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A finished run's accuracies from its `metrics.json`: (source test, target test).
fn accuracies(dir: &Path) -> Result<(f64, f64)> {
    let path = dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let m: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let acc = |k: &str| {
        m[k]["accuracy"].as_f64().ok_or_else(|| Error::ConfigFile {
            path: path.clone(),
            message: format!("no {k}.accuracy"),
        })
    };
    Ok((acc("source_test")?, acc("target_test")?))
}

/// Writes `runs.csv` from the finished runs (one row each, the target accuracy last and apart)
/// and returns the selection's records.
fn write_table(all: &[Job], out: &Path) -> Result<(Vec<RunRecord>, usize)> {
    let names = dtl_select::validators::names();
    let mut keys: Vec<String> = Vec::new();
    for j in all {
        for (k, _) in &j.run.assignments {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
    }
    let mut header: Vec<String> = vec!["id".into()];
    header.extend(keys.iter().cloned());
    header.extend(names.iter().map(|n| n.to_string()));
    header.extend(
        [
            "iwcv_ess",
            "dev_ess",
            "target_max_class_share",
            "source_test_accuracy",
        ]
        .map(String::from),
    );
    // Reported apart: never read by a validator or by the choice.
    header.push("target_test_accuracy".into());
    let mut lines = vec![header.join(",")];
    let mut records = Vec::new();
    for j in all {
        if !finished(&j.dir) {
            continue;
        }
        let report: ValidationReport = read_report(&j.dir)?;
        let (source_acc, target_acc) = accuracies(&j.dir)?;
        let settings: BTreeMap<String, String> = j
            .run
            .assignments
            .iter()
            .map(|(k, v)| (k.clone(), value_text(v)))
            .collect();
        let mut row = vec![csv_field(&j.run.id)];
        row.extend(
            keys.iter()
                .map(|k| csv_field(settings.get(k).map_or("", String::as_str))),
        );
        for n in &names {
            row.push(
                report
                    .scores
                    .get(*n)
                    .map_or(String::new(), |s| format!("{}", s.value)),
            );
        }
        for n in ["iwcv", "dev"] {
            row.push(
                report
                    .scores
                    .get(n)
                    .and_then(|s| s.ess)
                    .map_or(String::new(), |e| format!("{e:.1}")),
            );
        }
        row.push(format!("{}", report.target_max_class_share));
        row.push(format!("{source_acc}"));
        row.push(format!("{target_acc}"));
        lines.push(row.join(","));
        records.push(RunRecord {
            id: j.run.id.clone(),
            settings,
            scores: report
                .scores
                .iter()
                .map(|(k, s)| (k.clone(), (s.value, s.reliable)))
                .collect(),
            target_accuracy: target_acc,
            target_max_class_share: report.target_max_class_share,
        });
    }
    let n = records.len();
    write(&out.join("runs.csv"), (lines.join("\n") + "\n").as_bytes())?;
    Ok((records, n))
}
