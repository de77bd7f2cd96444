//! The data directory and loading a domain's train and test splits from it.

use dtl_core::seed::Stream;
use std::path::{Path, PathBuf};

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{DomainId, FileSpec, OPTDIGITS_TRAIN_ROWS};
use crate::dataset::{Dataset, Placement};
use crate::formats::{decompress, parse_csv_digits, parse_idx_images, parse_idx_labels, parse_libsvm_digits};
use crate::{Error, Result};

/// Environment variable naming the data directory when no `--data-dir` is given.
pub const DATA_DIR_ENV: &str = "DTL_DATA_DIR";

/// Where dtl looks for data sets: `<dir>/mnist/`, `<dir>/usps/`, `<dir>/optdigits/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    path: PathBuf,
    origin: &'static str,
}

impl DataDir {
    /// Resolves the data directory: `flag` if given, else `$DTL_DATA_DIR`, else the per-user cache
    /// directory (`~/.cache/dtl/data` on Linux, `~/Library/Caches/dtl/data` on macOS).
    pub fn resolve(flag: Option<&Path>) -> Result<Self> {
        if let Some(p) = flag {
            return Ok(Self {
                path: p.to_path_buf(),
                origin: "--data-dir",
            });
        }
        if let Some(p) = std::env::var_os(DATA_DIR_ENV).filter(|p| !p.is_empty()) {
            return Ok(Self {
                path: PathBuf::from(p),
                origin: DATA_DIR_ENV,
            });
        }
        let cache = dirs::cache_dir().ok_or_else(|| Error::Config {
            field: "data-dir".into(),
            message: format!(
                "no per-user cache directory on this system: pass --data-dir or set {DATA_DIR_ENV}"
            ),
        })?;
        Ok(Self {
            path: cache.join("dtl").join("data"),
            origin: "the per-user cache directory",
        })
    }

    /// A data directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            origin: "the caller",
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the directory came from (`--data-dir`, `DTL_DATA_DIR`, ...), for messages.
    pub fn origin(&self) -> &'static str {
        self.origin
    }

    /// The folder of `domain`.
    pub fn domain_dir(&self, domain: DomainId) -> PathBuf {
        self.path.join(domain.as_str())
    }
}

/// A file a domain was read from, as recorded in run metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    /// Path on disk, or `bundled:<name>` for data compiled into dtl.
    pub path: String,
    /// sha256 of the file's bytes as stored.
    pub sha256: String,
}

/// How to load a domain.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Common canvas side (images become `1 x size x size`).
    pub image_size: usize,
    /// How images are placed on the canvas.
    pub placement: Placement,
    /// Keep at most this many training samples (a seeded random subset), e.g. ADDA's 2000 MNIST.
    pub train_size: Option<usize>,
    /// Seed of the subset choice (and of a folder's train / test split).
    pub seed: u64,
    /// Channels of the canvas for folder domains (1: luma, 3: RGB); `None`: 3 if the folder holds
    /// colour images, else 1. Built-in digit domains are always 1.
    pub channels: Option<usize>,
    /// Folder domains without `train/` and `test/`: share of each class held out for testing.
    pub test_fraction: f64,
    /// Folder domains: skip undecodable images with a warning instead of stopping.
    pub skip_bad_images: bool,
    /// Folder domains: how images of another size are brought to the canvas.
    pub fit: crate::images::Fit,
    /// Keep this share of each class's training samples (a seeded subset per class, one value
    /// per class in `[0, 1]`): a source with a skewed class composition, for prior shift.
    /// Applied before `train_size`; test splits are never changed.
    pub class_fractions: Option<Vec<f64>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            image_size: 28,
            placement: Placement::Fill,
            train_size: None,
            seed: 0,
            channels: None,
            test_fraction: 0.2,
            skip_bad_images: false,
            fit: crate::images::Fit::Stretch,
            class_fractions: None,
        }
    }
}

/// Where a domain comes from: a data set dtl knows (`mnist`, `usps`, ...) or a folder of images
/// (`folder:PATH`, see [`crate::folder`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainSource {
    /// A built-in data set.
    Builtin(DomainId),
    /// An image folder with one subfolder per class.
    Folder(PathBuf),
}

impl std::str::FromStr for DomainSource {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.strip_prefix("folder:") {
            Some("") => Err(Error::Config {
                field: "domain".into(),
                message: "`folder:` needs a path: folder:PATH".into(),
            }),
            Some(path) => Ok(DomainSource::Folder(PathBuf::from(path))),
            None => s.parse().map(DomainSource::Builtin),
        }
    }
}

impl std::fmt::Display for DomainSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DomainSource::Builtin(id) => write!(f, "{id}"),
            DomainSource::Folder(p) => write!(f, "folder:{}", p.display()),
        }
    }
}

/// A domain: train and test splits of one data set, and the files they came from.
#[derive(Debug, Clone)]
pub struct Domain {
    /// Which domain.
    pub origin: DomainSource,
    /// Training split (after the size cap).
    pub train: Dataset,
    /// Test split (never capped).
    pub test: Dataset,
    /// Files read, with their sha256.
    pub files: Vec<FileRecord>,
    /// Training samples before the cap.
    pub full_train_size: usize,
    /// How the images were placed on the canvas.
    pub placement: Placement,
    /// Class names, index = label.
    pub class_names: Vec<String>,
}

impl Domain {
    /// The domain restricted to `classes` (train and test splits), relabelled `0..classes.len()`
    /// in that order, with their names (Yosinski et al. 2014 split the classes into tasks A and B).
    pub fn with_classes(&self, classes: &[u32]) -> Result<Self> {
        crate::dataset::check_classes(classes, self.class_names.len())?;
        Ok(Self {
            train: self.train.with_classes(classes)?,
            test: self.test.with_classes(classes)?,
            class_names: classes
                .iter()
                .map(|&c| self.class_names[c as usize].clone())
                .collect(),
            origin: self.origin.clone(),
            files: self.files.clone(),
            full_train_size: self.full_train_size,
            placement: self.placement,
        })
    }

    /// The domain's name as the command line spells it (`mnist`, `folder:PATH`).
    pub fn name(&self) -> String {
        self.origin.to_string()
    }

    /// Loads a built-in data set or an image folder (the folder's images brought to
    /// `channels x image_size x image_size`).
    pub fn load_source(src: &DomainSource, dir: Option<&DataDir>, opts: &LoadOptions) -> Result<Self> {
        let path = match src {
            DomainSource::Builtin(id) => {
                if opts.channels.is_some_and(|c| c != 1) {
                    return Err(Error::Config {
                        field: "channels".into(),
                        message: format!("{id} has one channel"),
                    });
                }
                return Self::load(*id, dir, opts);
            }
            DomainSource::Folder(p) => p,
        };
        check_canvas(opts.image_size)?;
        let channels = match opts.channels {
            Some(c @ (1 | 3)) => c,
            Some(c) => {
                return Err(Error::Config {
                    field: "channels".into(),
                    message: format!("{c}: images become 1 (luma) or 3 (RGB) channels"),
                })
            }
            None if crate::folder::folder_has_colour(path)? => 3,
            None => 1,
        };
        let folder = crate::folder::load_folder(
            path,
            &crate::folder::FolderOptions {
                shape: (channels, opts.image_size, opts.image_size),
                fit: opts.fit,
                test_fraction: opts.test_fraction,
                skip_bad_images: opts.skip_bad_images,
                seed: opts.seed,
            },
        )?;
        let full_train_size = folder.train.len();
        let train = cap_train(folder.train, opts)?;
        Ok(Self {
            origin: src.clone(),
            train,
            test: folder.test,
            files: folder.files,
            full_train_size,
            placement: Placement::Fill,
            class_names: folder.class_names,
        })
    }

    /// The domain with its labels renamed to `names`' indices (a target folder's classes matched
    /// by name to the source's); an error names any class `names` lacks.
    pub fn relabelled_to(&self, names: &[String]) -> Result<Self> {
        let map: Vec<u32> = self
            .class_names
            .iter()
            .map(|c| {
                names
                    .iter()
                    .position(|n| n == c)
                    .map(|i| i as u32)
                    .ok_or_else(|| Error::Config {
                        field: "classes".into(),
                        message: format!(
                            "{} has class `{c}`, which the source does not have (source classes: {})",
                            self.origin,
                            names.join(", ")
                        ),
                    })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            origin: self.origin.clone(),
            train: self.train.relabelled(&map, names.len())?,
            test: self.test.relabelled(&map, names.len())?,
            files: self.files.clone(),
            full_train_size: self.full_train_size,
            placement: self.placement,
            class_names: names.to_vec(),
        })
    }

    /// Loads `id` from `dir` (bundled domains need no directory).
    ///
    /// A missing file is an error naming the path looked for, the files expected there and where
    /// they come from.
    pub fn load(id: DomainId, dir: Option<&DataDir>, opts: &LoadOptions) -> Result<Self> {
        check_canvas(opts.image_size)?;
        let _span = tracing::info_span!("load_domain", domain = id.as_str()).entered();
        let mut files = Vec::new();
        let mut fetch = |spec: &FileSpec| -> Result<(PathBuf, Vec<u8>)> {
            let (path, raw) = locate(id, dir, spec)?;
            let data = decompress(&path, &raw)?;
            check_content(&path, &data, spec);
            files.push(FileRecord {
                path: path.display().to_string(),
                sha256: sha256_hex(&raw),
            });
            Ok((path, data))
        };
        let specs = id.files();
        let (train, test) = match id {
            DomainId::Mnist | DomainId::MnistSmall => {
                let mut split = |i: usize| -> Result<Dataset> {
                    let (pi, images) = fetch(&specs[i])?;
                    let (pl, labels) = fetch(&specs[i + 1])?;
                    let images = parse_idx_images(&images, &pi)?;
                    let labels = parse_idx_labels(&labels, &pl)?;
                    if images.n != labels.len() {
                        return Err(Error::format(
                            &pl,
                            None,
                            format!(
                                "{} labels for the {} images of {}: the two files do not belong together",
                                labels.len(),
                                images.n,
                                pi.display()
                            ),
                        ));
                    }
                    if let Some(i) = labels.iter().position(|&l| l > 9) {
                        return Err(Error::format(
                            &pl,
                            None,
                            format!("label {} of image {i} is not a digit 0-9", labels[i]),
                        ));
                    }
                    Dataset::from_raw(images, labels, 10)
                };
                (split(0)?, split(2)?)
            }
            DomainId::Usps => {
                let mut split = |i: usize| -> Result<Dataset> {
                    let (p, text) = fetch(&specs[i])?;
                    let (images, labels) = parse_libsvm_digits(&text, 16, &p)?;
                    Dataset::from_raw(images, labels, 10)
                };
                (split(0)?, split(1)?)
            }
            DomainId::Optdigits => {
                let (p, text) = fetch(&specs[0])?;
                let (images, labels) = parse_csv_digits(&text, 8, 16.0, &p)?;
                let all = Dataset::from_raw(images, labels, 10)?;
                if all.len() <= OPTDIGITS_TRAIN_ROWS {
                    return Err(Error::format(
                        &p,
                        None,
                        format!("{} rows, expected 1797", all.len()),
                    ));
                }
                let train: Vec<usize> = (0..OPTDIGITS_TRAIN_ROWS).collect();
                let test: Vec<usize> = (OPTDIGITS_TRAIN_ROWS..all.len()).collect();
                (all.subset(&train)?, all.subset(&test)?)
            }
        };
        let full_train_size = train.len();
        let train = cap_train(train, opts)?;
        let (train, test) = (
            train.placed(opts.image_size, placement_for(id, opts.placement)),
            test.placed(opts.image_size, placement_for(id, opts.placement)),
        );
        tracing::info!(train = train.len(), test = test.len(), "loaded {id}");
        Ok(Self {
            origin: DomainSource::Builtin(id),
            train,
            test,
            files,
            full_train_size,
            placement: opts.placement,
            class_names: id.class_names(),
        })
    }
}

/// The seeded training subset of `opts.train_size` images, if capped.
fn cap_train(train: Dataset, opts: &LoadOptions) -> Result<Dataset> {
    let train = match &opts.class_fractions {
        Some(f) => keep_class_fractions(train, f, opts.seed)?,
        None => train,
    };
    match opts.train_size {
        Some(0) => Err(Error::Config {
            field: "train-size".into(),
            message: "must be at least 1".into(),
        }),
        Some(n) if n < train.len() => {
            let mut rng = ChaCha8Rng::seed_from_u64(Stream::TrainCap.seed(opts.seed));
            let mut idx = sample(&mut rng, train.len(), n).into_vec();
            idx.sort_unstable();
            train.subset(&idx)
        }
        _ => Ok(train),
    }
}

/// Keeps `round(fraction[c] * n_c)` samples of each class `c` (at least one where the fraction is
/// positive), chosen by `seed`, in their original order.
fn keep_class_fractions(train: Dataset, fractions: &[f64], seed: u64) -> Result<Dataset> {
    if fractions.len() != train.num_classes() {
        return Err(Error::Config {
            field: "class-fractions".into(),
            message: format!(
                "{} values given, the data set has {} classes (one fraction in [0, 1] per class)",
                fractions.len(),
                train.num_classes()
            ),
        });
    }
    if let Some(c) = fractions.iter().position(|f| !(0.0..=1.0).contains(f)) {
        return Err(Error::Config {
            field: "class-fractions".into(),
            message: format!(
                "the fraction of class {c} is {}: each must lie in [0, 1]",
                fractions[c]
            ),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(Stream::ClassFractions.seed(seed));
    let mut keep = Vec::new();
    for (c, &f) in fractions.iter().enumerate() {
        let members: Vec<usize> = (0..train.len())
            .filter(|&i| train.labels()[i] as usize == c)
            .collect();
        let k = ((f * members.len() as f64).round() as usize)
            .max(usize::from(f > 0.0))
            .min(members.len());
        keep.extend(sample(&mut rng, members.len(), k).into_iter().map(|j| members[j]));
    }
    if keep.is_empty() {
        return Err(Error::Config {
            field: "class-fractions".into(),
            message: "every class fraction is 0: no training sample left".into(),
        });
    }
    keep.sort_unstable();
    train.subset(&keep)
}

/// MNIST digits already sit in a 20x20 box: both placements only resize them.
fn placement_for(id: DomainId, p: Placement) -> Placement {
    match id {
        DomainId::Mnist | DomainId::MnistSmall => Placement::Fill,
        _ => p,
    }
}

/// Finds a file: in the data directory, or compiled into dtl for bundled data.
fn locate(id: DomainId, dir: Option<&DataDir>, spec: &FileSpec) -> Result<(PathBuf, Vec<u8>)> {
    if id == DomainId::MnistSmall {
        let bytes = crate::bundled::mnist_small(spec.name).expect("every mnist-small file is bundled");
        return Ok((
            PathBuf::from(format!("bundled:mnist-small/{}", spec.name)),
            bytes.to_vec(),
        ));
    }
    let on_disk = dir.map(|d| d.domain_dir(id).join(spec.name));
    if let Some(path) = &on_disk {
        if path.is_file() {
            let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            return Ok((path.clone(), raw));
        }
    }
    if id == DomainId::Optdigits {
        // optdigits is complete in the bundle: the data directory only overrides it.
        tracing::debug!("optdigits: using the bundled copy");
        return Ok((
            PathBuf::from(format!("bundled:optdigits/{}", spec.name)),
            crate::bundled::OPTDIGITS.to_vec(),
        ));
    }
    let expected = id.files().iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
    Err(Error::MissingFile {
        path: on_disk.unwrap_or_else(|| PathBuf::from(id.as_str()).join(spec.name)),
        domain: id.as_str().to_string(),
        expected,
        provenance: id.provenance().to_string(),
        data_dir: dir
            .map(|d| format!("{} (from {})", d.path().display(), d.origin()))
            .unwrap_or_else(|| "none given".into()),
    })
}

fn check_content(path: &Path, data: &[u8], spec: &FileSpec) {
    if spec.content_sha256.is_empty() || path.starts_with("bundled:mnist-small") {
        return;
    }
    let found = sha256_hex(data);
    if found != spec.content_sha256 {
        tracing::warn!(
            "{}: decompressed content has sha256 {found}, the published file has {}: \
             results will not be comparable with published figures",
            path.display(),
            spec.content_sha256
        );
    }
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canvas side a domain is read at: at least 8, at most [`dtl_core::MAX_IMAGE_SIDE`].
fn check_canvas(image_size: usize) -> Result<()> {
    dtl_core::check_image_side("image-size", image_size, 8).map_err(|e| match e {
        dtl_core::Error::Config { field, message } => Error::Config { field, message },
        other => Error::Msg(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class fractions keep `round(f * n_c)` samples of class `c` (at least one for `f > 0`), and
    /// leave the test split alone; bad lists are named errors.
    #[test]
    fn class_fractions_skew_the_training_split() {
        let plain = Domain::load(DomainId::Optdigits, None, &LoadOptions::default()).unwrap();
        let f = vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1, 0.0];
        let opts = LoadOptions {
            class_fractions: Some(f.clone()),
            ..Default::default()
        };
        let skewed = Domain::load(DomainId::Optdigits, None, &opts).unwrap();
        let (before, after) = (plain.train.class_counts(), skewed.train.class_counts());
        for c in 0..10 {
            let want = ((f[c] * before[c] as f64).round() as usize).max(usize::from(f[c] > 0.0));
            assert_eq!(after[c], want, "class {c}");
        }
        assert_eq!(skewed.test.len(), plain.test.len());
        let bad = LoadOptions {
            class_fractions: Some(vec![1.0; 3]),
            ..Default::default()
        };
        let err = Domain::load(DomainId::Optdigits, None, &bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("class-fractions") && err.contains("10 classes"),
            "{err}"
        );
    }
}
