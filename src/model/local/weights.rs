//! Reading and writing the weights of a [`CausalLm`] as Hugging Face
//! safetensors: one file or shards listed in `model.safetensors.index.json`
//! (loaded shard by shard through `burn::store`, cast to f32), and a single
//! `model.safetensors` with PyTorch names/layout (`format = pt` metadata, so
//! transformers and vLLM accept it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, FloatCastAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::DType;

use super::net::CausalLm;

/// The safetensors files of a model directory, in load order.
pub fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| format!("reading {}: {e}", index.display()))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("parsing {}: {e}", index.display()))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| format!("{}: no `weight_map` object", index.display()))?;
        let files: BTreeSet<String> = map.values().filter_map(|f| f.as_str().map(String::from)).collect();
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading directory {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(format!("{}: no *.safetensors weights", dir.display()));
    }
    Ok(found)
}

/// Loads every shard into `lm`; fails if a parameter of the module is in no
/// shard or a tensor does not fit.
pub fn load_weights(lm: &mut CausalLm, files: &[PathBuf]) -> Result<(), String> {
    let mut applied: BTreeSet<String> = BTreeSet::new();
    let mut missing: BTreeSet<String> = BTreeSet::new();
    for file in files {
        let mut store = SafetensorsStore::from_file(file)
            .with_from_adapter(PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32)))
            .allow_partial(true);
        let res = lm.load_from(&mut store).map_err(|e| format!("loading {}: {e}", file.display()))?;
        if !res.errors.is_empty() {
            let errs: Vec<String> = res.errors.iter().map(|e| format!("{e:?}")).collect();
            return Err(format!("loading {}: {}", file.display(), errs.join("; ")));
        }
        applied.extend(res.applied.iter().cloned());
        missing.extend(res.missing.iter().map(|(p, _)| p.clone()));
    }
    let still: Vec<String> = missing.difference(&applied).cloned().collect();
    if !still.is_empty() {
        return Err(format!("weights missing from the checkpoint: {}", still.join(", ")));
    }
    Ok(())
}

/// Writes `lm` as `dir/model.safetensors` (PyTorch layout and names).
pub fn save_weights(lm: &CausalLm, dir: &Path) -> Result<(), String> {
    let file = dir.join("model.safetensors");
    let mut store = SafetensorsStore::from_file(&file)
        .with_to_adapter(BurnToPyTorchAdapter)
        .metadata("format", "pt")
        .overwrite(true);
    lm.save_into(&mut store).map_err(|e| format!("saving {}: {e}", file.display()))
}

/// The weights serialised in memory (for identities of unsaved models).
pub fn weights_bytes(lm: &CausalLm) -> Result<Vec<u8>, String> {
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter).metadata("format", "pt");
    lm.save_into(&mut store).map_err(|e| format!("serialising weights: {e}"))?;
    store.get_bytes().map_err(|e| format!("serialising weights: {e}"))
}

/// Host copy of a float tensor.
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap_or_default()
}
