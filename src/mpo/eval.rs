//! Stage `eval`: one cell of the evaluation cross product — an agent on an
//! env split, with a planner variant's plans at an insertion position (or
//! without plans), one episode per task (Tables 2–6).
//!
//! - In: the `test_plans` artifact of the planner variant (none for `none`:
//!   plans are looked up by task id, never by matching task text).
//! - Out: `episodes.parquet` (stage `eval`).
//! - Key: agent settings, env identity, split, task count, planner variant,
//!   insertion, prompt set, temperature, seed, and the plans' key.
//! - Items: one per task, keyed by agent, env, task, plan text, insertion,
//!   prompts, temperature and seed, so an episode is reused by any cell (or
//!   experiment) that would run exactly the same episode.

use std::path::PathBuf;

use async_trait::async_trait;
use std::sync::Arc;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::common::{record_prompt_revision, derive_seed, episode_item, episode_row, prompt_identity, prompt_set, RowContext};
use super::test_plans::{read_plans, variant_name};
use crate::agent::episode::{rules_revision, stage_rules_revision};
use crate::env::TaskInfo;
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::plan::short_hash;
use crate::spec::{EnvSpec, Insertion, PlannerVariant};
use crate::store::table::{self, EpisodeRow, EPISODES};
use crate::store::ArtifactWriter;

pub const NAME: &str = "eval";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalWork {
    pub agent: super::models::ModelRef,
    pub env_name: String,
    pub env: EnvSpec,
    pub split: String,
    pub tasks: Option<usize>,
    pub planner: PlannerVariant,
    pub insertion: Insertion,
    pub prompts: String,
    pub temperature: f64,
    pub seed: u64,
    pub concurrency: usize,
    pub env_retries: u32,
    pub quirks: crate::agent::episode::Quirks,
    /// The `test_plans` artifact (none for the `none` variant).
    pub plans: Option<Slot>,
}

impl EvalWork {
    pub fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "agent": self.agent.config(),
            "env": self.env.identity(),
            "env_name": self.env_name,
            "agent_name": self.agent.name,
            "split": self.split,
            "tasks": self.tasks,
            "planner": self.planner,
            "insertion": self.insertion,
            "prompts": self.prompts,
            "temperature": self.temperature,
            "seed": self.seed,
            "quirks": self.quirks,
        });
        record_prompt_revision(&mut c, &self.prompts, self.env.family());
        if let Some(r) = stage_rules_revision(self.planner != PlannerVariant::None, self.insertion, self.quirks) {
            c["rules"] = r.into();
        }
        c
    }

    pub fn tasks(&self) -> Result<Vec<TaskInfo>> {
        Ok(self.env.tasks(&self.split, self.tasks)?)
    }

    /// Episodes at temperature 0 are deterministic: no seed.
    fn episode_seed(&self, task_id: &str) -> Option<u64> {
        (self.temperature > 0.0).then(|| derive_seed(self.seed, &[NAME, task_id]))
    }

    fn item_key(&self, env_id: &serde_json::Value, pid: &str, task_id: &str, plan: Option<&str>) -> String {
        let mut key = serde_json::json!({
            "stage": "episode", "agent": self.agent.identity(), "env": env_id, "task": task_id,
            "plan": plan, "insertion": plan.map(|_| self.insertion), "prompts": pid,
            "temperature": self.temperature, "seed": self.episode_seed(task_id), "rollout": 0,
            "quirks": (self.quirks != Default::default()).then_some(self.quirks),
        });
        if let Some(r) = rules_revision(plan, self.insertion, self.quirks) {
            key["rules"] = r.into();
        }
        short_hash(&key.to_string())
    }

    /// Item keys; `plans` is `None` for the `none` variant.
    pub fn item_keys(&self, plans: Option<&std::collections::HashMap<String, String>>) -> Result<Vec<String>> {
        let env = &self.env;
        let pid = prompt_identity(&prompt_set(&self.prompts, env.family())?);
        let env_id = env.identity();
        self.tasks()?
            .iter()
            .map(|t| {
                let plan = match plans {
                    None => None,
                    Some(p) => Some(p.get(&t.task_id).ok_or_else(|| anyhow!("no test plan for task `{}`", t.task_id))?.as_str()),
                };
                Ok(self.item_key(&env_id, &pid, &t.task_id, plan))
            })
            .collect()
    }
}

pub async fn run(w: &EvalWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let plans = match w.plans {
        None => None,
        Some(slot) => Some(read_plans(ctx.input(slot)?)?),
    };
    let env = ctx.envs.get(&w.env).await?;
    let model = w.agent.resolve(ctx).await?;
    let prompts = Arc::new(prompt_set(&w.prompts, env.family())?);
    let pid = prompt_identity(&prompts);
    let env_id = env.identity();
    let tasks = w.tasks()?;
    let mut items = Vec::new();
    for t in &tasks {
        let plan = match &plans {
            None => None,
            Some(p) => Some(p.get(&t.task_id).cloned().ok_or_else(|| anyhow!("no test plan for task `{}`", t.task_id))?),
        };
        items.push((w.item_key(&env_id, &pid, &t.task_id, plan.as_deref()), (t.clone(), plan, w.episode_seed(&t.task_id))));
    }
    let (insertion, temperature, retries, quirks) = (w.insertion, w.temperature, w.env_retries, w.quirks);
    let results = {
        let (env, prompts) = (env.clone(), prompts.clone());
        ctx.run_items(items, w.concurrency, move |(task, plan, seed): (TaskInfo, Option<String>, Option<u64>)| {
            episode_item(model.clone(), env.clone(), task, prompts.clone(), plan, insertion, temperature, seed, retries, quirks)
        })
        .await?
    };
    let row_ctx = RowContext {
        stage: NAME,
        env: &w.env_name,
        agent: &w.agent.name,
        planner: variant_name(w.planner),
        insertion: w.insertion,
        temperature: w.temperature,
    };
    let mut rows: Vec<EpisodeRow> = Vec::new();
    for (t, v) in tasks.iter().zip(&results.values) {
        let plan = plans.as_ref().and_then(|p| p.get(&t.task_id)).map(|text| (t.task_id.as_str(), text.as_str()));
        rows.push(episode_row(&row_ctx, t, v, plan, 0, w.episode_seed(&t.task_id))?);
    }
    let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    let failures = rows.iter().filter(|r| r.finish_reason == "env_failure").count();
    if failures > 0 {
        tracing::warn!("`{}`: {failures} episodes recorded as environment failures", ctx.label);
    }
    Ok(StageOutput::new(results.reused, results.computed).table("episodes", n).failed(results.transient))
}

#[async_trait]
impl Stage for EvalWork {
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
        self.agent.bind(input_keys);
    }
    fn leases(&self) -> Vec<String> {
        self.agent.lease().into_iter().collect()
    }
    fn journal(&self) -> &'static str {
        super::common::EPISODE_JOURNAL
    }
    fn items(&self, inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(match self.plans {
            None => Items::Keys(self.item_keys(None)?),
            Some(slot) => match slot.dir_in(inputs) {
                Some(dir) => Items::Keys(self.item_keys(Some(&read_plans(dir)?))?),
                None => Items::KnownLater,
            },
        })
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}
