//! `mpo-run export SPEC --to DIR`: the datasets of a spec's finished
//! stages, for users who train elsewhere (LLaMA-Factory, TRL):
//!
//! - `mpo_seed_sft.json` (sharegpt: planner prompt → seed plan) and
//!   `trl_seed_sft.jsonl` (TRL's conversational `messages`, with
//!   `task_id`), from `seed_plans`;
//! - `mpo_dpo.json` (sharegpt, `ranking: true`), `trl_dpo.jsonl`
//!   (conversational `prompt`/`chosen`/`rejected` messages, with `task_id`
//!   and both plans' Q), `mpo_rft.json`, from `pairs`;
//! - `dataset_info.json` naming them all.
//!
//! One folder per variant (`DIR/<variant>/`). Runs nothing; stages not yet
//! run are skipped with a line saying so.

use std::path::Path;

use anyhow::{Context, Result};

use crate::plan::Plan;
use crate::store::Store;

/// Writes the datasets; returns one line per file or skipped stage.
pub fn export(plan: &Plan, store: &Store, to: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for variant in &plan.variants {
        let dir = to.join(folder_name(&variant.name));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut info = serde_json::Map::new();
        for &id in &variant.nodes {
            let node = &plan.nodes[id];
            let Some(what) = node.work.exports() else { continue };
            if !store.is_done(node.stage, &node.key) {
                out.push(format!("{}: `{}` has not run; no {what}", variant.name, node.label));
                continue;
            }
            let exported = node.work.export(&store.artifact_dir(node.stage, &node.key), &dir)?;
            info.extend(exported.info);
            out.push(format!("{}: {}", variant.name, exported.line));
        }
        std::fs::write(dir.join("dataset_info.json"), serde_json::to_vec_pretty(&serde_json::Value::Object(info))?)?;
    }
    Ok(out)
}

/// A variant's name as one folder name (#22: names are not paths): a sweep
/// over paths (`planner.seed_set=data/seed/x.jsonl`) must not make nested or
/// escaping folders. Characters outside `[A-Za-z0-9_.,=+-]` and a leading
/// `.` become `_`; the names of most variants (`base`, `mpo.m=3`) are kept.
pub fn folder_name(variant: &str) -> String {
    let mut out: String = variant
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "_.,=+-".contains(c) { c } else { '_' })
        .collect();
    if out.starts_with('.') {
        out.replace_range(..1, "_");
    }
    out
}

#[cfg(test)]
mod folder_tests {
    #[test]
    fn variant_folders_stay_inside_the_export_dir() {
        assert_eq!(super::folder_name("mpo.m=3,mpo.n=2"), "mpo.m=3,mpo.n=2");
        assert_eq!(super::folder_name("base"), "base");
        assert_eq!(super::folder_name("planner.seed_set=../../x"), "planner.seed_set=.._.._x");
        assert_eq!(super::folder_name(".."), "_.");
    }
}
