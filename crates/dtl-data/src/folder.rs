//! Image-folder domains (`folder:PATH`): one subfolder per class, as a person sorts their own
//! photos, decoded in parallel through [`crate::images`].
//!
//! Layouts:
//! - `PATH/train/<class>/*` and `PATH/test/<class>/*`: the two splits as given;
//! - `PATH/<class>/*`: one pool, split per class by the seed into test (`test_fraction`, at least
//!   one image of every class with two or more) and train.
//!
//! Classes are the subfolder names, sorted; a split's classes are the union of both splits'
//! folders, so that labels agree. Files without an image extension are ignored; a file with one that
//! does not decode stops the load with its path, or, with `skip_bad_images`, is skipped with a
//! warning. The domain's file record is one entry per split folder whose sha256 digests every
//! image's relative path and content.

use dtl_core::seed::Stream;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::images::{is_image_path, list_images, load_image_fit, Fit};
use crate::{Dataset, Error, FileRecord, Result};

/// How a folder domain is read.
#[derive(Debug, Clone, PartialEq)]
pub struct FolderOptions {
    /// Input shape `(C, H, W)` every image is brought to.
    pub shape: (usize, usize, usize),
    /// How images of another size are brought to it.
    pub fit: Fit,
    /// Share of each class held out for testing when the folder has no `train/` and `test/`.
    pub test_fraction: f64,
    /// Skip undecodable images with a warning instead of stopping.
    pub skip_bad_images: bool,
    /// Seed of the train / test split.
    pub seed: u64,
}

/// A loaded folder: the two splits, the class names and the records of what was read.
#[derive(Debug, Clone)]
pub struct Folder {
    /// Training split.
    pub train: Dataset,
    /// Test split.
    pub test: Dataset,
    /// Class names (subfolder names), index = label.
    pub class_names: Vec<String>,
    /// One record per split folder read.
    pub files: Vec<FileRecord>,
}

/// The class subfolders of `dir`, sorted (hidden ones skipped).
fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Whether `shape`'s channel count should be 3 for this folder: any of its images in colour. Only
/// the files' headers are read (in parallel); a file whose header does not read counts as grey
/// here and is reported when the images are decoded.
pub fn folder_has_colour(root: &Path) -> Result<bool> {
    check_root(root)?;
    let images = list_images(root)?;
    Ok(images
        .par_iter()
        .any(|path| crate::images::header_has_colour(path)))
}

/// `(path, label)` of every image under `dir/<class>/` for the classes in `classes`.
fn labelled_files(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, u32)>> {
    let mut out = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let cdir = dir.join(class);
        if !cdir.is_dir() {
            continue;
        }
        for p in list_images(&cdir)? {
            out.push((p, label as u32));
        }
    }
    Ok(out)
}

/// Every class folder must hold an image (an empty one would add a class that no image has), and
/// no image may be reached under two classes (a symbolic link from one class folder into another
/// would label the same pictures twice, differently).
fn check_classes_and_links(
    root: &Path,
    classes: &[String],
    train: &[(PathBuf, u32)],
    test: &[(PathBuf, u32)],
) -> Result<()> {
    for (label, class) in classes.iter().enumerate() {
        if !train.iter().chain(test).any(|(_, l)| *l as usize == label) {
            return Err(Error::Format {
                path: root.join(class),
                line: None,
                message: format!(
                    "class folder `{class}` holds no images: add some or remove the folder (it would be a class no image has)"
                ),
            });
        }
    }
    let mut seen: std::collections::HashMap<PathBuf, (&Path, u32)> = std::collections::HashMap::new();
    for (path, label) in train.iter().chain(test) {
        let real = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
        if let Some((first, other)) = seen.insert(real, (path, *label)) {
            return Err(Error::Format {
                path: path.clone(),
                line: None,
                message: format!(
                    "is the same file as {} ({}), reached through a symbolic link{}",
                    first.display(),
                    classes[other as usize],
                    if other == *label {
                        ""
                    } else {
                        ": one image cannot have two classes"
                    }
                ),
            });
        }
    }
    Ok(())
}

/// Decodes `files` in parallel into a data set; bad images stop the load or are skipped.
fn decode(
    root: &Path,
    files: &[(PathBuf, u32)],
    n_classes: usize,
    opts: &FolderOptions,
) -> Result<(Dataset, FileRecord)> {
    let decoded: Vec<Result<(Vec<f32>, [u8; 32])>> = files
        .par_iter()
        .map(|(p, _)| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            let pixels = load_image_fit(p, opts.shape, opts.fit)?;
            Ok((pixels, Sha256::digest(&bytes).into()))
        })
        .collect();
    let (c, h, w) = opts.shape;
    let mut pixels = Vec::with_capacity(files.len() * c * h * w);
    let mut labels = Vec::with_capacity(files.len());
    let mut digest = Sha256::new();
    let mut skipped = 0;
    for ((path, label), result) in files.iter().zip(decoded) {
        match result {
            Ok((px, sha)) => {
                pixels.extend(px);
                labels.push(*label);
                let rel = path.strip_prefix(root).unwrap_or(path);
                digest.update(rel.to_string_lossy().as_bytes());
                digest.update(sha);
            }
            Err(e) if opts.skip_bad_images => {
                tracing::warn!("skipping {}: {e}", path.display());
                skipped += 1;
            }
            Err(e) => {
                return Err(Error::Format {
                    path: path.clone(),
                    line: None,
                    message: format!("{e} (pass --skip-bad-images to skip such files)"),
                })
            }
        }
    }
    if labels.is_empty() {
        return Err(Error::Format {
            path: root.to_path_buf(),
            line: None,
            message: format!("no readable images in the class folders ({skipped} skipped)"),
        });
    }
    let record = FileRecord {
        path: format!("{} ({} images)", root.display(), labels.len()),
        sha256: format!("{:x}", digest.finalize()),
    };
    Ok((Dataset::new(pixels, labels, opts.shape, n_classes)?, record))
}

/// Every image of the folder at `root` with its class name, in either layout (`train/` and
/// `test/` together), sorted by path: a folder seen whole, as `dtl audit` measures it. The
/// checks of [`load_folder`] apply (class folders that hold images, no image under two classes).
pub fn all_images(root: &Path) -> Result<Vec<(PathBuf, String)>> {
    check_root(root)?;
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let dirs = if train_dir.is_dir() && test_dir.is_dir() {
        vec![train_dir, test_dir]
    } else {
        vec![root.to_path_buf()]
    };
    let mut classes: Vec<String> = Vec::new();
    for d in &dirs {
        classes.extend(class_dirs(d)?);
    }
    classes.sort();
    classes.dedup();
    if classes.is_empty() {
        return Err(Error::Format {
            path: root.to_path_buf(),
            line: None,
            message: "no class subfolders: put each class's images in PATH/<class>/".into(),
        });
    }
    let mut files = Vec::new();
    for d in &dirs {
        files.extend(labelled_files(d, &classes)?);
    }
    check_classes_and_links(root, &classes, &files, &[])?;
    let mut out: Vec<(PathBuf, String)> = files
        .into_iter()
        .map(|(p, l)| (p, classes[l as usize].clone()))
        .collect();
    out.sort();
    Ok(out)
}

/// An error unless `root` is a directory.
pub fn check_root(root: &Path) -> Result<()> {
    if root.is_dir() {
        return Ok(());
    }
    Err(Error::Format {
        path: root.to_path_buf(),
        line: None,
        message:
            "not a directory: a folder domain is PATH/<class>/<images> or PATH/{train,test}/<class>/<images>"
                .into(),
    })
}

/// Loads the image folder at `root` (see the module docs for the layouts).
pub fn load_folder(root: &Path, opts: &FolderOptions) -> Result<Folder> {
    check_root(root)?;
    if !(0.0..1.0).contains(&opts.test_fraction) {
        return Err(Error::Config {
            field: "test-fraction".into(),
            message: format!("{} is not in [0, 1)", opts.test_fraction),
        });
    }
    let (train_dir, test_dir) = (root.join("train"), root.join("test"));
    let presplit = train_dir.is_dir() && test_dir.is_dir();
    let classes = if presplit {
        let mut c = class_dirs(&train_dir)?;
        c.extend(class_dirs(&test_dir)?);
        c.sort();
        c.dedup();
        c
    } else {
        class_dirs(root)?
    };
    if classes.is_empty() {
        return Err(Error::Format {
            path: root.to_path_buf(),
            line: None,
            message: "no class subfolders: put each class's images in PATH/<class>/".into(),
        });
    }
    let stray = std::fs::read_dir(root)
        .map_err(|e| Error::io(root, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file() && is_image_path(&e.path()))
        .count();
    if stray > 0 {
        tracing::warn!(
            "{}: {stray} images outside the class folders are not used",
            root.display()
        );
    }
    let _span = tracing::info_span!("load_folder", folder = %root.display()).entered();
    let (train_files, test_files) = if presplit {
        (
            labelled_files(&train_dir, &classes)?,
            labelled_files(&test_dir, &classes)?,
        )
    } else {
        let all = labelled_files(root, &classes)?;
        let mut rng = ChaCha8Rng::seed_from_u64(Stream::FolderSplit.seed(opts.seed));
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for label in 0..classes.len() as u32 {
            let mut of: Vec<_> = all.iter().filter(|(_, l)| *l == label).cloned().collect();
            of.shuffle(&mut rng);
            let n_test = if of.len() >= 2 {
                ((of.len() as f64 * opts.test_fraction).round() as usize).clamp(1, of.len() - 1)
            } else {
                0
            };
            test.extend(of.drain(..n_test));
            train.extend(of);
        }
        train.sort();
        test.sort();
        (train, test)
    };
    check_classes_and_links(root, &classes, &train_files, &test_files)?;
    for (split, files) in [("train", &train_files), ("test", &test_files)] {
        if files.is_empty() {
            return Err(Error::Format {
                path: root.to_path_buf(),
                line: None,
                message: format!("no images for the {split} split"),
            });
        }
    }
    let split_root = |d: &Path| {
        if presplit {
            d.to_path_buf()
        } else {
            root.to_path_buf()
        }
    };
    let (train, train_rec) = decode(&split_root(&train_dir), &train_files, classes.len(), opts)?;
    let (test, test_rec) = decode(&split_root(&test_dir), &test_files, classes.len(), opts)?;
    tracing::info!(
        train = train.len(),
        test = test.len(),
        classes = classes.len(),
        "loaded {}",
        root.display()
    );
    Ok(Folder {
        train,
        test,
        class_names: classes,
        files: vec![train_rec, test_rec],
    })
}
