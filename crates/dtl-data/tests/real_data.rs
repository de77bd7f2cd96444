//! Readers against the published facts of the real data sets (`../shared/data/README.md`): file
//! checksums, sample counts and label counts. Skipped, with the reason printed, when the shared
//! data folder is absent; the bundled data are always checked.

use std::path::PathBuf;

use dtl_data::domain::sha256_hex;
use dtl_data::download::{self, esl_to_libsvm, Source};
use dtl_data::{DataDir, Domain, DomainId, Error, LoadOptions, Placement};

fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("DTL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    if p.join("mnist").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: no shared data folder at {} (set DTL_DATA_DIR)",
            p.display()
        );
        None
    }
}

fn counts(labels: &[u32]) -> Vec<usize> {
    let mut c = vec![0; 10];
    for &l in labels {
        c[l as usize] += 1;
    }
    c
}

#[test]
fn mnist_matches_published_counts_and_checksums() {
    let Some(dir) = shared_data() else { return };
    let d = Domain::load(
        DomainId::Mnist,
        Some(&DataDir::new(&dir)),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(
        counts(d.train.labels()),
        [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        counts(d.test.labels()),
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    let expected_files = [
        (
            "train-images-idx3-ubyte.gz",
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
        ),
        (
            "train-labels-idx1-ubyte.gz",
            "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
        ),
        (
            "t10k-images-idx3-ubyte.gz",
            "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
        ),
        (
            "t10k-labels-idx1-ubyte.gz",
            "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
        ),
    ];
    for (rec, (name, sha)) in d.files.iter().zip(expected_files) {
        assert!(rec.path.ends_with(name), "{}", rec.path);
        assert_eq!(rec.sha256, sha, "{name}");
    }
    // Ink high in [0, 1] with a black margin: MNIST's first row is background.
    let img = d.train.image(0);
    assert!(img.iter().all(|&v| (0.0..=1.0).contains(&v)));
    assert!(img[..28].iter().all(|&v| v == 0.0));
    assert!(img.contains(&1.0));
}

#[test]
fn usps_matches_published_counts_and_polarity() {
    let Some(dir) = shared_data() else { return };
    let d = Domain::load(DomainId::Usps, Some(&DataDir::new(&dir)), &LoadOptions::default()).unwrap();
    assert_eq!(
        counts(d.train.labels()),
        [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
    );
    assert_eq!(
        counts(d.test.labels()),
        [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]
    );
    assert_eq!(
        d.files[0].sha256,
        "17dda8723042004b3fe6512c8769022bf7cec5322be1fb98a623d5de13b70666"
    );
    assert_eq!(
        d.files[1].sha256,
        "22bb89593ed8a6c80fbd69e16bc34c935f462e7c8531a812fc3d2a141d17c298"
    );
    // Background (-1 in the file) maps to 0: the corner of every image is paper, and the mean
    // intensity is well below one half (digits are thin strokes).
    let mean = d.train.pixels().iter().map(|&v| v as f64).sum::<f64>() / d.train.pixels().len() as f64;
    assert!(mean < 0.35, "mean intensity {mean}");
    assert_eq!(d.train.image_shape(), (1, 28, 28));
    // Native 16x16 reads back exactly: the first value of the file's 8th pixel is -0.631.
    let native = Domain::load(
        DomainId::Usps,
        Some(&DataDir::new(&dir)),
        &LoadOptions {
            image_size: 16,
            ..Default::default()
        },
    )
    .unwrap();
    assert!((native.train.image(0)[7] - (1.0 - 0.631) / 2.0).abs() < 1e-6);
    assert_eq!(native.train.labels()[0], 6);
}

#[test]
fn optdigits_from_the_directory_equals_the_bundled_copy() {
    let Some(dir) = shared_data() else { return };
    let opts = LoadOptions::default();
    let disk = Domain::load(DomainId::Optdigits, Some(&DataDir::new(&dir)), &opts).unwrap();
    let bundled = Domain::load(DomainId::Optdigits, None, &opts).unwrap();
    assert_eq!(disk.files[0].sha256, bundled.files[0].sha256);
    assert!(bundled.files[0].path.starts_with("bundled:"));
    assert_eq!(disk.train, bundled.train);
}

#[test]
fn bundled_data_match_their_published_counts() {
    let o = Domain::load(DomainId::Optdigits, None, &LoadOptions::default()).unwrap();
    let mut all = o.train.labels().to_vec();
    all.extend_from_slice(o.test.labels());
    assert_eq!(counts(&all), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!(
        o.files[0].sha256,
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
    );
    let m = Domain::load(DomainId::MnistSmall, None, &LoadOptions::default()).unwrap();
    assert_eq!(
        counts(m.train.labels()),
        [191, 220, 198, 191, 214, 180, 200, 224, 172, 210]
    );
    assert_eq!(counts(m.test.labels()), [42, 67, 55, 45, 55, 50, 43, 49, 40, 54]);
    // MNIST's first training image is a 5, its first test image a 7.
    assert_eq!((m.train.labels()[0], m.test.labels()[0]), (5, 7));
}

#[test]
fn mnist_small_is_a_prefix_of_mnist() {
    let Some(dir) = shared_data() else { return };
    let full = Domain::load(
        DomainId::Mnist,
        Some(&DataDir::new(&dir)),
        &LoadOptions::default(),
    )
    .unwrap();
    let small = Domain::load(DomainId::MnistSmall, None, &LoadOptions::default()).unwrap();
    let idx: Vec<usize> = (0..2000).collect();
    assert_eq!(full.train.subset(&idx).unwrap(), small.train);
    assert!(small
        .train
        .subset(&[2000])
        .unwrap_err()
        .to_string()
        .contains("index 2000"));
}

#[test]
fn train_size_cap_is_a_seeded_subset() {
    let opts = |seed| LoadOptions {
        train_size: Some(500),
        seed,
        ..Default::default()
    };
    let a = Domain::load(DomainId::MnistSmall, None, &opts(1)).unwrap();
    let b = Domain::load(DomainId::MnistSmall, None, &opts(1)).unwrap();
    let c = Domain::load(DomainId::MnistSmall, None, &opts(2)).unwrap();
    assert_eq!(a.train.len(), 500);
    assert_eq!(a.full_train_size, 2000);
    assert_eq!(a.test.len(), 500, "the test split is never capped");
    assert_eq!(a.train, b.train);
    assert_ne!(a.train, c.train);
    let err = Domain::load(
        DomainId::MnistSmall,
        None,
        &LoadOptions {
            train_size: Some(0),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("train-size"), "{err}");
}

#[test]
fn box_placement_keeps_a_margin() {
    let o = Domain::load(
        DomainId::Optdigits,
        None,
        &LoadOptions {
            placement: Placement::Box,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..o.train.len() {
        let img = o.train.image(i);
        assert!(
            img[..4 * 28].iter().all(|&v| v == 0.0),
            "image {i} has ink in the top margin"
        );
    }
}

#[test]
fn missing_files_name_the_path_the_files_and_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Domain::load(
        DomainId::Usps,
        Some(&DataDir::new(tmp.path())),
        &LoadOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingFile { .. }));
    assert!(
        msg.contains(&tmp.path().join("usps").join("usps.bz2").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains("usps.t.bz2") && msg.contains("hastie.su.domains"),
        "{msg}"
    );
    let err = "svhn".parse::<DomainId>().unwrap_err().to_string();
    assert!(
        err.contains("svhn") && err.contains("mnist, usps, optdigits"),
        "{err}"
    );
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("usps")).unwrap();
    let p = tmp.path().join("usps/usps.bz2");
    std::fs::write(&p, b"not bzip2 at all").unwrap();
    let msg = Domain::load(
        DomainId::Usps,
        Some(&DataDir::new(tmp.path())),
        &LoadOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains(&p.display().to_string()) && msg.contains("decompress"),
        "{msg}"
    );
}

#[test]
fn download_verifies_content_from_a_mirror_and_writes_atomically() {
    let Some(dir) = shared_data() else { return };
    let dest = tempfile::tempdir().unwrap();
    let source = Source {
        base: format!("file://{}/", dir.join("mnist").display()),
    };
    let written = download::download(DomainId::Mnist, &DataDir::new(dest.path()), &source).unwrap();
    assert_eq!(written.len(), 4);
    let loaded = Domain::load(
        DomainId::Mnist,
        Some(&DataDir::new(dest.path())),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(loaded.train.len(), 60000);
    // No temporary files are left behind.
    let names: Vec<_> = std::fs::read_dir(dest.path().join("mnist"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn download_refuses_content_with_the_wrong_checksum() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    // A well-formed gzip whose content is not MNIST's.
    let fake = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b"fake").unwrap();
        e.finish().unwrap()
    };
    for f in DomainId::Mnist.files() {
        std::fs::write(mirror.join(f.name), &fake).unwrap();
    }
    let dest = tmp.path().join("data");
    let source = Source {
        base: format!("file://{}/", mirror.display()),
    };
    let err = download::download(DomainId::Mnist, &DataDir::new(&dest), &source).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Checksum { .. }), "{msg}");
    assert!(
        msg.contains("train-images-idx3-ubyte.gz") && msg.contains("ba891046"),
        "{msg}"
    );
    assert!(
        !dest.join("mnist/train-images-idx3-ubyte.gz").exists(),
        "nothing unverified is written"
    );
}

#[test]
fn download_errors_name_the_url() {
    let tmp = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    let source = Source {
        base: "http://127.0.0.1:9/".into(),
    };
    let err = download::download(DomainId::Optdigits, &DataDir::new(tmp.path()), &source).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Download { .. }), "{msg}");
    assert!(msg.contains("http://127.0.0.1:9/digits.csv.gz"), "{msg}");
    assert!(Source::public(DomainId::MnistSmall).is_err());
}

#[test]
fn esl_conversion_reproduces_the_libsvm_copy() {
    let Some(dir) = shared_data() else { return };
    // Write the ESL text (`DIGIT V1 .. V256`, 4 decimals, as zip.train is published) from our
    // LIBSVM copy, convert it back and compare checksums with the published LIBSVM text.
    let (_, text) = dtl_data::formats::read_decompressed(&dir.join("usps/usps.t.bz2")).unwrap();
    let mut esl = String::new();
    for line in std::str::from_utf8(&text).unwrap().lines() {
        let mut parts = line.split(' ');
        let label: u32 = parts.next().unwrap().parse().unwrap();
        esl.push_str(&format!("{}.0000", label - 1));
        for p in parts {
            let v: f64 = p.split_once(':').unwrap().1.parse().unwrap();
            esl.push_str(&format!(" {v:.4}"));
        }
        esl.push('\n');
    }
    let back = esl_to_libsvm(esl.as_bytes(), "zip.test").unwrap();
    assert_eq!(sha256_hex(&back), DomainId::Usps.files()[1].content_sha256);
}
