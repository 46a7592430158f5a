//! Stage `rft`: SFT of the SFT planner on the best plan per task (Table 3's RFT).
//!
//! - In: `pairs` (each task's best plan) and the SFT planner.
//! - Out: `model/` and `train_log.parquet`; with no pairs, the SFT planner
//!   unchanged and `note.json` saying why.
//! - Key: the base, the prompt set, the training config; the inputs' keys.
//!
//! The dataset is built here as text (the planner prompt of each task and
//! the reply trained on: the plan in the planner prompt's tags,
//! `PromptSet::plan_target`); the training engine (`[train.rft] engine`)
//! tokenises and trains it.

use std::path::PathBuf;

use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::training::PlannerTraining;
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::store::ArtifactWriter;
use crate::train::dataset::{Completion, Dataset};
use crate::train::engine::Method;

pub const NAME: &str = "rft";
pub const VERSION: u32 = super::training::VERSION;

/// Trains the SFT planner on the `pairs` artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RftWork(pub PlannerTraining);

#[async_trait]
impl Stage for RftWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        self.0.config()
    }
    fn bind(&mut self, input_keys: &[String]) {
        self.0.bind(input_keys);
    }
    fn commands(&self, work: &std::path::Path) -> Vec<String> {
        super::training::commands(&self.0.train, work)
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole(super::training::WHOLE))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let prompts = self.0.prompt_set()?;
        let lines = super::pairs::read_train(ctx.input(self.0.data)?)?;
        if lines.is_empty() {
            return super::training::unchanged(ctx, writer, &self.0.base, "no task has a best plan (every task's plans scored the same)");
        }
        let rows: Vec<Completion> = lines
            .into_iter()
            .map(|l| Completion { prompt: prompts.planner_prompt(&l.goal), completion: prompts.plan_target(&l.chosen), task_id: l.task_id })
            .collect();
        let (out, _) = self.0.run(ctx, writer, Dataset::Completions(rows), Method::Sft).await?;
        Ok(out)
    }
}
