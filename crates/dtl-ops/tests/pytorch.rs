//! dtl-ops' kernels against PyTorch on random inputs of several shapes (fixture made by
//! `scripts/make_ops_fixture.py`): outputs and all gradients within 1e-4 relative error.

use candle_core::{Device, Result, Tensor, Var};
use serde_json::Value;

fn vec(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Largest absolute difference relative to the largest reference magnitude.
fn check(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff <= 1e-4 * scale,
        "{name}: max difference {diff:e} at scale {scale:e}"
    );
}

#[test]
fn kernels_match_pytorch() -> Result<()> {
    let fx: Value = serde_json::from_str(include_str!("fixtures/ops_pytorch.json")).unwrap();
    let dev = Device::Cpu;
    let mut seen = [0; 3];
    for (i, c) in fx["cases"].as_array().unwrap().iter().enumerate() {
        let op = c["op"].as_str().unwrap();
        let x = Var::from_vec(vec(&c["x"]), shape(&c["x_shape"]), &dev)?;
        let tag = format!("case {i} ({op})");
        match op {
            "conv2d" => {
                let w = Var::from_vec(vec(&c["w"]), shape(&c["w_shape"]), &dev)?;
                let b = Var::from_vec(vec(&c["bias"]), shape(&c["w_shape"])[0], &dev)?;
                let s = c["stride"].as_u64().unwrap() as usize;
                let p = c["padding"].as_u64().unwrap() as usize;
                let y = dtl_ops::conv2d_bias(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), s, p)?;
                assert_eq!(y.dims(), shape(&c["y_shape"]).as_slice(), "{tag}");
                let g = Tensor::from_vec(vec(&c["g"]), y.shape(), &dev)?;
                let grads = (&y * g)?.sum_all()?.backward()?;
                check(&format!("{tag} y"), &flat(&y), &vec(&c["y"]));
                check(
                    &format!("{tag} dx"),
                    &flat(grads.get(&x).unwrap()),
                    &vec(&c["dx"]),
                );
                check(
                    &format!("{tag} dw"),
                    &flat(grads.get(&w).unwrap()),
                    &vec(&c["dw"]),
                );
                check(
                    &format!("{tag} dbias"),
                    &flat(grads.get(&b).unwrap()),
                    &vec(&c["dbias"]),
                );
                seen[0] += 1;
            }
            "max_pool2d" => {
                let k = c["k"].as_u64().unwrap() as usize;
                let s = c["stride"].as_u64().unwrap() as usize;
                let p = c["padding"].as_u64().unwrap() as usize;
                let y = dtl_ops::max_pool2d(x.as_tensor(), k, s, p)?;
                assert_eq!(y.dims(), shape(&c["y_shape"]).as_slice(), "{tag}");
                let g = Tensor::from_vec(vec(&c["g"]), y.shape(), &dev)?;
                let grads = (&y * g)?.sum_all()?.backward()?;
                check(&format!("{tag} y"), &flat(&y), &vec(&c["y"]));
                check(
                    &format!("{tag} dx"),
                    &flat(grads.get(&x).unwrap()),
                    &vec(&c["dx"]),
                );
                seen[1] += 1;
            }
            "batch_norm" => {
                let n = c["gamma"].as_array().unwrap().len();
                let gamma = Var::from_vec(vec(&c["gamma"]), n, &dev)?;
                let beta = Var::from_vec(vec(&c["beta"]), n, &dev)?;
                let (y, mean, var) =
                    dtl_ops::batch_norm_train(x.as_tensor(), gamma.as_tensor(), beta.as_tensor(), 1e-5)?;
                let g = Tensor::from_vec(vec(&c["g"]), y.shape(), &dev)?;
                let grads = (&y * g)?.sum_all()?.backward()?;
                check(&format!("{tag} y"), &flat(&y), &vec(&c["y"]));
                check(
                    &format!("{tag} dx"),
                    &flat(grads.get(&x).unwrap()),
                    &vec(&c["dx"]),
                );
                check(
                    &format!("{tag} dgamma"),
                    &flat(grads.get(&gamma).unwrap()),
                    &vec(&c["dgamma"]),
                );
                check(
                    &format!("{tag} dbeta"),
                    &flat(grads.get(&beta).unwrap()),
                    &vec(&c["dbeta"]),
                );
                check(&format!("{tag} mean"), &flat(&mean), &vec(&c["mean"]));
                check(&format!("{tag} var"), &flat(&var), &vec(&c["var_unbiased"]));
                seen[2] += 1;
            }
            other => panic!("unknown op {other}"),
        }
    }
    assert_eq!(seen, [4, 3, 3]);
    Ok(())
}
