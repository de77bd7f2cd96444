//! Structure-aware fuzzing of every reader of outside input: IDX images and labels, gzip and
//! bzip2 files, LIBSVM and CSV digits, image files, image folders, safetensors checkpoints and
//! train states, TOML run configs, sweep specs and Yosinski configs, Yosinski `runs.csv`, and
//! hub cache layouts with `hf:` references.
//!
//! Each case starts from a valid input built the way the real files are and perturbs its
//! structure (header fields set to extremes, lengths that disagree, truncation, byte flips,
//! spliced garbage, links that loop or leave, keys and values of the wrong kind). A reader must
//! return (a value or an error) without panicking, and the bytes it allocates while reading must
//! stay below a bound derived from the input's size (a counting global allocator measures the
//! peak). The hub reader must in addition never return a file outside the repository's cache
//! folder.
//!
//! `DTL_FUZZ_CASES` sets the cases per reader (default: a few hundred, a few thousand in all,
//! seconds in the default test suite), `DTL_FUZZ_READERS` a comma-separated subset, and
//! `DTL_FUZZ_SEED` the first seed; `cargo xtask fuzz --cases N` runs the long campaign in a
//! release build and prints each reader's counts and time. A failure names the reader and the
//! seed that reproduces it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use candle_core::{DType, Device};
use dtl::backbones::{Classifier, ModelSpec};
use dtl::core::state::State;
use dtl::data::formats;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Counts the bytes allocated now and their peak since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            grew(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Relaxed);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                grew(new - l.size());
            } else {
                CURRENT.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What one case gave: the input's size, whether the reader accepted it, and the most bytes the
/// read held at once beyond what was allocated before it ([`read`]).
struct Outcome {
    len: usize,
    accepted: bool,
    used: usize,
}

/// Runs the read `f` (and nothing of the input's making), measuring its peak allocation.
fn read(len: usize, f: impl FnOnce() -> bool) -> Outcome {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    let accepted = f();
    let used = PEAK.load(Relaxed).saturating_sub(base);
    Outcome { len, accepted, used }
}

/// A reader under test: its name, a bound on the bytes it may allocate for an input of `len`
/// bytes, and a case: build an input from the generator (files go into the scratch folder), read
/// it.
struct Reader {
    name: &'static str,
    bound: fn(usize) -> usize,
    /// Cases per `DTL_FUZZ_CASES` case (file-system-heavy readers run fewer).
    share: f64,
    case: fn(&mut ChaCha8Rng, &Path) -> Outcome,
}

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Mutations shared by the byte formats.

/// Perturbs `bytes`: a few of flips, truncation, splices of random or extreme bytes, duplication.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>) {
    let rounds = rng.random_range(0..4);
    for _ in 0..rounds {
        match rng.random_range(0..6) {
            0 if !bytes.is_empty() => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 if !bytes.is_empty() => {
                let keep = rng.random_range(0..bytes.len());
                bytes.truncate(keep);
            }
            2 => {
                let at = rng.random_range(0..=bytes.len());
                let n = rng.random_range(1..16);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                bytes.splice(at..at, junk);
            }
            3 if bytes.len() >= 4 => {
                let at = rng.random_range(0..bytes.len() - 3);
                let v: u32 = *[0, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX, 4096, 4097, 65535]
                    .get(rng.random_range(0..8))
                    .unwrap();
                let b = if rng.random() {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                };
                bytes[at..at + 4].copy_from_slice(&b);
            }
            4 if !bytes.is_empty() => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] = *[0u8, 0xff, b'\n', b':', b',', b'-', b'.', b'e']
                    .get(rng.random_range(0..8))
                    .unwrap();
            }
            _ => {
                let copy = bytes.clone();
                bytes.extend_from_slice(&copy[..copy.len().min(64)]);
            }
        }
    }
}

/// An extreme or ordinary u32 for a header field.
fn field(rng: &mut ChaCha8Rng, ordinary: u32) -> u32 {
    match rng.random_range(0..10) {
        0 => 0,
        1 => u32::MAX,
        2 => 1 << 31,
        3 => 4096,
        4 => 4097,
        5 => rng.random(),
        _ => ordinary,
    }
}

// ---------------------------------------------------------------------------------------------
// IDX, compression, LIBSVM, CSV.

fn idx_images(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let (n, h, w) = (
        rng.random_range(0..4u32),
        rng.random_range(1..9u32),
        rng.random_range(1..9u32),
    );
    let mut b = vec![0, 0, 8, 3];
    for v in [field(rng, n), field(rng, h), field(rng, w)] {
        b.extend(v.to_be_bytes());
    }
    b.extend((0..n * h * w).map(|_| rng.random::<u8>()));
    b
}

fn idx_labels(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let n = rng.random_range(0..20u32);
    let mut b = vec![0, 0, 8, 1];
    b.extend(field(rng, n).to_be_bytes());
    b.extend((0..n).map(|_| rng.random_range(0..12u8)));
    b
}

fn case_idx(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let images = rng.random();
    let mut b = if images { idx_images(rng) } else { idx_labels(rng) };
    mutate(rng, &mut b);
    let name = Path::new("fuzz-idx");
    read(b.len(), || {
        if images {
            formats::parse_idx_images(&b, name).is_ok()
        } else {
            formats::parse_idx_labels(&b, name).is_ok()
        }
    })
}

fn case_compressed(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let plain: Vec<u8> = match rng.random_range(0..3) {
        0 => idx_images(rng),
        1 => vec![rng.random(); rng.random_range(0..200_000)],
        _ => (0..rng.random_range(0..2000)).map(|_| rng.random()).collect(),
    };
    let gz = rng.random();
    let mut b = if gz {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&plain).unwrap();
        let mut one = e.finish().unwrap();
        if rng.random_bool(0.2) {
            // A multi-member file.
            let again = one.clone();
            one.extend(again);
        }
        one
    } else {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(&plain).unwrap();
        e.finish().unwrap()
    };
    mutate(rng, &mut b);
    let name = if gz { "fuzz.gz" } else { "fuzz.bz2" };
    read(b.len(), || formats::decompress(Path::new(name), &b).is_ok())
}

fn bound_compressed(len: usize) -> usize {
    // Output capped by decompressed_bound (bz2's ratio is the wider), a Vec's doubling, the
    // decoders' own buffers.
    2 * formats::decompressed_bound("bz2", len) as usize + 8 * MIB
}

fn number(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..12) {
        0 => "nan".into(),
        1 => "-inf".into(),
        2 => "1e308".into(),
        3 => "-0".into(),
        4 => "99999999999999999999".into(),
        5 => String::new(),
        6 => "0x10".into(),
        _ => format!("{:.3}", rng.random_range(-1.5..1.5f64)),
    }
}

fn case_libsvm(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let mut text = String::new();
    for _ in 0..rng.random_range(0..6) {
        let label = if rng.random_bool(0.8) {
            rng.random_range(1..11).to_string()
        } else {
            number(rng)
        };
        text.push_str(&label);
        for _ in 0..rng.random_range(0..20) {
            let idx: i64 = match rng.random_range(0..8) {
                0 => 0,
                1 => 257,
                2 => -1,
                3 => i64::MAX,
                _ => rng.random_range(1..257),
            };
            text.push_str(&format!(" {idx}:{}", number(rng)));
        }
        text.push('\n');
    }
    let mut b = text.into_bytes();
    mutate(rng, &mut b);
    read(b.len(), || {
        formats::parse_libsvm_digits(&b, 16, Path::new("fuzz.libsvm")).is_ok()
    })
}

fn case_csv(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let mut text = String::new();
    for _ in 0..rng.random_range(0..6) {
        let cols = if rng.random_bool(0.8) {
            65
        } else {
            rng.random_range(0..80)
        };
        let row: Vec<String> = (0..cols)
            .map(|c| {
                if c == cols - 1 && rng.random_bool(0.8) {
                    rng.random_range(0..12).to_string()
                } else if rng.random_bool(0.9) {
                    rng.random_range(0..18).to_string()
                } else {
                    number(rng)
                }
            })
            .collect();
        text.push_str(&row.join(","));
        text.push('\n');
    }
    let mut b = text.into_bytes();
    mutate(rng, &mut b);
    read(b.len(), || {
        formats::parse_csv_digits(&b, 8, 16.0, Path::new("fuzz.csv")).is_ok()
    })
}

fn bound_text(len: usize) -> usize {
    // A line as short as two bytes becomes an image of 256 f32s.
    2048 * len + MIB
}

// ---------------------------------------------------------------------------------------------
// Image files and folders.

const FORMATS: [(&str, image::ImageFormat); 6] = [
    ("png", image::ImageFormat::Png),
    ("jpg", image::ImageFormat::Jpeg),
    ("bmp", image::ImageFormat::Bmp),
    ("gif", image::ImageFormat::Gif),
    ("tif", image::ImageFormat::Tiff),
    ("pgm", image::ImageFormat::Pnm),
];

/// Files of the kinds the `image` encoders do not write (Pillow's and tifffile's, from
/// `scripts/make_image_fixtures.py`): palette, 16-bit RGB and multi-page TIFF, CMYK, progressive
/// and EXIF-turned JPEG, EXIF-mirrored PNG.
const WRITTEN_ELSEWHERE: [(&[u8], &str); 7] = [
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/palette.tif"),
        "tif",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/rgb16.tif"),
        "tif",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/multipage.tif"),
        "tif",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/cmyk.jpg"),
        "jpg",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/progressive.jpg"),
        "jpg",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/exif-rotate90.jpg"),
        "jpg",
    ),
    (
        include_bytes!("../../crates/dtl-data/tests/fixtures/images/exif-mirror.png"),
        "png",
    ),
];

/// A small valid image file of a random kind, and its extension: one written by the `image`
/// encoders, or (one case in eight) one of [`WRITTEN_ELSEWHERE`]. That choice is drawn from a
/// side stream of `rng` which leaves `rng` where it was, so that every other case, and the
/// seeds in `REGRESSIONS`, are the cases they were before these files were added.
fn image_file(rng: &mut ChaCha8Rng) -> (Vec<u8>, &'static str) {
    let mut side = rng.clone();
    side.set_stream(0x1e5e);
    if side.random_range(0..8) == 0 {
        let (bytes, ext) = WRITTEN_ELSEWHERE[side.random_range(0..WRITTEN_ELSEWHERE.len())];
        return (bytes.to_vec(), ext);
    }
    let (w, h) = (rng.random_range(1..24u32), rng.random_range(1..24u32));
    let (ext, fmt) = FORMATS[rng.random_range(0..FORMATS.len())];
    use image::ImageFormat as F;
    // The pixel kinds each encoder writes: 0 grey, 1 grey 16-bit, 2 RGBA, 3 RGB.
    let kinds: &[u8] = match fmt {
        F::Png | F::Tiff => &[0, 1, 2, 3],
        F::Jpeg | F::Pnm => &[0, 3],
        _ => &[2, 3],
    };
    let img: image::DynamicImage = match kinds[rng.random_range(0..kinds.len())] {
        0 => image::GrayImage::from_fn(w, h, |_, _| image::Luma([rng.random()])).into(),
        1 => image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(w, h, |_, _| {
            image::Luma([rng.random()])
        })
        .into(),
        2 => image::RgbaImage::from_fn(w, h, |_, _| {
            image::Rgba([rng.random(), rng.random(), rng.random(), 200])
        })
        .into(),
        _ => image::RgbImage::from_fn(w, h, |_, _| {
            image::Rgb([rng.random(), rng.random(), rng.random()])
        })
        .into(),
    };
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, fmt).unwrap();
    (
        out.into_inner(),
        if ext == "pgm" && img.color().has_color() {
            "ppm"
        } else {
            ext
        },
    )
}

/// Structure-aware damage to an image file: its size fields set to huge values (PNG's IHDR,
/// BMP's and GIF's dimensions), then the generic mutations.
fn damage_image(rng: &mut ChaCha8Rng, b: &mut Vec<u8>, ext: &str) {
    if rng.random_bool(0.3) {
        let big = [4096u32, 4097, 65535, 1 << 20, u32::MAX][rng.random_range(0..5)];
        match ext {
            "png" if b.len() > 24 => {
                b[16..20].copy_from_slice(&big.to_be_bytes());
                b[20..24].copy_from_slice(&big.to_be_bytes());
            }
            "bmp" if b.len() > 26 => {
                b[18..22].copy_from_slice(&big.to_le_bytes());
                b[22..26].copy_from_slice(&big.to_le_bytes());
            }
            "gif" if b.len() > 10 => {
                let v = (big.min(65535) as u16).to_le_bytes();
                b[6..8].copy_from_slice(&v);
                b[8..10].copy_from_slice(&v);
            }
            _ => {}
        }
    }
    mutate(rng, b);
}

fn case_image(rng: &mut ChaCha8Rng, scratch: &Path) -> Outcome {
    let (mut b, ext) = image_file(rng);
    damage_image(rng, &mut b, ext);
    let path = scratch.join(format!("fuzz.{ext}"));
    std::fs::write(&path, &b).unwrap();
    let c = if rng.random() { 1 } else { 3 };
    let fit = if rng.random() {
        dtl::data::images::Fit::Stretch
    } else {
        dtl::data::images::Fit::Crop
    };
    read(b.len(), || {
        dtl::data::images::load_image_fit(&path, (c, 16, 16), fit).is_ok()
    })
}

fn bound_image(len: usize) -> usize {
    // The decoder's budget, then at most a dozen f32 copies of its output.
    16 * dtl::data::images::decode_budget(len as u64) as usize + MIB
}

fn case_folder(rng: &mut ChaCha8Rng, scratch: &Path) -> Outcome {
    let root = scratch.join("folder");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let presplit = rng.random_bool(0.3);
    let parts: Vec<PathBuf> = if presplit {
        vec![root.join("train"), root.join("test")]
    } else {
        vec![root.clone()]
    };
    let classes = ["cat", "dog", "emu", ".hidden"];
    let mut len = 0;
    for part in &parts {
        for class in &classes[..rng.random_range(0..=classes.len())] {
            let dir = part.join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for k in 0..rng.random_range(0..5) {
                let (mut b, ext) = image_file(rng);
                if rng.random_bool(0.15) {
                    damage_image(rng, &mut b, ext);
                }
                let name = if rng.random_bool(0.1) {
                    format!("{k}.txt")
                } else {
                    format!("{k}.{ext}")
                };
                len += b.len();
                std::fs::write(dir.join(name), b).unwrap();
            }
            if rng.random_bool(0.2) {
                // A link that loops back, leads into another class, or nowhere.
                let target = match rng.random_range(0..3) {
                    0 => root.clone(),
                    1 => part.join(classes[rng.random_range(0..3)]),
                    _ => scratch.join("nowhere"),
                };
                let _ = std::os::unix::fs::symlink(target, dir.join("link"));
            }
        }
    }
    let opts = dtl::data::LoadOptions {
        image_size: 16,
        skip_bad_images: rng.random(),
        seed: rng.random(),
        ..Default::default()
    };
    read(len, || {
        dtl::data::Domain::load_source(&dtl::data::DomainSource::Folder(root.clone()), None, &opts).is_ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Checkpoints and train states.

fn model_bytes(spec: ModelSpec, dir: &Path) -> Vec<u8> {
    let model = Classifier::new(spec, 3, &Device::Cpu).unwrap();
    let path = dir.join("template.safetensors");
    model
        .save(&path, &[("dtl.strategy", "source-only".into())])
        .unwrap();
    std::fs::read(path).unwrap()
}

/// Rewrites a checkpoint's metadata with `edit`, keeping its tensors.
fn with_metadata(bytes: &[u8], edit: impl FnOnce(&mut std::collections::HashMap<String, String>)) -> Vec<u8> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap_or_default();
    edit(&mut meta);
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).unwrap();
    safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta)).unwrap()
}

fn case_checkpoint(rng: &mut ChaCha8Rng, scratch: &Path) -> Outcome {
    let spec = if rng.random() {
        ModelSpec::lenet_digits(16)
    } else {
        ModelSpec::lenet_digits(16).with_adapt_width(Some(rng.random_range(1..8)))
    };
    let mut b = model_bytes(spec, scratch);
    if rng.random_bool(0.6) {
        let key = [
            "dtl.input_shape",
            "dtl.class_names",
            "dtl.adapt_width",
            "dtl.backbone",
            "dtl.format",
            "dtl.sha256",
            "dtl.normalize_mean",
        ][rng.random_range(0..7)];
        let value = match key {
            "dtl.input_shape" => format!("{},{},{}", field(rng, 1), field(rng, 16), field(rng, 16)),
            "dtl.class_names" => (0..rng.random_range(0..14))
                .map(|i| {
                    if rng.random_bool(0.1) {
                        String::new()
                    } else {
                        (i % 11).to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
            "dtl.adapt_width" => field(rng, 4).to_string(),
            "dtl.backbone" => {
                ["lenet", "convnet8", "alexnet", "resnet18", "resnet50", "vgg"][rng.random_range(0..6)].into()
            }
            _ => number(rng),
        };
        b = with_metadata(&b, |m| {
            if rng.random_bool(0.1) {
                m.remove(key);
            } else {
                m.insert(key.into(), value);
            }
        });
    }
    if rng.random_bool(0.2) {
        // A tensor of another kind or with NaN.
        let bytes = b.clone();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone();
        let mut tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        let t = tensors["conv1.bias"].clone();
        let t = match rng.random_range(0..3) {
            0 => t.to_dtype(DType::U8).unwrap(),
            1 => t.to_dtype(DType::F64).unwrap(),
            _ => (t * f64::NAN).unwrap(),
        };
        tensors.insert("conv1.bias".into(), t);
        b = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), meta).unwrap();
    }
    mutate(rng, &mut b);
    let path = scratch.join("fuzz.safetensors");
    std::fs::write(&path, &b).unwrap();
    read(b.len(), || Classifier::load(&path, &Device::Cpu).is_ok())
}

fn bound_checkpoint(len: usize) -> usize {
    // The model a header describes is built only when the file holds the tensors its sizes
    // decide and its largest layers (at most a dozen times their size), then the file's tensors
    // a few times over (read, decoded, digested).
    32 * len + 16 * MIB
}

fn case_state(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let mut s = State::new();
    let n = rng.random_range(0..40);
    s.put_f32s("model.w", &(0..n).map(|i| i as f32).collect::<Vec<_>>())
        .unwrap();
    s.put_indices("loop.order", &(0..n).collect::<Vec<_>>()).unwrap();
    s.put("loop.position", &serde_json::json!({"epoch": 1, "step": 2}))
        .unwrap();
    s.put_rng("loop.rng", &ChaCha8Rng::seed_from_u64(rng.random()))
        .unwrap();
    let mut b = s.to_bytes().unwrap();
    mutate(rng, &mut b);
    read(b.len(), || {
        match State::from_bytes(&b, &Device::Cpu, "fuzz-state") {
            Ok(st) => {
                // Reading its parts back must not panic either.
                let _ = st.rng("loop.rng");
                let _ = st.indices("loop.order", n);
                let _ = st.f32s("model.w", n);
                true
            }
            Err(_) => false,
        }
    })
}

fn bound_bytes(len: usize) -> usize {
    64 * len + 4 * MIB
}

// ---------------------------------------------------------------------------------------------
// TOML configs and runs.csv.

const KEYS: [&str; 16] = [
    "data.source",
    "data.image_size",
    "data.source_train_size",
    "data.source_class_fractions",
    "data.augment.scale",
    "data.placement",
    "model.backbone",
    "optim.lr",
    "optim.optimizer.kind",
    "optim.optimizer.momentum",
    "train.epochs",
    "train.batch_size",
    "train.checkpoint_every",
    "strategy.name",
    "strategy.lambda",
    "strategy.disc-hidden",
];

fn toml_value(rng: &mut ChaCha8Rng) -> String {
    match rng.random_range(0..10) {
        0 => "-1".into(),
        1 => "9223372036854775807".into(),
        2 => "nan".into(),
        3 => "\"dann\"".into(),
        4 => "[0.5, 2, -1]".into(),
        5 => "{ kind = \"adam\" }".into(),
        6 => "true".into(),
        7 => "4097".into(),
        8 => "\"../../etc\"".into(),
        _ => rng.random_range(0..100).to_string(),
    }
}

fn case_config(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let which = rng.random_range(0..3);
    let mut text = match which {
        0 => dtl::experiment::RunConfig::default().to_toml(),
        1 => "seeds = [0, 1]\n[base.data]\nsource = \"mnist-small\"\n[[grid]]\n\"strategy.name\" = [\"dann\"]\n\"optim.lr\" = [0.1, 0.01]\n[[random]]\nsamples = 3\n\"strategy.lambda\" = { log-uniform = [0.01, 1.0] }\n".into(),
        _ => toml::to_string(&dtl::yosinski::SweepConfig::default()).unwrap(),
    };
    for _ in 0..rng.random_range(0..4) {
        let key = KEYS[rng.random_range(0..KEYS.len())];
        let (section, k) = key.split_once('.').unwrap();
        text.push_str(&format!("\n[{section}]\n{k} = {}\n", toml_value(rng)));
    }
    let mut b = text.into_bytes();
    mutate(rng, &mut b);
    let len = b.len();
    let text = String::from_utf8_lossy(&b);
    read(len, || match which {
        0 => match toml::from_str::<toml::Table>(&text) {
            Ok(t) => match dtl::experiment::RunConfig::load_tree(t, None, &[]) {
                Ok(cfg) => {
                    let _ = cfg.to_toml();
                    cfg.strategy.validate().is_ok()
                }
                Err(_) => false,
            },
            Err(_) => false,
        },
        1 => match dtl::select::sweep::SweepSpec::from_toml(&text, "fuzz spec") {
            Ok(spec) => spec.expand().is_ok(),
            Err(_) => false,
        },
        _ => toml::from_str::<dtl::yosinski::SweepConfig>(&text).is_ok(),
    })
}

fn case_runs_csv(rng: &mut ChaCha8Rng, _: &Path) -> Outcome {
    let mut text = String::from("split,setting,n,seed,top1\n");
    for _ in 0..rng.random_range(0..12) {
        let split = ["random", "dissimilar", "other"][rng.random_range(0..3)];
        let setting = ["baseA", "baseB", "BnB", "AnB+", "RnB", "CnB"][rng.random_range(0..6)];
        text.push_str(&format!(
            "{split},{setting},{},{},{}\n",
            rng.random_range(0..9),
            rng.random_range(0..3),
            number(rng)
        ));
    }
    let mut b = text.into_bytes();
    mutate(rng, &mut b);
    read(b.len(), || {
        dtl::yosinski::parse_runs_csv(&String::from_utf8_lossy(&b), Path::new("runs.csv")).is_ok()
    })
}

// ---------------------------------------------------------------------------------------------
// Hub cache layouts.

fn hostile_name(rng: &mut ChaCha8Rng) -> String {
    [
        "main",
        "v1.0",
        "..",
        "../../etc",
        "/etc/passwd",
        "a--b",
        ".hidden",
        "x/y",
        "",
        "0123456789abcdef0123456789abcdef01234567",
        "ñ",
    ][rng.random_range(0..11)]
    .to_string()
}

fn case_hub(rng: &mut ChaCha8Rng, scratch: &Path) -> Outcome {
    let cache = scratch.join("hub");
    let _ = std::fs::remove_dir_all(&cache);
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo_dir = cache.join("models--org--name");
    let snap = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::write(repo_dir.join("blobs").join("b1"), b"weights").unwrap();
    std::fs::write(scratch.join("outside.safetensors"), b"secret").unwrap();
    let refs: String = match rng.random_range(0..6) {
        0 => commit.into(),
        1 => "../../..".into(),
        2 => scratch.join("outside.safetensors").display().to_string(),
        3 => String::new(),
        4 => "z".repeat(rng.random_range(0..10_000)),
        _ => format!("{commit}\n{commit}"),
    };
    let _ = std::fs::write(repo_dir.join("refs").join("main"), &refs);
    let target: PathBuf = match rng.random_range(0..4) {
        0 => PathBuf::from("../../blobs/b1"),
        1 => scratch.join("outside.safetensors"),
        2 => PathBuf::from("model.safetensors"),
        _ => PathBuf::from("../../../../../../../../etc/hostname"),
    };
    let _ = std::os::unix::fs::symlink(&target, snap.join("model.safetensors"));
    let repo = if rng.random_bool(0.7) {
        "org/name".to_string()
    } else {
        format!("{}/{}", hostile_name(rng), hostile_name(rng))
    };
    let revision = if rng.random_bool(0.6) {
        "main".to_string()
    } else {
        hostile_name(rng)
    };
    let file = if rng.random_bool(0.7) {
        "model.safetensors".to_string()
    } else {
        hostile_name(rng)
    };
    let spec = format!("hf:{repo}@{revision}/{file}");
    let mut found = None;
    let outcome = read(spec.len() + refs.len(), || {
        let _ = spec.parse::<dtl::backbones::hub::Pretrained>();
        found = dtl::backbones::hub::cached_file(&cache, &repo, &revision, &file);
        found.is_some()
    });
    if let Some(p) = &found {
        let real = p.canonicalize().unwrap();
        assert!(
            real.starts_with(repo_dir.canonicalize().unwrap()),
            "{spec}: the cache lookup returned {} (resolves to {})",
            p.display(),
            real.display()
        );
    }
    outcome
}

// ---------------------------------------------------------------------------------------------

fn readers() -> Vec<Reader> {
    vec![
        Reader {
            name: "idx",
            bound: bound_bytes,
            share: 1.0,
            case: case_idx,
        },
        Reader {
            name: "gzip/bzip2",
            bound: bound_compressed,
            share: 0.3,
            case: case_compressed,
        },
        Reader {
            name: "libsvm",
            bound: bound_text,
            share: 1.0,
            case: case_libsvm,
        },
        Reader {
            name: "csv",
            bound: bound_text,
            share: 1.0,
            case: case_csv,
        },
        Reader {
            name: "image files",
            bound: bound_image,
            share: 1.0,
            case: case_image,
        },
        Reader {
            name: "image folders",
            bound: bound_image,
            share: 0.1,
            case: case_folder,
        },
        Reader {
            name: "checkpoints",
            bound: bound_checkpoint,
            share: 0.5,
            case: case_checkpoint,
        },
        Reader {
            name: "train states",
            bound: bound_bytes,
            share: 1.0,
            case: case_state,
        },
        Reader {
            name: "toml configs",
            bound: bound_bytes,
            share: 1.0,
            case: case_config,
        },
        Reader {
            name: "runs.csv",
            bound: bound_bytes,
            share: 1.0,
            case: case_runs_csv,
        },
        Reader {
            name: "hub cache",
            bound: bound_bytes,
            share: 0.3,
            case: case_hub,
        },
    ]
}

/// Seeds that once failed, run on every test run besides the campaign's range: each reader's
/// corpus of regressions.
const REGRESSIONS: &[(&str, &[u64])] = &[
    // A damaged image that decodes to zero columns panicked in the crop window (`clamp(1, 0)`);
    // found by the first million-case campaign.
    ("image files", &[17930, 37208, 41636, 46894]),
];

fn env_usize(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One test, so that no other test allocates while a case's peak is measured.
#[test]
fn every_reader_survives_structured_garbage_within_its_memory_bound() {
    let cases = env_usize("DTL_FUZZ_CASES", 1000);
    let first_seed = env_usize("DTL_FUZZ_SEED", 0);
    let only: Option<Vec<String>> = std::env::var("DTL_FUZZ_READERS")
        .ok()
        .map(|v| v.split(',').map(str::to_string).collect());
    let scratch = tempfile::tempdir().unwrap();
    // Panics are caught and counted; their messages would drown the report.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    println!("reader          cases  accepted  panics  over-bound  worst peak/bound  seconds");
    for r in readers() {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == r.name)) {
            continue;
        }
        let n = ((cases as f64 * r.share).ceil() as u64).max(1);
        let regressions: Vec<u64> = REGRESSIONS
            .iter()
            .filter(|(name, _)| *name == r.name)
            .flat_map(|(_, seeds)| seeds.iter().copied())
            .collect();
        let started = Instant::now();
        let (mut accepted, mut panics, mut over, mut worst) = (0u64, 0u64, 0u64, 0f64);
        for seed in (first_seed..first_seed + n).chain(regressions) {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_f022);
            rng.next_u32();
            let result = catch_unwind(AssertUnwindSafe(|| (r.case)(&mut rng, scratch.path())));
            match result {
                Ok(o) => {
                    let used = o.used;
                    accepted += o.accepted as u64;
                    let bound = (r.bound)(o.len);
                    worst = worst.max(used as f64 / bound as f64);
                    if used > bound {
                        over += 1;
                        failures.push(format!(
                            "{}: seed {seed}: {used} bytes allocated for {} input bytes (bound {bound})",
                            r.name, o.len
                        ));
                    }
                }
                Err(payload) => {
                    panics += 1;
                    let message = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{}: seed {seed} panicked: {message}", r.name));
                }
            }
        }
        println!(
            "{:<15} {:>6}  {:>8}  {:>6}  {:>10}  {:>16.4}  {:>7.1}",
            r.name,
            n,
            accepted,
            panics,
            over,
            worst,
            started.elapsed().as_secs_f64()
        );
    }
    let _ = std::panic::take_hook();
    assert!(
        failures.is_empty(),
        "{} failing cases (rerun one with DTL_FUZZ_SEED=<seed> DTL_FUZZ_CASES=1 DTL_FUZZ_READERS=<reader>):\n{}",
        failures.len(),
        failures.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
