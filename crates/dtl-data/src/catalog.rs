//! The digit domains dtl knows: their files, checksums, public sources and licenses.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A digit domain dtl can load by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainId {
    /// MNIST (LeCun, Cortes, Burges): 60,000 + 10,000 28x28 images, gzip'd IDX. CC BY-SA 3.0.
    Mnist,
    /// USPS, the Elements of Statistical Learning copy: 7,291 + 2,007 16x16 images, bzip2'd LIBSVM.
    Usps,
    /// UCI optical digits (Alpaydin & Kaynak 1998) as scikit-learn bundles it: 1,797 8x8 images.
    /// CC BY 4.0; bundled with dtl. Split by row: the first 1,347 rows train, the last 450 test.
    Optdigits,
    /// A MNIST subset bundled with dtl (the first 2,000 training and 500 test images, CC BY-SA 3.0),
    /// so that dtl runs on a fresh machine with no data directory.
    MnistSmall,
}

/// One file of a domain as it sits in the data directory.
#[derive(Debug, Clone, Copy)]
pub struct FileSpec {
    /// File name inside `<data dir>/<domain>/`.
    pub name: &'static str,
    /// sha256 of the decompressed content, when known (MNIST's canonical bytes, the ESL USPS
    /// LIBSVM text, optdigits' CSV).
    pub content_sha256: &'static str,
}

impl DomainId {
    /// Every domain, in the order help texts list them.
    pub const ALL: [DomainId; 4] = [
        DomainId::Mnist,
        DomainId::Usps,
        DomainId::Optdigits,
        DomainId::MnistSmall,
    ];

    /// The name used on the command line and as the folder name in the data directory.
    pub fn as_str(&self) -> &'static str {
        match self {
            DomainId::Mnist => "mnist",
            DomainId::Usps => "usps",
            DomainId::Optdigits => "optdigits",
            DomainId::MnistSmall => "mnist-small",
        }
    }

    /// The files of this domain in `<data dir>/<domain>/` (train images and labels first).
    pub fn files(&self) -> &'static [FileSpec] {
        match self {
            DomainId::Mnist | DomainId::MnistSmall => &MNIST_FILES,
            DomainId::Usps => &USPS_FILES,
            DomainId::Optdigits => &OPTDIGITS_FILES,
        }
    }

    /// Where the files come from and under which license, for error messages and docs.
    pub fn provenance(&self) -> &'static str {
        match self {
            DomainId::Mnist => {
                "MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0; `dtl fetch mnist` downloads it from \
                 https://ossci-datasets.s3.amazonaws.com/mnist/ and checks the sha256 of each file's content"
            }
            DomainId::Usps => {
                "USPS, the Elements of Statistical Learning copy (zip.train.gz / zip.test.gz from \
                 https://hastie.su.domains/ElemStatLearn/), no license stated: research use only; \
                 `dtl fetch usps` downloads and converts it to LIBSVM text and checks its sha256"
            }
            DomainId::Optdigits => {
                "UCI Optical Recognition of Handwritten Digits (Alpaydin & Kaynak 1998), CC BY 4.0, \
                 the copy scikit-learn ships as sklearn/datasets/data/digits.csv.gz; dtl bundles it"
            }
            DomainId::MnistSmall => "a subset of MNIST bundled with dtl (CC BY-SA 3.0)",
        }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        10
    }

    /// Class names, index = label.
    pub fn class_names(&self) -> Vec<String> {
        (0..10).map(|d| d.to_string()).collect()
    }
}

impl fmt::Display for DomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DomainId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DomainId::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| Error::UnknownDomain {
                name: s.to_string(),
                known: DomainId::ALL
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// MNIST's files with the sha256 of their decompressed (canonical) bytes.
pub const MNIST_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte.gz",
        content_sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    },
    FileSpec {
        name: "train-labels-idx1-ubyte.gz",
        content_sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte.gz",
        content_sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte.gz",
        content_sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
];

/// USPS's files (ESL values as LIBSVM text) with the sha256 of the decompressed text.
pub const USPS_FILES: [FileSpec; 2] = [
    FileSpec {
        name: "usps.bz2",
        content_sha256: "9a0edcd5b0ba3685318746f8e8fc945bc00e8cac60692e2cea60e4f1b47b49f1",
    },
    FileSpec {
        name: "usps.t.bz2",
        content_sha256: "8d8b5579704b88819f3bde76ebc93e284ffee6ba3892c2146a649ff198972be4",
    },
];

/// optdigits' one file with the sha256 of its decompressed CSV.
pub const OPTDIGITS_FILES: [FileSpec; 1] = [FileSpec {
    name: "digits.csv.gz",
    content_sha256: "6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8",
}];

/// Rows of optdigits used for training; the remaining 450 are the test split.
pub const OPTDIGITS_TRAIN_ROWS: usize = 1347;
