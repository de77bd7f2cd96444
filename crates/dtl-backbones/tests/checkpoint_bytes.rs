//! Checkpoints are byte-for-byte reproducible: the same model and metadata give the same file
//! (the header's keys sorted), which still reads back.

use candle_core::Device;
use dtl_backbones::{Classifier, ModelSpec};

#[test]
fn same_model_same_bytes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let model = Classifier::new(
        ModelSpec::lenet_digits(16).with_adapt_width(Some(8)),
        5,
        &Device::Cpu,
    )?;
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"];
    let extra: Vec<(&str, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, i.to_string()))
        .collect();
    let mut files = Vec::new();
    for k in 0..4 {
        let path = dir.path().join(format!("m{k}.safetensors"));
        model.save(&path, &extra)?;
        files.push(std::fs::read(&path)?);
    }
    assert!(
        files.windows(2).all(|w| w[0] == w[1]),
        "checkpoint bytes differ between saves"
    );
    // The header is sorted JSON: `__metadata__` first, then the tensors by name.
    let n = u64::from_le_bytes(files[0][..8].try_into()?) as usize;
    let header = std::str::from_utf8(&files[0][8..8 + n])?;
    assert!(
        header.starts_with("{\"__metadata__\":{\"a\":\"0\",\"b\":\"1\""),
        "{header}"
    );
    let (again, meta) = Classifier::load(&dir.path().join("m0.safetensors"), &Device::Cpu)?;
    assert_eq!(again.spec(), model.spec());
    assert_eq!(meta["l"], "11");
    Ok(())
}
