//! Image files as model inputs: PNG, JPEG, TIFF, BMP, GIF, WebP and PNM through the `image` crate,
//! grayscale or colour, brought to a model's `(C, H, W)` input. Files as people have them are
//! read as a viewer shows them: EXIF orientation applied, the first page of a multi-page TIFF,
//! 16-bit samples, CMYK and progressive JPEG, gray with alpha, and 8-bit palette TIFF (which
//! `image` refuses) expanded through its colour map.
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

/// Decodes the first picture of the image file `path` (`len` bytes) within [`decode_budget`],
/// its EXIF orientation applied (JPEG, PNG, TIFF, WebP), 8-bit palette TIFF expanded through its
/// colour map.
pub fn decode(path: &Path, len: u64) -> Result<image::DynamicImage> {
    let io = |e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let bad = |e: &dyn std::fmt::Display| Error::Format {
        path: path.to_path_buf(),
        line: None,
        message: format!("not a readable image: {e}"),
    };
    let mut reader = image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(dtl_core::MAX_IMAGE_SIDE as u32);
    limits.max_image_height = Some(dtl_core::MAX_IMAGE_SIDE as u32);
    limits.max_alloc = Some(decode_budget(len));
    reader.limits(limits.clone());
    let is_tiff = reader.format() == Some(image::ImageFormat::Tiff);
    let decoded = reader.into_decoder().and_then(|mut decoder| {
        use image::ImageDecoder as _;
        let orientation = decoder
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        // As `ImageReader::decode` does: the picture's buffer is charged to the budget first,
        // and the decoder's own allocations get what is left.
        limits.reserve(decoder.total_bytes())?;
        decoder.set_limits(limits)?;
        let mut img = image::DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    });
    match decoded {
        Ok(img) => Ok(img),
        Err(e) if is_tiff => match palette_tiff(&std::fs::read(path).map_err(io)?, len) {
            Ok(Some(img)) => Ok(img),
            Ok(None) => Err(bad(&e)),
            Err(palette) => Err(bad(&format!("{e}; read as a palette TIFF: {palette}"))),
        },
        Err(e) => Err(bad(&e)),
    }
}

/// Where the first directory's PhotometricInterpretation (tag 262) keeps its value in a TIFF
/// file, and that value: classic TIFF (`II*\0` / `MM\0*`, 12-byte entries) and BigTIFF (`II+\0`,
/// 20-byte entries). `None` when the header or the directory cannot be read or holds no such tag.
fn photometric_at(bytes: &[u8]) -> Option<(usize, u16, bool)> {
    let little = match bytes.get(..2)? {
        b"II" => true,
        b"MM" => false,
        _ => return None,
    };
    // The `n`-byte unsigned integer at `at`, in the file's byte order.
    let uint = |at: usize, n: usize| -> Option<u64> {
        let b = bytes.get(at..at.checked_add(n)?)?;
        let fold = |v: u64, x: &u8| v << 8 | u64::from(*x);
        Some(if little {
            b.iter().rev().fold(0, fold)
        } else {
            b.iter().fold(0, fold)
        })
    };
    let u16_at = |at: usize| uint(at, 2).map(|v| v as u16);
    let u64_at = |at: usize| uint(at, 8);
    let (entries, count, entry_len) = match u16_at(2)? {
        42 => {
            let ifd = uint(4, 4)? as usize;
            (ifd.checked_add(2)?, u16_at(ifd)? as u64, 12)
        }
        43 => {
            let ifd = usize::try_from(u64_at(8)?).ok()?;
            (ifd.checked_add(8)?, u64_at(ifd)?, 20)
        }
        _ => return None,
    };
    (0..count.min(4096) as usize)
        .map(|i| entries.checked_add(i.checked_mul(entry_len)?))
        .find_map(|at| {
            let at = at?;
            // A SHORT (type 3) of count 1 keeps its value in the entry's value field.
            (u16_at(at)? == 262 && u16_at(at.checked_add(2)?)? == 3).then_some(())?;
            let value_at = at.checked_add(if entry_len == 12 { 8 } else { 12 })?;
            Some((value_at, u16_at(value_at)?, little))
        })
}

/// A `tiff` decoder of an 8-bit palette TIFF's indices (read as 8-bit gray from a copy of the
/// file whose PhotometricInterpretation reads BlackIsZero) and its ColorMap (tag 320: 768
/// 16-bit levels, red, green, blue); `Ok(None)`: not a palette TIFF.
#[allow(clippy::type_complexity)]
fn palette_tiff_decoder(
    bytes: &[u8],
    len: u64,
) -> std::result::Result<Option<(tiff::decoder::Decoder<std::io::Cursor<Vec<u8>>>, Vec<u16>)>, String> {
    let Some((at, 3, little)) = photometric_at(bytes) else {
        return Ok(None);
    };
    let mut copy = bytes.to_vec();
    copy[at..at + 2].copy_from_slice(&if little {
        1u16.to_le_bytes()
    } else {
        1u16.to_be_bytes()
    });
    let mut limits = tiff::decoder::Limits::default();
    limits.decoding_buffer_size = decode_budget(len) as usize;
    let mut dec = tiff::decoder::Decoder::new(std::io::Cursor::new(copy))
        .map_err(|e| e.to_string())?
        .with_limits(limits);
    match dec.colortype().map_err(|e| e.to_string())? {
        tiff::ColorType::Gray(8) => {}
        other => {
            return Err(format!(
                "palette of {other:?} samples; only 8-bit palettes are read"
            ))
        }
    }
    let map = dec
        .get_tag_u16_vec(tiff::tags::Tag::ColorMap)
        .map_err(|e| format!("no colour map (tag 320): {e}"))?;
    if map.len() != 3 * 256 {
        return Err(format!(
            "a colour map of {} entries; an 8-bit palette has 768",
            map.len()
        ));
    }
    Ok(Some((dec, map)))
}

/// Whether the image file `path` holds colour, from its header alone (a palette TIFF: from its
/// colour map, colour when any entry is not gray). `false` when the header does not read: the
/// file is reported when it is decoded.
pub fn header_has_colour(path: &Path) -> bool {
    let decoder = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .ok()
        .and_then(|r| r.into_decoder().ok());
    if let Some(d) = decoder {
        return image::ImageDecoder::color_type(&d).has_color();
    }
    let Ok(bytes) = std::fs::read(path) else {
        return false;
    };
    matches!(
        palette_tiff_decoder(&bytes, bytes.len() as u64),
        Ok(Some((_, map))) if (0..256).any(|i| map[i] != map[256 + i] || map[i] != map[512 + i])
    )
}

/// An 8-bit palette TIFF (PhotometricInterpretation 3, RGBPalette, which the `tiff` decoder does
/// not expand) as RGB: its indices decoded by `tiff` as 8-bit gray (every compression `tiff`
/// reads) from a copy of the file whose interpretation reads BlackIsZero, then looked up in the
/// ColorMap (tag 320; 16-bit levels, the high byte kept). `Ok(None)`: not a palette TIFF.
fn palette_tiff(bytes: &[u8], len: u64) -> std::result::Result<Option<image::DynamicImage>, String> {
    let Some((mut dec, map)) = palette_tiff_decoder(bytes, len)? else {
        return Ok(None);
    };
    let (w, h) = dec.dimensions().map_err(|e| e.to_string())?;
    if w as usize > dtl_core::MAX_IMAGE_SIDE || h as usize > dtl_core::MAX_IMAGE_SIDE {
        return Err(format!(
            "{w}x{h} pixels is over the limit of {} a side",
            dtl_core::MAX_IMAGE_SIDE
        ));
    }
    let tiff::decoder::DecodingResult::U8(index) = dec.read_image().map_err(|e| e.to_string())? else {
        return Err("indices are not 8-bit".into());
    };
    if index.len() != w as usize * h as usize {
        return Err(format!("{} indices for {w}x{h} pixels", index.len()));
    }
    let rgb: Vec<u8> = index
        .iter()
        .flat_map(|&i| {
            let i = i as usize;
            [map[i] >> 8, map[256 + i] >> 8, map[512 + i] >> 8].map(|v| v as u8)
        })
        .collect();
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or("pixel buffer of the wrong size")?;
    Ok(Some(image::DynamicImage::ImageRgb8(img)))
}

/// [`load_image_fit`] of every path, decoded in parallel, back to back in the order given; the
/// first file that does not decode is the error.
pub fn load_images(paths: &[PathBuf], shape: (usize, usize, usize), fit: Fit) -> Result<Vec<f32>> {
    use rayon::prelude::*;
    let decoded: Vec<Result<Vec<f32>>> = paths.par_iter().map(|p| load_image_fit(p, shape, fit)).collect();
    let mut out = Vec::with_capacity(paths.len() * shape.0 * shape.1 * shape.2);
    for d in decoded {
        out.extend(d?);
    }
    Ok(out)
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
    let img = decode(path, len)?;
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
