//! MNIST's IDX files as a user may have them wrong: images and labels that do not belong
//! together, or a label that is not a digit, are errors naming the labels file.

use std::io::Write;
use std::path::Path;

use dtl_data::{DataDir, Domain, DomainId, LoadOptions};

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn images(n: u32) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 3];
    for v in [n, 28, 28] {
        b.extend(v.to_be_bytes());
    }
    b.extend(vec![7u8; n as usize * 28 * 28]);
    b
}

fn labels(values: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, 1];
    b.extend((values.len() as u32).to_be_bytes());
    b.extend(values);
    b
}

fn write_mnist(dir: &Path, train_labels: &[u8]) {
    let m = dir.join("mnist");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("train-images-idx3-ubyte.gz"), gz(&images(4))).unwrap();
    std::fs::write(m.join("train-labels-idx1-ubyte.gz"), gz(&labels(train_labels))).unwrap();
    std::fs::write(m.join("t10k-images-idx3-ubyte.gz"), gz(&images(2))).unwrap();
    std::fs::write(m.join("t10k-labels-idx1-ubyte.gz"), gz(&labels(&[1, 2]))).unwrap();
}

fn load_err(dir: &Path) -> String {
    Domain::load(DomainId::Mnist, Some(&DataDir::new(dir)), &LoadOptions::default())
        .unwrap_err()
        .to_string()
}

#[test]
fn images_and_labels_that_do_not_belong_together_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    write_mnist(tmp.path(), &[0, 1, 2, 3]);
    let d = Domain::load(
        DomainId::Mnist,
        Some(&DataDir::new(tmp.path())),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(d.train.labels(), [0, 1, 2, 3]);

    write_mnist(tmp.path(), &[0, 1, 2]);
    let err = load_err(tmp.path());
    assert!(
        err.contains("train-labels-idx1-ubyte.gz") && err.contains("3 labels for the 4 images"),
        "{err}"
    );
    write_mnist(tmp.path(), &[0, 1, 12, 3]);
    let err = load_err(tmp.path());
    assert!(
        err.contains("train-labels-idx1-ubyte.gz") && err.contains("label 12 of image 2"),
        "{err}"
    );
}
