//! MCC's minimum class confusion and CDAN's conditioning against their definitions written out by
//! hand in f64 (the papers' formulas, loop by loop), and MCC's gradient against finite
//! differences.

use candle_core::{Device, Tensor, Var};
use dtl_losses::{
    entropy_weights, minimum_class_confusion, multilinear_map, randomized_multilinear_map,
    weighted_discriminator_loss,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn tensor(v: &[f64], shape: (usize, usize)) -> Tensor {
    Tensor::from_slice(v, shape, &Device::Cpu).unwrap()
}

/// Jin et al. 2020, Eqs. 1-6, written out: softmax at temperature T, entropy weights
/// `B (1 + exp(-H)) / sum`, class correlation `Y^T W Y`, rows normalised, off-diagonal mass / C.
fn mcc_by_hand(z: &[f64], b: usize, c: usize, t: f64) -> f64 {
    let mut y = vec![0.0; b * c];
    for i in 0..b {
        let row = &z[i * c..(i + 1) * c];
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|v| ((v - m) / t).exp()).collect();
        let s: f64 = e.iter().sum();
        for j in 0..c {
            y[i * c + j] = e[j] / s;
        }
    }
    let h: Vec<f64> = (0..b)
        .map(|i| {
            -(0..c)
                .map(|j| y[i * c + j] * (y[i * c + j] + 1e-5).ln())
                .sum::<f64>()
        })
        .collect();
    let raw: Vec<f64> = h.iter().map(|h| 1.0 + (-h).exp()).collect();
    let total: f64 = raw.iter().sum();
    let w: Vec<f64> = raw.iter().map(|r| b as f64 * r / total).collect();
    let mut corr = vec![0.0; c * c];
    for j in 0..c {
        for k in 0..c {
            corr[j * c + k] = (0..b).map(|i| y[i * c + j] * w[i] * y[i * c + k]).sum();
        }
    }
    let mut loss = 0.0;
    for j in 0..c {
        let row: f64 = (0..c).map(|k| corr[j * c + k]).sum();
        for k in 0..c {
            if j != k {
                loss += corr[j * c + k] / row;
            }
        }
    }
    loss / c as f64
}

#[test]
fn minimum_class_confusion_is_the_papers_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (b, c, t) in [(6, 3, 2.5), (16, 10, 2.5), (5, 4, 1.0), (8, 2, 0.5)] {
        let z = random(&mut rng, b * c, 4.0);
        let got = minimum_class_confusion(&tensor(&z, (b, c)), t)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        let want = mcc_by_hand(&z, b, c, t);
        assert!((got - want).abs() < 1e-12, "{b}x{c} T={t}: {got} vs {want}");
    }
    // Confident one-class-per-sample predictions confuse nothing; identical rows of equal
    // probabilities confuse all: (C - 1) / C.
    let sharp = tensor(&[50.0, 0.0, 0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 50.0], (3, 3));
    assert!(
        minimum_class_confusion(&sharp, 1.0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
            < 1e-9
    );
    let flat = tensor(&[0.0; 9], (3, 3));
    let v = minimum_class_confusion(&flat, 2.5)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!((v - 2.0 / 3.0).abs() < 1e-12, "{v}");
    assert!(minimum_class_confusion(&tensor(&[1.0, 2.0], (2, 1)), 2.5).is_err());
}

#[test]
fn minimum_class_confusion_gradient_matches_finite_differences() {
    // The entropy weights carry no gradient (as in the paper's code): the reference holds them
    // at the point where the gradient is taken.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (b, c, t) = (5, 4, 2.5);
    let z = random(&mut rng, b * c, 3.0);
    let var = Var::from_tensor(&tensor(&z, (b, c))).unwrap();
    let loss = minimum_class_confusion(var.as_tensor(), t).unwrap();
    let grad = loss
        .backward()
        .unwrap()
        .get(&var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    // f(z) with the weights of z0.
    let frozen = |z: &[f64], z0: &[f64]| -> f64 {
        let y = |z: &[f64]| -> Vec<f64> {
            let mut y = vec![0.0; b * c];
            for i in 0..b {
                let e: Vec<f64> = (0..c).map(|j| (z[i * c + j] / t).exp()).collect();
                let s: f64 = e.iter().sum();
                for j in 0..c {
                    y[i * c + j] = e[j] / s;
                }
            }
            y
        };
        let (yz, y0) = (y(z), y(z0));
        let raw: Vec<f64> = (0..b)
            .map(|i| {
                1.0 + (0..c)
                    .map(|j| y0[i * c + j] * (y0[i * c + j] + 1e-5).ln())
                    .sum::<f64>()
                    .exp()
            })
            .collect();
        let total: f64 = raw.iter().sum();
        let mut corr = vec![0.0; c * c];
        for j in 0..c {
            for k in 0..c {
                corr[j * c + k] = (0..b)
                    .map(|i| yz[i * c + j] * b as f64 * raw[i] / total * yz[i * c + k])
                    .sum();
            }
        }
        let mut loss = 0.0;
        for j in 0..c {
            let row: f64 = (0..c).map(|k| corr[j * c + k]).sum();
            loss += (0..c)
                .filter(|&k| k != j)
                .map(|k| corr[j * c + k] / row)
                .sum::<f64>();
        }
        loss / c as f64
    };
    let eps = 1e-6;
    for i in 0..b * c {
        let (mut up, mut down) = (z.clone(), z.clone());
        up[i] += eps;
        down[i] -= eps;
        let fd = (frozen(&up, &z) - frozen(&down, &z)) / (2.0 * eps);
        assert!((grad[i] - fd).abs() < 1e-7, "z[{i}]: {} vs {fd}", grad[i]);
    }
}

#[test]
fn cdan_conditioning_is_the_papers() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (b, d, c, k) = (4, 3, 2, 5);
    let f = random(&mut rng, b * d, 1.0);
    let g = random(&mut rng, b * c, 1.0);
    let (ft, gt) = (tensor(&f, (b, d)), tensor(&g, (b, c)));
    // The multilinear map: row i holds g_i[j] f_i[l] at j * D + l.
    let h = multilinear_map(&ft, &gt).unwrap().to_vec2::<f64>().unwrap();
    for i in 0..b {
        for j in 0..c {
            for l in 0..d {
                assert_eq!(h[i][j * d + l], g[i * c + j] * f[i * d + l]);
            }
        }
    }
    // Its randomized estimate: (f R_f)_m (g R_g)_m / sqrt(k).
    let rf = random(&mut rng, d * k, 1.0);
    let rg = random(&mut rng, c * k, 1.0);
    let r = randomized_multilinear_map(&ft, &gt, &tensor(&rf, (d, k)), &tensor(&rg, (c, k)))
        .unwrap()
        .to_vec2::<f64>()
        .unwrap();
    for i in 0..b {
        for m in 0..k {
            let a: f64 = (0..d).map(|l| f[i * d + l] * rf[l * k + m]).sum();
            let e: f64 = (0..c).map(|j| g[i * c + j] * rg[j * k + m]).sum();
            assert!((r[i][m] - a * e / (k as f64).sqrt()).abs() < 1e-12);
        }
    }
    // Entropy weights 1 + exp(-H), normalised; the weighted binary cross-entropy.
    let p = [0.9, 0.1, 0.5, 0.5, 0.99, 0.01];
    let w = entropy_weights(&tensor(&p, (3, 2)))
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let raw: Vec<f64> = p
        .chunks(2)
        .map(|q| 1.0 + (q.iter().map(|v| v * (v + 1e-5f64).ln()).sum::<f64>()).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    for (a, r) in w.iter().zip(&raw) {
        assert!((a - r / total).abs() < 1e-12);
    }
    let (ls, lt) = ([1.5, -0.5], [0.25]);
    let wt = Tensor::new(&[0.2f64, 0.3, 0.5], &Device::Cpu).unwrap();
    let got = weighted_discriminator_loss(
        &Tensor::new(&ls, &Device::Cpu).unwrap(),
        &Tensor::new(&lt, &Device::Cpu).unwrap(),
        &wt,
    )
    .unwrap()
    .to_scalar::<f64>()
    .unwrap();
    let bce_source = |l: f64| -(1.0 / (1.0 + (-l).exp())).ln();
    let bce_target = |l: f64| -(1.0 - 1.0 / (1.0 + (-l).exp())).ln();
    let want = 0.2 * bce_source(1.5) + 0.3 * bce_source(-0.5) + 0.5 * bce_target(0.25);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
}
