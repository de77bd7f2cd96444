//! Image-folder domains built at test time from bundled MNIST digits written as PNG files: the
//! pixels and labels read back equal the bundled domain's (PNG holds MNIST's k/255 values exactly),
//! both layouts split as documented, classes come from folder names, colour is detected, and bad
//! input is named.

use std::path::Path;

use dtl_data::{Domain, DomainId, DomainSource, LoadOptions};

fn write_png(path: &Path, pixels: &[f32], side: u32, rgb: bool) {
    let bytes: Vec<u8> = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if rgb {
        let rgb: Vec<u8> = bytes.iter().flat_map(|&b| [b, b / 2, 255 - b]).collect();
        image::RgbImage::from_raw(side, side, rgb)
            .unwrap()
            .save(path)
            .unwrap();
    } else {
        image::GrayImage::from_raw(side, side, bytes)
            .unwrap()
            .save(path)
            .unwrap();
    }
}

fn opts(size: usize) -> LoadOptions {
    LoadOptions {
        image_size: size,
        ..Default::default()
    }
}

#[test]
fn a_presplit_folder_reads_back_the_digits_it_was_written_from() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("digits");
    let mnist = Domain::load(DomainId::MnistSmall, None, &opts(28)).unwrap();
    let (n_train, n_test) = (300, 100);
    for (split, data, n) in [("train", &mnist.train, n_train), ("test", &mnist.test, n_test)] {
        for i in 0..n {
            let label = data.labels()[i];
            write_png(
                &root
                    .join(split)
                    .join(label.to_string())
                    .join(format!("{i:04}.png")),
                data.image(i),
                28,
                false,
            );
        }
    }
    std::fs::write(root.join("train").join("README.txt"), "ignored").unwrap();
    let src: DomainSource = format!("folder:{}", root.display()).parse().unwrap();
    assert_eq!(src, DomainSource::Folder(root.clone()));
    for size in [28, 16] {
        let folder = Domain::load_source(&src, None, &opts(size)).unwrap();
        let bundled = Domain::load(DomainId::MnistSmall, None, &opts(size)).unwrap();
        assert_eq!(
            folder.class_names,
            (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
        );
        assert_eq!(folder.name(), format!("folder:{}", root.display()));
        assert_eq!(folder.train.image_shape(), (1, size, size));
        for (got, want, n) in [
            (&folder.train, &bundled.train, n_train),
            (&folder.test, &bundled.test, n_test),
        ] {
            assert_eq!(got.len(), n);
            // Files are read in path order: class folder, then index.
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by_key(|&i| (want.labels()[i], i));
            let want = want.subset(&order).unwrap();
            assert_eq!(got.labels(), want.labels());
            assert_eq!(got.pixels(), want.pixels(), "pixels at {size}x{size}");
        }
        assert_eq!(folder.files.len(), 2);
        assert!(folder.files[0].path.contains("(300 images)") && folder.files[0].sha256.len() == 64);
    }
}

#[test]
fn a_pooled_folder_is_split_per_class_and_bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pool");
    let mnist = Domain::load(DomainId::MnistSmall, None, &opts(28)).unwrap();
    // Classes named by word: 10 "three", 10 "seven" (colour), and one image in "single".
    let mut written = 0;
    for i in 0..mnist.train.len() {
        let name = match mnist.train.labels()[i] {
            3 if written < 10 => "three",
            7 if (10..20).contains(&written) => "seven",
            _ => continue,
        };
        write_png(
            &root.join(name).join(format!("{i:04}.png")),
            mnist.train.image(i),
            28,
            name == "seven",
        );
        written += 1;
        if written == 20 {
            break;
        }
    }
    write_png(
        &root.join("single").join("only.png"),
        mnist.train.image(0),
        28,
        false,
    );
    let src = DomainSource::Folder(root.clone());
    let d = Domain::load_source(&src, None, &opts(16)).unwrap();
    assert_eq!(d.class_names, ["seven", "single", "three"]);
    // Colour found: three channels. 20% of each class of 10 to test; the single image trains.
    assert_eq!(d.train.image_shape(), (3, 16, 16));
    assert_eq!(d.test.class_counts(), [2, 0, 2]);
    assert_eq!(d.train.class_counts(), [8, 1, 8]);
    // The split follows the seed and nothing else.
    let again = Domain::load_source(&src, None, &opts(16)).unwrap();
    assert_eq!(again.test.pixels(), d.test.pixels());
    let other = Domain::load_source(&src, None, &LoadOptions { seed: 9, ..opts(16) }).unwrap();
    assert_ne!(other.test.pixels(), d.test.pixels());
    // Asked for one channel: luma.
    let gray = Domain::load_source(
        &src,
        None,
        &LoadOptions {
            channels: Some(1),
            ..opts(16)
        },
    )
    .unwrap();
    assert_eq!(gray.train.image_shape(), (1, 16, 16));

    // Relabelling to a source's classes by name, and the error for a class the source lacks.
    let names: Vec<String> = ["one", "seven", "single", "three"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let r = d.relabelled_to(&names).unwrap();
    assert_eq!(r.class_names, names);
    assert_eq!(r.test.class_counts(), [0, 2, 0, 2]);
    let err = d.relabelled_to(&names[..2]).unwrap_err().to_string();
    assert!(err.contains("`single`") && err.contains("one, seven"), "{err}");

    // A broken image stops the load with its path, or is skipped when asked.
    std::fs::write(
        root.join("three").join("zz-broken.png"),
        b"\x89PNG\r\n\x1a\ntruncated",
    )
    .unwrap();
    let err = Domain::load_source(&src, None, &opts(16))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("zz-broken.png") && err.contains("--skip-bad-images"),
        "{err}"
    );
    let skipped = Domain::load_source(
        &src,
        None,
        &LoadOptions {
            skip_bad_images: true,
            ..opts(16)
        },
    )
    .unwrap();
    assert_eq!(skipped.train.len() + skipped.test.len(), 21);

    // No class folders, a missing folder, a bad channel count.
    let flat = tmp.path().join("flat");
    write_png(&flat.join("a.png"), mnist.train.image(0), 28, false);
    let err = Domain::load_source(&DomainSource::Folder(flat), None, &opts(16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no class subfolders"), "{err}");
    let err = Domain::load_source(&DomainSource::Folder(tmp.path().join("nope")), None, &opts(16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope") && err.contains("not a directory"), "{err}");
    let err = Domain::load_source(
        &src,
        None,
        &LoadOptions {
            channels: Some(2),
            ..opts(16)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("channels"), "{err}");
    assert!("folder:".parse::<DomainSource>().is_err());
    assert_eq!(
        "usps".parse::<DomainSource>().unwrap(),
        DomainSource::Builtin(DomainId::Usps)
    );
}

/// Three classes of ten grey 16x16 digits each under `root`.
fn three_classes(root: &Path) -> Domain {
    let mnist = Domain::load(DomainId::MnistSmall, None, &opts(16)).unwrap();
    let px = 16 * 16;
    for (class, name) in ["zero", "one", "two"].iter().enumerate() {
        let of: Vec<usize> = (0..mnist.train.len())
            .filter(|&i| mnist.train.labels()[i] as usize == class)
            .take(10)
            .collect();
        for (k, &i) in of.iter().enumerate() {
            let pixels = &mnist.train.pixels()[i * px..(i + 1) * px];
            write_png(&root.join(name).join(format!("{k}.png")), pixels, 16, false);
        }
    }
    Domain::load_source(&DomainSource::Folder(root.to_path_buf()), None, &opts(16)).unwrap()
}

/// Issue 18's reproductions: a symbolic link loop (30 images read as 9,430, mislabelled), an
/// empty class folder (a silent extra class), a link from one class into another.
#[test]
fn links_and_empty_class_folders_cannot_change_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("faces");
    let clean = three_classes(&root);
    assert_eq!(clean.train.len() + clean.test.len(), 30);
    let src = DomainSource::Folder(root.clone());

    // A link back to the folder's root from inside a class: read once, nothing added.
    std::os::unix::fs::symlink(&root, root.join("one").join("loop")).unwrap();
    let d = Domain::load_source(&src, None, &opts(16)).unwrap();
    assert_eq!(d.train.len() + d.test.len(), 30);
    assert_eq!(d.class_names, clean.class_names);
    assert_eq!(d.train.labels(), clean.train.labels());
    std::fs::remove_file(root.join("one").join("loop")).unwrap();

    // A link from one class folder into another: the same images under two classes.
    std::os::unix::fs::symlink(root.join("two"), root.join("one").join("more")).unwrap();
    let err = Domain::load_source(&src, None, &opts(16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("same file") && err.contains("two classes"), "{err}");
    std::fs::remove_file(root.join("one").join("more")).unwrap();

    // An empty class folder would be a fourth class no image has.
    std::fs::create_dir_all(root.join("three")).unwrap();
    let err = Domain::load_source(&src, None, &opts(16))
        .unwrap_err()
        .to_string();
    assert!(err.contains("three") && err.contains("holds no images"), "{err}");
}

/// Colour is detected from every image, not the first 16.
#[test]
fn one_colour_image_after_many_grey_ones_makes_the_folder_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("digits");
    three_classes(&root);
    assert!(!dtl_data::folder::folder_has_colour(&root).unwrap());
    let pixels = vec![0.5f32; 16 * 16];
    write_png(&root.join("two").join("zz-last.png"), &pixels, 16, true);
    assert!(dtl_data::folder::folder_has_colour(&root).unwrap());
    let d = Domain::load_source(&DomainSource::Folder(root.clone()), None, &opts(16)).unwrap();
    assert_eq!(d.train.image_shape().0, 3);
}
