//! Parameter stores: insertion, selection by layer prefix, and detached snapshots.
//!
//! candle has no `requires_grad` (candle issue #2323); dtl freezes a layer by not giving its
//! [`Var`]s to any optimizer. Selection is sorted by name so that optimizer state and logs do not
//! depend on `HashMap` order.

use candle_core::{Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// Inserts `value` as a new trainable parameter `name` into `vm` and returns the [`Var`].
///
/// Fails if `name` is already present, so that two layers can never share a name by accident.
pub fn insert(vm: &VarMap, name: &str, value: Tensor) -> Result<Var> {
    let mut data = vm.data().lock().map_err(|_| poisoned())?;
    if data.contains_key(name) {
        return Err(Error::Msg(format!("parameter `{name}` is defined twice")));
    }
    let var = Var::from_tensor(&value)?;
    data.insert(name.to_string(), var.clone());
    Ok(var)
}

/// The trainable parameters of `vm` whose layer is one of `layers` (a parameter `conv1.weight`
/// belongs to layer `conv1`), sorted by name.
pub fn select(vm: &VarMap, layers: &[&str]) -> Vec<(String, Var)> {
    trainable(vm)
        .into_iter()
        .filter(|(name, _)| layers.iter().any(|l| belongs_to(name, l)))
        .collect()
}

/// Every parameter of `vm`, sorted by name.
pub fn all(vm: &VarMap) -> Vec<(String, Var)> {
    let data = vm.data().lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Suffixes of non-trainable state stored beside the parameters (batch-norm running statistics,
/// named as PyTorch names them so that checkpoints load both ways).
pub const BUFFER_SUFFIXES: [&str; 3] = [".running_mean", ".running_var", ".num_batches_tracked"];

/// Whether `name` is a buffer (updated by the forward pass, never by an optimizer).
pub fn is_buffer(name: &str) -> bool {
    BUFFER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// Every trainable parameter of `vm` (buffers excluded), sorted by name.
pub fn trainable(vm: &VarMap) -> Vec<(String, Var)> {
    all(vm).into_iter().filter(|(n, _)| !is_buffer(n)).collect()
}

/// Whether parameter `name` belongs to `layer`: `name` is `layer` itself or starts with `layer.`.
pub fn belongs_to(name: &str, layer: &str) -> bool {
    name == layer
        || (name.len() > layer.len() && name.starts_with(layer) && name[layer.len()..].starts_with('.'))
}

/// Copies of every parameter, detached from any graph, sorted by name (for checkpoints, and to
/// check that frozen parameters did not move).
pub fn snapshot(vm: &VarMap) -> Result<Vec<(String, Tensor)>> {
    all(vm)
        .into_iter()
        .map(|(n, v)| Ok((n, v.as_tensor().detach().copy()?)))
        .collect()
}

fn poisoned() -> Error {
    Error::Msg("parameter store lock poisoned by a panic in another thread".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn layer_membership_is_by_whole_component() {
        assert!(belongs_to("conv1.weight", "conv1"));
        assert!(!belongs_to("conv10.weight", "conv1"));
        assert!(belongs_to("block1.conv1.weight", "block1"));
        assert!(!belongs_to("conv1", "conv1.weight"));
    }

    #[test]
    fn duplicate_names_are_refused() {
        let vm = VarMap::new();
        let t = Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap();
        insert(&vm, "a.w", t.clone()).unwrap();
        let err = insert(&vm, "a.w", t).unwrap_err().to_string();
        assert!(err.contains("a.w"), "{err}");
    }

    #[test]
    fn buffers_are_not_trainable() {
        let vm = VarMap::new();
        for n in ["bn1.weight", "bn1.running_mean", "bn1.running_var", "bn1.bias"] {
            insert(&vm, n, Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()).unwrap();
        }
        let names: Vec<String> = trainable(&vm).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["bn1.bias", "bn1.weight"]);
        assert_eq!(select(&vm, &["bn1"]).len(), 2);
        assert_eq!(all(&vm).len(), 4);
    }

    #[test]
    fn selection_is_sorted_and_filtered() {
        let vm = VarMap::new();
        for n in ["fc2.w", "conv1.w", "fc1.b", "fc1.w", "conv10.w"] {
            insert(&vm, n, Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap()).unwrap();
        }
        let names: Vec<String> = select(&vm, &["fc1", "conv1"])
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["conv1.w", "fc1.b", "fc1.w"]);
    }
}
