//! Confidence intervals for accuracies: an accuracy measured on `n` images is a binomial
//! proportion, and on a small target domain (tens of images) its uncertainty is most of the
//! story.

/// The standard normal quantile of 0.975 (two-sided 95%), as `scipy.stats.norm.ppf(0.975)`.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval (Wilson 1927, "Probable inference, the law of succession, and
/// statistical inference") of `k` successes in `n` trials at the two-sided level of the normal
/// quantile `z`: `(p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)`. Unlike the normal
/// approximation it stays inside `[0, 1]` and is not empty at `k = 0` or `k = n`. `n = 0` gives
/// `(0, 1)`: nothing is known.
pub fn wilson(k: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z / denom * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// [`wilson`] at 95%.
pub fn wilson95(k: u64, n: u64) -> (f64, f64) {
    wilson(k, n, Z95)
}

/// Newcombe's hybrid score interval (Newcombe 1998, "Interval estimation for the difference
/// between independent proportions", method 10) for `k1/n1 - k2/n2` at 95%: the Wilson intervals
/// `(l_i, u_i)` of both proportions combined as `d - sqrt((p1 - l1)^2 + (u2 - p2)^2)` and
/// `d + sqrt((u1 - p1)^2 + (p2 - l2)^2)`. The gap between two groups' accuracies with its
/// uncertainty.
pub fn newcombe95(k1: u64, n1: u64, k2: u64, n2: u64) -> (f64, f64) {
    let p = |k: u64, n: u64| if n == 0 { 0.0 } else { k.min(n) as f64 / n as f64 };
    let (p1, p2) = (p(k1, n1), p(k2, n2));
    let ((l1, u1), (l2, u2)) = (wilson95(k1, n1), wilson95(k2, n2));
    let d = p1 - p2;
    (
        d - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt(),
        d + ((u1 - p1).powi(2) + (p2 - l2).powi(2)).sqrt(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from statsmodels 0.14's `proportion_confint(k, n, alpha=0.05,
    /// method="wilson")`; the closed forms at `k = 0` (upper `z^2 / (n + z^2)`) and `k = n`.
    #[test]
    fn matches_statsmodels_and_the_closed_forms() {
        for (k, n, lo, hi) in [
            (15, 18, 0.6077796189608428, 0.9416342319413856),
            (0, 10, 0.0, 0.27753279986288926),
            (9173, 10000, 0.9117401216863086, 0.9225393932735246),
            (5, 92, 0.023435063948632373, 0.12098530476246527),
        ] {
            let (l, h) = wilson95(k, n);
            assert!(
                (l - lo).abs() < 1e-12 && (h - hi).abs() < 1e-12,
                "{k}/{n}: ({l}, {h})"
            );
        }
        let z2 = Z95 * Z95;
        assert!((wilson95(0, 10).1 - z2 / (10.0 + z2)).abs() < 1e-15);
        assert!((wilson95(10, 10).0 - 10.0 / (10.0 + z2)).abs() < 1e-15);
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }

    /// Reference values from statsmodels 0.14's `confint_proportions_2indep(k1, n1, k2, n2,
    /// method="newcomb", compare="diff")`.
    #[test]
    fn newcombe_matches_statsmodels() {
        for (k1, n1, k2, n2, lo, hi) in [
            (99, 100, 15, 100, 0.7459746970228899, 0.8975322130098611),
            (46, 100, 15, 100, 0.18441508877502072, 0.42278064909968605),
            (17, 18, 3, 18, 0.47498159370979876, 0.8953183254505801),
            (5, 10, 5, 10, -0.3725136238199143, 0.3725136238199143),
        ] {
            let (l, h) = newcombe95(k1, n1, k2, n2);
            assert!(
                (l - lo).abs() < 1e-12 && (h - hi).abs() < 1e-12,
                "{k1}/{n1} - {k2}/{n2}: ({l}, {h})"
            );
        }
    }
}
