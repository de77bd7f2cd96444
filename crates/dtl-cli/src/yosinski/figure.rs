//! The sweep's figure: Yosinski et al.'s Fig. 2 as SVG.

use std::fmt::Write as _;

use super::{RunRow, Summary};

/// Colour and dash of each setting, after Yosinski et al.'s Fig. 2 (B-based in blue, A-based in
/// red, fine-tuned lighter and dashed).
const STYLE: [(&str, &str, &str); 5] = [
    ("BnB", "#1f4e9c", ""),
    ("BnB+", "#6fa0e6", "6,3"),
    ("AnB", "#b2182b", ""),
    ("AnB+", "#ef8a8a", "6,3"),
    ("RnB", "#7f7f7f", "2,3"),
];

/// Top-1 accuracy against the number of transferred layers, one panel per split: a dot per
/// network, a line through each setting's means, baseB's mean +- std as a grey band and its runs
/// as white dots at n = 0.
pub fn yosinski_svg(rows: &[RunRow], summary: &Summary) -> String {
    let (pw, ph) = (420.0, 320.0);
    let (ml, mr, mt, mb) = (56.0, 26.0, 30.0, 44.0);
    let panels = summary.splits.len().max(1);
    let width = pw * panels as f64;
    let height = ph + 28.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (p, split) in summary.splits.iter().enumerate() {
        let ox = p as f64 * pw;
        let split_rows: Vec<&RunRow> = rows.iter().filter(|r| r.split == split.split).collect();
        let lo_data = split_rows.iter().map(|r| r.top1).fold(1.0f64, f64::min);
        let lo = ((lo_data - 0.02) * 20.0).floor() / 20.0;
        let lo = lo.clamp(0.0, 0.95);
        let hi = 1.0;
        let max_n = split_rows.iter().map(|r| r.n).max().unwrap_or(7).max(1) as f64;
        let x = |n: f64| ox + ml + (pw - ml - mr) * n / max_n;
        let y = |v: f64| mt + (ph - mt - mb) * (hi - v) / (hi - lo);
        // Axes, grid and ticks.
        let _ = writeln!(
            s,
            r#"<text x="{}" y="18" text-anchor="middle" font-weight="bold">{} split</text>"#,
            ox + pw / 2.0,
            split.split
        );
        let steps = ((hi - lo) / 0.05).round() as usize;
        for i in 0..=steps {
            let v = lo + 0.05 * i as f64;
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"##,
                x(0.0),
                x(max_n),
                y(v),
                y(v),
                x(0.0) - 6.0,
                y(v) + 4.0
            );
        }
        for n in 0..=max_n as usize {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{n}</text>"#,
                x(n as f64),
                ph - mb + 16.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">layer n at which the network is chopped and retrained</text>"#,
            ox + ml + (pw - ml - mr) / 2.0,
            ph - 8.0
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle">top-1 accuracy on B</text>"#,
            ox + 14.0,
            mt + (ph - mt - mb) / 2.0
        );
        // baseB band.
        let (bm, bs) = (split.base_b.mean, split.base_b.std);
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#cccccc" opacity="0.5"/>"##,
            x(0.0),
            y((bm + bs).min(hi)),
            x(max_n) - x(0.0),
            (y((bm - bs).max(lo)) - y((bm + bs).min(hi))).max(1.0)
        );
        for r in split_rows.iter().filter(|r| r.setting == "baseB") {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="white" stroke="black"/>"#,
                x(0.0),
                y(r.top1)
            );
        }
        // Settings: dots per run, lines of means.
        for (k, (name, colour, dash)) in STYLE.iter().enumerate() {
            let offset = (k as f64 - 2.0) * 0.06;
            for r in split_rows.iter().filter(|r| r.setting == *name) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{colour}" opacity="0.7"/>"#,
                    x(r.n as f64 + offset),
                    y(r.top1)
                );
            }
            let pts: Vec<String> = split
                .layers
                .iter()
                .filter_map(|l| l.settings.get(*name).map(|st| (l.n, st.mean)))
                .map(|(n, m)| format!("{:.1},{:.1}", x(n as f64 + offset), y(m)))
                .collect();
            if !pts.is_empty() {
                let _ = writeln!(
                    s,
                    r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                    pts.join(" ")
                );
            }
        }
        // Legend, bottom left on a white box: accuracies are highest at small n, so that corner
        // is the emptiest.
        let (lx, ltop) = (x(0.0) + 10.0, y(lo) - 10.0 - 15.0 * STYLE.len() as f64);
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="66" height="{:.1}" fill="white" opacity="0.85" stroke="#bbbbbb"/>"##,
            lx - 5.0,
            ltop - 4.0,
            15.0 * STYLE.len() as f64 + 6.0
        );
        for (k, (name, colour, dash)) in STYLE.iter().enumerate() {
            let ly = ltop + 6.0 + 15.0 * k as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="8" y="{:.1}" font-size="10" fill="#555">dtl {} {}; white dots: baseB runs, grey band: baseB mean +- std</text>"##,
        height - 8.0,
        summary.dtl_version,
        summary.git_rev.as_deref().unwrap_or("")
    );
    s.push_str("</svg>\n");
    s
}
