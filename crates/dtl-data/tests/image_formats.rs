//! Image files as people have them (palette and 16-bit TIFF, multi-page TIFF, CMYK and progressive
//! JPEG, EXIF orientation, grayscale with alpha, palette PNG), written by Pillow and tifffile
//! (`scripts/make_image_fixtures.py`): each must decode to the pixels Pillow decodes from it
//! (`expected.json`), orientation applied, as the model's RGB and grayscale inputs.

use std::path::{Path, PathBuf};

use dtl_data::images::{load_image_fit, Fit};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images")
}

fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// `(H, W, 3)` bytes of a JSON array.
fn rgb(v: &serde_json::Value) -> Vec<[f32; 3]> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|px| {
            let c: Vec<f32> = px
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32 / 255.0)
                .collect();
            [c[0], c[1], c[2]]
        })
        .collect()
}

/// JPEG decoders differ in their inverse transform and colour conversion by a few levels.
fn tolerance(name: &str) -> f32 {
    if name.ends_with(".jpg") {
        3.0 / 255.0
    } else {
        1e-6
    }
}

#[test]
fn every_file_decodes_to_pillows_pixels_with_its_orientation_applied() {
    let exp = expected();
    let files = exp["files"].as_object().unwrap();
    assert_eq!(files.len(), 11);
    for (name, entry) in files {
        let want = rgb(&entry["rgb"]);
        let path = fixtures().join(name);
        let got = load_image_fit(&path, (3, 16, 24), Fit::Stretch)
            .unwrap_or_else(|e| panic!("{name} ({}): {e}", entry["what"]));
        let plane = 16 * 24;
        let tol = tolerance(name);
        for (i, w) in want.iter().enumerate() {
            for c in 0..3 {
                let g = got[c * plane + i];
                assert!(
                    (g - w[c]).abs() <= tol,
                    "{name}: pixel ({}, {}) channel {c}: {g} against Pillow's {}",
                    i / 24,
                    i % 24,
                    w[c]
                );
            }
        }
    }
}

/// Grayscale files read as one channel give their gray levels (16-bit: the full 16-bit value
/// scaled to [0, 1], which Pillow's 8-bit view matches to within one level).
#[test]
fn grayscale_files_give_their_levels_as_one_channel() {
    let exp = expected();
    for name in ["gray16.tif", "gray-alpha.png"] {
        let want = rgb(&exp["files"][name]["rgb"]);
        let got = load_image_fit(&fixtures().join(name), (1, 16, 24), Fit::Stretch).unwrap();
        for (i, w) in want.iter().enumerate() {
            assert!(
                (got[i] - w[0]).abs() <= 1.0 / 255.0,
                "{name}: pixel {i}: {} against {}",
                got[i],
                w[0]
            );
        }
    }
}

/// The turned file read at the stored picture's shape (16 wide, 24 high) would be the turned
/// picture; with orientation applied it is 24 wide again, so a model of 24x16 input reads it
/// without resizing: its top-left block is the pattern's red.
#[test]
fn orientation_is_applied_before_resizing() {
    let got = load_image_fit(&fixtures().join("exif-rotate90.jpg"), (3, 16, 24), Fit::Stretch).unwrap();
    let plane = 16 * 24;
    let (r, g, b) = (got[0], got[plane], got[2 * plane]);
    assert!(
        r > 0.85 && g < 0.2 && b < 0.2,
        "top-left is ({r}, {g}, {b}), not red"
    );
}

/// A folder of palette TIFFs is colour when the palette is (its header alone says so); one of
/// 16-bit gray TIFFs is not.
#[test]
fn colour_is_detected_from_palettes() {
    for (name, colour) in [("palette.tif", true), ("gray16.tif", false), ("cmyk.jpg", true)] {
        let dir = tempfile::tempdir().unwrap();
        let class = dir.path().join("a");
        std::fs::create_dir(&class).unwrap();
        std::fs::copy(fixtures().join(name), class.join(name)).unwrap();
        assert_eq!(
            dtl_data::folder::folder_has_colour(dir.path()).unwrap(),
            colour,
            "{name}"
        );
    }
}
