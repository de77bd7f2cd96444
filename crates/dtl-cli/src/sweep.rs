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
    /// Where the runs train: here, or as a Slurm job array.
    pub backend: Backend,
}

/// Where a sweep's runs train.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Backend {
    /// On this machine, `jobs` at a time (the default).
    #[default]
    Local,
    /// As one Slurm job array (one array task per unfinished run), submitted with `sbatch`.
    Slurm(SlurmOptions),
}

/// `--backend slurm`'s settings; each overrides the spec's `[slurm]` value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time`.
    pub time: Option<String>,
    /// `--cpus-per-run`.
    pub cpus_per_run: Option<usize>,
    /// `--gpus-per-run`.
    pub gpus_per_run: Option<usize>,
    /// Print the job script instead of submitting it (nothing is written).
    pub dry_run: bool,
}

/// A job array submitted for a sweep, as `OUT/slurm.json` records it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Submission {
    /// Slurm's job id of the array.
    pub job_id: String,
    /// The job script, relative to the sweep directory.
    pub script: String,
    /// The run of each array task, by task index.
    pub runs: Vec<String>,
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
    /// The selection report over the finished runs (`None` while runs are queued on Slurm).
    pub selection: Option<Selection>,
    /// `--backend slurm`: the job array submitted now (`None`: nothing left to submit).
    pub submitted: Option<Submission>,
    /// `--backend slurm`: runs still queued or running from earlier submissions.
    pub queued: usize,
    /// `--dry-run`: the job script that would be submitted.
    pub script: Option<String>,
}

/// A planned run with its full config and where it goes.
struct Job {
    run: PlannedRun,
    config: PathBuf,
    dir: PathBuf,
    log: PathBuf,
}

impl Job {
    /// The files of `run` under the sweep's `runs_dir`.
    fn of(runs_dir: &Path, run: PlannedRun) -> Self {
        Self {
            config: runs_dir.join(format!("{}.toml", run.id)),
            dir: runs_dir.join(&run.id),
            log: runs_dir.join(format!("{}.log", run.id)),
            run,
        }
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    dtl_core::write_atomic(path, bytes).map_err(io_err(path))
}

/// Finishes or undoes an interrupted commit of the run in `dir` ([`crate::rundir::RunDir::recover`])
/// unless another process is writing that run (a Slurm task, a second sweep): its commit is its
/// own to finish.
fn recover_unless_busy(dir: &Path) -> Result<()> {
    let rd = crate::rundir::RunDir::new(dir)?;
    match rd.lock() {
        Ok(_held) => rd.recover(),
        Err(e) => {
            tracing::info!("{}: left alone ({e})", dir.display());
            Ok(())
        }
    }
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
    if let Backend::Slurm(so) = &opts.backend {
        if so.dry_run {
            let ids: Vec<String> = jobs
                .iter()
                .map(|(r, _)| r.id.clone())
                .filter(|id| !finished(&runs_dir.join(id)))
                .collect();
            let script = job_script(out, &opts.exe, &ids, &resources(&parsed.slurm, so), "DRY-RUN")?;
            return Ok(SweepOutcome {
                planned: jobs.len(),
                trained: 0,
                reused: jobs.len() - ids.len(),
                failed: Vec::new(),
                selection: None,
                submitted: None,
                queued: 0,
                script: Some(script),
            });
        }
    }
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
        let job = Job::of(&runs_dir, run);
        write(&job.config, cfg.to_toml().as_bytes())?;
        // A run whose commit was cut short is finished once its commit is.
        recover_unless_busy(&job.dir)?;
        if finished(&job.dir) {
            reused += 1;
        } else {
            todo.push(all.len());
        }
        all.push(job);
    }
    if let Backend::Slurm(so) = &opts.backend {
        let active = active_runs(out)?;
        let submit: Vec<String> = todo
            .iter()
            .map(|&i| all[i].run.id.clone())
            .filter(|id| !active.contains_key(id))
            .collect();
        let queued = todo.len() - submit.len();
        if !todo.is_empty() {
            let submitted = if submit.is_empty() {
                None
            } else {
                Some(submit_array(
                    out,
                    &opts.exe,
                    &submit,
                    &resources(&parsed.slurm, so),
                )?)
            };
            return Ok(SweepOutcome {
                planned: all.len(),
                trained: 0,
                reused,
                failed: Vec::new(),
                selection: None,
                submitted,
                queued,
                script: None,
            });
        }
        // Every run is finished: the report, as a local sweep makes it.
        let (records, _) = write_table(&all, out)?;
        return Ok(SweepOutcome {
            planned: all.len(),
            trained: 0,
            reused,
            failed: Vec::new(),
            selection: write_report(&records, out, spec)?,
            submitted: None,
            queued: 0,
            script: None,
        });
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
    let selection = write_report(&records, out, spec)?;
    Ok(SweepOutcome {
        planned: all.len(),
        trained,
        reused,
        failed,
        selection,
        submitted: None,
        queued: 0,
        script: None,
    })
}

/// Writes `selection.json`, `report.md` and the selection figure for the finished runs.
fn write_report(records: &[RunRecord], out: &Path, spec: &Path) -> Result<Option<Selection>> {
    let names = dtl_select::validators::names();
    let selection = selection::select(records, &names);
    if let Some(sel) = &selection {
        let json = serde_json::to_string_pretty(sel).expect("selections serialise");
        write(&out.join("selection.json"), json.as_bytes())?;
        let title = format!("Label-free selection: {}", spec.display());
        write(
            &out.join("report.md"),
            selection::markdown(sel, &title).as_bytes(),
        )?;
        let svg = selection::figure_svg(records, sel);
        write(&out.join("selection.svg"), svg.as_bytes())?;
        match crate::figure::svg_to_png(&svg, 2.0) {
            Ok(png) => write(&out.join("selection.png"), &png)?,
            Err(e) => tracing::warn!("selection.png not drawn: {e}"),
        }
    }
    Ok(selection)
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

/// A finished run's accuracies from its `metrics.json`: (source test, target test, target test
/// size; 0 when not recorded).
fn accuracies(dir: &Path) -> Result<(f64, f64, usize)> {
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
    let n = m["target_test"]["n"].as_u64().unwrap_or(0) as usize;
    Ok((acc("source_test")?, acc("target_test")?, n))
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
        let (source_acc, target_acc, target_n) = accuracies(&j.dir)?;
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
            target_n,
        });
    }
    let n = records.len();
    write(&out.join("runs.csv"), (lines.join("\n") + "\n").as_bytes())?;
    Ok((records, n))
}

// ---------------------------------------------------------------------------------------------
// The Slurm backend.

/// The resources of each run: the flags over the spec's `[slurm]`.
fn resources(
    spec: &dtl_select::sweep::SlurmResources,
    o: &SlurmOptions,
) -> dtl_select::sweep::SlurmResources {
    dtl_select::sweep::SlurmResources {
        partition: o.partition.clone().or_else(|| spec.partition.clone()),
        time: o.time.clone().or_else(|| spec.time.clone()),
        cpus_per_run: o.cpus_per_run.or(spec.cpus_per_run),
        gpus_per_run: o.gpus_per_run.or(spec.gpus_per_run),
        mem: spec.mem.clone(),
    }
}

/// `s` quoted for the shell (single quotes; a single quote inside closed, escaped, reopened).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A directive value must be one word of printable characters: a newline would end the
/// `#SBATCH` line and start a command.
fn directive(flag: &str, v: &str) -> Result<String> {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::Config {
            field: flag.into(),
            message: format!("`{v}` is not a Slurm value (one word, no spaces)"),
        });
    }
    Ok(format!("#SBATCH --{flag}={v}\n"))
}

/// The job-array script for `ids`: one array task per run, each `dtl sweep-task` on its run
/// directory (paths absolute, since the tasks start on other nodes); `stamp` names it.
fn job_script(
    out: &Path,
    exe: &Path,
    ids: &[String],
    r: &dtl_select::sweep::SlurmResources,
    stamp: &str,
) -> Result<String> {
    let abs = |p: &Path| -> Result<PathBuf> {
        if p.is_absolute() {
            Ok(p.to_path_buf())
        } else {
            Ok(std::env::current_dir().map_err(io_err(p))?.join(p))
        }
    };
    let (out, exe) = (abs(out)?, abs(exe)?);
    let cpus = r.cpus_per_run.unwrap_or(1).max(1);
    let mut s = format!(
        "#!/bin/bash\n# dtl sweep {:?}: {} run(s) as one job array, written by `dtl sweep --backend slurm` ({stamp}),\n# submitted as `sbatch --parsable --output=OUT/slurm/%A_%a.out SCRIPT`.\n",
        out,
        ids.len()
    );
    s.push_str("#SBATCH --job-name=dtl-sweep\n");
    s.push_str(&format!("#SBATCH --array=0-{}\n", ids.len().saturating_sub(1)));
    // The tasks' own output goes to `OUT/slurm/%A_%a.out`, given to sbatch on its command line
    // ([`output_flag`]): a directive cannot hold a path with spaces.
    s.push_str(&format!("#SBATCH --cpus-per-task={cpus}\n"));
    if let Some(g) = r.gpus_per_run.filter(|&g| g > 0) {
        s.push_str(&format!("#SBATCH --gpus-per-task={g}\n"));
    }
    for (flag, v) in [("partition", &r.partition), ("time", &r.time), ("mem", &r.mem)] {
        if let Some(v) = v {
            s.push_str(&directive(flag, v)?);
        }
    }
    s.push_str("set -euo pipefail\nRUNS=(");
    s.push_str(&ids.iter().map(|id| shell_quote(id)).collect::<Vec<_>>().join(" "));
    s.push_str(")\n");
    s.push_str(&format!(
        "exec {} sweep-task --out {} \"${{RUNS[$SLURM_ARRAY_TASK_ID]}}\"\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&out.to_string_lossy())
    ));
    Ok(s)
}

/// sbatch's `--output` for the sweep in `out`: each array task's own output in
/// `OUT/slurm/<job>_<task>.out`.
fn output_flag(out: &Path) -> std::ffi::OsString {
    let mut flag = std::ffi::OsString::from("--output=");
    flag.push(out.join("slurm").join("%A_%a.out"));
    flag
}

/// Runs `cmd` and returns its standard output; a missing program or a failure is an error
/// naming the command and what it printed.
fn slurm_command(cmd: &mut Command) -> Result<String> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let o = cmd.output().map_err(|e| Error::Output {
        path: PathBuf::from(&name),
        message: format!(
            "cannot run `{name}` ({e}): --backend slurm needs Slurm's commands on this machine's PATH"
        ),
    })?;
    if !o.status.success() {
        return Err(Error::Output {
            path: PathBuf::from(&name),
            message: format!(
                "failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The sweep's submissions so far (`OUT/slurm.json`).
fn submissions(out: &Path) -> Result<Vec<Submission>> {
    let path = out.join("slurm.json");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
        path,
        message: e.to_string(),
    })
}

/// Writes the job script for `ids`, submits it with `sbatch` and records the submission.
fn submit_array(
    out: &Path,
    exe: &Path,
    ids: &[String],
    r: &dtl_select::sweep::SlurmResources,
) -> Result<Submission> {
    let mut all = submissions(out)?;
    let dir = out.join("slurm");
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let name = format!("submit-{}.sh", all.len() + 1);
    let script = job_script(out, exe, ids, r, &format!("submission {}", all.len() + 1))?;
    let path = dir.join(&name);
    write(&path, script.as_bytes())?;
    let abs_out = std::fs::canonicalize(out).map_err(io_err(out))?;
    let stdout = slurm_command(
        Command::new("sbatch")
            .arg("--parsable")
            .arg(output_flag(&abs_out))
            .arg(&path),
    )?;
    // `--parsable` prints `JOBID` or `JOBID;CLUSTER`.
    let job_id = stdout.trim().split(';').next().unwrap_or_default().to_string();
    if job_id.is_empty() || !job_id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Output {
            path: PathBuf::from("sbatch"),
            message: format!("printed `{}`, not a job id", stdout.trim()),
        });
    }
    let sub = Submission {
        job_id,
        script: format!("slurm/{name}"),
        runs: ids.to_vec(),
    };
    all.push(sub.clone());
    let json = serde_json::to_string_pretty(&all).expect("submissions serialise");
    write(&out.join("slurm.json"), json.as_bytes())?;
    tracing::info!("submitted job {} ({} runs)", sub.job_id, ids.len());
    Ok(sub)
}

/// The runs of the sweep's submissions that Slurm still has queued or running, with their
/// state (`PENDING`, `RUNNING`, ...), from `squeue`.
fn active_runs(out: &Path) -> Result<BTreeMap<String, String>> {
    let subs = submissions(out)?;
    let mut active = BTreeMap::new();
    if subs.is_empty() {
        return Ok(active);
    }
    let ids: Vec<&str> = subs.iter().map(|s| s.job_id.as_str()).collect();
    // A job that left the queue long ago is unknown to squeue: ask for all of the user's jobs
    // and keep the sweep's.
    let text = slurm_command(Command::new("squeue").args(["-h", "-r", "-o", "%i|%T"]))?;
    for line in text.lines() {
        let Some((task, state)) = line.trim().split_once('|') else {
            continue;
        };
        let Some((job, index)) = task.split_once('_') else {
            continue;
        };
        let Some(sub) = subs.iter().find(|s| s.job_id == job) else {
            continue;
        };
        if let Some(run) = index.parse::<usize>().ok().and_then(|i| sub.runs.get(i)) {
            active.insert(run.clone(), state.to_string());
        }
    }
    tracing::debug!("active runs of jobs {ids:?}: {active:?}");
    Ok(active)
}

/// The runs of the sweep in `out`, from the spec it recorded (`OUT/spec.toml`).
fn planned_runs(out: &Path) -> Result<Vec<PlannedRun>> {
    let spec = out.join("spec.toml");
    let text = std::fs::read_to_string(&spec).map_err(io_err(&spec))?;
    SweepSpec::from_toml(&text, &spec.display().to_string())?
        .expand()
        .map_err(Error::from)
}

/// One array task: trains run `id` of the sweep in `out` (continuing it from its checkpoint if
/// it was interrupted), with `SLURM_CPUS_PER_TASK` threads; `exe` is the `dtl` executable.
pub fn run_task(out: &Path, id: &str, exe: &Path) -> Result<()> {
    let run = planned_runs(out)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Error::Config {
            field: "run".into(),
            message: format!("`{id}` is not a run of the sweep in {}", out.display()),
        })?;
    let job = Job::of(&out.join("runs"), run);
    recover_unless_busy(&job.dir)?;
    if finished(&job.dir) {
        return Ok(());
    }
    let threads = std::env::var("SLURM_CPUS_PER_TASK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    train_one(&job, exe, threads).map_err(|message| Error::Output {
        path: job.dir.clone(),
        message,
    })
}

/// A run's state as `dtl sweep --status` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunStatus {
    /// The run.
    pub id: String,
    /// `done`, `pending`, `running` (Slurm's other states in lower case), `interrupted` (stopped
    /// with a checkpoint: `--resume` continues it), `failed` or `not started`.
    pub state: String,
    /// For a failed run, the last line of its log.
    pub detail: Option<String>,
}

/// The state of every run of the sweep in `out`: its run directories, and `squeue` for the
/// runs it submitted to Slurm.
pub fn sweep_status(out: &Path) -> Result<Vec<RunStatus>> {
    let planned = planned_runs(out)?;
    let active = active_runs(out)?;
    let runs_dir = out.join("runs");
    Ok(planned
        .into_iter()
        .map(|run| {
            let job = Job::of(&runs_dir, run);
            let id = job.run.id.clone();
            let (state, detail) = if finished(&job.dir) {
                ("done".to_string(), None)
            } else if let Some(state) = active.get(&id) {
                (state.to_lowercase(), None)
            } else if crate::experiment::interrupted(&job.dir) {
                ("interrupted".to_string(), None)
            } else if let Ok(log) = std::fs::read_to_string(&job.log) {
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or_default();
                ("failed".to_string(), Some(last.trim().to_string()))
            } else {
                ("not started".to_string(), None)
            };
            RunStatus { id, state, detail }
        })
        .collect())
}
