//! Data compiled into dtl: UCI optdigits and a MNIST subset (see `bundled/README.md` for
//! attribution and licenses).

/// `digits.csv.gz`, UCI optdigits as scikit-learn ships it (CC BY 4.0).
pub const OPTDIGITS: &[u8] = include_bytes!("../bundled/optdigits/digits.csv.gz");

const MNIST_SMALL: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../bundled/mnist-small/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../bundled/mnist-small/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../bundled/mnist-small/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../bundled/mnist-small/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// A file of the bundled MNIST subset (first 2,000 train and 500 test images, CC BY-SA 3.0).
pub fn mnist_small(name: &str) -> Option<&'static [u8]> {
    MNIST_SMALL.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}
