//! A trained model scored by every label-free validator of [`dtl_select`]: what `dtl validate
//! RUN_DIR` prints and a run with `train.validate` writes as `validation.json`.
//!
//! The validators see the model, the labelled source test split (as the source validation
//! split) and the target's training images without their labels (a [`dtl_data::Unlabelled`]
//! set); the target's test split and labels are not passed here at all.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use candle_core::Device;
use dtl_backbones::Classifier;
use dtl_data::{Dataset, Unlabelled};
use dtl_select::{validators, Inputs, Outputs, Score};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Samples of each split the validators read at most (seeded subsets beyond).
pub const MAX_SAMPLES: usize = 2000;

/// Every validator's verdict on one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// Each validator's score (higher is better), by name.
    pub scores: BTreeMap<String, Score>,
    /// Validators that failed on this model, with the reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
    /// The largest share of target samples predicted as one class (near 1: a collapsed model).
    pub target_max_class_share: f64,
    /// Source validation samples read.
    pub source_samples: usize,
    /// Target images read.
    pub target_samples: usize,
    /// Seconds the validators took.
    pub seconds: f64,
}

/// Scores `model` with every validator on `source` (labelled) and `target` (images only).
pub fn validate_model(
    model: &Classifier,
    source: &Dataset,
    target: &Unlabelled,
    seed: u64,
    device: &Device,
) -> Result<ValidationReport> {
    let started = Instant::now();
    let inputs = Inputs {
        model,
        source,
        target,
        device,
        seed,
    };
    let outputs = Outputs::compute(&inputs, MAX_SAMPLES)?;
    let (mut scores, mut failed) = (BTreeMap::new(), BTreeMap::new());
    for v in validators::all() {
        match v.score(&inputs, &outputs) {
            Ok(s) => {
                scores.insert(v.name().to_string(), s);
            }
            Err(e) => {
                tracing::warn!("validator {}: {e}", v.name());
                failed.insert(v.name().to_string(), e.to_string());
            }
        }
    }
    let report = ValidationReport {
        scores,
        failed,
        target_max_class_share: outputs.target_max_class_share(),
        source_samples: outputs.source_probs.rows,
        target_samples: outputs.target_probs.rows,
        seconds: started.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "validators: {}",
        report
            .scores
            .iter()
            .map(|(k, s)| format!(
                "{k} {:.4}{}",
                s.value,
                if s.reliable { "" } else { " (unreliable)" }
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(report)
}

/// Writes `report` as `validation.json` in `dir`, atomically.
pub fn write_report(report: &ValidationReport, dir: &Path) -> Result<()> {
    let path = dir.join("validation.json");
    let json = serde_json::to_string_pretty(report).expect("reports serialise");
    dtl_core::write_atomic(&path, json.as_bytes()).map_err(|e| Error::Io { path, source: e })
}

/// Reads a run's `validation.json`.
pub fn read_report(dir: &Path) -> Result<ValidationReport> {
    let path = dir.join("validation.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        path: path.clone(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
        path,
        message: format!("not a validation report: {e}"),
    })
}
