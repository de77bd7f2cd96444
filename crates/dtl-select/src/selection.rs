//! The selection report: for every validator, the run it selects among a sweep's runs, that run's
//! target accuracy, the oracle's choice (the best target accuracy, a reference no user has) and
//! the gap between them, and how well the validator's scores rank the runs (Spearman's and the
//! weighted rank correlation of [`crate::stats::weighted_spearman`]).
//!
//! Target accuracy enters only here, as a number per run that the report puts beside the
//! validators' choices; no validator reads it, and the choice is the validator's argmax alone.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::stats::{spearman, weighted_spearman};

/// A predicted class holding at least this share of the target samples marks a collapsed model.
pub const COLLAPSE_SHARE: f64 = 0.9;

/// One finished run as the report sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id in the sweep.
    pub id: String,
    /// The settings the sweep varied, as `key = value` text.
    pub settings: BTreeMap<String, String>,
    /// Each validator's score (higher is better), with whether it is reliable; a validator that
    /// failed on this run is absent.
    pub scores: BTreeMap<String, (f64, bool)>,
    /// Accuracy on the target test split (the oracle's information, reported apart).
    pub target_accuracy: f64,
    /// The largest share of target samples predicted as one class.
    pub target_max_class_share: f64,
    /// Target images the accuracy was measured on (0: not known).
    #[serde(default)]
    pub target_n: usize,
}

impl RunRecord {
    /// Whether the run's model gives (nearly) every target sample the same class.
    pub fn collapsed(&self) -> bool {
        self.target_max_class_share >= COLLAPSE_SHARE
    }
}

/// What one validator chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The validator.
    pub validator: String,
    /// Runs it scored.
    pub runs: usize,
    /// The run with the highest score.
    pub selected: String,
    /// That run's target accuracy.
    pub selected_accuracy: f64,
    /// Its 95% Wilson interval (`None` when the run's test size is not known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_ci95: Option<[f64; 2]>,
    /// The oracle's accuracy minus the selected run's: what choosing by this validator costs.
    pub oracle_gap: f64,
    /// Spearman's correlation of score and target accuracy over the runs it scored.
    pub spearman: Option<f64>,
    /// The weighted rank correlation (the most accurate runs count most).
    pub weighted_spearman: Option<f64>,
    /// The selected run's model is collapsed (near-constant target predictions).
    pub selected_collapsed: bool,
    /// The selected run's score was flagged unreliable (too few effective samples).
    pub selected_unreliable: bool,
}

/// The report over a sweep's runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Runs in the sweep.
    pub runs: usize,
    /// The run with the best target accuracy (reference only).
    pub oracle: String,
    /// Its target accuracy.
    pub oracle_accuracy: f64,
    /// The mean target accuracy over all runs (what a random choice gets on average).
    pub mean_accuracy: f64,
    /// One entry per validator, in the order given.
    pub choices: Vec<Choice>,
    /// A sweep over several seeds (`train.seed`): each validator's choice made once per seed among
    /// that seed's runs, as a user with one seed's sweep would choose; the mean and spread over
    /// seeds of the chosen runs' accuracies, beside the oracle's per seed. Empty for one seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_seed: Vec<SeedChoices>,
}

/// One selector's choices over the seeds of a sweep, one per seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedChoices {
    /// The validator, or `oracle` for the best target accuracy of each seed (reference only).
    pub validator: String,
    /// Per seed (ascending): the seed, the run chosen among its runs and that run's target
    /// accuracy.
    pub chosen: Vec<(String, String, f64)>,
    /// The mean of the chosen runs' target accuracies.
    pub mean: f64,
    /// Their sample standard deviation (`n - 1`).
    pub std: f64,
}

/// The key of the seed among a run's settings.
pub const SEED_KEY: &str = "train.seed";

/// The run with the highest finite `key` among `runs`; ties go to the first, as listed.
fn argmax<'a>(runs: &[&'a RunRecord], key: impl Fn(&RunRecord) -> Option<f64>) -> Option<&'a RunRecord> {
    runs.iter()
        .filter_map(|r| key(r).filter(|s| s.is_finite()).map(|s| (*r, s)))
        .fold(None::<(&RunRecord, f64)>, |b, c| match b {
            Some(b) if b.1 >= c.1 => Some(b),
            _ => Some(c),
        })
        .map(|(r, _)| r)
}

/// Per-seed choices of the oracle and of each validator in `validators` (see
/// [`Selection::per_seed`]); empty unless the runs span at least two seeds. A validator that
/// scored no run of some seed gets no entry.
pub fn per_seed(runs: &[RunRecord], validators: &[&str]) -> Vec<SeedChoices> {
    let mut seeds: BTreeMap<u64, Vec<&RunRecord>> = BTreeMap::new();
    for r in runs {
        if let Some(seed) = r.settings.get(SEED_KEY).and_then(|s| s.parse::<u64>().ok()) {
            seeds.entry(seed).or_default().push(r);
        }
    }
    if seeds.len() < 2 {
        return Vec::new();
    }
    let choose = |name: &str, key: &dyn Fn(&RunRecord) -> Option<f64>| -> Option<SeedChoices> {
        let chosen = seeds
            .iter()
            .map(|(seed, rs)| argmax(rs, key).map(|r| (seed.to_string(), r.id.clone(), r.target_accuracy)))
            .collect::<Option<Vec<_>>>()?;
        let acc: Vec<f64> = chosen.iter().map(|c| c.2).collect();
        let (mean, std) = crate::stats::mean_std(&acc);
        Some(SeedChoices {
            validator: name.to_string(),
            chosen,
            mean,
            std,
        })
    };
    std::iter::once(choose("oracle", &|r| Some(r.target_accuracy)))
        .chain(
            validators
                .iter()
                .map(|&v| choose(v, &|r| r.scores.get(v).map(|s| s.0))),
        )
        .flatten()
        .collect()
}

/// The report for `runs` and the validators named in `validators`.
pub fn select(runs: &[RunRecord], validators: &[&str]) -> Option<Selection> {
    let best = runs
        .iter()
        .max_by(|a, b| a.target_accuracy.total_cmp(&b.target_accuracy))?;
    let mean_accuracy = runs.iter().map(|r| r.target_accuracy).sum::<f64>() / runs.len() as f64;
    let choices = validators
        .iter()
        .filter_map(|&v| {
            let scored: Vec<(&RunRecord, f64, bool)> = runs
                .iter()
                .filter_map(|r| r.scores.get(v).map(|&(s, ok)| (r, s, ok)))
                .filter(|(_, s, _)| s.is_finite())
                .collect();
            let listed: Vec<&RunRecord> = scored.iter().map(|x| x.0).collect();
            let sel = argmax(&listed, |r| r.scores.get(v).map(|s| s.0))?;
            let ok = sel.scores[v].1;
            let s: Vec<f64> = scored.iter().map(|x| x.1).collect();
            let a: Vec<f64> = scored.iter().map(|x| x.0.target_accuracy).collect();
            Some(Choice {
                validator: v.to_string(),
                runs: scored.len(),
                selected: sel.id.clone(),
                selected_accuracy: sel.target_accuracy,
                selected_ci95: (sel.target_n > 0).then(|| {
                    let n = sel.target_n as u64;
                    let (lo, hi) =
                        dtl_core::interval::wilson95((sel.target_accuracy * n as f64).round() as u64, n);
                    [lo, hi]
                }),
                oracle_gap: best.target_accuracy - sel.target_accuracy,
                spearman: spearman(&s, &a),
                weighted_spearman: weighted_spearman(&s, &a),
                selected_collapsed: sel.collapsed(),
                selected_unreliable: !ok,
            })
        })
        .collect();
    Some(Selection {
        runs: runs.len(),
        oracle: best.id.clone(),
        oracle_accuracy: best.target_accuracy,
        mean_accuracy,
        choices,
        per_seed: per_seed(runs, validators),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:+.3}"))
}

/// The report as a Markdown table.
pub fn markdown(sel: &Selection, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "{} runs. Oracle (best target test accuracy, reference only): `{}` at {:.4}; mean over runs {:.4}.\n",
        sel.runs, sel.oracle, sel.oracle_accuracy, sel.mean_accuracy
    );
    let _ = writeln!(
        s,
        "| validator | selected run | its target accuracy (95% interval) | oracle gap | Spearman | weighted Spearman | flags |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for c in &sel.choices {
        let mut flags = Vec::new();
        if c.selected_collapsed {
            flags.push("collapsed model");
        }
        if c.selected_unreliable {
            flags.push("unreliable score (few effective samples)");
        }
        let ci = c
            .selected_ci95
            .map_or(String::new(), |[lo, hi]| format!(" ({lo:.4}-{hi:.4})"));
        let _ = writeln!(
            s,
            "| `{}` | `{}` | {:.4}{ci} | {:.4} | {} | {} | {} |",
            c.validator,
            c.selected,
            c.selected_accuracy,
            c.oracle_gap,
            opt(c.spearman),
            opt(c.weighted_spearman),
            flags.join(", ")
        );
    }
    if !sel.per_seed.is_empty() {
        let _ = writeln!(
            s,
            "\nOne choice per seed, among that seed's runs (mean +- sample std over seeds of the chosen runs' target accuracy):\n"
        );
        let _ = writeln!(
            s,
            "| chosen by | target accuracy | runs chosen (seed: run, accuracy) |"
        );
        let _ = writeln!(s, "|---|---|---|");
        for c in &sel.per_seed {
            let runs: Vec<String> = c
                .chosen
                .iter()
                .map(|(seed, id, acc)| format!("{seed}: `{id}` {acc:.4}"))
                .collect();
            let name = if c.validator == "oracle" {
                "oracle (reference only)".to_string()
            } else {
                format!("`{}`", c.validator)
            };
            let _ = writeln!(
                s,
                "| {name} | {:.4} +- {:.4} | {} |",
                c.mean,
                c.std,
                runs.join("; ")
            );
        }
    }
    let _ = writeln!(
        s,
        "\nEvery validator chose from the model, the labelled source validation split and the unlabelled target training split only; target accuracy is shown beside each choice and never used to make it."
    );
    s
}

/// Score against target accuracy, one panel per validator, as SVG (the selected run in red, the
/// oracle's in green).
pub fn figure_svg(runs: &[RunRecord], sel: &Selection) -> String {
    let (pw, ph, cols) = (220.0, 180.0, 3usize);
    let n = sel.choices.len().max(1);
    let rows = n.div_ceil(cols);
    let (w, h) = (pw * cols as f64 + 20.0, ph * rows as f64 + 40.0);
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="18" font-size="13">validator score (x) against target test accuracy (y); red: selected, green: oracle</text>
"##
    );
    let acc: Vec<f64> = runs.iter().map(|r| r.target_accuracy).collect();
    let (amin, amax) = acc.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
        (a.min(v), b.max(v))
    });
    let aspan = (amax - amin).max(1e-9);
    for (k, c) in sel.choices.iter().enumerate() {
        let (ox, oy) = (10.0 + pw * (k % cols) as f64, 30.0 + ph * (k / cols) as f64);
        let pts: Vec<(&RunRecord, f64)> = runs
            .iter()
            .filter_map(|r| r.scores.get(&c.validator).map(|&(v, _)| (r, v)))
            .filter(|(_, v)| v.is_finite())
            .collect();
        let (smin, smax) = pts
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, v)| {
                (a.min(v), b.max(v))
            });
        let sspan = (smax - smin).max(1e-12);
        let (x0, y0, iw, ih) = (ox + 30.0, oy + 20.0, pw - 45.0, ph - 50.0);
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{y0}" width="{iw}" height="{ih}" fill="none" stroke="#999"/><text x="{x0}" y="{}">{} (Spearman {})</text>"##,
            y0 - 5.0,
            c.validator,
            opt(c.spearman)
        );
        for (r, v) in pts {
            let x = x0 + (v - smin) / sspan * iw;
            let y = y0 + ih - (r.target_accuracy - amin) / aspan * ih;
            let fill = if r.id == c.selected {
                "#d62728"
            } else if r.id == sel.oracle {
                "#2ca02c"
            } else {
                "#1f77b4"
            };
            let rad = if fill == "#1f77b4" { 2.5 } else { 4.0 };
            let _ = writeln!(
                s,
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="{rad}" fill="{fill}" fill-opacity="0.8"/>"##
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{x0}" y="{}" fill="#555">acc {amin:.3}..{amax:.3}</text>"##,
            y0 + ih + 14.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, acc: f64, scores: &[(&str, f64)], share: f64) -> RunRecord {
        RunRecord {
            id: id.into(),
            settings: BTreeMap::new(),
            scores: scores.iter().map(|(k, v)| (k.to_string(), (*v, true))).collect(),
            target_accuracy: acc,
            target_max_class_share: share,
            target_n: 0,
        }
    }

    #[test]
    fn the_choice_is_the_argmax_and_the_gap_is_against_the_best_run() {
        let runs = [
            run("a", 0.90, &[("good", 3.0), ("bad", 1.0)], 0.2),
            run("b", 0.70, &[("good", 2.0), ("bad", 2.0)], 0.3),
            run("c", 0.10, &[("good", 1.0), ("bad", 3.0)], 0.95),
        ];
        let sel = select(&runs, &["good", "bad", "missing"]).unwrap();
        assert_eq!(sel.oracle, "a");
        assert!((sel.mean_accuracy - 1.7 / 3.0).abs() < 1e-12);
        assert_eq!(sel.choices.len(), 2, "a validator without scores makes no choice");
        let good = &sel.choices[0];
        assert_eq!((good.selected.as_str(), good.oracle_gap), ("a", 0.0));
        assert!((good.spearman.unwrap() - 1.0).abs() < 1e-12);
        let bad = &sel.choices[1];
        assert_eq!(bad.selected, "c");
        assert!((bad.oracle_gap - 0.8).abs() < 1e-12);
        assert!((bad.spearman.unwrap() + 1.0).abs() < 1e-12);
        assert!(bad.selected_collapsed && !good.selected_collapsed);
        let md = markdown(&sel, "test");
        assert!(
            md.contains("| `bad` | `c` | 0.1000 | 0.8000 | -1.000 |") && md.contains("collapsed model"),
            "{md}"
        );
        assert!(figure_svg(&runs, &sel).starts_with("<svg"));
    }

    fn seeded(id: &str, seed: u64, acc: f64, score: f64) -> RunRecord {
        let mut r = run(id, acc, &[("v", score)], 0.2);
        r.settings.insert(SEED_KEY.into(), seed.to_string());
        r
    }

    /// Two seeds of two runs each: the validator prefers `a` under seed 0 (0.80) and `d` under
    /// seed 1 (0.60); the oracle takes `b` (0.90) and `c` (0.70). Means 0.70 and 0.80, sample
    /// standard deviations sqrt(2 x 0.1^2 / 1) = 0.1414...
    #[test]
    fn per_seed_choices_are_made_within_each_seed() {
        let runs = [
            seeded("a", 0, 0.80, 5.0),
            seeded("b", 0, 0.90, 1.0),
            seeded("c", 1, 0.70, 2.0),
            seeded("d", 1, 0.60, 3.0),
        ];
        let sel = select(&runs, &["v"]).unwrap();
        let [oracle, v] = &sel.per_seed[..] else {
            panic!("{:?}", sel.per_seed)
        };
        assert_eq!(oracle.validator, "oracle");
        let ids = |c: &SeedChoices| c.chosen.iter().map(|x| x.1.clone()).collect::<Vec<_>>();
        assert_eq!(ids(oracle), ["b", "c"]);
        assert_eq!(ids(v), ["a", "d"]);
        assert!((oracle.mean - 0.80).abs() < 1e-12 && (v.mean - 0.70).abs() < 1e-12);
        assert!((v.std - 0.02f64.sqrt()).abs() < 1e-12, "{}", v.std);
        assert!(markdown(&sel, "t").contains("| `v` | 0.7000 +- 0.1414 | 0: `a` 0.8000; 1: `d` 0.6000 |"));
        // One seed: no per-seed table.
        assert!(select(&runs[..2], &["v"]).unwrap().per_seed.is_empty());
    }

    /// A selected run of known test size shows its accuracy's Wilson interval: 15 of 18 is
    /// 0.8333 (0.6078-0.9416), statsmodels' `proportion_confint(15, 18, method="wilson")`.
    #[test]
    fn a_choice_shows_its_interval_when_the_test_size_is_known() {
        let mut small = run("small", 15.0 / 18.0, &[("v", 1.0)], 0.2);
        small.target_n = 18;
        let sel = select(&[small, run("other", 0.5, &[("v", 0.0)], 0.2)], &["v"]).unwrap();
        let [lo, hi] = sel.choices[0].selected_ci95.unwrap();
        assert!((lo - 0.6077796189608428).abs() < 1e-12 && (hi - 0.9416342319413856).abs() < 1e-12);
        assert!(markdown(&sel, "t").contains("| `v` | `small` | 0.8333 (0.6078-0.9416) |"));
    }
}
