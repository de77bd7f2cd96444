//! `dtl audit`: a trained model's accuracy per subgroup of people (or of anything), with the
//! worst group, the gap between the best and the worst, and a 95% interval on each: the table
//! that says a classifier scoring 99% on one group scores 15% on another, as one command and one
//! figure.
//!
//! Subgroups come as image folders (`--group NAME=PATH`, each `PATH/<class>/*` or
//! `PATH/{train,test}/<class>/*`, every image counted), or as one folder and a CSV of file
//! attributes (`--images PATH --attributes FILE --by sex,ethnicity`: a `path` column relative to
//! `PATH`, one row per image, a group per combination of the `--by` columns). Accuracy intervals
//! are Wilson's, the gap's Newcombe's ([`dtl_core::interval`]). A group the model trained on
//! should be given by its held-out images only: the audit counts every image it is given.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use candle_core::Device;
use dtl_backbones::Classifier;
use dtl_strategies::Evaluation;
use serde::Serialize;

use crate::{Error, Result};

/// Where the subgroups' images come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Groups {
    /// One image folder per group: `(name, folder)`.
    Folders(Vec<(String, PathBuf)>),
    /// One folder, its images' attributes in a CSV: the folder, the CSV, the columns whose
    /// combinations make the groups.
    Attributes {
        /// The image folder (`PATH/<class>/*` or `PATH/{train,test}/<class>/*`).
        images: PathBuf,
        /// The CSV: a `path` (or `file`) column relative to `images`, and the attribute columns.
        csv: PathBuf,
        /// The attribute columns that define a group.
        by: Vec<String>,
    },
}

/// One group's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupResult {
    /// The group's name (a `--group` name, or the `--by` columns' values joined by ` / `).
    pub group: String,
    /// Images in the group.
    pub n: usize,
    /// Images classified correctly.
    pub correct: u64,
    /// `correct / n`.
    pub accuracy: f64,
    /// The 95% Wilson interval of the accuracy.
    pub ci95: [f64; 2],
    /// Accuracy per true class (`null` for a class the group lacks), in the model's class order.
    pub per_class: Vec<Option<f64>>,
    /// Images per true class.
    pub per_class_n: Vec<u64>,
}

/// What `dtl audit` measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// The checkpoint audited.
    pub checkpoint: String,
    /// The model's classes.
    pub classes: Vec<String>,
    /// Every group, in the order given (attribute groups sorted by their values).
    pub groups: Vec<GroupResult>,
    /// The group of the highest accuracy.
    pub best: String,
    /// The group of the lowest accuracy (the worst-group accuracy is its accuracy).
    pub worst: String,
    /// Best minus worst accuracy.
    pub gap: f64,
    /// Newcombe's 95% interval of that difference.
    pub gap_ci95: [f64; 2],
}

/// Labelled image files: the path and the model's class index.
type Files = Vec<(PathBuf, u32)>;

fn config(field: &str, message: String) -> Error {
    Error::Config {
        field: field.into(),
        message,
    }
}

/// The labelled images of `folder` with their classes mapped through `class_map` and indexed
/// by the model's `classes`; a class the model lacks is named.
fn folder_files(folder: &Path, classes: &[String], class_map: &BTreeMap<String, String>) -> Result<Files> {
    dtl_data::folder::all_images(folder)?
        .into_iter()
        .map(|(path, class)| {
            let name = class_map.get(&class).unwrap_or(&class);
            classes
                .iter()
                .position(|c| c == name)
                .map(|i| (path, i as u32))
                .ok_or_else(|| {
                    config(
                        "group",
                        format!(
                            "{}: class `{class}` is not one of the model's ({}); match it with --class-map {class}=CLASS",
                            folder.display(),
                            classes.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// The groups of an attribute CSV over `images`: `(group, files)` sorted by group.
fn attribute_groups(
    images: &Path,
    csv_path: &Path,
    by: &[String],
    classes: &[String],
    class_map: &BTreeMap<String, String>,
) -> Result<Vec<(String, Files)>> {
    let bad = |line: Option<usize>, message: String| {
        Error::from(dtl_data::Error::Format {
            path: csv_path.to_path_buf(),
            line,
            message,
        })
    };
    if by.is_empty() {
        return Err(config(
            "by",
            "name the attribute columns that make the groups".into(),
        ));
    }
    let files = folder_files(images, classes, class_map)?;
    let mut label_of: BTreeMap<PathBuf, u32> = BTreeMap::new();
    for (p, l) in &files {
        let rel = p.strip_prefix(images).unwrap_or(p).to_path_buf();
        label_of.insert(rel, *l);
    }
    // A CSV of attributes is small; one far larger than any such table is refused unread.
    const MAX_CSV: u64 = 256 << 20;
    let len = std::fs::metadata(csv_path)
        .map_err(|e| Error::Io {
            path: csv_path.to_path_buf(),
            source: e,
        })?
        .len();
    if len > MAX_CSV {
        return Err(bad(
            None,
            format!("{len} bytes: not an attribute table (at most {MAX_CSV})"),
        ));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .map_err(|e| bad(None, e.to_string()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| bad(Some(1), e.to_string()))?
        .iter()
        .map(str::to_string)
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let path_col = col("path").or_else(|| col("file")).ok_or_else(|| {
        bad(
            Some(1),
            format!(
                "no `path` (or `file`) column; the columns are {}",
                header.join(", ")
            ),
        )
    })?;
    let by_cols: Vec<usize> = by
        .iter()
        .map(|b| {
            col(b).ok_or_else(|| {
                config(
                    "by",
                    format!(
                        "{}: no column `{b}`; the columns are {}",
                        csv_path.display(),
                        header.join(", ")
                    ),
                )
            })
        })
        .collect::<Result<_>>()?;
    let mut groups: BTreeMap<String, Files> = BTreeMap::new();
    let mut listed: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| bad(Some(line), e.to_string()))?;
        let rel = PathBuf::from(record.get(path_col).unwrap_or_default());
        let Some(&label) = label_of.get(&rel) else {
            return Err(bad(
                Some(line),
                format!(
                    "`{}` is not an image of a class folder of {}",
                    rel.display(),
                    images.display()
                ),
            ));
        };
        if let Some(first) = listed.insert(rel.clone(), line) {
            return Err(bad(
                Some(line),
                format!("`{}` is listed twice (first on line {first})", rel.display()),
            ));
        }
        let key: Vec<&str> = by_cols
            .iter()
            .map(|&c| record.get(c).unwrap_or_default())
            .collect();
        if key.iter().any(|k| k.is_empty()) {
            return Err(bad(
                Some(line),
                format!("`{}` has an empty {}", rel.display(), by.join(" or ")),
            ));
        }
        groups
            .entry(key.join(" / "))
            .or_default()
            .push((images.join(&rel), label));
    }
    let unlisted: Vec<&PathBuf> = label_of.keys().filter(|p| !listed.contains_key(*p)).collect();
    if let Some(first) = unlisted.first() {
        return Err(bad(
            None,
            format!(
                "{} image(s) of {} have no row, the first `{}`: every image needs its attributes",
                unlisted.len(),
                images.display(),
                first.display()
            ),
        ));
    }
    Ok(groups.into_iter().collect())
}

/// Predictions of `model` for `files` (the arg-max of the logits, the first of equal ones), by
/// [`crate::predict::predict_images`] in chunks of 256 images.
fn predict(
    model: &Classifier,
    files: &[(PathBuf, u32)],
    fit: dtl_data::images::Fit,
    device: &Device,
) -> Result<Vec<u32>> {
    let paths: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    let predictions = crate::predict::predict_images(model, &paths, 1, true, 256, fit, device)?;
    Ok(predictions
        .into_iter()
        .map(|p| {
            let logits = p.logits.expect("asked for logits");
            let best = logits
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > logits[b] { i } else { b });
            best as u32
        })
        .collect())
}

/// Audits `checkpoint` on `groups`: every group's accuracy and interval, the best and the worst.
pub fn audit(
    checkpoint: &Path,
    groups: &Groups,
    class_map: &BTreeMap<String, String>,
    fit: Option<dtl_data::images::Fit>,
    device: &Device,
) -> Result<AuditReport> {
    let (model, meta) = Classifier::load(checkpoint, device)?;
    let fit = match fit {
        Some(f) => f,
        None => crate::experiment::fit_of(&model, &meta)?,
    };
    let classes = model.spec().class_names.clone();
    let sets: Vec<(String, Files)> = match groups {
        Groups::Folders(list) => {
            if list.len() < 2 {
                return Err(config("group", "give at least two groups to compare".into()));
            }
            let mut names = std::collections::BTreeSet::new();
            list.iter()
                .map(|(name, path)| {
                    if !names.insert(name.clone()) {
                        return Err(config("group", format!("`{name}` is given twice")));
                    }
                    Ok((name.clone(), folder_files(path, &classes, class_map)?))
                })
                .collect::<Result<_>>()?
        }
        Groups::Attributes { images, csv, by } => {
            let g = attribute_groups(images, csv, by, &classes, class_map)?;
            if g.len() < 2 {
                return Err(config(
                    "by",
                    format!("{} makes {} group(s): nothing to compare", by.join(", "), g.len()),
                ));
            }
            g
        }
    };
    let k = classes.len();
    let mut results = Vec::new();
    for (name, files) in &sets {
        let _span = tracing::info_span!("audit", group = %name).entered();
        let predicted = predict(&model, files, fit, device)?;
        let truth: Vec<u32> = files.iter().map(|(_, l)| *l).collect();
        let e = Evaluation::from_predictions(&truth, &predicted, k);
        let per_class_n = e.confusion.iter().map(|row| row.iter().sum()).collect();
        let correct = (0..k).map(|c| e.confusion[c][c]).sum();
        tracing::info!("{name}: {} images, accuracy {:.4}", e.n, e.accuracy);
        results.push(GroupResult {
            group: name.clone(),
            n: e.n,
            correct,
            accuracy: e.accuracy,
            ci95: e.ci95,
            per_class: e.per_class,
            per_class_n,
        });
    }
    let by_acc = |a: &&GroupResult, b: &&GroupResult| a.accuracy.total_cmp(&b.accuracy);
    let best = results.iter().max_by(by_acc).expect("two groups or more");
    let worst = results.iter().min_by(by_acc).expect("two groups or more");
    let (lo, hi) = dtl_core::interval::newcombe95(best.correct, best.n as u64, worst.correct, worst.n as u64);
    Ok(AuditReport {
        checkpoint: checkpoint.display().to_string(),
        classes,
        best: best.group.clone(),
        worst: worst.group.clone(),
        gap: best.accuracy - worst.accuracy,
        gap_ci95: [lo, hi],
        groups: results,
    })
}

/// The report as a Markdown table, with the worst group and the gap.
pub fn markdown(r: &AuditReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Subgroup audit of `{}`\n", r.checkpoint);
    let mut header = "| group | images | accuracy | 95% interval |".to_string();
    let mut rule = "|---|---|---|---|".to_string();
    for c in &r.classes {
        let _ = write!(header, " {c} |");
        rule.push_str("---|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for g in &r.groups {
        let mut row = format!(
            "| {} | {} | {:.4} | {:.4}-{:.4} |",
            g.group, g.n, g.accuracy, g.ci95[0], g.ci95[1]
        );
        for (acc, n) in g.per_class.iter().zip(&g.per_class_n) {
            match acc {
                Some(a) => {
                    let _ = write!(row, " {a:.2} ({n}) |");
                }
                None => row.push_str(" - |"),
            }
        }
        let _ = writeln!(s, "{row}");
    }
    let worst = r
        .groups
        .iter()
        .find(|g| g.group == r.worst)
        .expect("worst is a group");
    let _ = writeln!(
        s,
        "\nWorst group: {} at {:.4} ({:.4}-{:.4}). Gap to the best ({}): {:.4}, 95% interval {:.4} to {:.4}{}.",
        r.worst,
        worst.accuracy,
        worst.ci95[0],
        worst.ci95[1],
        r.best,
        r.gap,
        r.gap_ci95[0],
        r.gap_ci95[1],
        if r.gap_ci95[0] > 0.0 {
            ""
        } else {
            " (the interval includes 0: these images cannot tell the groups apart)"
        }
    );
    let _ = writeln!(
        s,
        "\nPer class: accuracy (images). Intervals: Wilson (accuracy), Newcombe (gap)."
    );
    s
}

/// The groups' accuracies as horizontal bars with their 95% intervals, as SVG.
pub fn figure_svg(r: &AuditReport) -> String {
    let (left, width, row) = (170.0, 360.0, 28.0);
    let h = 60.0 + row * r.groups.len() as f64;
    let mut s = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="18">accuracy per group (bars) with 95% intervals; worst in red</text>
"##,
        w = left + width + 70.0
    );
    let x = |v: f64| left + v.clamp(0.0, 1.0) * width;
    for t in 0..=4 {
        let v = t as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{0}" y1="28" x2="{0}" y2="{1}" stroke="#ddd"/><text x="{0}" y="{2}" text-anchor="middle">{v}</text>"##,
            x(v),
            h - 24.0,
            h - 8.0
        );
    }
    for (i, g) in r.groups.iter().enumerate() {
        let y = 32.0 + row * i as f64;
        let colour = if g.group == r.worst { "#c0392b" } else { "#4a7ab5" };
        let _ = writeln!(
            s,
            r##"<text x="{tx}" y="{ty}" text-anchor="end">{name} (n={n})</text><rect x="{left}" y="{y}" width="{bw}" height="{bh}" fill="{colour}"/><line x1="{l}" y1="{cy}" x2="{u}" y2="{cy}" stroke="black" stroke-width="1.5"/><line x1="{l}" y1="{y0}" x2="{l}" y2="{y1}" stroke="black"/><line x1="{u}" y1="{y0}" x2="{u}" y2="{y1}" stroke="black"/><text x="{ax}" y="{ty}">{acc:.3}</text>"##,
            tx = left - 6.0,
            ty = y + 14.0,
            name = xml_escape(&g.group),
            n = g.n,
            bw = x(g.accuracy) - left,
            bh = row - 10.0,
            l = x(g.ci95[0]),
            u = x(g.ci95[1]),
            cy = y + (row - 10.0) / 2.0,
            y0 = y + 2.0,
            y1 = y + row - 12.0,
            ax = x(g.ci95[1]) + 4.0,
            acc = g.accuracy
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes `audit.json`, `audit.md`, `audit.svg` and `audit.png` into `out` (created), each
/// atomically.
pub fn write(r: &AuditReport, out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let put = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        dtl_core::write_atomic(&p, bytes).map_err(|e| Error::Io { path: p, source: e })
    };
    put(
        "audit.json",
        serde_json::to_string_pretty(r)
            .expect("reports serialise")
            .as_bytes(),
    )?;
    put("audit.md", markdown(r).as_bytes())?;
    let svg = figure_svg(r);
    put("audit.svg", svg.as_bytes())?;
    match crate::figure::svg_to_png(&svg, 2.0) {
        Ok(png) => put("audit.png", &png)?,
        Err(e) => tracing::warn!("audit.png not drawn: {e}"),
    }
    Ok(())
}
