//! `classami`: ClassAMI (Musgrave, Belongie & Lim 2022, "Three new validators and a large-scale
//! benchmark ranking for unsupervised domain adaptation"): k-means with one cluster per class on
//! the (L2-normalised) target representation, scored by the adjusted mutual information between
//! the clusters and the model's predicted classes. High when the classifier's decisions follow the
//! clusters of its own representation. A model that predicts a single class scores 0.

use dtl_core::seed::Stream;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::stats::adjusted_mutual_info;
use crate::{Inputs, Matrix, Outputs, Result, Score, Validator};

/// AMI between k-means clusters of the target representation and the predicted classes.
pub struct ClassAmi {
    /// Lloyd iterations at most.
    pub iterations: usize,
}

impl Default for ClassAmi {
    fn default() -> Self {
        Self { iterations: 100 }
    }
}

fn sq(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// k-means of the rows of `x` into `k` clusters (k-means++ seeding from `seed`, then Lloyd's
/// iterations until no assignment changes): the cluster of each row.
pub fn kmeans(x: &Matrix, k: usize, iterations: usize, seed: u64) -> Vec<usize> {
    let (n, d) = (x.rows, x.cols);
    let k = k.min(n).max(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres: Vec<Vec<f64>> = vec![x.row(rng.random_range(0..n)).to_vec()];
    let mut dist: Vec<f64> = (0..n).map(|i| sq(x.row(i), &centres[0])).collect();
    while centres.len() < k {
        let total: f64 = dist.iter().sum();
        let next = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut r = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &dv) in dist.iter().enumerate() {
                if r < dv {
                    pick = i;
                    break;
                }
                r -= dv;
            }
            pick
        };
        centres.push(x.row(next).to_vec());
        let c = centres.last().expect("just pushed");
        for (i, dv) in dist.iter_mut().enumerate() {
            *dv = dv.min(sq(x.row(i), c));
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iterations.max(1) {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let best = (0..k)
                .min_by(|&p, &q| sq(x.row(i), &centres[p]).total_cmp(&sq(x.row(i), &centres[q])))
                .expect("k >= 1");
            if *a != best {
                *a = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0.0; d]; k];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            counts[assign[i]] += 1;
            for (s, v) in sums[assign[i]].iter_mut().zip(x.row(i)) {
                *s += v;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                centres[c] = sums[c].iter().map(|s| s / counts[c] as f64).collect();
            }
        }
    }
    assign
}

impl Validator for ClassAmi {
    fn name(&self) -> &'static str {
        "classami"
    }

    fn score(&self, inputs: &Inputs, o: &Outputs) -> Result<Score> {
        let f = &o.target_features;
        let mut x = f.clone();
        for i in 0..x.rows {
            let norm = f.row(i).iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            for v in &mut x.data[i * x.cols..(i + 1) * x.cols] {
                *v /= norm;
            }
        }
        let clusters = kmeans(
            &x,
            o.target_probs.cols,
            self.iterations,
            Stream::Kmm.seed(inputs.seed) ^ 0xc1a5,
        );
        let predicted = o.target_probs.argmax_rows();
        // A model that predicts one class has no decisions to agree with any clustering: 0, not
        // the 1 that two one-cluster labelings would get.
        if predicted.iter().all(|&p| p == predicted[0]) {
            return Ok(Score::of(0.0, x.rows));
        }
        Ok(Score::of(adjusted_mutual_info(&clusters, &predicted), x.rows))
    }
}
