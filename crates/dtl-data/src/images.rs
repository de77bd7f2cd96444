//! Image files as model inputs: PNG, JPEG, TIFF, BMP, GIF, WebP and PNM through the `image` crate,
//! grayscale or colour, brought to a model's `(C, H, W)` input.
//!
//! Values are `channel / max` in `[0, 1]` (the convention of every bundled domain). A model with one
//! channel gets the image's luma (ITU-R BT.601 weights, as `image` computes it); a model with three
//! gets RGB, a grayscale image replicated into the three channels. An image already at the
//! model's size is used as it is; any other is resized bilinearly with half-pixel centres
//! ([`crate::dataset::resize_bilinear`], PyTorch's `interpolate(align_corners=False)`). Alpha is
//! dropped.

use std::path::{Path, PathBuf};

use crate::dataset::resize_bilinear;
use crate::{Error, Result};

/// File extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: [&str; 12] = [
    "png", "jpg", "jpeg", "tif", "tiff", "bmp", "gif", "webp", "pgm", "ppm", "pbm", "pnm",
];

/// Whether `path` has one of the [`IMAGE_EXTENSIONS`] (any case).
pub fn is_image_path(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// The image files under `path`: the file itself, or every image file in the directory and its
/// subdirectories, sorted by path. Hidden entries (`.name`) are skipped.
pub fn list_images(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::Io {
                path: dir.clone(),
                source: e,
            })?;
            let p = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if is_image_path(&p) {
                found.push(p);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Decodes `path` and brings it to `shape = (C, H, W)` (`C` 1 or 3), values in `[0, 1]`.
pub fn load_image(path: &Path, shape: (usize, usize, usize)) -> Result<Vec<f32>> {
    let (c, h, w) = shape;
    if !(c == 1 || c == 3) || h == 0 || w == 0 {
        return Err(Error::Msg(format!(
            "images become inputs of 1 or 3 channels and a positive size, not {shape:?}"
        )));
    }
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .decode()
        .map_err(|e| Error::Format {
            path: path.to_path_buf(),
            line: None,
            message: format!("not a readable image: {e}"),
        })?;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    let planes: Vec<Vec<f32>> = if c == 1 {
        let luma = img.to_luma32f();
        vec![luma.into_raw()]
    } else {
        let rgb = img.to_rgb32f().into_raw();
        (0..3)
            .map(|ch| rgb.iter().skip(ch).step_by(3).copied().collect())
            .collect()
    };
    let mut out = vec![0f32; c * h * w];
    for (plane, dst) in planes.iter().zip(out.chunks_mut(h * w)) {
        if (ih, iw) == (h, w) {
            dst.copy_from_slice(plane);
        } else {
            resize_bilinear(plane, ih, iw, dst, h, w);
        }
    }
    Ok(out)
}
