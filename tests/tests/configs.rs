//! The experiment configs committed under `models/configs/` read as complete, valid run configs.

use dtl::experiment::RunConfig;

#[test]
fn committed_configs_parse_and_name_known_domains() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let cfg = RunConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{e}"));
        for d in [&cfg.data.source, &cfg.data.target] {
            d.parse::<dtl::data::DomainId>()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        // Every field is written out: re-serialising gives the same settings.
        let again: RunConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(again, cfg, "{}", path.display());
        // A config that says it holds the strategy's defaults does (a changed default shows up
        // here, and the measured rows in docs/results.md name these files).
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("the strategy's defaults") {
            let defaults = dtl::strategies::StrategyConfig::from_name(cfg.strategy.name()).unwrap();
            assert_eq!(cfg.strategy, defaults, "{}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 6, "found {seen} configs in {}", dir.display());
}
