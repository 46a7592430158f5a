//! Stage `test_plans`: one greedy plan per test task for a planner variant
//! (paper §4.1: plans are generated once at temperature 0 and reused for
//! every agent).
//!
//! - In: the planner of the variant: `sft` = `planner.model`; `prompted` =
//!   `planner.prompted` (a strong model given the planner prompt, Table 3's
//!   "GPT" row). (`rft` and `mpo` read trained checkpoints.)
//! - Out: `plans.jsonl` (task id → plan) and `plans.parquet` (planner =
//!   the variant, sample 0).
//! - Key: variant, planner model settings, prompt set, env identity, split,
//!   task count, max tokens. Items: one per task.


use std::path::PathBuf;

use async_trait::async_trait;
use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::common::{planner_input, record_prompt_revision, planner_setup, prompt_identity, prompt_set, sample_plan};
use super::common::{read_jsonl, write_jsonl};
use crate::env::TaskInfo;
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::plan::short_hash;
use crate::spec::{EnvSpec, PlannerVariant};
use crate::store::table::{self, PlanRow, PLANS};
use crate::store::ArtifactWriter;

pub const NAME: &str = "test_plans";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestPlansWork {
    pub variant: PlannerVariant,
    pub env_name: String,
    pub env: EnvSpec,
    pub split: String,
    pub tasks: Option<usize>,
    pub model: super::models::ModelRef,
    pub prompts: String,
    pub max_tokens: u32,
}

/// A test plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestPlan {
    pub task_id: String,
    pub plan: String,
}

pub fn variant_name(v: PlannerVariant) -> &'static str {
    match v {
        PlannerVariant::None => "none",
        PlannerVariant::Sft => "sft",
        PlannerVariant::Rft => "rft",
        PlannerVariant::Mpo => "mpo",
        PlannerVariant::Prompted => "prompted",
        PlannerVariant::Good => "good",
        PlannerVariant::Misleading => "misleading",
    }
}

impl TestPlansWork {
    pub fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "variant": self.variant,
            "env": self.env.identity(),
            "env_name": self.env_name,
            "split": self.split,
            "tasks": self.tasks,
            "model": self.model.config(),
            "prompts": self.prompts,
            "max_tokens": self.max_tokens,
        });
        record_prompt_revision(&mut c, &self.prompts, self.env.family());
        c
    }

    pub fn tasks(&self) -> Result<Vec<TaskInfo>> {
        Ok(self.env.tasks(&self.split, self.tasks)?)
    }

    fn item_key(&self, pid: &str, task_id: &str) -> String {
        short_hash(
            &serde_json::json!({
                "stage": NAME, "version": VERSION, "model": self.model.identity(), "prompts": pid,
                "task": task_id, "temperature": 0.0, "max_tokens": self.max_tokens,
            })
            .to_string(),
        )
    }

    pub fn item_keys(&self) -> Result<Vec<String>> {
        let env = &self.env;
        let pid = prompt_identity(&prompt_set(&self.prompts, env.family())?);
        Ok(self.tasks()?.iter().map(|t| self.item_key(&pid, &t.task_id)).collect())
    }
}

pub async fn run(w: &TestPlansWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let (env, model, prompts, pid) = planner_setup(ctx, &w.env, &w.model, &w.prompts).await?;
    let mut items = Vec::new();
    for task in w.tasks()? {
        let goal = planner_input(env.as_ref(), &task, &prompts).await?;
        items.push((w.item_key(&pid, &task.task_id), (task.task_id.clone(), goal)));
    }
    let max_tokens = w.max_tokens;
    let results = ctx
        .run_items(items, 256, move |(task_id, goal): (String, String)| {
            let (model, prompts) = (model.clone(), prompts.clone());
            async move {
                let (plan, _) = sample_plan(model.as_ref(), &prompts, &goal, 0.0, None, max_tokens).await?;
                Ok(serde_json::to_value(TestPlan { task_id, plan })?)
            }
        })
        .await?;
    let plans: Vec<TestPlan> = results.values.iter().map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;
    let n = write_plans(writer, NAME, &w.split, w.variant, &plans)?;
    Ok(StageOutput::new(results.reused, results.computed).table("plans", n).file("plans.jsonl", plans.len()))
}

/// Writes a split's plans, one per task, as `plans.jsonl` (what `eval`,
/// `follower` and `judge` read) and `plans.parquet` (stage `stage`, planner
/// the variant, sample 0); returns the rows written.
pub fn write_plans(writer: &ArtifactWriter, stage: &str, split: &str, variant: PlannerVariant, plans: &[TestPlan]) -> Result<usize> {
    write_jsonl(&writer.path("plans.jsonl"), plans)?;
    let rows: Vec<PlanRow> = plans
        .iter()
        .map(|p| PlanRow {
            stage: stage.into(),
            split: Some(split.to_string()),
            task_id: p.task_id.clone(),
            planner: variant_name(variant).into(),
            sample: 0,
            text: p.plan.clone(),
            q: None,
            n: None,
        })
        .collect();
    table::write_rows(&writer.path("plans.parquet"), PLANS, &rows)
}

/// Reads a `test_plans` artifact: task id → plan.
pub fn read_plans(dir: &std::path::Path) -> Result<std::collections::HashMap<String, String>> {
    let plans: Vec<TestPlan> = read_jsonl(&dir.join("plans.jsonl"))?;
    Ok(plans.into_iter().map(|p| (p.task_id, p.plan)).collect())
}

#[async_trait]
impl Stage for TestPlansWork {
    fn sharded(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        self.config()
    }
    fn bind(&mut self, input_keys: &[String]) {
        self.model.bind(input_keys);
    }
    fn leases(&self) -> Vec<String> {
        self.model.lease().into_iter().collect()
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Keys(self.item_keys()?))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}
