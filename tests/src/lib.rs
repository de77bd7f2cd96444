//! End-to-end tests of dtl on bundled data (the tests live in `tests/`); this library holds the
//! helpers they share.

use std::path::PathBuf;

/// The shared real-data folder (`$DTL_DATA_DIR`, else `../shared/data` beside the checkout), when
/// it exists; `None` after printing why a test is skipped.
pub fn shared_data_dir() -> Option<PathBuf> {
    let p = std::env::var_os("DTL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if p.join("mnist").is_dir() && p.join("usps").is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: no shared data folder at {} (set DTL_DATA_DIR)",
            p.display()
        );
        None
    }
}
