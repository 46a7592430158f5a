//! Stage `follower`: the built-in world's scripted plan follower plays
//! every task of a split once with one planner variant's test plans (or
//! with none) — how good the plans are, apart from how well a trained agent
//! reads them. The follower goes first to the places a plan names, uses
//! the appliance it names, and searches blindly otherwise
//! ([`crate::env::builtin::follow_plan_on`]); it is deterministic.
//!
//! With `sampled`, it plays every plan `sample_plans` drew for the train
//! tasks instead (planner `sampled`, `plan_id` = `task#sample` as in
//! `mc_rollouts`): the plans' true quality, against which the report checks
//! the Monte Carlo scores (the second premise check).
//!
//! - In: the variant's `test_plans` (none for `none`), or `sample_plans`.
//! - Out: `episodes.parquet` (stage `follower`, agent `follower`, planner
//!   the variant, insertion `instruction`, or `none` without a plan).
//! - Key: env identity, split, task count, the plans' key (by input).

use std::path::PathBuf;

use async_trait::async_trait;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::env::builtin::{follow_plan_on, Game};
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::spec::{EnvSpec, PlannerVariant};
use crate::store::table::{self, EpisodeRow, EPISODES};
use crate::store::ArtifactWriter;

pub const NAME: &str = "follower";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FollowerWork {
    pub env_name: String,
    pub env: EnvSpec,
    pub split: String,
    pub tasks: Option<usize>,
    pub planner: PlannerVariant,
    /// The `test_plans` artifact it plays (none for the `none` variant),
    /// or the `sample_plans` one with `sampled`.
    pub plans: Option<Slot>,
    /// `plans` is a `sample_plans` artifact: every sampled plan is played.
    #[serde(default)]
    pub sampled: bool,
}

impl FollowerWork {
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "env": self.env.identity(),
            "env_name": self.env_name, "split": self.split, "tasks": self.tasks,
            "planner": if self.sampled { "sampled" } else { super::test_plans::variant_name(self.planner) },
        })
    }
}

/// The follower with every sampled plan (see the module doc).
fn run_sampled(w: &FollowerWork, ctx: &NodeCtx, max_steps: u32) -> Result<Vec<EpisodeRow>> {
    let plans = super::sample_plans::read_plans(ctx.input(w.plans.ok_or_else(|| anyhow!("follower: no sampled plans input"))?)?)?;
    let mut rows = Vec::new();
    for p in &plans {
        let Some(game) = Game::from_task_id(&p.task.task_id) else { bail!("unknown task `{}`", p.task.task_id) };
        let out = follow_plan_on(&game, Some(&p.text), max_steps);
        rows.push(EpisodeRow {
            planner: "sampled".into(),
            insertion: "instruction".into(),
            plan_id: Some(format!("{}#{}", p.task.task_id, p.sample)),
            plan: Some(p.text.clone()),
            ..super::baseline::scripted_row(NAME, &w.env_name, &p.task.split, (&p.task.task_id, &p.task.task_type), NAME, out.reward, out.steps)
        });
    }
    Ok(rows)
}

pub async fn run(w: &FollowerWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let EnvSpec::Builtin(b) = &w.env else {
        bail!("the scripted plan follower needs the built-in world");
    };
    if w.sampled {
        let rows = run_sampled(w, ctx, b.max_steps)?;
        let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
        return Ok(StageOutput::new(0, rows.len()).table("episodes", n));
    }
    let tasks = w.env.tasks(&w.split, w.tasks)?;
    let plans = match w.planner {
        PlannerVariant::None => None,
        _ => Some(super::test_plans::read_plans(ctx.input(w.plans.ok_or_else(|| anyhow!("follower: no test plans input"))?)?)?),
    };
    let planner = super::test_plans::variant_name(w.planner).to_string();
    let mut rows = Vec::new();
    for t in &tasks {
        let Some(game) = Game::from_task_id(&t.task_id) else { bail!("unknown task `{}`", t.task_id) };
        let plan = match &plans {
            None => None,
            Some(p) => Some(p.get(&t.task_id).ok_or_else(|| anyhow!("follower: no test plan for task `{}`", t.task_id))?.clone()),
        };
        let out = follow_plan_on(&game, plan.as_deref(), b.max_steps);
        let insertion = if plan.is_some() { "instruction" } else { "none" };
        rows.push(EpisodeRow {
            planner: planner.clone(),
            insertion: insertion.into(),
            plan,
            ..super::baseline::scripted_row(NAME, &w.env_name, &w.split, (&t.task_id, &t.task_type), NAME, out.reward, out.steps)
        });
    }
    let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    Ok(StageOutput::new(0, rows.len()).table("episodes", n))
}

#[async_trait]
impl Stage for FollowerWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        self.config()
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole("one job (the scripted plan follower)"))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}
