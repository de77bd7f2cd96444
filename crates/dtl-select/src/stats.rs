//! Statistics of the selection: entropies, rank correlations (Spearman's, and a weighted form
//! that stresses the most accurate runs), and the adjusted mutual information of two labelings
//! (Vinh, Epps & Bailey 2010), with the log-gamma function it needs.

/// The entropy `-sum p log p` (natural log) of a distribution; zero terms add nothing.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>()
}

/// Ranks of `x`, 1-based, ties given their average rank.
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            r[o] = avg;
        }
        i = j + 1;
    }
    r
}

/// Pearson's correlation of `x` and `y` with weights `w`; `None` when either is constant.
pub fn weighted_pearson(x: &[f64], y: &[f64], w: &[f64]) -> Option<f64> {
    let sw: f64 = w.iter().sum();
    if sw <= 0.0 || x.len() < 2 {
        return None;
    }
    let mx = x.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let my = y.iter().zip(w).map(|(a, b)| a * b).sum::<f64>() / sw;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += w[i] * dx * dy;
        sxx += w[i] * dx * dx;
        syy += w[i] * dy * dy;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// The mean and the sample standard deviation (`n - 1` in the denominator; 0 for one value) of
/// `x`, as Python's `statistics.mean` and `statistics.stdev`.
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    if x.len() < 2 {
        return (mean, 0.0);
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Spearman's rank correlation: Pearson's of the (average) ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    weighted_pearson(&ranks(x), &ranks(y), &vec![1.0; x.len()])
}

/// A weighted Spearman correlation after Musgrave, Belongie & Lim 2022 ("Three new validators and
/// a large-scale benchmark ranking for unsupervised domain adaptation"): Pearson's correlation of
/// the ranks with each run weighted by `(rank of its accuracy / n)^2`, so that how a validator
/// orders the best runs counts most (choosing among bad runs matters little).
pub fn weighted_spearman(score: &[f64], accuracy: &[f64]) -> Option<f64> {
    let ra = ranks(accuracy);
    let n = accuracy.len() as f64;
    let w: Vec<f64> = ra.iter().map(|r| (r / n).powi(2)).collect();
    weighted_pearson(&ranks(score), &ra, &w)
}

/// `ln Gamma(x)` for `x > 0` (Lanczos' approximation, g = 7, nine coefficients; relative error
/// about 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The adjusted mutual information of two labelings of the same samples, with the arithmetic
/// mean of their entropies as normaliser (scikit-learn's default): 1 for identical partitions,
/// about 0 for independent ones.
pub fn adjusted_mutual_info(a: &[usize], b: &[usize]) -> f64 {
    assert_eq!(
        a.len(),
        b.len(),
        "adjusted_mutual_info: labelings of different lengths"
    );
    let n = a.len();
    let relabel = |v: &[usize]| -> (Vec<usize>, usize) {
        let mut map = std::collections::BTreeMap::new();
        let out = v
            .iter()
            .map(|x| {
                let k = map.len();
                *map.entry(*x).or_insert(k)
            })
            .collect();
        (out, map.len())
    };
    let ((a, ka), (b, kb)) = (relabel(a), relabel(b));
    if n == 0 || (ka == kb && (ka == 1 || ka == n)) {
        return 1.0;
    }
    let mut c = vec![0usize; ka * kb];
    for i in 0..n {
        c[a[i] * kb + b[i]] += 1;
    }
    let rows: Vec<usize> = (0..ka).map(|i| (0..kb).map(|j| c[i * kb + j]).sum()).collect();
    let cols: Vec<usize> = (0..kb).map(|j| (0..ka).map(|i| c[i * kb + j]).sum()).collect();
    let nf = n as f64;
    let mut mi = 0.0;
    for i in 0..ka {
        for j in 0..kb {
            let v = c[i * kb + j];
            if v > 0 {
                let v = v as f64;
                mi += v / nf * (nf * v / (rows[i] as f64 * cols[j] as f64)).ln();
            }
        }
    }
    let h = |m: &[usize]| entropy(&m.iter().map(|&v| v as f64 / nf).collect::<Vec<_>>());
    let (ha, hb) = (h(&rows), h(&cols));
    // The expected mutual information under the hypergeometric model of random labelings with
    // these cluster sizes.
    let lg = |v: usize| ln_gamma(v as f64 + 1.0);
    let lgn = lg(n);
    let mut emi = 0.0;
    for &ai in &rows {
        for &bj in &cols {
            let lo = (ai + bj).saturating_sub(n).max(1);
            let hi = ai.min(bj);
            for nij in lo..=hi {
                let x = nij as f64;
                let term = x / nf * (nf * x / (ai as f64 * bj as f64)).ln();
                let lp = lg(ai) + lg(bj) + lg(n - ai) + lg(n - bj)
                    - lgn
                    - lg(nij)
                    - lg(ai - nij)
                    - lg(bj - nij)
                    - lg(n + nij - ai - bj);
                emi += term * lp.exp();
            }
        }
    }
    let denom = (ha + hb) / 2.0 - emi;
    if denom.abs() < 1e-15 {
        return 0.0;
    }
    (mi - emi) / denom
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties_and_spearman_of_monotone_data_is_one() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 4.0, 9.0, 16.0, 25.0];
        assert!((spearman(&x, &y).unwrap() - 1.0).abs() < 1e-12);
        let rev: Vec<f64> = y.iter().rev().copied().collect();
        assert!((spearman(&x, &rev).unwrap() + 1.0).abs() < 1e-12);
        // 1 - 6 sum d^2 / (n (n^2 - 1)) for distinct ranks: d = (0, -1, 1, 0), n = 4 -> 1 - 12 / 60.
        let s = spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((s - 0.8).abs() < 1e-12, "{s}");
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_none());
    }

    #[test]
    fn the_weighted_form_stresses_the_most_accurate_runs() {
        // The validator orders the two best runs wrongly and the rest rightly: plain Spearman
        // forgives it more than the weighted form.
        let acc = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8];
        let score = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 7.0];
        let (s, w) = (
            spearman(&score, &acc).unwrap(),
            weighted_spearman(&score, &acc).unwrap(),
        );
        assert!(w < s, "weighted {w} plain {s}");
        assert!((weighted_spearman(&acc, &acc).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn ln_gamma_matches_factorials() {
        for (n, f) in [(1u32, 1.0f64), (5, 24.0), (11, 3_628_800.0)] {
            assert!((ln_gamma(n as f64) - f.ln()).abs() < 1e-12, "{n}");
        }
        // Gamma(1/2) = sqrt(pi).
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(100.0) - 359.134_205_369_575_4).abs() < 1e-9);
    }

    #[test]
    fn entropy_of_known_distributions() {
        assert!((entropy(&[0.5, 0.5]) - 2f64.ln()).abs() < 1e-15);
        assert_eq!(entropy(&[1.0, 0.0]), 0.0);
        assert!((entropy(&[0.25; 4]) - 4f64.ln()).abs() < 1e-15);
    }
}
