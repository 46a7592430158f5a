//! `mpo-run export SPEC --to DIR`: the datasets of a spec's finished
//! stages, for users who train elsewhere (LLaMA-Factory, TRL):
//!
//! - `mpo_seed_sft.json` (sharegpt: planner prompt → seed plan) and
//!   `trl_seed_sft.jsonl` (`prompt`/`completion`), from `seed_plans`;
//! - `mpo_dpo.json` (sharegpt, `ranking: true`), `trl_dpo.jsonl`
//!   (`prompt`/`chosen`/`rejected`), `mpo_rft.json`, from `pairs`;
//! - `dataset_info.json` naming them all.
//!
//! One folder per variant (`DIR/<variant>/`). Runs nothing; stages not yet
//! run are skipped with a line saying so.

use std::path::Path;

use anyhow::{Context, Result};

use super::common::{prompt_set, read_jsonl, write_jsonl};
use super::seed_plans::SeedPlan;
use super::Work;
use crate::plan::Plan;
use crate::store::Store;

/// Writes the datasets; returns one line per file or skipped stage.
pub fn export(plan: &Plan, store: &Store, to: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for variant in &plan.variants {
        let dir = to.join(&variant.name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut info = serde_json::Map::new();
        for &id in &variant.nodes {
            let node = &plan.nodes[id];
            let art = store.artifact_dir(node.stage, &node.key);
            let done = store.is_done(node.stage, &node.key);
            match (&node.work, node.stage) {
                (Work::SeedPlans(_) | Work::SeedFile(_), _) => {
                    if !done {
                        out.push(format!("{}: `{}` has not run; no seed SFT set", variant.name, node.label));
                        continue;
                    }
                    let prompts = match &node.work {
                        Work::SeedPlans(w) => w.prompts.clone(),
                        _ => plan_prompts(plan, variant),
                    };
                    let family = planner_family(plan, variant);
                    let set = prompt_set(&prompts, family)?;
                    let seeds: Vec<SeedPlan> = read_jsonl(&art.join("seed_set.jsonl"))?;
                    let seeds: Vec<&SeedPlan> = seeds.iter().filter(|s| s.failure.is_none() && !s.plan.is_empty()).collect();
                    let lf: Vec<serde_json::Value> = seeds
                        .iter()
                        .map(|s| serde_json::json!({"conversations": [
                            {"from": "human", "value": set.planner_prompt(&s.task)}, {"from": "gpt", "value": s.plan}]}))
                        .collect();
                    std::fs::write(dir.join("mpo_seed_sft.json"), serde_json::to_vec_pretty(&lf)?)?;
                    let trl: Vec<serde_json::Value> = seeds
                        .iter()
                        .map(|s| serde_json::json!({"prompt": set.planner_prompt(&s.task), "completion": s.plan}))
                        .collect();
                    write_jsonl(&dir.join("trl_seed_sft.jsonl"), &trl)?;
                    info.insert(
                        "mpo_seed_sft".into(),
                        serde_json::json!({"file_name": "mpo_seed_sft.json", "formatting": "sharegpt", "columns": {"messages": "conversations"}}),
                    );
                    out.push(format!("{}: {} seed plans → {}", variant.name, seeds.len(), dir.join("mpo_seed_sft.json").display()));
                }
                (Work::Pairs(_), _) => {
                    if !done {
                        out.push(format!("{}: `{}` has not run; no DPO/RFT sets", variant.name, node.label));
                        continue;
                    }
                    let src = art.join("datasets");
                    for f in ["mpo_dpo.json", "mpo_rft.json", "trl_dpo.jsonl"] {
                        std::fs::copy(src.join(f), dir.join(f)).with_context(|| format!("copying {f}"))?;
                    }
                    let theirs: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("dataset_info.json"))?)?;
                    if let Some(m) = theirs.as_object() {
                        info.extend(m.clone());
                    }
                    out.push(format!("{}: DPO pairs and RFT set → {}", variant.name, dir.display()));
                }
                _ => {}
            }
        }
        std::fs::write(dir.join("dataset_info.json"), serde_json::to_vec_pretty(&serde_json::Value::Object(info))?)?;
    }
    Ok(out)
}

fn plan_prompts(plan: &Plan, variant: &crate::plan::VariantPlan) -> String {
    variant
        .nodes
        .iter()
        .find_map(|&i| match &plan.nodes[i].work {
            Work::PlannerTrain(w) => Some(w.prompts.clone()),
            Work::SamplePlans(w) => Some(w.prompts.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "released".into())
}

fn planner_family(plan: &Plan, variant: &crate::plan::VariantPlan) -> crate::agent::prompt::Family {
    variant
        .nodes
        .iter()
        .find_map(|&i| match &plan.nodes[i].work {
            Work::PlannerTrain(w) => Some(w.family),
            _ => None,
        })
        .unwrap_or(crate::agent::prompt::Family::Alfworld)
}
