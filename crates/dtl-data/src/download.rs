//! Checksum-verified downloads of the public digit data sets into a data directory.
//!
//! Every file is checked against the sha256 of its decompressed content (so a mirror that
//! recompressed the canonical bytes still verifies) before it is written, and files are written
//! atomically: a failed or interrupted download never leaves a partial file behind and never
//! replaces a good one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::catalog::{DomainId, FileSpec};
use crate::domain::{sha256_hex, DataDir};
use crate::formats::decompress;
use crate::{Error, Result};

/// Public location of MNIST's four files (the mirror torchvision uses).
pub const MNIST_BASE_URL: &str = "https://ossci-datasets.s3.amazonaws.com/mnist/";
/// Public location of the ESL copy of USPS (`zip.train.gz`, `zip.test.gz`).
pub const USPS_BASE_URL: &str = "https://hastie.su.domains/ElemStatLearn/datasets/";
/// Public location of scikit-learn's copy of UCI optdigits.
pub const OPTDIGITS_BASE_URL: &str =
    "https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.5.2/sklearn/datasets/data/";

/// The most bytes one download may bring (the largest file, MNIST's training images, is 9.9 MB).
const MAX_DOWNLOAD: u64 = 64 << 20;

/// Where a domain's files are fetched from. `base` is a URL prefix (`https://`, `http://` or
/// `file://`); the default is the public source, and a mirror can replace it.
#[derive(Debug, Clone)]
pub struct Source {
    /// URL prefix the remote file names are appended to.
    pub base: String,
}

impl Source {
    /// The public source of `id`.
    pub fn public(id: DomainId) -> Result<Self> {
        let base = match id {
            DomainId::Mnist => MNIST_BASE_URL,
            DomainId::Usps => USPS_BASE_URL,
            DomainId::Optdigits => OPTDIGITS_BASE_URL,
            DomainId::MnistSmall => {
                return Err(Error::Config {
                    field: "domain".into(),
                    message: "mnist-small is bundled with dtl and has nothing to download".into(),
                })
            }
        };
        Ok(Self { base: base.into() })
    }
}

/// The remote file that provides `spec` of domain `id`.
fn remote_name(id: DomainId, spec: &FileSpec) -> &'static str {
    match (id, spec.name) {
        (DomainId::Usps, "usps.bz2") => "zip.train.gz",
        (DomainId::Usps, _) => "zip.test.gz",
        _ => spec.name,
    }
}

/// Downloads every file of `id` from `source` into `dir`, skipping files already present whose
/// content verifies. Returns the paths written or found.
pub fn download(id: DomainId, dir: &DataDir, source: &Source) -> Result<Vec<PathBuf>> {
    let target_dir = dir.domain_dir(id);
    std::fs::create_dir_all(&target_dir).map_err(|e| Error::io(&target_dir, e))?;
    let mut out = Vec::new();
    for spec in id.files() {
        let dest = target_dir.join(spec.name);
        if dest.is_file() {
            let raw = std::fs::read(&dest).map_err(|e| Error::io(&dest, e))?;
            if sha256_hex(&decompress(&dest, &raw)?) == spec.content_sha256 {
                tracing::info!("{} is present and verified", dest.display());
                out.push(dest);
                continue;
            }
            tracing::warn!(
                "{} is present but does not verify: downloading it again",
                dest.display()
            );
        }
        let url = format!("{}{}", source.base, remote_name(id, spec));
        tracing::info!("downloading {url}");
        let fetched = fetch(&url)?;
        let bytes = match id {
            DomainId::Usps => {
                let text = decompress(Path::new(&url), &fetched)?;
                let libsvm = esl_to_libsvm(&text, &url)?;
                verify(&url, &libsvm, spec.content_sha256)?;
                let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                enc.write_all(&libsvm).map_err(|e| Error::io(&dest, e))?;
                enc.finish().map_err(|e| Error::io(&dest, e))?
            }
            _ => {
                verify(&url, &decompress(&dest, &fetched)?, spec.content_sha256)?;
                fetched
            }
        };
        write_atomic(&dest, &bytes)?;
        out.push(dest);
    }
    Ok(out)
}

fn verify(url: &str, content: &[u8], expected: &str) -> Result<()> {
    let found = sha256_hex(content);
    if found != expected {
        return Err(Error::Checksum {
            what: url.to_string(),
            expected: expected.to_string(),
            found,
        });
    }
    Ok(())
}

/// Fetches `url` (`http(s)://` through ureq, `file://` from disk) into memory.
pub fn fetch(url: &str) -> Result<Vec<u8>> {
    if let Some(path) = url.strip_prefix("file://") {
        return std::fs::read(path).map_err(|e| Error::Download {
            url: url.to_string(),
            message: e.to_string(),
        });
    }
    let download_err = |message: String| Error::Download {
        url: url.to_string(),
        message,
    };
    let mut resp = ureq::get(url).call().map_err(|e| download_err(e.to_string()))?;
    let mut bytes = Vec::new();
    resp.body_mut()
        .as_reader()
        .take(MAX_DOWNLOAD + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| download_err(e.to_string()))?;
    if bytes.len() as u64 > MAX_DOWNLOAD {
        return Err(download_err(format!("larger than {MAX_DOWNLOAD} bytes")));
    }
    Ok(bytes)
}

/// Writes `bytes` to `dest` atomically (see [`dtl_core::write_atomic`]).
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    dtl_core::write_atomic(dest, bytes).map_err(|e| Error::io(dest, e))
}

/// Converts the ESL text format of USPS (`DIGIT V1 ... V256` per line, values in `[-1, 1]`) into
/// the LIBSVM lines dtl reads (`DIGIT+1 1:V1 ... 256:V256`, values in shortest decimal form).
pub fn esl_to_libsvm(text: &[u8], name: &str) -> Result<Vec<u8>> {
    let text = std::str::from_utf8(text).map_err(|e| Error::format(Path::new(name), None, e.to_string()))?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |m: String| Error::format(Path::new(name), Some(i + 1), m);
        if fields.len() != 257 {
            return Err(bad(format!(
                "{} fields, expected a digit and 256 values",
                fields.len()
            )));
        }
        let digit: f64 = fields[0]
            .parse()
            .map_err(|_| bad(format!("bad digit `{}`", fields[0])))?;
        if digit.fract() != 0.0 || !(0.0..=9.0).contains(&digit) {
            return Err(bad(format!("digit {digit} outside 0..=9")));
        }
        out.push_str(&(digit as u32 + 1).to_string());
        for (j, f) in fields[1..].iter().enumerate() {
            let v: f64 = f.parse().map_err(|_| bad(format!("bad value `{f}`")))?;
            let v = if v == 0.0 { 0.0 } else { v };
            out.push_str(&format!(" {}:{}", j + 1, v));
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}
