//! The validators' arithmetic against independent references: scikit-learn's adjusted mutual
//! information and SKADA's prediction entropy and deep embedded validation on the same inputs
//! (`scripts/make_select_fixture.py`), and hand-computed cases.

use dtl_select::stats::{adjusted_mutual_info, entropy};
use dtl_select::validators::{dev::dev_risk, entropy::mean_entropy, snd::snd};
use dtl_select::Matrix;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/select_reference.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn matrix(v: &Value) -> Matrix {
    let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(floats).collect();
    Matrix::from_rows(&rows)
}

#[test]
fn ami_matches_scikit_learn() {
    for case in fixture()["ami"].as_array().unwrap() {
        let labels = |k: &str| -> Vec<usize> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        };
        let (a, b) = (labels("a"), labels("b"));
        let want = case["ami"].as_f64().unwrap();
        let got = adjusted_mutual_info(&a, &b);
        assert!((got - want).abs() < 1e-9, "AMI {got} vs scikit-learn {want}");
        // Symmetric, and 1 for a labeling against itself.
        assert!((adjusted_mutual_info(&b, &a) - want).abs() < 1e-9);
        assert!((adjusted_mutual_info(&a, &a) - 1.0).abs() < 1e-9);
    }
}

#[test]
fn prediction_entropy_matches_skada() {
    for case in fixture()["entropy"].as_array().unwrap() {
        let p = matrix(&case["probs"]);
        // SKADA averages over samples and classes and negates (lower entropy is better).
        let skada = case["skada"].as_f64().unwrap();
        let got = -mean_entropy(&p) / p.cols as f64;
        assert!((got - skada).abs() < 1e-6, "{got} vs SKADA {skada}");
    }
}

#[test]
fn dev_matches_skada_and_a_hand_computed_control_variate() {
    let case = &fixture()["dev"][0];
    let (l, w) = (floats(&case["losses"]), floats(&case["weights"]));
    let skada = case["skada"].as_f64().unwrap();
    let got = dev_risk(&l, &w);
    assert!(
        (got + skada).abs() < 1e-9,
        "DEV risk {got} vs SKADA's score {skada}"
    );

    // By hand: l = (1, 2, 3), w = (1, 2, 3): L = w l = (1, 4, 9), mean 14/3, mean(w) = 2;
    // Cov(L, w) = ((1-14/3)(-1) + 0 + (9-14/3)(1)) / 2 = 4, Var(w) = 1, eta = -4;
    // risk = 14/3 - 4 * 2 + 4 = 2/3.
    assert!((dev_risk(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]) - 2.0 / 3.0).abs() < 1e-12);
    // Constant weights: no control variate, the plain weighted mean.
    assert!((dev_risk(&[1.0, 2.0, 3.0], &[1.0; 3]) - 2.0).abs() < 1e-12);
}

#[test]
fn snd_of_constructed_neighbourhoods() {
    // Two samples: each one's only neighbour is the other, so every soft neighbourhood is a point
    // mass and SND is 0.
    let two = Matrix::from_rows(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert!(snd(&two, 0.05).abs() < 1e-12);
    // Three samples, unit vectors with cosines c01 = 1, c02 = c12 = 0 (rows 0 and 1 equal):
    // sample 0's neighbourhood is softmax(1/tau, 0) over (1, 2); sample 2's is uniform over (0, 1).
    let tau = 0.5;
    let three = Matrix::from_rows(&[vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]]);
    let q = 1.0 / (1.0 + (-1.0f64 / tau).exp());
    let h01 = entropy(&[q, 1.0 - q]);
    let want = (2.0 * h01 + 2f64.ln()) / 3.0;
    assert!(
        (snd(&three, tau) - want).abs() < 1e-12,
        "{} vs {want}",
        snd(&three, tau)
    );
}

#[test]
fn entropy_and_im_of_known_distributions() {
    // Uniform over 4 classes: entropy ln 4 per sample.
    let u = Matrix::from_rows(&[vec![0.25; 4], vec![0.25; 4]]);
    assert!((mean_entropy(&u) - 4f64.ln()).abs() < 1e-12);
    // One-hot on two different classes: zero entropy, full diversity (IM = ln 2 by hand).
    let p = Matrix::from_rows(&[vec![1.0, 0.0], vec![0.0, 1.0]]);
    assert_eq!(mean_entropy(&p), 0.0);
    assert!((entropy(&[0.5, 0.5]) - mean_entropy(&p) - 2f64.ln()).abs() < 1e-12);
}

#[test]
fn kmeans_recovers_separated_clusters_and_bnm_has_its_closed_form() {
    use dtl_select::linalg::singular_values;
    use dtl_select::validators::classami::kmeans;
    // Three tight, far-apart groups of 5 points: every group is one cluster.
    let mut rows = Vec::new();
    for (c, centre) in [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)].into_iter().enumerate() {
        for i in 0..5 {
            let d = 0.01 * (i as f64 + c as f64);
            rows.push(vec![centre.0 + d, centre.1 - d]);
        }
    }
    let assign = kmeans(&Matrix::from_rows(&rows), 3, 100, 7);
    for g in 0..3 {
        let group = &assign[g * 5..g * 5 + 5];
        assert!(group.iter().all(|&a| a == group[0]), "{assign:?}");
    }
    assert_eq!(
        adjusted_mutual_info(&assign, &[0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]),
        1.0
    );
    // One-hot predictions with class counts (3, 1): the matrix's columns are orthogonal with
    // norms sqrt(3) and 1, so its nuclear norm is sqrt(3) + 1 (BNM divides by n = 4).
    let p = Matrix::from_rows(&[vec![1.0, 0.0], vec![1.0, 0.0], vec![1.0, 0.0], vec![0.0, 1.0]]);
    let nuclear: f64 = singular_values(&p).iter().sum();
    assert!((nuclear - (3f64.sqrt() + 1.0)).abs() < 1e-12, "{nuclear}");
}
