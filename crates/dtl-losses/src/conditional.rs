//! Losses on a classifier's predictions for the target: the minimum class confusion of MCC and
//! the conditioning of CDAN's domain discriminator.
//!
//! - [`minimum_class_confusion`]: Jin et al. 2020, "Minimum Class Confusion for Versatile Domain
//!   Adaptation" (ECCV): the share of the class-correlation matrix of the temperature-scaled,
//!   entropy-weighted target predictions that lies off its diagonal.
//! - [`multilinear_map`], [`randomized_multilinear_map`], [`entropy_weights`] and
//!   [`weighted_discriminator_loss`]: Long et al. 2018, "Conditional Adversarial Domain
//!   Adaptation" (NeurIPS): the discriminator of CDAN reads the outer product `f ⊗ g` of features
//!   and class probabilities (or its randomized estimate when `d_f d_g` is large), and CDAN+E weights
//!   each sample's discriminator loss by `1 + exp(-H(g))`, favouring confident predictions.

use candle_core::{DType, Tensor, D};

use crate::gan::softplus;
use crate::{Error, Result};

/// `softmax(logits / temperature)` over the last dimension.
pub fn softmax(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    let z = (logits / temperature)?;
    let z = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?;
    let e = z.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// The entropy `-sum_c p_c log(p_c + 1e-5)` of each row of probabilities `p` `(B, C)`, as `(B,)`
/// (the small constant as TLlib's reference code has it, so that a zero probability counts 0).
pub fn entropy(p: &Tensor) -> Result<Tensor> {
    Ok((p * (p + 1e-5)?.log()?)?.sum(D::Minus1)?.neg()?)
}

fn check_logits(loss: &'static str, logits: &Tensor) -> Result<(usize, usize)> {
    match logits.dims() {
        &[b, c] if b > 0 && c > 1 => Ok((b, c)),
        d => Err(Error::Input {
            loss,
            message: format!("expected logits of shape (batch, classes) with 2 classes or more, got {d:?}"),
        }),
    }
}

/// The MCC loss of target logits `(B, C)` at `temperature` (the paper's 2.5 for digits and most
/// benchmarks): with `Y = softmax(Z / T)`, sample weights `w_i = B (1 + exp(-H(Y_i))) / sum_j (1 +
/// exp(-H(Y_j)))` (no gradient through them), the class correlation `C = Y^T diag(w) Y`, normalised
/// by its class sums, the loss is `(sum(C) - trace(C)) / |C|`: 0 when no sample spreads its
/// probability over two classes, up to `(|C| - 1) / |C|`.
pub fn minimum_class_confusion(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    let (b, c) = check_logits("minimum_class_confusion", logits)?;
    if !(temperature > 0.0 && temperature.is_finite()) {
        return Err(Error::Input {
            loss: "minimum_class_confusion",
            message: format!("temperature {temperature} is not positive"),
        });
    }
    let y = softmax(logits, temperature)?;
    let w = entropy_weights(&y.detach())?;
    let w = (w * b as f64)?;
    let corr = y.broadcast_mul(&w.unsqueeze(1)?)?.t()?.matmul(&y)?;
    // C is symmetric, so normalising by the sums of its rows or of its columns gives one loss.
    let corr = corr.broadcast_div(&corr.sum_keepdim(1)?)?;
    let eye = Tensor::eye(c, DType::F32, logits.device())?.to_dtype(corr.dtype())?;
    let off = (corr.sum_all()? - (corr * eye)?.sum_all()?)?;
    Ok((off / c as f64)?)
}

/// CDAN+E's sample weights for probabilities `p` `(B, C)`: `1 + exp(-H(p_i))`, normalised to sum
/// to 1 over the batch.
pub fn entropy_weights(p: &Tensor) -> Result<Tensor> {
    let w = (entropy(p)?.neg()?.exp()? + 1.0)?;
    Ok(w.broadcast_div(&w.sum_all()?)?)
}

/// The multilinear map of features `f` `(B, D)` and probabilities `g` `(B, C)`: row `i` is the
/// outer product `g_i f_i^T` flattened, `(B, C D)` (class-major, as TLlib's `MultiLinearMap`).
pub fn multilinear_map(f: &Tensor, g: &Tensor) -> Result<Tensor> {
    let (b, d) = f.dims2()?;
    let (b2, c) = g.dims2()?;
    if b != b2 {
        return Err(Error::Input {
            loss: "multilinear_map",
            message: format!("{b} feature rows, {b2} prediction rows"),
        });
    }
    Ok(g.unsqueeze(2)?
        .broadcast_mul(&f.unsqueeze(1)?)?
        .reshape((b, c * d))?)
}

/// The randomized multilinear map `(f R_f) ⊙ (g R_g) / sqrt(d)` for fixed random matrices `R_f`
/// `(D, d)` and `R_g` `(C, d)` (standard normal): an unbiased estimate of the multilinear map's
/// inner products in `d` dimensions, for when `C D` is too wide.
pub fn randomized_multilinear_map(f: &Tensor, g: &Tensor, rf: &Tensor, rg: &Tensor) -> Result<Tensor> {
    let d = rf.dim(1)?;
    Ok(((f.matmul(rf)? * g.matmul(rg)?)? / (d as f64).sqrt())?)
}

/// The discriminator's binary cross-entropy (source 1, target 0) with per-sample weights `w`
/// `(n + m,)`, source first: `sum_i w_i bce_i / sum_i w_i`.
pub fn weighted_discriminator_loss(
    source_logits: &Tensor,
    target_logits: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let ls = source_logits.flatten_all()?;
    let lt = target_logits.flatten_all()?;
    let (n, m) = (ls.dim(0)?, lt.dim(0)?);
    if w.dims() != [n + m] || n == 0 || m == 0 {
        return Err(Error::Input {
            loss: "weighted_discriminator_loss",
            message: format!(
                "{n} source and {m} target logits, weights of shape {:?}",
                w.dims()
            ),
        });
    }
    let bce = Tensor::cat(&[softplus(&ls.neg()?)?, softplus(&lt)?], 0)?;
    Ok(((bce * w)?.sum_all()? / w.sum_all()?)?)
}
