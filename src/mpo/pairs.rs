//! Stage `pairs`: contrastive plan pairs (paper Eq. 7) and the RFT set.
//!
//! Per task: chosen = the plan with the highest Q, rejected = the lowest;
//! ties are broken by sample index (the first wins, for both the highest
//! and the lowest); a task whose plans all have the same Q (or that has
//! fewer than two scored plans) is skipped and counted. RFT data = the best
//! plan of every task that has a pair (ties skipped the same way).
//!
//! - In: an `mc_rollouts` artifact (`scored.jsonl`).
//! - Out: `pairs.parquet`, `pairs.jsonl`, `rft.jsonl`, `train.jsonl` (goal,
//!   chosen, rejected: what `rft`/`dpo` read), `summary.json`
//!   (tasks, pairs, skipped), and `datasets/` in the formats external
//!   trainers read: TRL (`prompt`/`chosen`/`rejected` JSONL) and
//!   LLaMA-Factory (sharegpt, `ranking: true` for DPO) with
//!   `dataset_info.json`: the release's format (`construct_metaplan_pairs.py`),
//!   plans in the planner prompt's tags (`<workflow>\n{plan}\n</workflow>`),
//!   ScienceWorld pairs with their Q as `reward`. `train.jsonl` and the
//!   tables hold bare plans.
//! - Key: the planner prompt set and the input's key.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::common::prompt_set;
use super::mc_rollouts::ScoredPlan;
use super::common::{read_jsonl, write_jsonl};
use crate::stage::{Exported, Items, NodeCtx, Slot, Stage, StageOutput};
use crate::store::table::{self, Col, ColType};
use crate::store::ArtifactWriter;

pub const NAME: &str = "pairs";
pub const VERSION: u32 = 2;

/// Columns of `pairs.parquet` (docs/ARCHITECTURE.md, "Results").
pub const PAIRS: &[Col] = &[
    Col { name: "task_id", ty: ColType::Str, nullable: false },
    Col { name: "chosen", ty: ColType::Str, nullable: false },
    Col { name: "rejected", ty: ColType::Str, nullable: false },
    Col { name: "chosen_q", ty: ColType::F64, nullable: false },
    Col { name: "rejected_q", ty: ColType::F64, nullable: false },
    Col { name: "chosen_sample", ty: ColType::I64, nullable: false },
    Col { name: "rejected_sample", ty: ColType::I64, nullable: false },
];

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairsWork {
    pub env_name: String,
    pub prompts: String,
    pub family: String,
    /// The `mc_rollouts` artifact whose scored plans are paired.
    pub scored: Slot,
}

/// The training lines' file in a `pairs` artifact.
const TRAIN: &str = "train.jsonl";

/// A line of `pairs`' `train.jsonl`: what RFT and DPO train on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PreferenceLine {
    pub task_id: String,
    pub goal: String,
    pub chosen: String,
    pub rejected: String,
}

/// The preference lines of a `pairs` artifact (one per task with a best
/// and a worst plan).
pub fn read_train(artifact: &Path) -> Result<Vec<PreferenceLine>> {
    read_jsonl(&artifact.join(TRAIN))
}

/// One preference pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairRow {
    pub task_id: String,
    pub chosen: String,
    pub rejected: String,
    pub chosen_q: f64,
    pub rejected_q: f64,
    pub chosen_sample: u64,
    pub rejected_sample: u64,
}

/// The result of Eq. 7 over a set of scored plans.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub pairs: Vec<PairRow>,
    /// Best plan per paired task (the RFT data), as (task id, sample, text).
    pub best: Vec<(String, u64, String)>,
    pub tasks: usize,
    pub skipped_all_equal: usize,
    pub skipped_too_few: usize,
}

/// (task id, sample index, Q, text) → pairs by Eq. 7 and the tie rule.
pub fn select(plans: &[(String, u64, Option<f64>, String)]) -> Selection {
    let mut by_task: BTreeMap<&str, Vec<(u64, f64, &str)>> = BTreeMap::new();
    let mut tasks = std::collections::BTreeSet::new();
    for (task, sample, q, text) in plans {
        tasks.insert(task.as_str());
        if let Some(q) = q {
            by_task.entry(task).or_default().push((*sample, *q, text));
        }
    }
    let mut sel = Selection { pairs: vec![], best: vec![], tasks: tasks.len(), skipped_all_equal: 0, skipped_too_few: 0 };
    sel.skipped_too_few = tasks.iter().filter(|t| by_task.get(**t).is_none_or(|v| v.len() < 2)).count();
    for (task, mut v) in by_task {
        if v.len() < 2 {
            continue;
        }
        v.sort_by_key(|(s, _, _)| *s);
        // First strictly greater / strictly smaller wins: ties go to the
        // lowest sample index.
        let mut hi = v[0];
        let mut lo = v[0];
        for &p in &v[1..] {
            if p.1 > hi.1 {
                hi = p;
            }
            if p.1 < lo.1 {
                lo = p;
            }
        }
        if hi.1 == lo.1 {
            sel.skipped_all_equal += 1;
            continue;
        }
        sel.best.push((task.to_string(), hi.0, hi.2.to_string()));
        sel.pairs.push(PairRow {
            task_id: task.to_string(),
            chosen: hi.2.to_string(),
            rejected: lo.2.to_string(),
            chosen_q: hi.1,
            rejected_q: lo.1,
            chosen_sample: hi.0,
            rejected_sample: lo.0,
        });
    }
    sel
}

pub async fn run(w: &PairsWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let scored: Vec<ScoredPlan> = super::mc_rollouts::read_scored(ctx.input(w.scored)?)?;
    let input: Vec<(String, u64, Option<f64>, String)> =
        scored.iter().map(|s| (s.plan.task.task_id.clone(), s.plan.sample as u64, s.q, s.plan.text.clone())).collect();
    let sel = select(&input);
    let n = table::write_rows(&writer.path("pairs.parquet"), PAIRS, &sel.pairs)?;
    write_jsonl(&writer.path("pairs.jsonl"), &sel.pairs)?;
    let rft: Vec<serde_json::Value> =
        sel.best.iter().map(|(t, s, text)| serde_json::json!({"task_id": t, "sample": s, "plan": text})).collect();
    write_jsonl(&writer.path("rft.jsonl"), &rft)?;
    let summary = serde_json::json!({
        "tasks": sel.tasks, "pairs": sel.pairs.len(),
        "skipped_all_equal": sel.skipped_all_equal, "skipped_too_few_scored": sel.skipped_too_few,
    });
    writer.write_json("summary.json", &summary)?;
    tracing::info!(
        "pairs: {} of {} tasks paired; skipped {} with all-equal Q, {} with fewer than two scored plans",
        sel.pairs.len(), sel.tasks, sel.skipped_all_equal, sel.skipped_too_few
    );

    // Task text of each task, for the exported prompts.
    let family = if w.family == "sciworld" { crate::agent::prompt::Family::Sciworld } else { crate::agent::prompt::Family::Alfworld };
    let prompts = prompt_set(&w.prompts, family)?;
    let goal: BTreeMap<&str, &str> = scored.iter().map(|s| (s.plan.task.task_id.as_str(), s.plan.goal.as_str())).collect();
    let prompt_of = |task: &str| prompts.planner_prompt(goal.get(task).copied().unwrap_or(""));
    // What the in-process `rft` and `dpo` stages read.
    let train: Vec<PreferenceLine> = sel
        .pairs
        .iter()
        .map(|p| PreferenceLine {
            task_id: p.task_id.clone(),
            goal: goal.get(p.task_id.as_str()).copied().unwrap_or("").to_string(),
            chosen: p.chosen.clone(),
            rejected: p.rejected.clone(),
        })
        .collect();
    write_jsonl(&writer.path(TRAIN), &train)?;
    let target = |plan: &str| prompts.plan_target(plan);
    export_datasets(writer, &sel, &prompt_of, &target, family == crate::agent::prompt::Family::Sciworld)?;
    Ok(StageOutput::new(0, 0).table("pairs", n).file("rft.jsonl", rft.len()))
}

/// The exported datasets' folder in a `pairs` artifact.
const DATASETS: &str = "datasets";
/// Its files: LLaMA-Factory's DPO and RFT sets, TRL's DPO set.
const DATASET_FILES: [&str; 3] = ["mpo_dpo.json", "mpo_rft.json", "trl_dpo.jsonl"];

/// The datasets as the release feeds LLaMA-Factory
/// (`construct_metaplan_pairs.py`): the planner prompt as the human turn,
/// each plan as the planner is trained to write it (`target`:
/// `<workflow>\n{plan}\n</workflow>` for the released prompts) and, for
/// ScienceWorld (`with_reward`), each plan's Q as `reward`; TRL's
/// `prompt`/`chosen`/`rejected` with the same texts.
fn export_datasets(
    writer: &ArtifactWriter,
    sel: &Selection,
    prompt_of: &dyn Fn(&str) -> String,
    target: &dyn Fn(&str) -> String,
    with_reward: bool,
) -> Result<()> {
    use crate::train::dataset::{self, Completion, Preference};
    let dir = writer.path(DATASETS);
    std::fs::create_dir_all(&dir)?;
    let pairs: Vec<Preference> = sel
        .pairs
        .iter()
        .map(|p| Preference {
            task_id: p.task_id.clone(),
            prompt: prompt_of(&p.task_id),
            chosen: target(&p.chosen),
            rejected: target(&p.rejected),
            chosen_q: Some(p.chosen_q),
            rejected_q: Some(p.rejected_q),
        })
        .collect();
    let best: Vec<Completion> =
        sel.best.iter().map(|(t, _, text)| Completion { task_id: t.clone(), prompt: prompt_of(t), completion: target(text) }).collect();
    dataset::write_json_lines(&dir.join("trl_dpo.jsonl"), &dataset::trl_dpo(&pairs))?;
    let mut lf_dpo = dataset::llamafactory_dpo(&pairs);
    if with_reward {
        for (row, p) in lf_dpo.iter_mut().zip(&sel.pairs) {
            row["reward"] = serde_json::json!({"chosen": p.chosen_q, "rejected": p.rejected_q});
        }
    }
    dataset::write_json_array(&dir.join("mpo_dpo.json"), &lf_dpo)?;
    dataset::write_json_array(&dir.join("mpo_rft.json"), &dataset::llamafactory_sft(&best))?;
    let info = serde_json::json!({
        "mpo_dpo": dataset::llamafactory_dpo_info("mpo_dpo.json"),
        "mpo_rft": dataset::llamafactory_sft_info("mpo_rft.json"),
    });
    std::fs::write(dir.join("dataset_info.json"), serde_json::to_vec_pretty(&info)?)?;
    Ok(())
}

#[async_trait]
impl Stage for PairsWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "prompts": self.prompts })
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole("one job (reads its input)"))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
    fn exports(&self) -> Option<&'static str> {
        Some("DPO/RFT sets")
    }
    fn export(&self, artifact: &Path, to: &Path) -> Result<Exported> {
        let src = artifact.join(DATASETS);
        for f in DATASET_FILES {
            std::fs::copy(src.join(f), to.join(f)).map_err(|e| anyhow::anyhow!("copying {f}: {e}"))?;
        }
        upgrade_trl_dpo(artifact, &to.join("trl_dpo.jsonl"))?;
        let theirs: serde_json::Value = serde_json::from_slice(&std::fs::read(src.join("dataset_info.json"))?)?;
        Ok(Exported { info: theirs.as_object().cloned().unwrap_or_default(), line: format!("DPO pairs and RFT set → {}", to.display()) })
    }
}

/// Artifacts from before #23 hold `trl_dpo.jsonl` in TRL's standard
/// (plain-string) format, which TRL trains on without the chat template:
/// an export rewrites such rows in the conversational format, with the
/// task ids of the artifact's `train.jsonl` (same order). Their Q values
/// are in the artifact's `pairs` table only, so such rows carry none.
fn upgrade_trl_dpo(artifact: &Path, file: &Path) -> Result<()> {
    let text = std::fs::read_to_string(file)?;
    let mut rows: Vec<serde_json::Value> = text.lines().filter(|l| !l.trim().is_empty()).map(serde_json::from_str).collect::<Result<_, _>>()?;
    if !rows.iter().any(|r| r["prompt"].is_string()) {
        return Ok(());
    }
    let lines = read_train(artifact)?;
    if lines.len() != rows.len() {
        anyhow::bail!("{}: {} rows but {} training lines in the artifact; cannot tell the rows' tasks", file.display(), rows.len(), lines.len());
    }
    for (row, line) in rows.iter_mut().zip(&lines) {
        let text = |k: &str| row[k].as_str().map(str::to_string);
        if let (Some(prompt), Some(chosen), Some(rejected)) = (text("prompt"), text("chosen"), text("rejected")) {
            *row = crate::train::dataset::trl_dpo(&[crate::train::dataset::Preference {
                task_id: line.task_id.clone(),
                prompt,
                chosen,
                rejected,
                chosen_q: None,
                rejected_q: None,
            }])
            .remove(0);
        }
    }
    crate::train::dataset::write_json_lines(file, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_trl_dpo_rows_are_exported_conversationally() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TRAIN), "{\"task_id\":\"t1\",\"goal\":\"g\",\"chosen\":\"a\",\"rejected\":\"b\"}\n").unwrap();
        let file = dir.path().join("trl_dpo.jsonl");
        std::fs::write(&file, "{\"prompt\":\"P\",\"chosen\":\"A\",\"rejected\":\"B\"}\n").unwrap();
        upgrade_trl_dpo(dir.path(), &file).unwrap();
        let row: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        assert_eq!(row["task_id"], "t1");
        assert_eq!(row["prompt"], serde_json::json!([{"role": "user", "content": "P"}]));
        assert_eq!(row["chosen"], serde_json::json!([{"role": "assistant", "content": "A"}]));
        assert_eq!(row["rejected"], serde_json::json!([{"role": "assistant", "content": "B"}]));
        // A current file is left as it is.
        let before = std::fs::read_to_string(&file).unwrap();
        upgrade_trl_dpo(dir.path(), &file).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), before);
    }

    fn p(task: &str, sample: u64, q: Option<f64>) -> (String, u64, Option<f64>, String) {
        (task.to_string(), sample, q, format!("{task}-plan{sample}"))
    }

    #[test]
    fn eq7_with_ties_all_equal_and_single_plans() {
        let sel = select(&[
            // Distinct: best sample 1, worst sample 2.
            p("a", 0, Some(0.4)), p("a", 1, Some(0.8)), p("a", 2, Some(0.0)),
            // Ties at the top and bottom: first index wins both.
            p("b", 0, Some(0.2)), p("b", 1, Some(1.0)), p("b", 2, Some(1.0)), p("b", 3, Some(0.2)),
            // All equal: skipped.
            p("c", 0, Some(0.6)), p("c", 1, Some(0.6)),
            // One plan: skipped (too few).
            p("d", 0, Some(1.0)),
            // Unscored plans do not count.
            p("e", 0, Some(1.0)), p("e", 1, None),
        ]);
        assert_eq!(sel.tasks, 5);
        assert_eq!(sel.skipped_all_equal, 1);
        assert_eq!(sel.skipped_too_few, 2);
        let got: Vec<_> = sel.pairs.iter().map(|r| (r.task_id.as_str(), r.chosen_sample, r.rejected_sample, r.chosen_q, r.rejected_q)).collect();
        assert_eq!(got, vec![("a", 1, 2, 0.8, 0.0), ("b", 1, 0, 1.0, 0.2)]);
        assert_eq!(sel.best, vec![("a".into(), 1, "a-plan1".into()), ("b".into(), 1, "b-plan1".into())]);
    }

    #[test]
    fn sample_order_not_input_order_breaks_ties() {
        let sel = select(&[p("x", 2, Some(1.0)), p("x", 0, Some(1.0)), p("x", 1, Some(0.0))]);
        assert_eq!(sel.pairs[0].chosen_sample, 0);
    }
}
