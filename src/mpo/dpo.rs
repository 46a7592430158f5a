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

use super::common::prompt_set;
use super::models::ModelRef;
use crate::agent::prompt::Family;
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::store::ArtifactWriter;
use crate::train::dataset::{Dataset, Preference};
use crate::train::engine::Method;
use crate::train::TrainConfig;
use super::common::write_jsonl;

pub const NAME: &str = "dpo";
pub const VERSION: u32 = super::training::VERSION;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DpoWork {
    /// The model trained: the SFT planner.
    pub base: ModelRef,
    pub prompts: String,
    pub family: Family,
    pub train: TrainConfig,
    /// DPO's β.
    pub beta: f64,
    /// The `pairs` artifact.
    pub data: Slot,
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
        let mut v = serde_json::json!({ "base": self.base.config(), "prompts": self.prompts, "train": self.train });
        v["beta"] = serde_json::json!(self.beta);
        super::common::record_prompt_revision(&mut v, &self.prompts, self.family);
        v
    }
    fn bind(&mut self, input_keys: &[String]) {
        self.base.bind(input_keys);
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole(super::training::WHOLE))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let prompts = prompt_set(&self.prompts, self.family)?;
        let lines = super::pairs::read_train(ctx.input(self.data)?)?;
        if lines.is_empty() {
            return super::training::unchanged(ctx, writer, &self.base, "no preference pairs (every task's plans scored the same, or M = 1)");
        }
        let rows: Vec<Preference> = lines
            .iter()
            .map(|l| Preference {
                task_id: l.task_id.clone(),
                prompt: prompts.planner_prompt(&l.goal),
                chosen: prompts.plan_target(&l.chosen),
                rejected: prompts.plan_target(&l.rejected),
            })
            .collect();
        let method = Method::Dpo { beta: self.beta };
        let (out, outcome) = super::training::train(ctx, writer, &self.base, Dataset::Preferences(rows), method, &self.train).await?;
        let lines_out: Vec<serde_json::Value> = lines
            .iter()
            .zip(&outcome.reference)
            .map(|(l, r)| serde_json::json!({"task_id": l.task_id, "reference_chosen_logps": r.0, "reference_rejected_logps": r.1}))
            .collect();
        write_jsonl(&writer.path("reference_logps.jsonl"), &lines_out)?;
        Ok(out.file("reference_logps.jsonl", lines_out.len()))
    }
}
