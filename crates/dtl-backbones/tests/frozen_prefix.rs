//! A frozen prefix stops the backward pass behind the frozen layers and changes nothing else: the
//! same logits, no gradient for the frozen layers' parameters, and bit-identical gradients for
//! every other parameter (against the same model without the prefix), for LeNet, ConvNet8 and
//! ResNet-18.

use candle_core::{Device, Tensor, Var};
use dtl_backbones::{BackboneKind, Classifier, ModelSpec};

fn spec(kind: BackboneKind) -> ModelSpec {
    ModelSpec {
        backbone: kind,
        input_shape: shape(kind),
        class_names: (0..10).map(|d| d.to_string()).collect(),
        adapt_width: None,
        normalize: None,
    }
}

/// Digit networks on 1 x 16 x 16, ResNet-18 on its smallest input, 3 x 32 x 32.
fn shape(kind: BackboneKind) -> (usize, usize, usize) {
    if kind.is_imagenet() {
        (3, 32, 32)
    } else {
        (1, 16, 16)
    }
}

/// Each named parameter's gradient, `None` where it has none.
type ParamGrads = Vec<(String, Option<Vec<f32>>)>;

/// The logits and, for loss `sum(logits * g)`, the gradient of every named parameter.
fn grads(model: &Classifier, xs: &Tensor, g: &Tensor) -> anyhow::Result<(Vec<f32>, ParamGrads)> {
    let logits = model.forward(xs, false)?;
    let store = (logits.clone() * g)?.sum_all()?.backward()?;
    let vars: Vec<(String, Var)> = {
        let data = model.varmap().data().lock().unwrap();
        let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let per_param = vars
        .into_iter()
        .map(|(name, var)| {
            let grad = store
                .get(var.as_tensor())
                .map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                .transpose()?;
            Ok((name, grad))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok((logits.flatten_all()?.to_vec1()?, per_param))
}

#[test]
fn frozen_prefix_keeps_values_and_drops_only_the_frozen_gradients() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let g = Tensor::randn(0f32, 1f32, (6, 10), &dev)?;
    for kind in [
        BackboneKind::LeNet,
        BackboneKind::ConvNet8,
        BackboneKind::ResNet18,
    ] {
        let (c, h, w) = shape(kind);
        let xs = Tensor::rand(0f32, 1f32, (6, c, h, w), &dev)?;
        let reference = Classifier::new(spec(kind), 3, &dev)?;
        let (logits_ref, grads_ref) = grads(&reference, &xs, &g)?;
        // Every parameter has a gradient (batch-norm running statistics are buffers).
        assert!(grads_ref
            .iter()
            .all(|(n, g)| g.is_some() != dtl_core::params::is_buffer(n)));
        let layers = reference.backbone().layers().to_vec();
        for n in 1..=layers.len() {
            let mut model = Classifier::new(spec(kind), 3, &dev)?;
            model.set_frozen_prefix(n);
            assert_eq!(model.frozen_prefix(), n);
            let (logits, grads) = grads(&model, &xs, &g)?;
            assert_eq!(logits, logits_ref, "{kind:?} n={n}: logits changed");
            for ((name, got), (_, want)) in grads.iter().zip(&grads_ref) {
                let layer = name.split('.').next().unwrap();
                let frozen = layers[..n].iter().any(|l| l == layer);
                if frozen {
                    assert!(got.is_none(), "{kind:?} n={n}: frozen {name} got a gradient");
                } else {
                    assert_eq!(got, want, "{kind:?} n={n}: gradient of {name} changed");
                }
            }
        }
        // Beyond the backbone it is capped; 0 undoes it.
        let mut model = Classifier::new(spec(kind), 3, &dev)?;
        model.set_frozen_prefix(99);
        assert_eq!(model.frozen_prefix(), layers.len());
        model.set_frozen_prefix(0);
        assert_eq!(grads(&model, &xs, &g)?.1, grads_ref);
    }
    Ok(())
}
