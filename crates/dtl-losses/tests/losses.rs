//! MMD^2 and CORAL against PyTorch (`scripts/make_losses_fixture.py`, float64), known properties,
//! and finite-difference gradients.

use candle_core::{DType, Device, Tensor, Var};
use dtl_losses::{coral, mmd2, Bandwidths, Estimator, MmdKernel};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/losses_pytorch.json")).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A loss between a source and a target sample.
type Loss = Box<dyn Fn(&Tensor, &Tensor) -> dtl_losses::Result<Tensor>>;

fn case_fn(name: &str) -> Loss {
    let weighted = MmdKernel::Gaussian {
        bandwidths: Bandwidths::Fixed(vec![0.5, 1.0, 2.0]),
        weights: Some(vec![0.2, 0.3, 0.5]),
    };
    let (kernel, est) = match name {
        "linear-biased" => (MmdKernel::Linear, Estimator::Biased),
        "linear-unbiased" => (MmdKernel::Linear, Estimator::Unbiased),
        "linear-linear" => (MmdKernel::Linear, Estimator::Linear),
        "gauss-biased" => (weighted, Estimator::Biased),
        "gauss-unbiased" => (weighted, Estimator::Unbiased),
        "gauss-linear" => (weighted, Estimator::Linear),
        "median-biased" => (MmdKernel::median(&[0.5, 1.0, 2.0]), Estimator::Biased),
        "coral" => return Box::new(coral),
        other => panic!("unknown case {other}"),
    };
    Box::new(move |a, b| mmd2(a, b, &kernel, est))
}

#[test]
fn values_and_gradients_match_pytorch() {
    let fx = fixture();
    let dev = Device::Cpu;
    let xs0 = f64s(&fx["xs"]);
    let xt = Tensor::from_vec(f64s(&fx["xt"]), (6, 5), &dev).unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let xs = Var::from_vec(xs0.clone(), (7, 5), &dev).unwrap();
        let v = case_fn(name)(xs.as_tensor(), &xt).unwrap();
        let got = v.to_scalar::<f64>().unwrap();
        let want = case["value"].as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
            "{name}: {got} vs PyTorch {want}"
        );
        let g = v.backward().unwrap();
        let gx = g
            .get(&xs)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let gw = f64s(&case["grad_xs"]);
        let scale = gw.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-9);
        for (i, (a, b)) in gx.iter().zip(&gw).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * scale,
                "{name} grad[{i}]: {a} vs PyTorch {b}"
            );
        }
    }
}

fn normal(rng: &mut ChaCha8Rng, n: usize, d: usize, shift: f64) -> Tensor {
    use rand::Rng;
    // Box-Muller from the portable generator.
    let v: Vec<f64> = (0..n * d)
        .map(|_| {
            let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() + shift
        })
        .collect();
    Tensor::from_vec(v, (n, d), &Device::Cpu).unwrap()
}

#[test]
fn biased_mmd_of_a_sample_with_itself_is_zero_and_never_nan() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = normal(&mut rng, 16, 4, 0.0).to_dtype(DType::F32).unwrap();
    for k in [
        MmdKernel::Linear,
        MmdKernel::gaussian(&[1.0, 2.0]),
        MmdKernel::median(&[0.5, 1.0, 2.0]),
    ] {
        let v = mmd2(&x, &x, &k, Estimator::Biased)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(v.abs() < 1e-6, "{k:?}: {v}");
    }
    // Identical points everywhere (median distance 0) and a batch of one stay finite.
    let same = Tensor::ones((5, 3), DType::F32, &Device::Cpu).unwrap();
    let v = mmd2(&same, &same, &MmdKernel::median(&[1.0]), Estimator::Biased).unwrap();
    assert_eq!(v.to_scalar::<f32>().unwrap(), 0.0);
    let one = x.narrow(0, 0, 1).unwrap();
    let var = Var::from_tensor(&one).unwrap();
    let v = mmd2(
        var.as_tensor(),
        &x,
        &MmdKernel::gaussian(&[1.0]),
        Estimator::Biased,
    )
    .unwrap();
    let g = v.backward().unwrap();
    assert!(v.to_scalar::<f32>().unwrap().is_finite());
    assert!(g
        .get(&var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
    let one_again = Var::from_tensor(&one).unwrap();
    let v = mmd2(
        one_again.as_tensor(),
        &one,
        &MmdKernel::gaussian(&[1.0]),
        Estimator::Biased,
    )
    .unwrap();
    let g = v.backward().unwrap();
    assert_eq!(v.to_scalar::<f32>().unwrap(), 0.0);
    assert!(g
        .get(&one_again)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

#[test]
fn unbiased_estimators_average_to_zero_between_equal_distributions() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let k = MmdKernel::gaussian(&[1.0, 3.0]);
    for est in [Estimator::Unbiased, Estimator::Linear] {
        let draws: Vec<f64> = (0..400)
            .map(|_| {
                let (a, b) = (normal(&mut rng, 12, 3, 0.0), normal(&mut rng, 12, 3, 0.0));
                mmd2(&a, &b, &k, est).unwrap().to_scalar::<f64>().unwrap()
            })
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        let sd = (draws.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws.len() - 1) as f64).sqrt();
        let se = sd / (draws.len() as f64).sqrt();
        // Unbiased: the mean is within 4 standard errors of 0. The biased estimator is not.
        assert!(mean.abs() < 4.0 * se, "{est:?}: mean {mean}, standard error {se}");
        if est == Estimator::Unbiased {
            let biased: f64 = (0..50)
                .map(|_| {
                    let (a, b) = (normal(&mut rng, 12, 3, 0.0), normal(&mut rng, 12, 3, 0.0));
                    mmd2(&a, &b, &k, Estimator::Biased)
                        .unwrap()
                        .to_scalar::<f64>()
                        .unwrap()
                })
                .sum::<f64>()
                / 50.0;
            assert!(biased > 4.0 * se, "the V-statistic is biased upwards: {biased}");
        }
    }
}

#[test]
fn mmd_grows_with_a_mean_shift() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let base = normal(&mut rng, 64, 2, 0.0);
    let noise = normal(&mut rng, 64, 2, 0.0);
    for k in [
        MmdKernel::Linear,
        MmdKernel::gaussian(&[1.0, 2.0, 4.0]),
        MmdKernel::median(&[1.0]),
    ] {
        let mut last = f64::NEG_INFINITY;
        for shift in [0.0, 0.5, 1.0, 2.0] {
            let t = (&noise + shift).unwrap();
            let v = mmd2(&base, &t, &k, Estimator::Biased)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(v > last, "{k:?}: shift {shift} gives {v}, not above {last}");
            last = v;
        }
    }
    // The linear kernel's MMD^2 is exactly the squared distance between the means.
    let t = (&noise + 1.5).unwrap();
    let v = mmd2(&base, &t, &MmdKernel::Linear, Estimator::Biased)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let diff = (base.mean(0).unwrap() - t.mean(0).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    assert!((v - diff.to_scalar::<f64>().unwrap()).abs() < 1e-9);
}

#[test]
fn gradients_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let xs0 = normal(&mut rng, 5, 3, 0.0)
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let xt = normal(&mut rng, 4, 3, 0.7);
    for name in ["gauss-unbiased", "gauss-linear", "coral"] {
        let f = case_fn(name);
        let at = |v: &[f64]| {
            let t = Tensor::from_vec(v.to_vec(), (5, 3), &Device::Cpu).unwrap();
            f(&t, &xt).unwrap().to_scalar::<f64>().unwrap()
        };
        let var = Var::from_vec(xs0.clone(), (5, 3), &Device::Cpu).unwrap();
        let g = f(var.as_tensor(), &xt).unwrap().backward().unwrap();
        let gx = g
            .get(&var)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        for i in 0..xs0.len() {
            let (mut p, mut m) = (xs0.clone(), xs0.clone());
            p[i] += 1e-6;
            m[i] -= 1e-6;
            let fd = (at(&p) - at(&m)) / 2e-6;
            assert!(
                (gx[i] - fd).abs() < 1e-6 + 1e-5 * fd.abs(),
                "{name}[{i}]: {} vs {fd}",
                gx[i]
            );
        }
    }
}

#[test]
fn undefined_estimates_are_clear_errors() {
    let dev = Device::Cpu;
    let one = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
    let many = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
    let other = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
    let k = MmdKernel::gaussian(&[1.0]);
    let msg = |r: dtl_losses::Result<Tensor>| r.unwrap_err().to_string();
    assert!(msg(mmd2(&one, &many, &k, Estimator::Unbiased)).contains("at least 2 samples"));
    assert!(msg(mmd2(&one, &many, &k, Estimator::Linear)).contains("at least 2 samples"));
    assert!(msg(mmd2(&many, &other, &k, Estimator::Biased)).contains("3 features, target 2"));
    assert!(msg(coral(&one, &many)).contains("coral"));
    assert!(
        msg(mmd2(&many, &many, &MmdKernel::gaussian(&[]), Estimator::Biased))
            .contains("at least one bandwidth")
    );
    assert!(msg(mmd2(
        &many,
        &many,
        &MmdKernel::gaussian(&[-1.0]),
        Estimator::Biased
    ))
    .contains("-1"));
    let bad_w = MmdKernel::Gaussian {
        bandwidths: Bandwidths::Fixed(vec![1.0, 2.0]),
        weights: Some(vec![1.0]),
    };
    assert!(msg(mmd2(&many, &many, &bad_w, Estimator::Biased)).contains("1 weights for 2 bandwidths"));
}
