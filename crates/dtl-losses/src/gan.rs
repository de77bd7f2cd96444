//! The adversarial (GAN minimax) losses of domain adaptation and gradient reversal.
//!
//! A domain discriminator `D` outputs one logit per sample, `D(x) = sigmoid(logit)` being its
//! belief that `x` comes from the source. Goodfellow et al.'s (2014) minimax game, as ADDA (Tzeng et
//! al. 2017, "Adversarial discriminative domain adaptation") writes it for domain adaptation:
//!
//! - the discriminator minimises [`discriminator_loss`],
//!   `-E_S[log D(f_S(x))] - E_T[log(1 - D(f_T(x)))]` (binary cross-entropy, source = 1, target = 0);
//! - the target encoder either plays the true minimax game, minimising [`generator_minimax_loss`]
//!   `E_T[log(1 - D(f_T(x)))]`, or the inverted-label form ADDA trains with,
//!   [`generator_inverted_loss`] `-E_T[log D(f_T(x))]` (same fixed point, stronger gradients when
//!   the discriminator wins);
//! - DANN (Ganin & Lempitsky 2015, "Unsupervised domain adaptation by backpropagation") plays the
//!   game with one shared encoder through [`grad_reverse`]: the identity forward, the gradient
//!   multiplied by `-coeff` backward.
//!
//! Every loss is computed from logits through `softplus(x) = max(x, 0) + log(1 + exp(-|x|))`, with
//! `-log sigmoid(x) = softplus(-x)` and `-log(1 - sigmoid(x)) = softplus(x)`: finite for any finite
//! logit, where `log(sigmoid(x))` computed naively is `-inf` beyond `|x| > 88` in f32.

use candle_core::Tensor;

use crate::{Error, Result};

/// `softplus(x) = log(1 + exp(x))`, computed without overflow.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

fn logits_1d(name: &'static str, x: &Tensor) -> Result<Tensor> {
    let x = match x.dims() {
        [_] => x.clone(),
        [_, 1] => x.flatten_all()?,
        d => {
            return Err(Error::Input {
                loss: name,
                message: format!("expected discriminator logits of shape (n,) or (n, 1), got {d:?}"),
            })
        }
    };
    if x.dim(0)? == 0 {
        return Err(Error::Input {
            loss: name,
            message: "empty batch of logits".into(),
        });
    }
    Ok(x)
}

/// The discriminator's binary cross-entropy, source labelled 1 and target 0, averaged over all
/// `n + m` samples: `(sum softplus(-l_S) + sum softplus(l_T)) / (n + m)` for logits `l_S` `(n,)`
/// and `l_T` `(m,)` (or `(n, 1)`, `(m, 1)`). With equal batch sizes this is PyTorch's
/// `BCEWithLogitsLoss` on the concatenated batch.
pub fn discriminator_loss(source_logits: &Tensor, target_logits: &Tensor) -> Result<Tensor> {
    let ls = logits_1d("discriminator_loss", source_logits)?;
    let lt = logits_1d("discriminator_loss", target_logits)?;
    let total = (ls.dim(0)? + lt.dim(0)?) as f64;
    let sum = (softplus(&ls.neg()?)?.sum_all()? + softplus(&lt)?.sum_all()?)?;
    Ok((sum / total)?)
}

/// The generator's side of the minimax game, `mean(log(1 - D(f_T(x)))) = -mean(softplus(l_T))`, to
/// be minimised by the target encoder.
pub fn generator_minimax_loss(target_logits: &Tensor) -> Result<Tensor> {
    let lt = logits_1d("generator_minimax_loss", target_logits)?;
    Ok(softplus(&lt)?.mean_all()?.neg()?)
}

/// ADDA's inverted-label generator loss, `-mean(log D(f_T(x))) = mean(softplus(-l_T))`: the
/// target encoder is trained as if its samples were labelled source.
pub fn generator_inverted_loss(target_logits: &Tensor) -> Result<Tensor> {
    let lt = logits_1d("generator_inverted_loss", target_logits)?;
    Ok(softplus(&lt.neg()?)?.mean_all()?)
}

/// The fraction of samples the discriminator places on the right side (logit > 0 for source,
/// <= 0 for target): 0.5 when it is fooled.
pub fn discriminator_accuracy(source_logits: &Tensor, target_logits: &Tensor) -> Result<f64> {
    let ls = logits_1d("discriminator_accuracy", source_logits)?.to_vec1::<f32>()?;
    let lt = logits_1d("discriminator_accuracy", target_logits)?.to_vec1::<f32>()?;
    let right = ls.iter().filter(|&&v| v > 0.0).count() + lt.iter().filter(|&&v| v <= 0.0).count();
    Ok(right as f64 / (ls.len() + lt.len()) as f64)
}

/// Gradient reversal (Ganin & Lempitsky 2015): returns `x` unchanged, and in the backward pass
/// multiplies the incoming gradient by `-coeff`.
///
/// Built from candle operations that every device has: `x.detach() + (a - a.detach())` with
/// `a = -coeff * x`. The bracket is exactly zero in the forward pass (a number minus itself), so the
/// output equals `x` (a negative zero may come out as zero); only `a` carries a gradient, `-coeff`
/// times the incoming one. With `coeff = 0` candle prunes the branch: no gradient flows back.
pub fn grad_reverse(x: &Tensor, coeff: f64) -> Result<Tensor> {
    if !coeff.is_finite() {
        return Err(Error::Input {
            loss: "grad_reverse",
            message: format!("coefficient {coeff} is not finite"),
        });
    }
    let a = x.affine(-coeff, 0.0)?;
    Ok((x.detach() + (&a - a.detach())?)?)
}
