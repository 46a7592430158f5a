//! Stage `dpo`: DPO of the SFT planner on the plan pairs (Eq. 8, TRL's semantics).
//!
//! - In: `pairs` and the SFT planner (policy and reference).
//! - Out: `model/`, `reference_logps.jsonl` (the reference's log-probs of
//!   each pair, computed once before training) and `train_log.parquet`;
//!   with no pairs, the SFT planner unchanged and `note.json` saying why.
//! - Key: the base, the prompt set, the training config, `mpo.beta`; the
//!   inputs' keys.
//!
//! The dataset is built here as text (the planner prompt of each task and
//! the reply trained on: the plan in the planner prompt's tags,
//! `PromptSet::plan_target`); the training engine (`[train.dpo] engine`)
//! tokenises and trains it.

use std::path::PathBuf;

use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::training::PlannerTraining;
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::store::ArtifactWriter;
use crate::train::dataset::{Dataset, Preference};
use crate::train::engine::Method;
use super::common::write_jsonl;

pub const NAME: &str = "dpo";
pub const VERSION: u32 = super::training::VERSION;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpoWork {
    /// The SFT planner trained on the `pairs` artifact.
    pub planner: PlannerTraining,
    /// DPO's β.
    pub beta: f64,
}

#[async_trait]
impl Stage for DpoWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        let mut v = self.planner.config();
        v["beta"] = serde_json::json!(self.beta);
        v
    }
    fn bind(&mut self, input_keys: &[String]) {
        self.planner.bind(input_keys);
    }
    fn commands(&self, work: &std::path::Path) -> Vec<String> {
        super::training::commands(&self.planner.train, work)
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole(super::training::WHOLE))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let prompts = self.planner.prompt_set()?;
        let lines = super::pairs::read_train(ctx.input(self.planner.data)?)?;
        if lines.is_empty() {
            return super::training::unchanged(ctx, writer, &self.planner.base, "no preference pairs (every task's plans scored the same, or M = 1)");
        }
        let rows: Vec<Preference> = lines
            .iter()
            .map(|l| Preference {
                task_id: l.task_id.clone(),
                prompt: prompts.planner_prompt(&l.goal),
                chosen: prompts.plan_target(&l.chosen),
                rejected: prompts.plan_target(&l.rejected),
                chosen_q: None,
                rejected_q: None,
            })
            .collect();
        let method = Method::Dpo { beta: self.beta };
        let (out, outcome) = self.planner.run(ctx, writer, Dataset::Preferences(rows), method).await?;
        let lines_out: Vec<serde_json::Value> = lines
            .iter()
            .zip(&outcome.reference)
            .map(|(l, r)| serde_json::json!({"task_id": l.task_id, "reference_chosen_logps": r.0, "reference_rejected_logps": r.1}))
            .collect();
        write_jsonl(&writer.path("reference_logps.jsonl"), &lines_out)?;
        Ok(out.file("reference_logps.jsonl", lines_out.len()))
    }
}
