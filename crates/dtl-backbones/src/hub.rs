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
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(org) || !ok(name) {
            return Err(bad_spec(spec, "the repository must be ORG/NAME"));
        }
        if revision.is_empty() || file.is_empty() || file.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(bad_spec(spec, "empty revision or file"));
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

/// A file of `repo` at `revision` in the cache at `cache`, if there: through `refs/REVISION` for a
/// branch or tag, or directly `snapshots/COMMIT` for a commit hash.
pub fn cached_file(cache: &Path, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let commit = match std::fs::read_to_string(dir.join("refs").join(revision)) {
        Ok(c) => c.trim().to_string(),
        Err(_) if revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit()) => {
            revision.to_string()
        }
        Err(_) => return None,
    };
    let path = dir.join("snapshots").join(commit).join(file);
    path.is_file().then_some(path)
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
