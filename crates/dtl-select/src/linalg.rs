//! The small dense linear algebra the validators need: the eigenvalues of a symmetric matrix
//! (cyclic Jacobi rotations) and from them the singular values of a rectangular one.

use crate::Matrix;

/// Eigenvalues of the symmetric `n x n` matrix `a` (row-major), by cyclic Jacobi rotations
/// (Golub & Van Loan, "Matrix Computations", sec. 8.5), in no particular order.
pub fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    assert_eq!(a.len(), n * n, "symmetric_eigenvalues: not n x n");
    let off = |a: &[f64]| -> f64 {
        let mut s = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    s += a[i * n + j] * a[i * n + j];
                }
            }
        }
        s
    };
    let scale: f64 = a.iter().map(|v| v * v).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        if off(&a) <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

/// The singular values of `m`, largest first: square roots of the eigenvalues of `m^T m`.
pub fn singular_values(m: &Matrix) -> Vec<f64> {
    let k = m.cols;
    let mut g = vec![0.0; k * k];
    for r in 0..m.rows {
        let row = m.row(r);
        for i in 0..k {
            for j in i..k {
                g[i * k + j] += row[i] * row[j];
            }
        }
    }
    for i in 0..k {
        for j in 0..i {
            g[i * k + j] = g[j * k + i];
        }
    }
    let mut s: Vec<f64> = symmetric_eigenvalues(g, k)
        .into_iter()
        .map(|e| e.max(0.0).sqrt())
        .collect();
    s.sort_by(|a, b| b.total_cmp(a));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut e = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(|a, b| a.total_cmp(b));
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12, "{e:?}");
        // A diagonal matrix is its own spectrum.
        let mut e = symmetric_eigenvalues(vec![5.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 2.0], 3);
        e.sort_by(|a, b| a.total_cmp(b));
        assert_eq!(e, [-1.0, 2.0, 5.0]);
    }

    #[test]
    fn singular_values_of_a_rank_one_and_an_orthogonal_matrix() {
        // u v^T with |u| = sqrt(2), |v| = 5: one singular value sqrt(2) * 5.
        let m = Matrix::from_rows(&[vec![3.0, 4.0], vec![3.0, 4.0]]);
        let s = singular_values(&m);
        assert!((s[0] - 50f64.sqrt()).abs() < 1e-9 && s[1].abs() < 1e-6, "{s:?}");
        // A rotation by 30 degrees: both singular values 1.
        let (c, sn) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let s = singular_values(&Matrix::from_rows(&[vec![c, -sn], vec![sn, c]]));
        assert!(s.iter().all(|v| (v - 1.0).abs() < 1e-12), "{s:?}");
    }
}
