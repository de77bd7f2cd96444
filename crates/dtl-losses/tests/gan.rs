//! The GAN losses against PyTorch (`scripts/make_losses_fixture.py`, float64, logits up to +-120),
//! finite-difference gradients, and gradient reversal's exact flip and scale.

use candle_core::{DType, Device, Tensor, Var};
use dtl_losses::{
    discriminator_accuracy, discriminator_loss, generator_inverted_loss, generator_minimax_loss, grad_reverse,
};
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

type GanLoss = fn(&Tensor, &Tensor) -> dtl_losses::Result<Tensor>;

fn case(name: &str) -> GanLoss {
    match name {
        "discriminator" => discriminator_loss,
        "generator_minimax" => |_, t| generator_minimax_loss(t),
        "generator_inverted" => |_, t| generator_inverted_loss(t),
        other => panic!("unknown case {other}"),
    }
}

fn grads(f: GanLoss, a: &[f64], b: &[f64], dtype: DType) -> (f64, Vec<f64>, Vec<f64>) {
    let dev = Device::Cpu;
    let va = Var::from_tensor(&Tensor::new(a, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let vb = Var::from_tensor(&Tensor::new(b, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let v = f(va.as_tensor(), vb.as_tensor()).unwrap();
    let g = v.backward().unwrap();
    let get = |var: &Var, n: usize| match g.get(var) {
        Some(t) => t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap(),
        None => vec![0.0; n],
    };
    (
        v.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap(),
        get(&va, a.len()),
        get(&vb, b.len()),
    )
}

#[test]
fn values_and_gradients_match_pytorch_even_for_saturated_logits() {
    let fx = fixture();
    let (ls, lt) = (f64s(&fx["logits_source"]), f64s(&fx["logits_target"]));
    let cases = fx["gan_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let want = c["value"].as_f64().unwrap();
        for dtype in [DType::F64, DType::F32] {
            let tol = if dtype == DType::F64 { 1e-12 } else { 1e-5 };
            let (v, ga, gb) = grads(case(name), &ls, &lt, dtype);
            assert!(v.is_finite(), "{name} {dtype:?}: {v}");
            assert!(
                (v - want).abs() <= tol * want.abs().max(1.0),
                "{name} {dtype:?}: {v} vs {want}"
            );
            for (got, want) in ga
                .iter()
                .zip(f64s(&c["grad_source"]))
                .chain(gb.iter().zip(f64s(&c["grad_target"])))
            {
                assert!(
                    (got - want).abs() <= tol,
                    "{name} {dtype:?} gradient: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    let a = [0.4, -1.2, 2.5];
    let b = [-0.3, 1.1, 0.05, -2.0];
    for name in ["discriminator", "generator_minimax", "generator_inverted"] {
        let f = case(name);
        let (_, ga, gb) = grads(f, &a, &b, DType::F64);
        let at = |a: &[f64], b: &[f64]| grads(f, a, b, DType::F64).0;
        for i in 0..a.len() + b.len() {
            let (mut ap, mut am, mut bp, mut bm) = (a.to_vec(), a.to_vec(), b.to_vec(), b.to_vec());
            let analytic = if i < a.len() {
                ap[i] += 1e-6;
                am[i] -= 1e-6;
                ga[i]
            } else {
                bp[i - a.len()] += 1e-6;
                bm[i - a.len()] -= 1e-6;
                gb[i - a.len()]
            };
            let fd = (at(&ap, &bp) - at(&am, &bm)) / 2e-6;
            assert!((analytic - fd).abs() < 1e-8, "{name}[{i}]: {analytic} vs {fd}");
        }
    }
}

#[test]
fn discriminator_loss_is_ln2_when_fooled_and_accuracy_counts_sides() {
    let zeros = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
    let v = discriminator_loss(&zeros, &zeros.narrow(0, 0, 3).unwrap())
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((v - std::f32::consts::LN_2).abs() < 1e-7, "{v}");
    let s = Tensor::new(&[1f32, -1., 2.], &Device::Cpu).unwrap();
    let t = Tensor::new(&[[-1f32], [0.0]], &Device::Cpu).unwrap();
    assert_eq!(discriminator_accuracy(&s, &t).unwrap(), 4.0 / 5.0);
    let err = discriminator_loss(&Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(), &s)
        .unwrap_err()
        .to_string();
    assert!(err.contains("(n,) or (n, 1)") && err.contains("[2, 2]"), "{err}");
}

#[test]
fn gradient_reversal_is_the_identity_forward_and_flips_and_scales_backward_exactly() {
    let dev = Device::Cpu;
    let x = Var::new(&[0.3f32, -2.0, 1e-30, 7.5e20, -0.0, 3.0], &dev).unwrap();
    let w = Tensor::new(&[1.5f32, -0.25, 3.0, 1e-3, 2.0, -8.0], &dev).unwrap();
    for coeff in [1.0, 0.37, 0.0, 2.5] {
        let y = grad_reverse(x.as_tensor(), coeff).unwrap();
        let (xv, yv) = (
            x.as_tensor().to_vec1::<f32>().unwrap(),
            y.to_vec1::<f32>().unwrap(),
        );
        assert_eq!(xv, yv, "forward at coeff {coeff}");
        // d/dx sum(w * y) through the reversal is exactly -coeff * w (one f32 product).
        let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        // candle prunes a branch multiplied by zero: no entry means a zero gradient.
        let gx = g
            .get(&x)
            .map(|t| t.to_vec1::<f32>().unwrap())
            .unwrap_or(vec![0.0; 6]);
        let want: Vec<f32> = w
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|wi| (-coeff as f32) * wi)
            .collect();
        assert_eq!(gx, want, "backward at coeff {coeff}");
    }
    // Inside a longer graph: the layers before the reversal see the flipped gradient, the ones
    // after it the plain one.
    let a = Var::new(&[1.0f64, 2.0], &dev).unwrap();
    let h = (a.as_tensor() * 3.0).unwrap();
    let z = grad_reverse(&h, 0.5).unwrap().sqr().unwrap().sum_all().unwrap();
    let g = z.backward().unwrap();
    // z = sum((3a)^2) forward; backward d z/d h = 2h, reversed: -0.5 * 2h = -h, then * 3.
    assert_eq!(g.get(&a).unwrap().to_vec1::<f64>().unwrap(), vec![-9.0, -18.0]);
    assert!(grad_reverse(&h, f64::NAN).is_err());
}
