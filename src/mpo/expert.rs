//! Stage `expert`: gold trajectories of an environment's train split.
//!
//! - In: the environment (built-in world: its expert policy).
//! - Out: `trajectories.jsonl` (one `Trajectory` per task, in task order) and
//!   `episodes.parquet` (stage `expert`, agent `expert`, the ReAct message
//!   history as the agent loop would record it).
//! - Key: env identity (kind, generator version, max_steps), env name, split,
//!   task count. Items: one per task, keyed by env identity and task id.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::env::builtin::{self, Split, Trajectory};
use crate::exec::{NodeCtx, StageOutput};
use crate::model::Message;
use crate::plan::{short_hash, Draft};
use crate::spec::{EnvSpec, Spec};
use crate::store::table::{self, EpisodeRow, EPISODES};
use crate::store::ArtifactWriter;

pub const NAME: &str = "expert";
/// Bump when the stage's output for the same inputs changes.
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpertWork {
    pub env_name: String,
    pub max_steps: u32,
    pub split: Split,
    pub tasks: usize,
}

pub fn draft(env_name: &str, env: &EnvSpec, _spec: &Spec) -> anyhow::Result<Draft> {
    let b = match env {
        EnvSpec::Builtin(b) => b,
        other => anyhow::bail!(
            "the `expert` stage (gold trajectories for seed plans) needs an environment with an expert: \
             `kind = \"builtin\"`; env `{env_name}` is `kind = \"{}\"`. Give the planner a served, \
             already fine-tuned model (`planner.model`) or learn seed plans on the built-in world",
            other.kind()
        ),
    };
    let work = ExpertWork {
        env_name: env_name.to_string(),
        max_steps: b.max_steps,
        split: Split::Train,
        tasks: super::train_tasks(env),
    };
    let config = serde_json::json!({
        "env": { "name": env_name, "identity": crate::env::builtin_identity(b.max_steps) },
        "split": work.split.name(),
        "tasks": work.tasks,
    });
    Ok(Draft {
        stage: NAME,
        version: VERSION,
        label: format!("{NAME}[{env_name}/{}]", work.split.name()),
        config,
        inputs: vec![],
        work: super::Work::Expert(work),
    })
}

impl ExpertWork {
    fn item_key(&self, index: usize) -> String {
        short_hash(
            &serde_json::json!({
                "stage": NAME,
                "version": VERSION,
                "env": crate::env::builtin_identity(self.max_steps),
                "split": self.split.name(),
                "index": index,
            })
            .to_string(),
        )
    }

    pub fn item_keys(&self) -> Vec<String> {
        (0..self.tasks).map(|i| self.item_key(i)).collect()
    }
}

/// Runs the expert of the built-in world on one task, truncated to the step
/// limit (a trajectory over the limit is a failure, as for any agent).
pub fn expert_episode(split: Split, index: usize, max_steps: u32) -> Trajectory {
    let mut t = builtin::expert_trajectory(split, index);
    if t.turns.len() > max_steps as usize {
        t.turns.truncate(max_steps as usize);
        t.reward = 0.0;
    }
    t
}

/// The chat history of a trajectory in the released ReAct format: the task
/// as the first user message, assistant turns, `Observation: …` replies.
pub fn trajectory_messages(t: &Trajectory) -> Vec<Message> {
    let mut m = vec![Message::user(t.initial_observation.clone())];
    for turn in &t.turns {
        m.push(Message::assistant(turn.assistant_text()));
        m.push(Message::user(format!("Observation: {}", turn.observation)));
    }
    m
}

pub fn episode_row(env_name: &str, split: Split, t: &Trajectory) -> Result<EpisodeRow> {
    let success = t.reward >= 1.0;
    Ok(EpisodeRow {
        stage: NAME.into(),
        env: env_name.into(),
        split: split.name().into(),
        task_id: t.task_id.clone(),
        task_type: t.task_type.name().into(),
        agent: "expert".into(),
        planner: "none".into(),
        insertion: "none".into(),
        plan_id: None,
        rollout: 0,
        seed: None,
        temperature: 0.0,
        reward: t.reward,
        success,
        steps: t.turns.len() as u64,
        finish_reason: if success { "success".into() } else { "step_limit".into() },
        prompt_tokens: 0,
        completion_tokens: 0,
        wall_ms: 0,
        plan: None,
        messages: serde_json::to_string(&trajectory_messages(t))?,
    })
}

pub async fn run(w: &ExpertWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let items: Vec<(String, usize)> = (0..w.tasks).map(|i| (w.item_key(i), i)).collect();
    let (split, max_steps) = (w.split, w.max_steps);
    let results = ctx
        .run_items(items, 1, move |index| async move {
            let t = expert_episode(split, index, max_steps);
            Ok(serde_json::to_value(t)?)
        })
        .await?;
    let trajectories: Vec<Trajectory> = results
        .values
        .iter()
        .map(|v| serde_json::from_value(v.clone()).context("journal holds a malformed trajectory"))
        .collect::<Result<_>>()?;

    super::common::write_jsonl(&writer.path("trajectories.jsonl"), &trajectories)?;
    let rows: Vec<EpisodeRow> =
        trajectories.iter().map(|t| episode_row(&w.env_name, w.split, t)).collect::<Result<_>>()?;
    let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    Ok(StageOutput::new(results.reused, results.computed).table("episodes", n).file("trajectories.jsonl", trajectories.len()))
}

/// Reads the trajectories of a finished `expert` artifact.
pub fn read_trajectories(dir: &std::path::Path) -> Result<Vec<Trajectory>> {
    super::common::read_jsonl(&dir.join("trajectories.jsonl"))
}
