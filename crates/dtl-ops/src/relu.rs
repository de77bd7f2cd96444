//! ReLU fused into the op before it: the residual sum of a ResNet block (`relu(a + b)`) here, and
//! batch norm in [`crate::batch_norm_train_relu`]. Each saves a pass over the activations forward
//! and, backward, candle's ReLU gradient (a comparison, a conversion and a product, three passes
//! and two buffers, on one thread) for one parallel pass.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::contiguous_f32;

/// Elements per parallel task of the elementwise kernels.
const CHUNK: usize = 1 << 14;

/// `relu(v)`, keeping NaN (as PyTorch's `relu`).
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

fn same_shape(al: &Layout, bl: &Layout, what: &str) -> Result<()> {
    if al.shape() != bl.shape() {
        candle_core::bail!(
            "{what}: shapes {:?} and {:?} differ",
            al.shape().dims(),
            bl.shape().dims()
        );
    }
    Ok(())
}

/// `f(a[i], b[i])` for two storages of the same shape, in parallel chunks: the pass both ops of this
/// module make (`what` names their inputs in errors).
fn zip_map(
    (as_, al): (&CpuStorage, &Layout),
    (bs, bl): (&CpuStorage, &Layout),
    what: [&str; 3],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<(CpuStorage, Shape)> {
    same_shape(al, bl, what[0])?;
    let a = contiguous_f32(as_, al, what[1])?;
    let b = contiguous_f32(bs, bl, what[2])?;
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    Ok((CpuStorage::F32(out), al.shape().clone()))
}

/// The gradient through a ReLU from its output: `g * (y > 0)`, `(y, g)`.
pub(crate) struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "dtl-relu-grad"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_map(
            (ys, yl),
            (gs, gl),
            ["relu gradient", "relu output", "relu output gradient"],
            |y, g| if y > 0.0 { g } else { 0.0 },
        )
    }
}

/// `g * (y > 0)` for the output `y` of a ReLU and its gradient `g`.
pub(crate) fn relu_grad(y: &Tensor, g: &Tensor) -> Result<Tensor> {
    y.apply_op2_no_bwd(&g.contiguous()?, &ReluGrad)
}

struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "dtl-add-relu"
    }

    fn cpu_fwd(
        &self,
        as_: &CpuStorage,
        al: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_map(
            (as_, al),
            (bs, bl),
            ["add_relu", "add_relu input", "add_relu input"],
            |a, b| relu(a + b),
        )
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = relu_grad(res, grad)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

/// `relu(a + b)` for tensors of the same shape (a ResNet block's residual sum and ReLU, He et al.
/// 2016), with its gradient `g * (a + b > 0)` for both inputs as PyTorch computes it. On the CPU
/// (f32) one parallel pass each way; elsewhere candle's ops.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        candle_core::bail!("add_relu: shapes {:?} and {:?} differ", a.dims(), b.dims());
    }
    if a.device().is_cpu() && a.dtype() == DType::F32 && b.dtype() == DType::F32 {
        return a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu);
    }
    (a + b)?.relu()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Values and both gradients against candle's `(a + b).relu()` on inputs of both signs, and a
    /// NaN kept.
    #[test]
    fn add_relu_matches_candle() -> Result<()> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = 3 * 4 * 50 * 50;
        let mut v = || -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
        let (av, bv, gv) = (v(), v(), v());
        let dev = &Device::Cpu;
        let run = |fused: bool| -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
            let a = Var::from_vec(av.clone(), (3, 4, 50, 50), dev)?;
            let b = Var::from_vec(bv.clone(), (3, 4, 50, 50), dev)?;
            let y = if fused {
                add_relu(a.as_tensor(), b.as_tensor())?
            } else {
                (a.as_tensor() + b.as_tensor())?.relu()?
            };
            let g = Tensor::from_vec(gv.clone(), (3, 4, 50, 50), dev)?;
            let grads = (y.clone() * g)?.sum_all()?.backward()?;
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (ga, gb) = (flat(grads.get(&a).unwrap()), flat(grads.get(&b).unwrap()));
            assert_eq!(ga, gb);
            Ok((flat(&y), ga, flat(&(a.as_tensor() + b.as_tensor())?)))
        };
        let (y, ga, sum) = run(true)?;
        let (y_ref, ga_ref, _) = run(false)?;
        assert_eq!(y, y_ref);
        assert_eq!(ga, ga_ref);
        // Half the sums are negative: their gradient is zero, the others pass g through.
        let zeros = ga
            .iter()
            .zip(&sum)
            .filter(|(g, s)| **s < 0.0 && **g == 0.0)
            .count();
        assert_eq!(zeros, sum.iter().filter(|s| **s < 0.0).count());
        assert!(zeros > n / 3 && zeros < 2 * n / 3, "{zeros} of {n}");
        let nan = add_relu(
            &Tensor::new(&[f32::NAN, -1.0], dev)?,
            &Tensor::new(&[0.0f32, 0.5], dev)?,
        )?
        .to_vec1::<f32>()?;
        assert!(nan[0].is_nan() && nan[1] == 0.0, "{nan:?}");
        let err = add_relu(
            &Tensor::zeros(3, DType::F32, dev)?,
            &Tensor::zeros(4, DType::F32, dev)?,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("[3]") && err.contains("[4]"), "{err}");
        Ok(())
    }
}
