//! Sweeps: one spec file, many variants.
//!
//! `[sweep] mode = "grid"` takes every combination of `[sweep.vary]` values;
//! `"one-at-a-time"` (the default, how Figure 5 varies M and N) keeps the base
//! spec as variant `base` and varies one key at a time, the others at their
//! base value. A variant is named by its overrides (`mpo.m=3`), and that name
//! is the `variant` column of every result row. A value equal to the base
//! value does not make a new variant.

use std::path::Path;

use figment::value::Dict;

use super::load::{clip, extract, figment_for, insert_path, toml_to_figment, NamedDict};
use super::{LoadOptions, LoadedSpec, SpecError, SweepMode};

/// One variant of an experiment.
#[derive(Clone, Debug)]
pub struct Variant {
    /// `base`, or the overrides joined by `,` (`mpo.m=3,mpo.n=2`).
    pub name: String,
    pub overrides: Vec<(String, toml::Value)>,
    pub loaded: LoadedSpec,
}

/// Loads the spec at `path` and expands its sweep. A spec without `[sweep]`
/// has one variant, `base`.
pub fn expand(path: &Path, opts: &LoadOptions) -> Result<Vec<Variant>, SpecError> {
    let figment = figment_for(path, opts)?;
    let base = extract(path, figment.clone())?;
    let Some(sweep) = base.spec.sweep.clone() else {
        return Ok(vec![Variant { name: "base".into(), overrides: vec![], loaded: base }]);
    };
    let base_json = serde_json::to_value(&base.spec).expect("spec serialises");

    let file = path.display();
    if sweep.vary.is_empty() {
        return Err(SpecError::new(format!(
            "`sweep.vary` = {{}} in `{file}`: a sweep needs at least one key to vary"
        ))
        .with_hint("add a key and its values, e.g. `vary = { \"mpo.m\" = [1, 3, 5] }`, or remove `[sweep]`"));
    }
    let count: u128 = match sweep.mode {
        SweepMode::Grid => sweep.vary.values().map(|v| v.len() as u128).try_fold(1u128, |a, b| a.checked_mul(b)).unwrap_or(u128::MAX),
        SweepMode::OneAtATime => 1 + sweep.vary.values().map(|v| v.len() as u128).sum::<u128>(),
        SweepMode::Zip => sweep.vary.values().map(|v| v.len() as u128).max().unwrap_or(0),
    };
    if count > super::limits::MAX_VARIANTS as u128 {
        return Err(SpecError::new(format!(
            "`sweep.vary` in `{file}` makes {count} variants; at most {} are allowed",
            super::limits::MAX_VARIANTS
        ))
        .with_hint("split the sweep into several specs, or vary fewer values"));
    }

    let combos: Vec<Vec<(String, toml::Value)>> = match sweep.mode {
        SweepMode::OneAtATime => {
            let mut out = vec![vec![]];
            for (key, values) in &sweep.vary {
                for v in values {
                    if !equals_base(&base_json, key, v) {
                        out.push(vec![(key.clone(), v.clone())]);
                    }
                }
            }
            out
        }
        SweepMode::Zip => {
            let lens: Vec<usize> = sweep.vary.values().map(Vec::len).collect();
            if lens.windows(2).any(|w| w[0] != w[1]) {
                let shown: Vec<String> =
                    sweep.vary.iter().take(8).map(|(k, v)| format!("`{}` has {}", clip(k), v.len())).collect();
                return Err(SpecError::new(format!(
                    "`sweep.vary` in `{file}`: mode `zip` needs lists of one length; {}",
                    shown.join(", ")
                )));
            }
            (0..lens.first().copied().unwrap_or(0))
                .map(|i| sweep.vary.iter().map(|(k, v)| (k.clone(), v[i].clone())).collect())
                .collect()
        }
        SweepMode::Grid => {
            let mut out: Vec<Vec<(String, toml::Value)>> = vec![vec![]];
            for (key, values) in &sweep.vary {
                let mut next = Vec::new();
                for prefix in &out {
                    for v in values {
                        let mut c = prefix.clone();
                        c.push((key.clone(), v.clone()));
                        next.push(c);
                    }
                }
                out = next;
            }
            out
        }
    };

    let mut variants: Vec<Variant> = Vec::new();
    for combo in combos {
        // Overrides equal to the base value are dropped from the name, so a
        // grid point that is the base spec is called `base`.
        let effective: Vec<_> = combo
            .into_iter()
            .filter(|(k, v)| !equals_base(&base_json, k, v))
            .collect();
        let name = if effective.is_empty() {
            "base".to_string()
        } else {
            effective.iter().map(|(k, v)| format!("{k}={}", show(v))).collect::<Vec<_>>().join(",")
        };
        if variants.iter().any(|v| v.name == name) {
            continue;
        }
        let loaded = if effective.is_empty() {
            base.clone()
        } else {
            let mut dict = Dict::new();
            for (k, v) in &effective {
                insert_path(&mut dict, k, toml_to_figment(v));
            }
            let fig = figment
                .clone()
                .merge(NamedDict { name: format!("`sweep.vary` of `{file}` (variant `{}`)", clip(&name)), dict });
            extract(path, fig)?
        };
        variants.push(Variant { name, overrides: effective, loaded });
    }
    Ok(variants)
}

fn show(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn equals_base(base: &serde_json::Value, key: &str, v: &toml::Value) -> bool {
    let mut cur = base;
    for part in key.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    let Ok(v) = serde_json::to_value(v) else { return false };
    match (cur.as_f64(), v.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => *cur == v,
    }
}
