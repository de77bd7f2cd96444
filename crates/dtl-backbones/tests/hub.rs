//! Pretrained weights from the Hugging Face hub, served from a local directory laid out as the hub
//! cache (`models--ORG--NAME/refs/REV`, `snapshots/COMMIT/FILE`), offline; and the errors when the
//! file is not there or the hub cannot be reached.

use std::path::Path;

use candle_core::{Device, Tensor};
use dtl_backbones::hub::{cached_file, Pretrained};
use dtl_backbones::{Classifier, ModelSpec};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Writes `model` into `cache` as the hub would have: a ref `main` pointing at `COMMIT`.
fn publish(cache: &Path, repo: &str, file: &str, model: &Classifier) {
    let dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    std::fs::write(dir.join("refs").join("main"), COMMIT).unwrap();
    let snap = dir.join("snapshots").join(COMMIT).join(file);
    std::fs::create_dir_all(snap.parent().unwrap()).unwrap();
    model.save(&snap, &[]).unwrap();
}

/// Resolves `spec`, returning the local path.
fn resolve(spec: &str) -> std::path::PathBuf {
    spec.parse::<Pretrained>().unwrap().resolve().unwrap()
}

/// Resolves `spec`, expecting an error, and returns its message.
fn resolve_err(spec: &str) -> String {
    spec.parse::<Pretrained>()
        .unwrap()
        .resolve()
        .unwrap_err()
        .to_string()
}

#[test]
fn references_parse_and_bad_ones_are_named() {
    let hub = |repo: &str, revision: &str, file: &str| Pretrained::Hub {
        repo: repo.into(),
        revision: revision.into(),
        file: file.into(),
    };
    for (spec, want) in [
        (
            "hf:timm/resnet18.a1_in1k",
            hub("timm/resnet18.a1_in1k", "main", "model.safetensors"),
        ),
        ("hf:org/name@v1.0", hub("org/name", "v1.0", "model.safetensors")),
        (
            "hf:org/name/sub/dir/w.safetensors",
            hub("org/name", "main", "sub/dir/w.safetensors"),
        ),
        (
            &format!("hf:org/name@{COMMIT}/w.safetensors"),
            hub("org/name", COMMIT, "w.safetensors"),
        ),
        (
            "models/lenet/model.safetensors",
            Pretrained::Path("models/lenet/model.safetensors".into()),
        ),
    ] {
        let got: Pretrained = spec.parse().unwrap();
        assert_eq!(got, want, "{spec}");
        assert_eq!(
            got.to_string().parse::<Pretrained>().unwrap(),
            got,
            "round trip of {spec}"
        );
    }
    for bad in [
        "hf:",
        "hf:justname",
        "hf:org/",
        "hf:/name",
        "hf:org/name@/f",
        "hf:org/name/",
        "hf:org/na me",
        "hf:org/name/../x",
        "hf:../../etc/passwd",
        "hf:../name",
        "hf:org/..",
        "hf:.hidden/name",
        "hf:org/name-",
        "hf:org--x/name",
        "hf:org/name@../../x",
        "hf:org/name@.git",
        "hf:org/name/./x",
        "",
    ] {
        let err = bad.parse::<Pretrained>().unwrap_err().to_string();
        assert!(
            err.contains("pretrained") && err.contains("hf:ORG/NAME"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn cached_files_are_found_by_ref_or_commit_and_only_there() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Classifier::new(ModelSpec::lenet_digits(16), 1, &Device::Cpu).unwrap();
    publish(tmp.path(), "dtl-rs/lenet", "model.safetensors", &model);
    let want = tmp
        .path()
        .join("models--dtl-rs--lenet/snapshots")
        .join(COMMIT)
        .join("model.safetensors");
    assert_eq!(
        cached_file(tmp.path(), "dtl-rs/lenet", "main", "model.safetensors"),
        Some(want.clone())
    );
    assert_eq!(
        cached_file(tmp.path(), "dtl-rs/lenet", COMMIT, "model.safetensors"),
        Some(want)
    );
    assert_eq!(
        cached_file(tmp.path(), "dtl-rs/lenet", "v2", "model.safetensors"),
        None
    );
    assert_eq!(
        cached_file(tmp.path(), "dtl-rs/lenet", "main", "other.safetensors"),
        None
    );
    assert_eq!(
        cached_file(tmp.path(), "dtl-rs/other", "main", "model.safetensors"),
        None
    );
}

/// A cache whose `refs` file holds a path (absolute, or `..` upward) instead of a commit hash, or
/// whose snapshot links leave the repository, is not followed: dtl never loads a file outside the
/// cache through it (a reproduction of issue 18).
#[test]
fn refs_and_links_that_leave_the_cache_are_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("model.safetensors")).unwrap();
    std::fs::write(outside.join("x.safetensors"), b"not the cache's").unwrap();
    let dir = cache.join("models--dtl-rs--lenet");
    std::fs::create_dir_all(dir.join("refs")).unwrap();
    for content in [
        outside.display().to_string(),
        "../../..".to_string(),
        "../../../outside".into(),
    ] {
        std::fs::write(dir.join("refs/main"), &content).unwrap();
        assert_eq!(
            cached_file(&cache, "dtl-rs/lenet", "main", "x.safetensors"),
            None,
            "{content}"
        );
    }
    // A repository id or revision with `..` never reaches the file system.
    assert_eq!(cached_file(&cache, "../outside", "main", "x.safetensors"), None);
    assert_eq!(
        cached_file(&cache, "dtl-rs/lenet", "../../outside", "x.safetensors"),
        None
    );
    // A snapshot link out of the repository.
    std::fs::write(dir.join("refs/main"), COMMIT).unwrap();
    let snap = dir.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.join("x.safetensors"), snap.join("x.safetensors")).unwrap();
        assert_eq!(cached_file(&cache, "dtl-rs/lenet", "main", "x.safetensors"), None);
    }
    // The same layout with the file inside is found.
    std::fs::write(snap.join("y.safetensors"), b"in the cache").unwrap();
    assert_eq!(
        cached_file(&cache, "dtl-rs/lenet", "main", "y.safetensors"),
        Some(snap.join("y.safetensors"))
    );
}

/// One test for everything that reads the environment, which the test threads share.
#[test]
fn resolve_reads_the_cache_offline_and_explains_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("hf-home");
    let model = Classifier::new(ModelSpec::lenet_digits(16), 5, &Device::Cpu).unwrap();
    publish(
        &home.join("hub"),
        "dtl-rs/lenet-digits",
        "model.safetensors",
        &model,
    );
    std::env::remove_var("HF_HUB_CACHE");
    std::env::set_var("HF_HOME", &home);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    // Served from the cache, offline: the checkpoint loads and computes what the original does.
    let path = resolve("hf:dtl-rs/lenet-digits");
    let (loaded, _) = Classifier::load(&path, &Device::Cpu).unwrap();
    let xs = Tensor::rand(0f32, 1f32, (3, 1, 16, 16), &Device::Cpu).unwrap();
    let diff = (loaded.forward(&xs, false).unwrap() - model.forward(&xs, false).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);

    // Missing, offline: the error names repository, revision, file, the cache and what to do.
    let err = resolve_err("hf:dtl-rs/lenet-digits@v9/weights.safetensors");
    for part in [
        "hf:dtl-rs/lenet-digits@v9/weights.safetensors",
        "HF_HUB_OFFLINE",
        "hf-home",
        "huggingface-cli download dtl-rs/lenet-digits weights.safetensors --revision v9",
    ] {
        assert!(err.contains(part), "`{part}` missing from: {err}");
    }

    // HF_HUB_CACHE wins over HF_HOME.
    let other = tmp.path().join("elsewhere");
    publish(&other, "dtl-rs/lenet-digits", "model.safetensors", &model);
    std::env::set_var("HF_HUB_CACHE", &other);
    let path = resolve("hf:dtl-rs/lenet-digits");
    assert!(path.starts_with(&other), "{}", path.display());
    std::env::remove_var("HF_HUB_CACHE");

    // Online but the hub unreachable (a closed local port stands in for it): the download is
    // attempted and its failure explained.
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let err = resolve_err("hf:dtl-rs/absent");
    assert!(
        err.contains("download failed") && err.contains("hf:dtl-rs/absent@main/model.safetensors"),
        "{err}"
    );
    std::env::remove_var("HF_ENDPOINT");

    // A path that does not exist says so, and how to name hub weights.
    let err = resolve_err("no/such/model.safetensors");
    assert!(
        err.contains("no/such/model.safetensors") && err.contains("hf:"),
        "{err}"
    );
}
