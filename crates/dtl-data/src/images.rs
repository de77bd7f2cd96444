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
/// subdirectories, sorted by path. Hidden entries (`.name`) are skipped. Symbolic links are
/// followed, but a directory is read once: a link back to a directory already read (a loop, or
/// a second way into the same folder) is skipped with a warning instead of listing its images
/// again and again.
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
    let mut visited = std::collections::HashSet::new();
    let start = std::fs::canonicalize(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    while let Some(dir) = stack.pop() {
        let real = std::fs::canonicalize(&dir).map_err(|e| Error::Io {
            path: dir.clone(),
            source: e,
        })?;
        // A folder that holds the one being listed is a loop back to it.
        let encloses_start = real != start && start.starts_with(&real);
        if encloses_start || !visited.insert(real.clone()) {
            tracing::warn!(
                "{}: skipped, it leads to {} which is read already (a symbolic link loop or a second link to one folder)",
                dir.display(),
                real.display()
            );
            continue;
        }
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
    load_image_fit(path, shape, Fit::Stretch)
}

/// How an image of another size is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fit {
    /// Resize the whole image to the input size (aspect ratio not kept): digits, and images
    /// already square.
    #[default]
    Stretch,
    /// torchvision's ImageNet evaluation transform: scale the shorter side to `size / 0.875`
    /// (256 for 224) and keep the central `size x size` square (aspect ratio kept).
    Crop,
}

impl Fit {
    /// The name configs and checkpoints use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Fit::Stretch => "stretch",
            Fit::Crop => "crop",
        }
    }
}

impl std::str::FromStr for Fit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "stretch" => Ok(Fit::Stretch),
            "crop" => Ok(Fit::Crop),
            _ => Err(Error::Msg(format!(
                "invalid value for `fit`: `{s}` is not one of stretch, crop"
            ))),
        }
    }
}

/// The rectangle `(top, left, height, width)` of an `ih x iw` image that [`Fit::Crop`] scales to
/// `h x w`: the centred region that scaling the shorter side to `side / 0.875` and cropping the
/// centre would keep.
pub fn crop_window(ih: usize, iw: usize, h: usize, w: usize) -> (usize, usize, usize, usize) {
    let resized_short = (h.min(w) as f64 / 0.875).round();
    let scale = resized_short / ih.min(iw) as f64;
    let ch = ((h as f64 / scale).round() as usize).clamp(1, ih);
    let cw = ((w as f64 / scale).round() as usize).clamp(1, iw);
    ((ih - ch) / 2, (iw - cw) / 2, ch, cw)
}

/// The most bytes the decoder may allocate for an image file of `len` bytes: 16 MiB plus 8,192
/// times its size (PNG's deflate cannot expand more than 1,032 times; a flat JPEG can a few
/// thousand times), at most 1 GiB. A small file whose header claims a huge picture is refused by
/// the decoder instead of being allocated.
pub fn decode_budget(len: u64) -> u64 {
    ((16 << 20) + 8192u64.saturating_mul(len)).min(1 << 30)
}

/// [`load_image`] with a choice of [`Fit`]. An image already at `(H, W)` is used as it is with
/// either fit.
pub fn load_image_fit(path: &Path, shape: (usize, usize, usize), fit: Fit) -> Result<Vec<f32>> {
    let (c, h, w) = shape;
    if !(c == 1 || c == 3) || h == 0 || w == 0 {
        return Err(Error::Msg(format!(
            "images become inputs of 1 or 3 channels and a positive size, not {shape:?}"
        )));
    }
    let len = std::fs::metadata(path)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .len();
    let mut reader = image::ImageReader::open(path)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?
        .with_guessed_format()
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(dtl_core::MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(dtl_core::MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(decode_budget(len));
    reader.limits(limits);
    let img = reader.decode().map_err(|e| Error::Format {
        path: path.to_path_buf(),
        line: None,
        message: format!("not a readable image: {e}"),
    })?;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if iw == 0 || ih == 0 {
        return Err(Error::Format {
            path: path.to_path_buf(),
            line: None,
            message: format!("decodes to an image of {iw}x{ih} pixels: nothing to read"),
        });
    }
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
        } else if fit == Fit::Crop {
            let (top, left, ch, cw) = crop_window(ih, iw, h, w);
            let window: Vec<f32> = (top..top + ch)
                .flat_map(|r| plane[r * iw + left..r * iw + left + cw].iter().copied())
                .collect();
            resize_bilinear(&window, ch, cw, dst, h, w);
        } else {
            resize_bilinear(plane, ih, iw, dst, h, w);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's `Resize(256)` then `CenterCrop(224)` keeps, of a 341x256 (WxH) photo, rows
    /// 16..240 and columns 58..282 (its left offset rounds 58.5 to 58); of a 683x512 one, the same
    /// region at twice the scale.
    #[test]
    fn crop_window_is_torchvisions_resize_and_centre_crop() {
        assert_eq!(crop_window(256, 341, 224, 224), (16, 58, 224, 224));
        assert_eq!(crop_window(512, 683, 224, 224), (32, 117, 448, 448));
        // Portrait orientation: the shorter side is the width.
        assert_eq!(crop_window(341, 256, 224, 224), (58, 16, 224, 224));
        assert_eq!("crop".parse::<Fit>().unwrap(), Fit::Crop);
        assert!("zoom"
            .parse::<Fit>()
            .unwrap_err()
            .to_string()
            .contains("stretch, crop"));
    }

    /// A crop of a picture whose centre square is white and surround black is all white.
    #[test]
    fn crop_keeps_the_centre() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        // 64 wide, 32 high: the crop window for 16x16 is 28x28 at (2, 18).
        image::GrayImage::from_fn(64, 32, |x, _| {
            image::Luma([if (16..48).contains(&x) { 255 } else { 0 }])
        })
        .save(&path)
        .unwrap();
        assert_eq!(crop_window(32, 64, 16, 16), (2, 18, 28, 28));
        let crop = load_image_fit(&path, (1, 16, 16), Fit::Crop).unwrap();
        assert!(crop.iter().all(|&v| v == 1.0), "{crop:?}");
        let stretch = load_image_fit(&path, (1, 16, 16), Fit::Stretch).unwrap();
        assert_eq!(stretch[0], 0.0);
    }
}
