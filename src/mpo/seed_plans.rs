//! Stage `seed_plans`: the (task, meta plan) seed set the planner is
//! fine-tuned on (paper §3.1, App. C).
//!
//! - In: an `expert` artifact (trajectories).
//! - Out: `seed_set.jsonl` (task id, task text, plan, flaw) and
//!   `plans.parquet` (planner `teacher:<name>`, sample 0).
//! - Key: teacher identity, `planner.flaw_rate`, `experiment.seed`, the task
//!   count, and the expert's key. Items: one per task, keyed by the same
//!   settings and the trajectory's content.
//!
//! Teachers: `rule` — the built-in world's summariser, with a fraction
//! `flaw_rate` of deliberately flawed plans (too concrete, wrong appliance,
//! missing step) so that SFT plans are imperfect and MC/DPO has something to
//! fix.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::env::builtin;
use crate::exec::{NodeCtx, StageOutput};
use crate::plan::{short_hash, Draft};
use crate::spec::{EnvSpec, PlannerSpec, Spec};
use crate::store::table::{self, PlanRow, PLANS};
use crate::store::ArtifactWriter;

pub const NAME: &str = "seed_plans";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedPlansWork {
    pub env_name: String,
    pub teacher: String,
    pub flaw_rate: f64,
    pub seed: u64,
    pub tasks: usize,
}

/// One entry of the seed set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedPlan {
    pub task_id: String,
    pub task: String,
    pub plan: String,
    /// The App. C failure mode injected, if any.
    pub flaw: Option<String>,
}

pub fn draft(env_name: &str, env: &EnvSpec, spec: &Spec, planner: &PlannerSpec, expert: usize) -> Result<Draft> {
    if planner.teacher != "rule" {
        bail!(
            "`planner.teacher = \"{}\"`: LLM teachers for seed plans are not available in this \
             version of mpo-run; use `teacher = \"rule\"` (the built-in world's summariser)",
            planner.teacher
        );
    }
    let available = super::train_tasks(env);
    let tasks = planner.seed_tasks.unwrap_or(available).min(available);
    let work = SeedPlansWork {
        env_name: env_name.to_string(),
        teacher: planner.teacher.clone(),
        flaw_rate: planner.flaw_rate,
        seed: spec.experiment.seed,
        tasks,
    };
    let config = serde_json::json!({
        "teacher": work.teacher,
        "flaw_rate": work.flaw_rate,
        "seed": work.seed,
        "tasks": work.tasks,
    });
    Ok(Draft {
        stage: NAME,
        version: VERSION,
        label: format!("{NAME}[{env_name}/{}]", work.teacher),
        config,
        inputs: vec![expert],
        work: super::Work::SeedPlans(work),
    })
}

impl SeedPlansWork {
    fn item_key(&self, task_id: &str) -> String {
        short_hash(
            &serde_json::json!({
                "stage": NAME,
                "version": VERSION,
                "generator_version": builtin::GENERATOR_VERSION,
                "teacher": self.teacher,
                "flaw_rate": self.flaw_rate,
                "seed": self.seed,
                "task": task_id,
            })
            .to_string(),
        )
    }

    pub fn item_keys(&self) -> Vec<String> {
        (0..self.tasks)
            .map(|i| self.item_key(&builtin::Game::new(builtin::Split::Train, i).task_id()))
            .collect()
    }

    /// The per-task seed of the teacher's choices.
    fn task_seed(&self, task_id: &str) -> u64 {
        let h = blake3::hash(format!("{}:{task_id}", self.seed).as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}

pub async fn run(w: &SeedPlansWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let trajectories = super::expert::read_trajectories(&ctx.inputs[0].1)?;
    let trajectories: Vec<_> = trajectories.into_iter().take(w.tasks).collect();
    let items: Vec<(String, builtin::Trajectory)> =
        trajectories.into_iter().map(|t| (w.item_key(&t.task_id), t)).collect();
    let (flaw_rate, work) = (w.flaw_rate, w.clone());
    let results = ctx
        .run_items(items, 1, move |t| {
            let seed = work.task_seed(&t.task_id);
            async move {
                let p = builtin::teacher_plan(&t, flaw_rate, seed);
                let entry = SeedPlan {
                    task_id: t.task_id.clone(),
                    task: t.goal.clone(),
                    plan: p.text,
                    flaw: p.flaw.map(|f| format!("{f:?}")),
                };
                Ok(serde_json::to_value(entry)?)
            }
        })
        .await?;
    let seeds: Vec<SeedPlan> =
        results.values.iter().map(|v| serde_json::from_value(v.clone())).collect::<Result<_, _>>()?;
    let mut jsonl = String::new();
    for s in &seeds {
        jsonl.push_str(&serde_json::to_string(s)?);
        jsonl.push('\n');
    }
    std::fs::write(writer.path("seed_set.jsonl"), jsonl)?;
    let rows: Vec<PlanRow> = seeds
        .iter()
        .map(|s| PlanRow {
            task_id: s.task_id.clone(),
            planner: format!("teacher:{}", w.teacher),
            sample: 0,
            text: s.plan.clone(),
            q: None,
            n: None,
        })
        .collect();
    let n = table::write_rows(&writer.path("plans.parquet"), PLANS, &rows)?;
    let flawed = seeds.iter().filter(|s| s.flaw.is_some()).count();
    tracing::info!("seed plans: {} tasks, {flawed} flawed by design", seeds.len());
    Ok(StageOutput::new(results.reused, results.computed).table("plans", n).file("seed_set.jsonl", seeds.len()))
}
