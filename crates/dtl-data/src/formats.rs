//! Readers for the file formats the digit domains are published in.
//!
//! Each reader maps its format to dtl's one image convention: single channel, ink high,
//! `f32` in `[0, 1]`, row-major `H x W`:
//!
//! | format | domain | raw values | mapping |
//! |---|---|---|---|
//! | IDX (gzip'd) | MNIST | `u8`, ink 255 on 0 | `v / 255` |
//! | LIBSVM text (bzip2'd) | USPS (ESL copy) | ink 1 on background -1, label = digit + 1 | `(v + 1) / 2` |
//! | CSV (gzip'd) | UCI optdigits | counts 0..16, ink 16, label last | `v / 16` |

use std::io::Read;
use std::path::Path;

use crate::{Error, Result};

/// Images decoded from a file: `n` images of `height x width`, one channel, values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RawImages {
    /// Number of images.
    pub n: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// `n * height * width` pixels, image after image, row-major.
    pub pixels: Vec<f32>,
}

/// Reads a whole file, decompressing it when its name ends in `.gz` or `.bz2`.
pub fn read_decompressed(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let data = decompress(path, &raw)?;
    Ok((raw, data))
}

/// The most bytes [`decompress`] lets `compressed` bytes of format `ext` become: deflate cannot
/// expand data more than 1032 times (gzip), bzip2's runs can, so its bound is wider; both are
/// capped at 4 GiB. A file beyond its bound is a decompression bomb, not a data set.
pub fn decompressed_bound(ext: &str, compressed: usize) -> u64 {
    let ratio: u64 = if ext == "bz2" { 50_000 } else { 1_100 };
    (ratio.saturating_mul(compressed as u64) + (1 << 20)).min(4 << 30)
}

/// Decompresses `raw` according to the extension of `name` (`.gz`, `.bz2`, or none), to at most
/// [`decompressed_bound`] bytes.
pub fn decompress(name: &Path, raw: &[u8]) -> Result<Vec<u8>> {
    let ext = name.extension().and_then(|e| e.to_str()).unwrap_or("");
    let bound = decompressed_bound(ext, raw.len());
    let mut out = Vec::new();
    let res = match ext {
        // Every member of a multi-member file, as `gzip -d` reads it.
        "gz" => flate2::read::MultiGzDecoder::new(raw)
            .take(bound + 1)
            .read_to_end(&mut out),
        "bz2" => bzip2::read::BzDecoder::new(raw)
            .take(bound + 1)
            .read_to_end(&mut out),
        _ => {
            out.extend_from_slice(raw);
            Ok(out.len())
        }
    };
    res.map_err(|e| Error::format(name, None, format!("cannot decompress ({ext}): {e}")))?;
    if out.len() as u64 > bound {
        return Err(Error::format(
            name,
            None,
            format!(
                "decompresses to more than {bound} bytes from {} ({ext}): not a data file",
                raw.len()
            ),
        ));
    }
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize, name: &Path) -> Result<usize> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| Error::format(name, None, "truncated IDX header"))
}

/// Parses an IDX image file (magic `0x00000803`, `u8` pixels), as MNIST publishes it.
pub fn parse_idx_images(bytes: &[u8], name: &Path) -> Result<RawImages> {
    let magic = be_u32(bytes, 0, name)?;
    if magic != 0x0803 {
        return Err(Error::format(
            name,
            None,
            format!("not an IDX image file: magic {magic:#010x}, expected 0x00000803"),
        ));
    }
    let n = be_u32(bytes, 4, name)?;
    let height = be_u32(bytes, 8, name)?;
    let width = be_u32(bytes, 12, name)?;
    for (what, side) in [("height", height), ("width", width)] {
        if side == 0 || side > dtl_core::MAX_IMAGE_SIDE {
            return Err(Error::format(
                name,
                None,
                format!(
                    "header says images of {what} {side}: dtl reads sides of 1 to {}",
                    dtl_core::MAX_IMAGE_SIDE
                ),
            ));
        }
    }
    let body = &bytes[16..];
    // Checked: a hostile header's product must not wrap around to the body's length.
    let expected = n.checked_mul(height * width);
    if expected != Some(body.len()) {
        let expected = expected.map_or_else(|| "more than addressable".to_string(), |e| e.to_string());
        return Err(Error::format(
            name,
            None,
            format!(
                "header says {n} images of {height}x{width} ({expected} bytes), body has {} bytes",
                body.len()
            ),
        ));
    }
    let pixels = body.iter().map(|&b| b as f32 / 255.0).collect();
    Ok(RawImages {
        n,
        height,
        width,
        pixels,
    })
}

/// Parses an IDX label file (magic `0x00000801`, `u8` labels).
pub fn parse_idx_labels(bytes: &[u8], name: &Path) -> Result<Vec<u32>> {
    let magic = be_u32(bytes, 0, name)?;
    if magic != 0x0801 {
        return Err(Error::format(
            name,
            None,
            format!("not an IDX label file: magic {magic:#010x}, expected 0x00000801"),
        ));
    }
    let n = be_u32(bytes, 4, name)?;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(Error::format(
            name,
            None,
            format!("header says {n} labels, body has {} bytes", body.len()),
        ));
    }
    Ok(body.iter().map(|&b| b as u32).collect())
}

/// Parses LIBSVM lines `LABEL i:v ...` of `side x side` images with values in `[-1, 1]`
/// (USPS as the ESL copy stores it: background -1, ink 1, label = digit + 1).
///
/// Absent indices are background (-1 before mapping), as LIBSVM's sparse format allows.
pub fn parse_libsvm_digits(text: &[u8], side: usize, name: &Path) -> Result<(RawImages, Vec<u32>)> {
    let text = std::str::from_utf8(text).map_err(|e| Error::format(name, None, e.to_string()))?;
    let dim = side * side;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = Some(i + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_ascii_whitespace();
        let label_txt = parts.next().unwrap_or_default();
        let label: f64 = label_txt
            .parse()
            .map_err(|_| Error::format(name, line_no, format!("label `{label_txt}` is not a number")))?;
        if label.fract() != 0.0 || !(1.0..=10.0).contains(&label) {
            return Err(Error::format(
                name,
                line_no,
                format!("label {label} is not a digit + 1 in 1..=10"),
            ));
        }
        labels.push(label as u32 - 1);
        let start = pixels.len();
        pixels.resize(start + dim, 0.0);
        for item in parts {
            let (idx, val) = item
                .split_once(':')
                .ok_or_else(|| Error::format(name, line_no, format!("`{item}` is not INDEX:VALUE")))?;
            let idx: usize = idx
                .parse()
                .map_err(|_| Error::format(name, line_no, format!("bad index in `{item}`")))?;
            let val: f32 = val
                .parse()
                .map_err(|_| Error::format(name, line_no, format!("bad value in `{item}`")))?;
            if idx == 0 || idx > dim {
                return Err(Error::format(
                    name,
                    line_no,
                    format!("index {idx} outside 1..={dim}"),
                ));
            }
            if !(-1.0..=1.0).contains(&val) {
                return Err(Error::format(
                    name,
                    line_no,
                    format!("value {val} outside [-1, 1]"),
                ));
            }
            pixels[start + idx - 1] = (val + 1.0) / 2.0;
        }
    }
    // Absent entries are background: the zero we wrote maps to -1 -> 0, which is already right.
    let n = labels.len();
    Ok((
        RawImages {
            n,
            height: side,
            width: side,
            pixels,
        },
        labels,
    ))
}

/// Parses CSV rows of `side * side` pixel counts in `0..=max` followed by the label (UCI optdigits
/// as scikit-learn bundles it: 8x8 counts in 0..16).
pub fn parse_csv_digits(text: &[u8], side: usize, max: f32, name: &Path) -> Result<(RawImages, Vec<u32>)> {
    let text = std::str::from_utf8(text).map_err(|e| Error::format(name, None, e.to_string()))?;
    let dim = side * side;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = Some(i + 1);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != dim + 1 {
            return Err(Error::format(
                name,
                line_no,
                format!("{} fields, expected {} pixels and a label", fields.len(), dim),
            ));
        }
        for f in &fields[..dim] {
            let v: f32 = f
                .trim()
                .parse()
                .map_err(|_| Error::format(name, line_no, format!("pixel `{f}` is not a number")))?;
            if !(0.0..=max).contains(&v) {
                return Err(Error::format(
                    name,
                    line_no,
                    format!("pixel {v} outside 0..={max}"),
                ));
            }
            pixels.push(v / max);
        }
        let l: f64 = fields[dim]
            .trim()
            .parse()
            .map_err(|_| Error::format(name, line_no, format!("label `{}` is not a number", fields[dim])))?;
        if l.fract() != 0.0 || !(0.0..=9.0).contains(&l) {
            return Err(Error::format(name, line_no, format!("label {l} is not a digit")));
        }
        labels.push(l as u32);
    }
    Ok((
        RawImages {
            n: labels.len(),
            height: side,
            width: side,
            pixels,
        },
        labels,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("test-input")
    }

    #[test]
    fn idx_roundtrip_and_errors() {
        let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        bytes.extend_from_slice(&[0, 255, 51, 102]);
        let img = parse_idx_images(&bytes, p()).unwrap();
        assert_eq!((img.n, img.height, img.width), (2, 1, 2));
        assert_eq!(img.pixels, vec![0.0, 1.0, 0.2, 0.4]);
        let err = parse_idx_images(&bytes[..18], p()).unwrap_err().to_string();
        assert!(
            err.contains("test-input") && err.contains("body has 2 bytes"),
            "{err}"
        );
        let err = parse_idx_labels(&bytes, p()).unwrap_err().to_string();
        assert!(err.contains("magic"), "{err}");
    }

    /// Issue 18's reproductions: a header whose sizes multiply past `usize` (h = w = 2^31 wraps
    /// to 0 on 64 bits) or ask for sides no image has is an error naming the file, not a panic.
    #[test]
    fn idx_headers_with_huge_sizes_are_errors() {
        let header = |n: u32, h: u32, w: u32| {
            let mut b = vec![0, 0, 8, 3];
            for v in [n, h, w] {
                b.extend_from_slice(&v.to_be_bytes());
            }
            b
        };
        for (n, h, w) in [
            (1, 1 << 31, 1 << 31),
            (0, 1 << 31, 1 << 31),
            (1, 0, 28),
            (u32::MAX, 4096, 4096),
            (1, 4097, 1),
        ] {
            let err = parse_idx_images(&header(n, h, w), p()).unwrap_err().to_string();
            assert!(
                err.contains("test-input") && err.contains("header says"),
                "{n} {h} {w}: {err}"
            );
        }
    }

    /// A gzip file of several members (as `cat a.gz b.gz` makes, valid for `gzip -d`) is read to
    /// its end, not as its first member.
    #[test]
    fn multi_member_gzip_is_read_whole() {
        use std::io::Write;
        let member = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap()
        };
        let mut raw = member(b"first half, ");
        raw.extend(member(b"second half"));
        let out = decompress(Path::new("x.gz"), &raw).unwrap();
        assert_eq!(out, b"first half, second half");
    }

    #[test]
    fn libsvm_maps_polarity_and_labels() {
        let (img, labels) = parse_libsvm_digits(b"1 1:-1 2:1 3:0\n10 4:0.5\n", 2, p()).unwrap();
        assert_eq!(labels, vec![0, 9]);
        assert_eq!(img.pixels, vec![0.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.75]);
        let err = parse_libsvm_digits(b"3 5:1\n", 2, p()).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("index 5"), "{err}");
        let err = parse_libsvm_digits(b"11 1:1\n", 2, p()).unwrap_err().to_string();
        assert!(err.contains("label 11"), "{err}");
    }

    #[test]
    fn csv_maps_counts() {
        let (img, labels) = parse_csv_digits(b"0,16,8,4,7\n", 2, 16.0, p()).unwrap();
        assert_eq!(labels, vec![7]);
        assert_eq!(img.pixels, vec![0.0, 1.0, 0.5, 0.25]);
        let err = parse_csv_digits(b"0,16,8,7\n", 2, 16.0, p())
            .unwrap_err()
            .to_string();
        assert!(err.contains("4 fields"), "{err}");
    }
}
