//! A training run's whole state, for checkpoints that a killed run resumes from bit for bit.
//!
//! A [`State`] holds named tensors (parameters, batch-norm buffers, optimizer moments, instance
//! weights) and named values (step counters, learning rates, the positions of random streams,
//! the epoch log). Every part of a run writes its own keys under a prefix of its own (`model.`,
//! `opt.`, `loop.`), and reads them back from a fresh object built exactly as the first run built
//! it: the saved state then replaces whatever the fresh object drew or computed.
//!
//! Exactness is the point. Tensors are stored in their own dtype; floating-point values are
//! written by serde_json's shortest round-trip form and parsed back exactly (its
//! `float_roundtrip` parser); a ChaCha stream is stored as its seed, stream and word position, so
//! that the restored generator continues with the very next word. On disk a state is one
//! safetensors file whose metadata holds the values and a SHA-256 of the tensor data, so that a
//! truncated or altered file is refused with the key or file at fault instead of resuming from it.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use dtl_core::state::State;
//! use rand::{RngCore, SeedableRng};
//! use rand_chacha::ChaCha8Rng;
//!
//! let mut rng = ChaCha8Rng::seed_from_u64(3);
//! rng.next_u32();
//! let mut state = State::new();
//! state.put_rng("loop.rng", &rng)?;
//! state.put("loop.step", &17usize)?;
//! state.put_tensor("model.w", &Tensor::new(&[1.5f32, -2.0], &Device::Cpu)?)?;
//! let back = State::from_bytes(&state.to_bytes()?, &Device::Cpu, "example")?;
//! assert_eq!(back.get::<usize>("loop.step")?, 17);
//! assert_eq!(back.rng("loop.rng")?.next_u32(), rng.next_u32());
//! assert_eq!(back.tensor("model.w")?.to_vec1::<f32>()?, [1.5, -2.0]);
//! # Ok::<(), dtl_core::Error>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The `dtl.format` metadata of a state file.
pub const STATE_FORMAT: &str = "dtl-train-state-1";

/// A run's state: named tensors and named values (see the module documentation).
#[derive(Debug, Default, Clone)]
pub struct State {
    tensors: BTreeMap<String, Tensor>,
    values: BTreeMap<String, serde_json::Value>,
}

/// A ChaCha stream's position: enough to continue it with the very next word.
#[derive(Debug, Serialize, Deserialize)]
struct RngState {
    seed: String,
    stream: u64,
    word_pos: String,
}

fn state_err(key: &str, message: impl Into<String>) -> Error {
    Error::State {
        key: key.to_string(),
        message: message.into(),
    }
}

impl State {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `key` is held, as a tensor or a value.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key) || self.values.contains_key(key)
    }

    /// Stores a copy of `t` (detached from any graph, on the CPU) as `key`.
    pub fn put_tensor(&mut self, key: &str, t: &Tensor) -> Result<()> {
        let t = t.detach().to_device(&Device::Cpu)?.copy()?;
        self.tensors.insert(key.to_string(), t);
        Ok(())
    }

    /// The tensor `key`.
    pub fn tensor(&self, key: &str) -> Result<&Tensor> {
        self.tensors
            .get(key)
            .ok_or_else(|| state_err(key, "missing from the saved state"))
    }

    /// The tensor `key`, which must have `dims` and `dtype`.
    pub fn tensor_like(&self, key: &str, dims: &[usize], dtype: DType) -> Result<&Tensor> {
        let t = self.tensor(key)?;
        if t.dims() != dims || t.dtype() != dtype {
            return Err(state_err(
                key,
                format!(
                    "saved as {:?} {:?}, the run needs {dtype:?} {dims:?}",
                    t.dtype(),
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    /// Stores `value` (any serde type; floating-point numbers must be finite) as `key`.
    pub fn put<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<()> {
        let v = serde_json::to_value(value).map_err(|e| state_err(key, e.to_string()))?;
        self.values.insert(key.to_string(), v);
        Ok(())
    }

    /// The value `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self
            .values
            .get(key)
            .ok_or_else(|| state_err(key, "missing from the saved state"))?;
        T::deserialize(v).map_err(|e| state_err(key, format!("unreadable: {e}")))
    }

    /// Stores `values` exactly, as an f64 tensor.
    pub fn put_f64s(&mut self, key: &str, values: &[f64]) -> Result<()> {
        self.put_tensor(key, &Tensor::from_slice(values, values.len(), &Device::Cpu)?)
    }

    /// The f64 values `key` (there must be `len` of them).
    pub fn f64s(&self, key: &str, len: usize) -> Result<Vec<f64>> {
        Ok(self.tensor_like(key, &[len], DType::F64)?.to_vec1::<f64>()?)
    }

    /// Stores `values` exactly, as an f32 tensor.
    pub fn put_f32s(&mut self, key: &str, values: &[f32]) -> Result<()> {
        self.put_tensor(key, &Tensor::from_slice(values, values.len(), &Device::Cpu)?)
    }

    /// The f32 values `key` (there must be `len` of them).
    pub fn f32s(&self, key: &str, len: usize) -> Result<Vec<f32>> {
        Ok(self.tensor_like(key, &[len], DType::F32)?.to_vec1::<f32>()?)
    }

    /// Stores indices (each below 2^32), as a u32 tensor.
    pub fn put_indices(&mut self, key: &str, values: &[usize]) -> Result<()> {
        let v: Vec<u32> = values
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| state_err(key, format!("index {i} does not fit 32 bits"))))
            .collect::<Result<_>>()?;
        self.put_tensor(key, &Tensor::from_vec(v, values.len(), &Device::Cpu)?)
    }

    /// The indices `key`, each below `bound`.
    pub fn indices(&self, key: &str, bound: usize) -> Result<Vec<usize>> {
        let t = self.tensor(key)?;
        if t.dtype() != DType::U32 || t.rank() != 1 {
            return Err(state_err(
                key,
                format!("saved as {:?} {:?}, not a list of indices", t.dtype(), t.dims()),
            ));
        }
        let v: Vec<usize> = t.to_vec1::<u32>()?.into_iter().map(|i| i as usize).collect();
        if let Some(bad) = v.iter().find(|&&i| i >= bound) {
            return Err(state_err(key, format!("index {bad} is outside 0..{bound}")));
        }
        Ok(v)
    }

    /// Stores the position of `rng` (its seed, stream and word position).
    pub fn put_rng(&mut self, key: &str, rng: &ChaCha8Rng) -> Result<()> {
        let seed: String = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        self.put(
            key,
            &RngState {
                seed,
                stream: rng.get_stream(),
                word_pos: rng.get_word_pos().to_string(),
            },
        )
    }

    /// The generator `key`, at the position it was stored at.
    pub fn rng(&self, key: &str) -> Result<ChaCha8Rng> {
        let s: RngState = self.get(key)?;
        let bad = || state_err(key, "not a ChaCha stream position");
        if s.seed.len() != 64 || !s.seed.is_ascii() {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s.seed[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let pos: u128 = s.word_pos.parse().map_err(|_| bad())?;
        let mut rng = ChaCha8Rng::from_seed(seed);
        rng.set_stream(s.stream);
        rng.set_word_pos(pos);
        Ok(rng)
    }

    /// Stores every variable of `vm` (parameters and buffers) as `{prefix}{name}`, and the list of
    /// names as `{prefix}#names`.
    pub fn put_varmap(&mut self, prefix: &str, vm: &VarMap) -> Result<()> {
        let vars = crate::params::all(vm);
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        self.put(&format!("{prefix}#names"), &names)?;
        for (name, var) in &vars {
            self.put_tensor(&format!("{prefix}{name}"), var.as_tensor())?;
        }
        Ok(())
    }

    /// Sets every variable of `vm` from `{prefix}{name}`: the saved names must be `vm`'s, each
    /// tensor of its variable's shape and dtype; nothing is changed when one does not fit.
    pub fn load_varmap(&self, prefix: &str, vm: &VarMap) -> Result<()> {
        let vars = crate::params::all(vm);
        let key = format!("{prefix}#names");
        let saved: Vec<String> = self.get(&key)?;
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        if saved != names {
            let missing: Vec<&&str> = names.iter().filter(|n| !saved.iter().any(|s| s == **n)).collect();
            let extra: Vec<&String> = saved.iter().filter(|s| !names.contains(&s.as_str())).collect();
            return Err(state_err(
                &key,
                format!(
                    "the saved parameters differ from the run's (missing {missing:?}, unexpected {extra:?})"
                ),
            ));
        }
        let tensors = vars
            .iter()
            .map(|(name, var)| {
                let t = self.tensor_like(&format!("{prefix}{name}"), var.dims(), var.dtype())?;
                Ok(t.to_device(var.device())?)
            })
            .collect::<Result<Vec<_>>>()?;
        for ((_, var), t) in vars.iter().zip(tensors) {
            var.set(&t)?;
        }
        Ok(())
    }

    /// The state as safetensors bytes: the tensors, and metadata holding the format, the values
    /// and a SHA-256 of the tensor data (sorted by key).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let values =
            serde_json::to_string(&self.values).map_err(|e| Error::Msg(format!("train state: {e}")))?;
        let mut meta = HashMap::new();
        meta.insert("dtl.format".to_string(), STATE_FORMAT.to_string());
        meta.insert("dtl.values".to_string(), values);
        meta.insert("dtl.sha256".to_string(), self.digest()?);
        safetensors::serialize(self.tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(meta))
            .map_err(|e| Error::Msg(format!("train state: {e}")))
    }

    fn digest(&self) -> Result<String> {
        tensors_sha256(self.tensors.iter().map(|(k, t)| (k.as_str(), t)))
    }

    /// Reads a state written by [`State::to_bytes`]; `origin` (a file name) is named in errors.
    pub fn from_bytes(bytes: &[u8], device: &Device, origin: &str) -> Result<Self> {
        let bad = |m: String| Error::Msg(format!("{origin}: {m}"));
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| bad(format!("not a dtl train state: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        match meta.get("dtl.format") {
            Some(f) if f == STATE_FORMAT => {}
            Some(f) => {
                return Err(bad(format!(
                    "train state format `{f}`, this dtl reads `{STATE_FORMAT}`"
                )))
            }
            None => return Err(bad("not a dtl train state (no dtl.format metadata)".into())),
        }
        let values: BTreeMap<String, serde_json::Value> = serde_json::from_str(
            meta.get("dtl.values")
                .ok_or_else(|| bad("no dtl.values metadata".into()))?,
        )
        .map_err(|e| bad(format!("dtl.values: {e}")))?;
        let tensors: BTreeMap<String, Tensor> = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| bad(format!("unreadable tensors: {e}")))?
            .into_iter()
            .collect();
        let state = State { tensors, values };
        let digest = state.digest()?;
        if meta.get("dtl.sha256") != Some(&digest) {
            return Err(bad(
                "the tensor data does not match its recorded SHA-256 (the file is damaged)".into(),
            ));
        }
        let tensors = state
            .tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        Ok(State {
            tensors,
            values: state.values,
        })
    }

    /// Writes the state to `path` atomically ([`crate::write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes()?;
        crate::write_atomic(path, &bytes).map_err(|e| Error::Msg(format!("writing {}: {e}", path.display())))
    }

    /// Reads the state file `path`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let bytes =
            std::fs::read(path).map_err(|e| Error::Msg(format!("reading {}: {e}", path.display())))?;
        Self::from_bytes(&bytes, device, &path.display().to_string())
    }
}

/// A SHA-256 (hex) of named tensors: each name, dtype, shape and little-endian data in the order
/// given (callers give them sorted by name). dtl records it in its state files and checkpoints
/// (`dtl.sha256`) and refuses a file whose tensors no longer match it.
pub fn tensors_sha256<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Result<String> {
    let mut h = Sha256::new();
    for (k, t) in tensors {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update(format!("{:?}{:?}", t.dtype(), t.dims()).as_bytes());
        let bytes = tensor_bytes(&t.to_device(&Device::Cpu)?)?;
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The little-endian bytes of a CPU tensor's elements.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let t = t.flatten_all()?;
    Ok(match t.dtype() {
        DType::F32 => t.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::F64 => t.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::U32 => t.to_vec1::<u32>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::I64 => t.to_vec1::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DType::U8 => t.to_vec1::<u8>()?,
        other => t
            .to_dtype(DType::F64)
            .map_err(|_| Error::Msg(format!("train state: tensors of {other:?} are not supported")))?
            .to_vec1::<f64>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn values_and_tensors_round_trip_exactly() {
        let mut s = State::new();
        let awkward = [
            0.1f64,
            1.0 / 3.0,
            f64::MIN_POSITIVE,
            1e308,
            -2.5e-300,
            0.30000000000000004,
        ];
        s.put("v", &awkward.to_vec()).unwrap();
        s.put_f64s("t", &awkward).unwrap();
        s.put_f32s("f", &[f32::MIN_POSITIVE, 1.0e-45, 3.4e38]).unwrap();
        s.put_indices("i", &[0, 7, 3]).unwrap();
        let back = State::from_bytes(&s.to_bytes().unwrap(), &Device::Cpu, "test").unwrap();
        let v: Vec<f64> = back.get("v").unwrap();
        assert_eq!(
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            awkward.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(back.f64s("t", 6).unwrap(), awkward);
        assert_eq!(back.f32s("f", 3).unwrap(), [f32::MIN_POSITIVE, 1.0e-45, 3.4e38]);
        assert_eq!(back.indices("i", 8).unwrap(), [0, 7, 3]);
        assert!(back.indices("i", 7).unwrap_err().to_string().contains("index 7"));
        assert!(back.f64s("t", 5).unwrap_err().to_string().contains("`t`"));
    }

    #[test]
    fn a_restored_stream_continues_where_it_stopped() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        rng.set_stream(5);
        for _ in 0..37 {
            rng.next_u32();
        }
        let mut s = State::new();
        s.put_rng("r", &rng).unwrap();
        let mut back = State::from_bytes(&s.to_bytes().unwrap(), &Device::Cpu, "test")
            .unwrap()
            .rng("r")
            .unwrap();
        let expected: Vec<u64> = (0..100).map(|_| rng.next_u64()).collect();
        let got: Vec<u64> = (0..100).map(|_| back.next_u64()).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let mut s = State::new();
        s.put_f32s("w", &[1.0, 2.0, 3.0]).unwrap();
        let mut bytes = s.to_bytes().unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let err = State::from_bytes(&bytes, &Device::Cpu, "ckpt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ckpt.safetensors") && err.contains("SHA-256"),
            "{err}"
        );
        let err = State::from_bytes(&bytes[..20], &Device::Cpu, "ckpt.safetensors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ckpt.safetensors"), "{err}");
    }

    #[test]
    fn a_varmap_is_restored_only_when_it_fits() {
        let vm = VarMap::new();
        crate::params::insert(
            &vm,
            "a.weight",
            Tensor::new(&[1.0f32, 2.0], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let mut s = State::new();
        s.put_varmap("m.", &vm).unwrap();
        let other = VarMap::new();
        crate::params::insert(
            &other,
            "a.weight",
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        s.load_varmap("m.", &other).unwrap();
        assert_eq!(
            crate::params::all(&other)[0]
                .1
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap(),
            [1.0, 2.0]
        );
        let wrong = VarMap::new();
        crate::params::insert(
            &wrong,
            "a.weight",
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let err = s.load_varmap("m.", &wrong).unwrap_err().to_string();
        assert!(err.contains("m.a.weight") && err.contains("[3]"), "{err}");
        let renamed = VarMap::new();
        crate::params::insert(
            &renamed,
            "b.weight",
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        )
        .unwrap();
        let err = s.load_varmap("m.", &renamed).unwrap_err().to_string();
        assert!(err.contains("b.weight"), "{err}");
    }
}
