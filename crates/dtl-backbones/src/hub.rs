//! Where pretrained weights come from: a file on disk, or a file of a Hugging Face hub repository
//! (`hf:ORG/NAME[@REVISION][/FILE]`), looked up in the hub's local cache first and downloaded
//! through [`hf_hub`] otherwise.
//!
//! The cache is the one the Python `huggingface_hub` and [`hf_hub`] share:
//! `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, laid out as
//! `models--ORG--NAME/refs/REVISION` (a file holding the commit hash) and
//! `models--ORG--NAME/snapshots/COMMIT/FILE`. With `HF_HUB_OFFLINE=1` nothing is downloaded: a file
//! missing from the cache is an error that names the repository, revision and file, and how to
//! provide them.
//!
//! ```
//! use dtl_backbones::hub::Pretrained;
//!
//! let p: Pretrained = "hf:timm/resnet18.a1_in1k@main/model.safetensors".parse()?;
//! assert_eq!(
//!     p,
//!     Pretrained::Hub {
//!         repo: "timm/resnet18.a1_in1k".into(),
//!         revision: "main".into(),
//!         file: "model.safetensors".into(),
//!     }
//! );
//! assert_eq!("hf:timm/resnet18.a1_in1k".parse::<Pretrained>()?.to_string(), "hf:timm/resnet18.a1_in1k@main/model.safetensors");
//! assert_eq!("runs/m2u/model.safetensors".parse::<Pretrained>()?, Pretrained::Path("runs/m2u/model.safetensors".into()));
//! # Ok::<(), dtl_backbones::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// The file a hub reference names when it names none.
pub const DEFAULT_FILE: &str = "model.safetensors";
/// The revision a hub reference names when it names none.
pub const DEFAULT_REVISION: &str = "main";

/// A source of pretrained weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pretrained {
    /// A safetensors file on disk.
    Path(PathBuf),
    /// A file of a model repository on the Hugging Face hub.
    Hub {
        /// `ORG/NAME`.
        repo: String,
        /// Branch, tag or commit hash.
        revision: String,
        /// Path of the file inside the repository.
        file: String,
    },
}

fn bad_spec(spec: &str, why: &str) -> Error {
    Error::Core(dtl_core::Error::config(
        "pretrained",
        format!("`{spec}`: {why} (expected hf:ORG/NAME[@REVISION][/FILE] or a path)"),
    ))
}

impl FromStr for Pretrained {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        let Some(rest) = spec.strip_prefix("hf:") else {
            if spec.is_empty() {
                return Err(bad_spec(spec, "empty"));
            }
            return Ok(Pretrained::Path(PathBuf::from(spec)));
        };
        let mut parts = rest.splitn(3, '/');
        let org = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let file = parts.next().unwrap_or(DEFAULT_FILE);
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, r),
            None => (name_rev, DEFAULT_REVISION),
        };
        if !valid_repo_part(org) || !valid_repo_part(name) {
            return Err(bad_spec(
                spec,
                "the repository must be ORG/NAME, each of letters, digits, `-`, `_` and `.`, not starting or ending with `-` or `.` and without `--` or `..`",
            ));
        }
        if !valid_revision(revision) {
            return Err(bad_spec(
                spec,
                "the revision must be a 40-digit commit hash or a branch or tag name (letters, digits, `-`, `_`, `.`, no `..`)",
            ));
        }
        if !valid_file(file) {
            return Err(bad_spec(
                spec,
                "the file must be a relative path inside the repository",
            ));
        }
        Ok(Pretrained::Hub {
            repo: format!("{org}/{name}"),
            revision: revision.into(),
            file: file.into(),
        })
    }
}

impl fmt::Display for Pretrained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pretrained::Path(p) => write!(f, "{}", p.display()),
            Pretrained::Hub { repo, revision, file } => write!(f, "hf:{repo}@{revision}/{file}"),
        }
    }
}

/// The hub cache directory: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    hf_hub::Cache::default().path().clone()
}

/// Whether `HF_HUB_OFFLINE` asks for no network (`1`, `true`, `yes`, `on`).
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// Whether `s` is one half of a hub repository id (`ORG` or `NAME`), as the hub allows them:
/// letters, digits, `-`, `_`, `.`, not starting or ending with `-` or `.`, no `--` or `..` (so
/// that no id can name a path outside the cache).
fn valid_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['-', '.'])
        && !s.ends_with(['-', '.'])
        && !s.contains("--")
        && !s.contains("..")
}

/// Whether `file` is a relative path inside a repository (no empty, `.` or `..` component).
fn valid_file(file: &str) -> bool {
    !file.is_empty() && !file.split('/').any(|c| c.is_empty() || c == "." || c == "..")
}

/// Whether `s` is a commit hash (40 hex digits).
fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether `s` is a revision: a commit hash, or a branch or tag name of one path component.
fn valid_revision(s: &str) -> bool {
    is_commit(s)
        || (!s.is_empty()
            && s.len() <= 255
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !s.starts_with('.')
            && !s.contains(".."))
}

/// A file of `repo` at `revision` in the cache at `cache`, if there: through `refs/REVISION` for a
/// branch or tag, or directly `snapshots/COMMIT` for a commit hash. A repository id or revision
/// that could leave the cache, and a `refs` file that holds anything but a commit hash, are
/// never followed (`None`, with a warning naming the file).
pub fn cached_file(cache: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let (org, name) = repo.split_once('/')?;
    if !valid_repo_part(org) || !valid_repo_part(name) || !valid_revision(revision) {
        tracing::warn!("hub cache: `{repo}@{revision}` is not a valid repository and revision");
        return None;
    }
    if !valid_file(file) {
        return None;
    }
    let dir = cache.join(format!("models--{org}--{name}"));
    let refs = dir.join("refs").join(revision);
    // A refs file holds 40 hex digits: read no more than a little beyond, and only a file.
    let read_ref = |p: &Path| -> std::io::Result<String> {
        use std::io::Read;
        if !p.is_file() {
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "not a file"));
        }
        let mut s = String::new();
        std::fs::File::open(p)?.take(256).read_to_string(&mut s)?;
        Ok(s)
    };
    let commit = match read_ref(&refs) {
        Ok(c) if is_commit(c.trim()) => c.trim().to_string(),
        Ok(c) => {
            tracing::warn!(
                "hub cache: {} holds `{}`, not a commit hash: ignored",
                refs.display(),
                c.trim().chars().take(80).collect::<String>()
            );
            return None;
        }
        Err(_) if is_commit(revision) => revision.to_string(),
        Err(_) => return None,
    };
    let path = dir.join("snapshots").join(commit).join(file);
    if !path.is_file() {
        return None;
    }
    // Snapshot files are links into the repository's `blobs`; one that resolves elsewhere is
    // not the cache's.
    match (path.canonicalize(), dir.canonicalize()) {
        (Ok(real), Ok(root)) if real.starts_with(&root) => Some(path),
        _ => {
            tracing::warn!(
                "hub cache: {} resolves outside {}: ignored",
                path.display(),
                dir.display()
            );
            None
        }
    }
}

impl Pretrained {
    /// The local file holding the weights: the path itself (which must exist), or the hub file from
    /// the cache, downloaded into it first when missing and `HF_HUB_OFFLINE` is not set.
    pub fn resolve(&self) -> Result<PathBuf, Error> {
        match self {
            Pretrained::Path(p) => {
                if p.is_file() {
                    Ok(p.clone())
                } else {
                    Err(Error::Checkpoint {
                        path: p.clone(),
                        message: "no such file (for weights on the hub, write hf:ORG/NAME[@REVISION][/FILE])"
                            .into(),
                    })
                }
            }
            Pretrained::Hub { repo, revision, file } => {
                let cache = hub_cache_dir();
                if let Some(path) = cached_file(&cache, repo, revision, file) {
                    tracing::info!("{self}: from the hub cache, {}", path.display());
                    return Ok(path);
                }
                let how = format!(
                    "download it where the hub is reachable (`huggingface-cli download {repo} {file} --revision {revision}`) \
                     and point HF_HOME or HF_HUB_CACHE at that cache, or pass the file's path instead"
                );
                if hub_offline() {
                    return Err(Error::Hub {
                        spec: self.to_string(),
                        message: format!(
                            "not in the hub cache {} and HF_HUB_OFFLINE is set; {how}",
                            cache.display()
                        ),
                    });
                }
                tracing::info!("{self}: downloading into {}", cache.display());
                let mut builder = hf_hub::api::sync::ApiBuilder::from_env()
                    .with_cache_dir(cache.clone())
                    .with_progress(false);
                if let Ok(token) = std::env::var("HF_TOKEN") {
                    builder = builder.with_token(Some(token));
                }
                let api = builder.build().map_err(|e| Error::Hub {
                    spec: self.to_string(),
                    message: e.to_string(),
                })?;
                let repo_h =
                    hf_hub::Repo::with_revision(repo.clone(), hf_hub::RepoType::Model, revision.clone());
                api.repo(repo_h).get(file).map_err(|e| Error::Hub {
                    spec: self.to_string(),
                    message: format!(
                        "not in the hub cache {} and the download failed ({e}); {how}",
                        cache.display()
                    ),
                })
            }
        }
    }
}
