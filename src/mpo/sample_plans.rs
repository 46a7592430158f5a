//! Stage `sample_plans`: M meta plans per training task from the SFT
//! planner at the sampling temperature (paper §3.3: M = 5 at 0.7).
//!
//! - In: the planner model (`planner.model`), the env's train tasks.
//! - Out: `plans.jsonl` (planner `sft`, sample 0..M-1; scored into the
//!   `plans` table by `mc_rollouts`).
//! - Key: planner model settings, prompt set, env identity, task count, M,
//!   temperature, max tokens, experiment seed.
//! - Items: one per (task, sample index), keyed by model, prompt, sampling
//!   parameters, seed and index — not by M. A run with M = 5 reuses the
//!   first 3 plans of an earlier M = 3 run and samples only 2 more. (One
//!   request per sample with its own seed, rather than `n` in one request,
//!   so that each sample is memoised on its own.)


use std::path::{Path, PathBuf};

use async_trait::async_trait;
use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::common::{planner_input, record_prompt_revision, derive_seed, read_jsonl, write_jsonl, planner_setup, prompt_identity, prompt_set, sample_plan};
use crate::env::TaskInfo;
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::plan::short_hash;
use crate::spec::EnvSpec;
use crate::store::ArtifactWriter;

pub const NAME: &str = "sample_plans";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SamplePlansWork {
    pub env_name: String,
    pub env: EnvSpec,
    pub model: super::models::ModelRef,
    pub prompts: String,
    pub tasks: usize,
    pub m: u32,
    pub temperature: f64,
    pub max_tokens: u32,
    pub seed: u64,
}

/// The sampled plans' file in a `sample_plans` artifact.
const PLANS_FILE: &str = "plans.jsonl";

/// The sampled plans of a `sample_plans` artifact, in task and sample order.
pub fn read_plans(artifact: &Path) -> Result<Vec<SampledPlan>> {
    read_jsonl(&artifact.join(PLANS_FILE))
}

/// One sampled plan, as journaled and as written to `plans.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampledPlan {
    pub task: TaskInfo,
    /// The task text the planner was given.
    pub goal: String,
    pub sample: u32,
    pub seed: u64,
    pub text: String,
    pub reply: String,
}

impl SamplePlansWork {
    pub fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "env": self.env.identity(),
            "env_name": self.env_name,
            "model": self.model.config(),
            "prompts": self.prompts,
            "tasks": self.tasks,
            "m": self.m,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        });
        record_prompt_revision(&mut c, &self.prompts, self.env.family());
        c
    }

    pub fn tasks(&self) -> Result<Vec<TaskInfo>> {
        let env = &self.env;
        Ok(env.tasks("train", Some(self.tasks))?)
    }

    fn sample_seed(&self, task_id: &str, i: u32) -> u64 {
        derive_seed(self.seed, &[NAME, task_id, &i.to_string()])
    }

    fn item_key(&self, prompt_id: &str, task_id: &str, i: u32) -> String {
        short_hash(
            &serde_json::json!({
                "stage": NAME, "version": VERSION, "model": self.model.identity(), "prompts": prompt_id,
                "task": task_id, "temperature": self.temperature, "max_tokens": self.max_tokens,
                "seed": self.sample_seed(task_id, i), "sample": i,
            })
            .to_string(),
        )
    }

    pub fn item_keys(&self) -> Result<Vec<String>> {
        let env = &self.env;
        let prompts = prompt_set(&self.prompts, env.family())?;
        let pid = prompt_identity(&prompts);
        let mut keys = Vec::new();
        for t in self.tasks()? {
            for i in 0..self.m {
                keys.push(self.item_key(&pid, &t.task_id, i));
            }
        }
        Ok(keys)
    }
}

pub async fn run(w: &SamplePlansWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let (env, model, prompts, pid) = planner_setup(ctx, &w.env, &w.model, &w.prompts).await?;
    let mut items = Vec::new();
    for task in w.tasks()? {
        let text = planner_input(env.as_ref(), &task, &prompts).await?;
        for i in 0..w.m {
            items.push((w.item_key(&pid, &task.task_id, i), (task.clone(), text.clone(), i, w.sample_seed(&task.task_id, i))));
        }
    }
    let (temperature, max_tokens) = (w.temperature, w.max_tokens);
    let results = ctx
        .run_items(items, 256, move |(task, text, i, seed): (TaskInfo, String, u32, u64)| {
            let (model, prompts) = (model.clone(), prompts.clone());
            async move {
                let (plan, reply) = sample_plan(model.as_ref(), &prompts, &text.clone(), temperature, Some(seed), max_tokens).await?;
                Ok(serde_json::to_value(SampledPlan { task, goal: text, sample: i, seed, text: plan, reply })?)
            }
        })
        .await?;
    let plans: Vec<SampledPlan> = results.values.iter().map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;
    // The `plans` table gets these plans with their Q from `mc_rollouts`.
    write_jsonl(&writer.path(PLANS_FILE), &plans)?;
    Ok(StageOutput::new(results.reused, results.computed).file(PLANS_FILE, plans.len()))
}

#[async_trait]
impl Stage for SamplePlansWork {
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
