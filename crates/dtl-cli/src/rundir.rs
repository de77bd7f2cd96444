//! A run directory that is consistent as a whole: a run builds in a staging directory beside its
//! output directory and replaces it only once complete.
//!
//! For `--out runs/m2u` the run writes `runs/.m2u.partial/` (its `config.toml` first, then
//! `checkpoint.safetensors` at every epoch end and every `--checkpoint-every` steps, then the
//! results) and commits by renames:
//!
//! 1. the checkpoint is removed: from here on the staging directory is *complete* (it holds
//!    `metrics.json` and no checkpoint);
//! 2. a previous run in `runs/m2u` (with `--overwrite`) is renamed to `runs/.m2u.replaced`;
//! 3. the staging directory is renamed to `runs/m2u`;
//! 4. `runs/.m2u.replaced` is removed.
//!
//! A kill between any two steps is repaired by [`RunDir::recover`] on the next start: a complete
//! staging directory is committed, an incomplete one leaves the previous run where it was. So a
//! kill, a data error, a full disk or a failed `--overwrite` never leave a new `config.toml`
//! beside an old model, and the previous run stays intact until the new one is whole. A run that
//! fails writes its error to `failed` in the staging directory (keeping its last checkpoint) and
//! is replaced by the next run without `--overwrite`; a killed one, which left a checkpoint, is
//! continued with `dtl train --resume` or started over with `--overwrite`.

use std::path::{Path, PathBuf};

use crate::{io_err, Error, Result};

/// The state file a run saves into its staging directory.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// The file a failed run leaves in its staging directory, holding the error.
pub const FAILED: &str = "failed";
/// Files a finished run directory may hold.
pub const FINISHED_FILES: [&str; 4] = [
    "config.toml",
    "metrics.json",
    "model.safetensors",
    "validation.json",
];

/// What a run directory's staging directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staged {
    /// No staging directory.
    Nothing,
    /// A run that was stopped (killed, or its machine went down) after saving a checkpoint.
    Interrupted,
    /// A run stopped before its first checkpoint: nothing worth keeping.
    Empty,
    /// A run that failed with this error.
    Failed(String),
    /// A complete run whose commit was interrupted.
    Complete,
}

/// The output directory of a run and the directories beside it that make its commit atomic.
#[derive(Debug, Clone)]
pub struct RunDir {
    out: PathBuf,
    staging: PathBuf,
    replaced: PathBuf,
    lock: PathBuf,
}

/// An exclusive claim on a run directory by one process ([`RunDir::lock`]): the operating
/// system's advisory lock on `.NAME.lock` beside it, released when this is dropped or the process
/// ends, however it ends.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunDir {
    /// The run directory `out` (which must name a directory, not `.` or `/`).
    pub fn new(out: &Path) -> Result<Self> {
        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| *n != "." && *n != "..")
            .ok_or_else(|| Error::Output {
                path: out.to_path_buf(),
                message: "name a directory of its own for the run (not `.`, `..` or a root)".into(),
            })?;
        let parent = out.parent().unwrap_or(Path::new(""));
        Ok(Self {
            out: out.to_path_buf(),
            staging: parent.join(format!(".{name}.partial")),
            replaced: parent.join(format!(".{name}.replaced")),
            lock: parent.join(format!(".{name}.lock")),
        })
    }

    /// Claims the run directory for this process, so that two processes never write one run (a
    /// sweep resubmitted while its task still runs, a second `dtl train --out` on the same
    /// directory): an error names the process that holds it.
    pub fn lock(&self) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        if let Some(parent) = self.lock.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock)
            .map_err(io_err(&self.lock))?;
        match file.try_lock() {
            Ok(()) => {
                // The holder's process id, for the message another process gets.
                file.set_len(0).map_err(io_err(&self.lock))?;
                file.rewind().map_err(io_err(&self.lock))?;
                write!(file, "{}", std::process::id()).map_err(io_err(&self.lock))?;
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                Err(Error::Output {
                    path: self.out.clone(),
                    message: format!(
                        "another dtl process (pid {}) is writing this run; wait for it or stop it ({} is its lock)",
                        pid.trim(),
                        self.lock.display()
                    ),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&self.lock)(e)),
        }
    }

    /// The output directory.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// The staging directory the run writes into.
    pub fn staging(&self) -> &Path {
        &self.staging
    }

    /// The checkpoint in the staging directory.
    pub fn checkpoint(&self) -> PathBuf {
        self.staging.join(CHECKPOINT)
    }

    /// Whether `out` holds a finished run.
    pub fn finished(&self) -> bool {
        self.out.join("metrics.json").is_file() && self.out.join("model.safetensors").is_file()
    }

    /// What the staging directory holds.
    pub fn staged(&self) -> Staged {
        if !self.staging.is_dir() {
            return Staged::Nothing;
        }
        let has = |f: &str| self.staging.join(f).is_file();
        if let Ok(message) = std::fs::read_to_string(self.staging.join(FAILED)) {
            Staged::Failed(message)
        } else if has(CHECKPOINT) {
            Staged::Interrupted
        } else if has("metrics.json") {
            Staged::Complete
        } else {
            Staged::Empty
        }
    }

    /// Finishes or undoes a commit that was interrupted (see the module documentation), and
    /// removes the temporary files of writes that were interrupted.
    pub fn recover(&self) -> Result<()> {
        if self.replaced.exists() {
            if !self.out.exists() {
                if self.staged() == Staged::Complete {
                    tracing::info!("finishing the interrupted commit of {}", self.out.display());
                    std::fs::rename(&self.staging, &self.out).map_err(io_err(&self.out))?;
                } else {
                    tracing::warn!(
                        "restoring {} (a replacement did not complete)",
                        self.out.display()
                    );
                    std::fs::rename(&self.replaced, &self.out).map_err(io_err(&self.out))?;
                }
            }
            if self.replaced.exists() {
                std::fs::remove_dir_all(&self.replaced).map_err(io_err(&self.replaced))?;
            }
        }
        if self.staged() == Staged::Complete {
            tracing::info!("finishing the interrupted commit of {}", self.out.display());
            self.commit()?;
        }
        if self.staging.is_dir() {
            remove_temporary_files(&self.staging)?;
        }
        Ok(())
    }

    /// Checks that a new run may build here: `out` must be absent, an empty directory, or (with
    /// `overwrite`) a finished run holding nothing but a run's files; an interrupted run needs
    /// `--resume` or `overwrite`. Then clears any other staging directory and creates a fresh
    /// one.
    pub fn begin(&self, overwrite: bool) -> Result<()> {
        self.recover()?;
        let refuse = |message: String| Error::Output {
            path: self.out.clone(),
            message,
        };
        if self.out.exists() {
            if !self.out.is_dir() {
                return Err(refuse("exists and is not a directory".into()));
            }
            let mut foreign = Vec::new();
            let mut previous = Vec::new();
            for entry in std::fs::read_dir(&self.out).map_err(io_err(&self.out))? {
                let name = entry
                    .map_err(io_err(&self.out))?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if FINISHED_FILES.contains(&name.as_str()) {
                    previous.push(name);
                } else {
                    foreign.push(name);
                }
            }
            foreign.sort();
            previous.sort();
            if !foreign.is_empty() {
                return Err(refuse(format!(
                    "holds files that are not a dtl run's ({}); choose another --out",
                    foreign.join(", ")
                )));
            }
            if !previous.is_empty() && !overwrite {
                return Err(refuse(format!(
                    "holds a previous run ({}); choose another --out or pass --overwrite",
                    previous.join(", ")
                )));
            }
        }
        match self.staged() {
            Staged::Interrupted if !overwrite => {
                return Err(refuse(format!(
                    "holds an interrupted run ({}): continue it with `dtl train --resume {}`, or start over with --overwrite",
                    self.staging.display(),
                    self.out.display()
                )))
            }
            Staged::Failed(e) => tracing::info!("replacing the failed run in {} ({})", self.staging.display(), e.trim()),
            Staged::Nothing => {}
            _ => tracing::info!("replacing {}", self.staging.display()),
        }
        if self.staging.exists() {
            std::fs::remove_dir_all(&self.staging).map_err(io_err(&self.staging))?;
        }
        std::fs::create_dir_all(&self.staging).map_err(io_err(&self.staging))
    }

    /// Records that the run failed with `error` (its checkpoint stays).
    pub fn mark_failed(&self, error: &str) {
        if let Err(e) = dtl_core::write_atomic(&self.staging.join(FAILED), format!("{error}\n").as_bytes()) {
            tracing::warn!("could not record the failure in {}: {e}", self.staging.display());
        }
    }

    /// Clears a failure mark before the run is continued.
    pub fn clear_failed(&self) -> Result<()> {
        let f = self.staging.join(FAILED);
        if f.exists() {
            std::fs::remove_file(&f).map_err(io_err(&f))?;
        }
        Ok(())
    }

    /// Replaces `out` with the complete staging directory (steps 1-4 of the module
    /// documentation).
    pub fn commit(&self) -> Result<()> {
        let ckpt = self.checkpoint();
        if ckpt.exists() {
            std::fs::remove_file(&ckpt).map_err(io_err(&ckpt))?;
        }
        if self.out.exists() {
            std::fs::rename(&self.out, &self.replaced).map_err(io_err(&self.out))?;
        }
        std::fs::rename(&self.staging, &self.out).map_err(io_err(&self.out))?;
        if self.replaced.exists() {
            std::fs::remove_dir_all(&self.replaced).map_err(io_err(&self.replaced))?;
        }
        Ok(())
    }
}

/// Removes the temporary files that [`dtl_core::write_atomic`] leaves when it is killed
/// (`.NAME.PID.partial`).
fn remove_temporary_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".partial") && entry.path().is_file() {
            tracing::info!(
                "removing {}, left by an interrupted write",
                entry.path().display()
            );
            std::fs::remove_file(entry.path()).map_err(io_err(dir))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, s: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, s).unwrap();
    }

    fn finished_run(dir: &Path, tag: &str) {
        for f in ["config.toml", "metrics.json", "model.safetensors"] {
            write(&dir.join(f), tag);
        }
    }

    #[test]
    fn every_interrupted_commit_ends_with_one_whole_run() {
        // Kill after each step of the commit of a new run over an old one: the run directory
        // always ends as the old run or the new one, never a mixture, and nothing is left beside.
        for killed_after in 0..=4 {
            let tmp = tempfile::tempdir().unwrap();
            let rd = RunDir::new(&tmp.path().join("run")).unwrap();
            finished_run(rd.out(), "old");
            finished_run(rd.staging(), "new");
            write(&rd.checkpoint(), "state");
            let steps: [&dyn Fn(); 4] = [
                &|| std::fs::remove_file(rd.checkpoint()).unwrap(),
                &|| std::fs::rename(rd.out(), &rd.replaced).unwrap(),
                &|| std::fs::rename(rd.staging(), rd.out()).unwrap(),
                &|| std::fs::remove_dir_all(&rd.replaced).unwrap(),
            ];
            for step in &steps[..killed_after] {
                step();
            }
            rd.recover().unwrap();
            let config = std::fs::read_to_string(rd.out().join("config.toml")).unwrap();
            let model = std::fs::read_to_string(rd.out().join("model.safetensors")).unwrap();
            assert_eq!(config, model, "killed after step {killed_after}");
            let expected = if killed_after == 0 { "old" } else { "new" };
            assert_eq!(config, expected, "killed after step {killed_after}");
            assert!(!rd.replaced.exists());
            let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
            let staging_left = killed_after == 0;
            assert_eq!(
                left.len(),
                1 + staging_left as usize,
                "killed after step {killed_after}"
            );
        }
    }

    /// A second claim on a run directory fails, naming the holder's process, until the first is
    /// released.
    #[test]
    fn one_process_at_a_time_writes_a_run() {
        let tmp = tempfile::tempdir().unwrap();
        let rd = RunDir::new(&tmp.path().join("nested").join("run")).unwrap();
        let held = rd.lock().unwrap();
        let err = rd.lock().unwrap_err().to_string();
        assert!(
            err.contains(&format!("another dtl process (pid {})", std::process::id())),
            "{err}"
        );
        drop(held);
        rd.lock().unwrap();
    }

    #[test]
    fn begin_refuses_what_it_must_not_replace() {
        let tmp = tempfile::tempdir().unwrap();
        let rd = RunDir::new(&tmp.path().join("run")).unwrap();
        rd.begin(false).unwrap();
        assert!(rd.staging().is_dir());
        // Killed after its first checkpoint: interrupted.
        write(&rd.checkpoint(), "state");
        write(&rd.staging().join(".checkpoint.safetensors.99.partial"), "half");
        let err = rd.begin(false).unwrap_err().to_string();
        assert!(err.contains("--resume") && err.contains("--overwrite"), "{err}");
        assert!(!rd.staging().join(".checkpoint.safetensors.99.partial").exists());
        // A failed run is replaced without --overwrite.
        rd.mark_failed("training diverged");
        assert_eq!(rd.staged(), Staged::Failed("training diverged\n".into()));
        rd.begin(false).unwrap();
        assert_eq!(rd.staged(), Staged::Empty);
        // A finished run needs --overwrite; files of something else are never replaced.
        finished_run(rd.out(), "old");
        assert!(rd.begin(false).unwrap_err().to_string().contains("--overwrite"));
        rd.begin(true).unwrap();
        write(&rd.out().join("notes.txt"), "mine");
        let err = rd.begin(true).unwrap_err().to_string();
        assert!(err.contains("notes.txt"), "{err}");
        assert!(RunDir::new(Path::new("/")).is_err());
    }
}
