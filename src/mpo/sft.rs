//! Stage `sft`: the meta planner's SFT on the seed plans (Eq. 4).
//!
//! - In: `seed_plans` (its seed set, failed entries left out) and the base
//!   planner (`init_model` or a declared directory).
//! - Out: `model/` (a Hugging Face directory) and `train_log.parquet`.
//! - Key: the base, the prompt set, the training config; the inputs' keys.
//!
//! The dataset is built here as text (the planner prompt of each task and
//! the reply trained on: the plan in the planner prompt's tags,
//! `PromptSet::plan_target`); the training engine (`[train.sft] engine`)
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

pub const NAME: &str = "sft";
pub const VERSION: u32 = super::training::VERSION;

/// Trains the base planner on the `seed_plans` artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SftWork(pub PlannerTraining);

#[async_trait]
impl Stage for SftWork {
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
        let rows: Vec<Completion> = super::seed_plans::read_seed_set(ctx.input(self.0.data)?)?
            .into_iter()
            .filter(|s| s.failure.is_none() && !s.plan.is_empty())
            .map(|s| Completion { prompt: prompts.planner_prompt(&s.planner_task(&prompts)), completion: prompts.plan_target(&s.plan), task_id: s.task_id })
            .collect();
        let (out, _) = self.0.run(ctx, writer, Dataset::Completions(rows), Method::Sft).await?;
        Ok(out)
    }
}
