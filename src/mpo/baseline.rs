//! Stage `baseline`: a policy that plays a uniformly random admissible
//! action each step, on the built-in world — the floor a trained agent has
//! to clear (the quickstart reports both).
//!
//! - In: nothing (the env and split).
//! - Out: `episodes.parquet` (stage `baseline`, agent `random`, planner
//!   `none`), `episodes_per_task` episodes per task.
//! - Key: env identity, split, task count, episodes per task, seed.

use std::path::PathBuf;

use async_trait::async_trait;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::common::derive_seed;
use crate::env::builtin::{Game, Split};
use crate::stage::{Items, NodeCtx, Stage, StageOutput};
use crate::model::local::generate::Rng;
use crate::spec::EnvSpec;
use crate::store::table::{self, EpisodeRow, EPISODES};
use crate::store::ArtifactWriter;

pub const NAME: &str = "baseline";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineWork {
    pub env_name: String,
    pub env: EnvSpec,
    pub split: String,
    pub tasks: Option<usize>,
    pub episodes_per_task: u32,
    pub seed: u64,
}

impl BaselineWork {
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "env": self.env.identity(),
            "env_name": self.env_name, "split": self.split, "tasks": self.tasks,
            "episodes_per_task": self.episodes_per_task, "seed": self.seed,
        })
    }
}

/// One random-admissible episode: (reward, steps).
pub fn random_episode(mut game: Game, seed: u64) -> (f64, u32) {
    let mut rng = Rng::new(seed);
    let mut acts = Vec::new();
    let mut reward = 0.0;
    while !game.done() {
        game.admissible_into(&mut acts);
        if acts.is_empty() {
            break;
        }
        let a = acts[(rng.next_u64() % acts.len() as u64) as usize];
        let out = game.apply(a);
        reward = out.reward;
    }
    (reward, game.steps_taken())
}

/// An episode row without a model (a scripted policy, or an episode that
/// never ran): planner `none`, insertion `none`, rollout 0, unseeded, no
/// messages; `success` and `finish_reason` follow from `reward`;
/// finished now (such episodes are not journaled: computed with the row).
pub(crate) fn scripted_row(stage: &str, env: &str, split: &str, (task_id, task_type): (&str, &str), agent: &str, reward: f64, steps: u32) -> EpisodeRow {
    let success = reward >= 1.0;
    EpisodeRow {
        stage: stage.into(),
        env: env.into(),
        split: split.into(),
        task_id: task_id.into(),
        task_type: task_type.into(),
        agent: agent.into(),
        planner: "none".into(),
        insertion: "none".into(),
        plan_id: None,
        rollout: 0,
        seed: None,
        temperature: 0.0,
        reward,
        success,
        steps: steps as u64,
        finish_reason: if success { "success".into() } else { "step_limit".into() },
        prompt_tokens: 0,
        completion_tokens: 0,
        wall_ms: 0,
        finished_at: Some(table::now()),
        plan: None,
        messages: "[]".into(),
    }
}

pub async fn run(w: &BaselineWork, _ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let EnvSpec::Builtin(b) = &w.env else {
        bail!("the random baseline needs the built-in world");
    };
    let tasks = w.env.tasks(&w.split, w.tasks)?;
    let Some(split) = Split::parse(&w.split) else { bail!("unknown split `{}`", w.split) };
    let mut rows = Vec::new();
    for t in &tasks {
        let Some(game) = Game::from_task_id(&t.task_id) else { bail!("unknown task `{}`", t.task_id) };
        let _ = split;
        for r in 0..w.episodes_per_task {
            let seed = derive_seed(w.seed, &[NAME, &t.task_id, &r.to_string()]);
            let (reward, steps) = random_episode(game.clone().with_max_steps(b.max_steps), seed);
            rows.push(EpisodeRow {
                rollout: r as u64,
                seed: Some(seed),
                temperature: 1.0,
                ..scripted_row(NAME, &w.env_name, &w.split, (&t.task_id, &t.task_type), "random", reward, steps)
            });
        }
    }
    let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    Ok(StageOutput::new(0, rows.len()).table("episodes", n))
}

#[async_trait]
impl Stage for BaselineWork {
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
        Ok(Items::Whole("one job (random admissible actions)"))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}
