//! Stage `mc_rollouts`: the Monte Carlo quality of each sampled plan
//! (paper §3.2, Eq. 5–6): N episodes of the explorer agent with that plan
//! inserted; Q(p) = mean final reward.
//!
//! - In: a `sample_plans` artifact; the explorer model (`mpo.explorer`).
//! - Out: `episodes.parquet` (stage `mc_rollouts`, one row per episode) and
//!   `plans.parquet` / `scored.jsonl` (each plan with Q and the N used).
//! - Key: explorer settings, env identity, N, explorer temperature,
//!   insertion, prompt set, seed, and the plans' key.
//! - Items: one per (plan, rollout index), keyed by explorer, env, task,
//!   plan text, insertion, prompts, temperature, seed and index — not by N
//!   or M: N = 5 reuses the episodes of an earlier N = 3.
//!
//! The explorer sees exactly the sampled plan it scores (the release's
//! Monte Carlo runs inserted none).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use std::sync::Arc;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::common::{record_prompt_revision, derive_seed, episode_item, episode_row, prompt_identity, prompt_set, EpisodeItem, RowContext};
use super::common::{read_jsonl, write_jsonl};
use super::sample_plans::SampledPlan;
use crate::agent::episode::{rules_revision, stage_rules_revision, Quirks};
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::plan::short_hash;
use crate::spec::{EnvSpec, Insertion};
use crate::store::table::{self, EpisodeRow, PlanRow, EPISODES, PLANS};
use crate::store::ArtifactWriter;

pub const NAME: &str = "mc_rollouts";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct McRolloutsWork {
    pub env_name: String,
    pub env: EnvSpec,
    pub explorer: super::models::ModelRef,
    pub prompts: String,
    pub n: u32,
    pub temperature: f64,
    pub insertion: Insertion,
    pub seed: u64,
    pub env_retries: u32,
    /// The `sample_plans` artifact whose plans are scored.
    pub plans: Slot,
}

/// The scored plans' file in an `mc_rollouts` artifact.
const SCORED: &str = "scored.jsonl";

/// The scored plans of an `mc_rollouts` artifact.
pub fn read_scored(artifact: &Path) -> Result<Vec<ScoredPlan>> {
    read_jsonl(&artifact.join(SCORED))
}

/// A plan with its Monte Carlo score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredPlan {
    pub plan: SampledPlan,
    /// Mean reward over the episodes that ran (`None` if none did).
    pub q: Option<f64>,
    pub n: u32,
}

impl McRolloutsWork {
    pub fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "env": self.env.identity(),
            "explorer": self.explorer.config(),
            "prompts": self.prompts,
            "n": self.n,
            "temperature": self.temperature,
            "insertion": self.insertion,
            "seed": self.seed,
        });
        record_prompt_revision(&mut c, &self.prompts, self.env.family());
        if let Some(r) = stage_rules_revision(true, self.insertion, Quirks::default()) {
            c["rules"] = r.into();
        }
        c
    }

    fn rollout_seed(&self, p: &SampledPlan, j: u32) -> u64 {
        derive_seed(self.seed, &[NAME, &p.task.task_id, &p.sample.to_string(), &j.to_string()])
    }

    fn item_key(&self, env_id: &serde_json::Value, pid: &str, p: &SampledPlan, j: u32) -> String {
        let mut key = serde_json::json!({
            "stage": "episode", "agent": self.explorer.identity(), "env": env_id, "task": p.task.task_id,
            "plan": p.text, "insertion": self.insertion, "prompts": pid,
            "temperature": self.temperature, "seed": self.rollout_seed(p, j), "rollout": j,
        });
        if let Some(r) = rules_revision(Some(&p.text), self.insertion, Quirks::default()) {
            key["rules"] = r.into();
        }
        short_hash(&key.to_string())
    }

    /// Item keys, once the plans exist.
    pub fn item_keys(&self, plans: &[SampledPlan]) -> Result<Vec<String>> {
        let env = &self.env;
        let pid = prompt_identity(&prompt_set(&self.prompts, env.family())?);
        let env_id = env.identity();
        Ok(plans.iter().flat_map(|p| (0..self.n).map(|j| self.item_key(&env_id, &pid, p, j)).collect::<Vec<_>>()).collect())
    }
}

pub async fn run(w: &McRolloutsWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let plans: Vec<SampledPlan> = super::sample_plans::read_plans(ctx.input(w.plans)?)?;
    let env = ctx.envs.get(&w.env).await?;
    let model = w.explorer.resolve(ctx).await?;
    let prompts = Arc::new(prompt_set(&w.prompts, env.family())?);
    let pid = prompt_identity(&prompts);
    let env_id = env.identity();
    let mut items = Vec::new();
    for p in &plans {
        for j in 0..w.n {
            items.push((w.item_key(&env_id, &pid, p, j), (p.clone(), j, w.rollout_seed(p, j))));
        }
    }
    let (insertion, temperature, retries) = (w.insertion, w.temperature, w.env_retries);
    let results = {
        let (env, prompts) = (env.clone(), prompts.clone());
        ctx.run_items(items, 256, move |(p, _j, seed): (SampledPlan, u32, u64)| {
            episode_item(model.clone(), env.clone(), p.task.clone(), prompts.clone(), Some(p.text.clone()), insertion, temperature, Some(seed), retries, Default::default())
        })
        .await?
    };

    let row_ctx = RowContext { stage: NAME, env: &w.env_name, agent: &w.explorer.name, planner: "sft", insertion: w.insertion, temperature: w.temperature };
    let mut rows: Vec<EpisodeRow> = Vec::new();
    let mut scored = Vec::new();
    for (pi, p) in plans.iter().enumerate() {
        let plan_id = format!("{}#{}", p.task.task_id, p.sample);
        let mut rewards = Vec::new();
        for j in 0..w.n {
            let v = &results.values[pi * w.n as usize + j as usize];
            let item: EpisodeItem = serde_json::from_value(v.clone())?;
            if let Some(r) = &item.result {
                rewards.push(r.reward);
            }
            rows.push(episode_row(&row_ctx, &p.task, v, Some((&plan_id, &p.text)), j as u64, Some(w.rollout_seed(p, j)))?);
        }
        let q = (!rewards.is_empty()).then(|| rewards.iter().sum::<f64>() / rewards.len() as f64);
        scored.push(ScoredPlan { plan: p.clone(), q, n: rewards.len() as u32 });
    }
    let n_ep = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    write_jsonl(&writer.path(SCORED), &scored)?;
    let plan_rows: Vec<PlanRow> = scored
        .iter()
        .map(|s| PlanRow {
            // The plan's maker; this stage adds its Q and N.
            stage: super::sample_plans::NAME.into(),
            split: Some(s.plan.task.split.clone()),
            task_id: s.plan.task.task_id.clone(),
            planner: "sft".into(),
            sample: s.plan.sample as u64,
            text: s.plan.text.clone(),
            q: s.q,
            n: Some(s.n as u64),
        })
        .collect();
    let n_plans = table::write_rows(&writer.path("plans.parquet"), PLANS, &plan_rows)?;
    Ok(StageOutput::new(results.reused, results.computed)
        .failed(results.transient)
        .table("episodes", n_ep)
        .table("plans", n_plans)
        .file(SCORED, scored.len()))
}

#[async_trait]
impl Stage for McRolloutsWork {
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
        self.explorer.bind(input_keys);
    }
    fn leases(&self) -> Vec<String> {
        self.explorer.lease().into_iter().collect()
    }
    fn journal(&self) -> &'static str {
        super::common::EPISODE_JOURNAL
    }
    fn items(&self, inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(match self.plans.dir_in(inputs) {
            Some(dir) => Items::Keys(self.item_keys(&super::sample_plans::read_plans(dir)?)?),
            None => Items::KnownLater,
        })
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}
