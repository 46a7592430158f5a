//! Stage `expert`: gold trajectories of an environment's train split.
//!
//! - In: the environment. The built-in world: its expert policy, truncated
//!   to the step limit. ScienceWorld: the simulator's gold action sequence
//!   of each task (`get_gold_action_sequence`) replayed on a fresh load of
//!   the task to record its observations, in full (no step limit: the gold
//!   sequences of several task types are longer than the release's
//!   per-task limits; the `steps` column shows it), ending when the
//!   simulator ends the episode.
//! - Out: `trajectories.jsonl` (one [`ExpertTrajectory`] per task, in task
//!   order; a task whose replay failed in the environment is left out) and
//!   `episodes.parquet` (stage `expert`, agent `expert`, one row per task:
//!   the ReAct message history as the agent loop would record it;
//!   `finish_reason` is `success`, `step_limit` (built-in), `done` (the
//!   simulator ended the replay short of the goal), `gold_exhausted` (the
//!   gold sequence ran out short of it) or `env_failure`).
//! - Key: env identity (kind and the settings that change episodes), env
//!   name, split, task count. Items: one per task, keyed by env identity
//!   and task (the built-in world: its index).
//!
//! An environment failure (a ScienceWorld worker that died, hung or
//! answered garbage) restarts the task's replay from the start, up to
//! `experiment.env_retries` times; then it is a transient item, as in
//! `eval`: written as an `env_failure` row but not journaled, and the
//! artifact is provisional, so the next run retries just those tasks.
//! Finished replays are journaled as each ends.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::env::builtin::{self, Split, Turn};
use crate::env::sciworld::{self, SciworldEnv};
use crate::env::TaskInfo;
use crate::stage::{is_transient, Items, NodeCtx, Stage, StageOutput};
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
    pub env: EnvSpec,
    /// Canonical split name (`train`).
    pub split: String,
    pub tasks: usize,
    /// Restarts of a replay after an environment failure.
    pub env_retries: u32,
}

/// An expert episode as `trajectories.jsonl` holds it, for every env kind
/// (a built-in world's [`builtin::Trajectory`] reads as one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertTrajectory {
    pub task_id: String,
    /// The `task_type` column.
    pub task_type: String,
    /// The goal a planner or teacher is given.
    pub goal: String,
    /// The task text of the agent's first message (`{task}`): the built-in
    /// world's room and goal; ScienceWorld's task description.
    pub initial_observation: String,
    pub turns: Vec<Turn>,
    /// Built-in: 1 if won; ScienceWorld: best score seen (0–1).
    pub reward: f64,
    /// The task's goal state was reached (absent for the built-in world,
    /// where it is `reward == 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// `finish_reason` when it is not implied by `reward` (ScienceWorld:
    /// `success`, `done` — the simulator ended the replay without the goal
    /// — or `gold_exhausted` — the gold sequence ran out without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    /// When the episode finished (the `finished_at` column, #26); absent
    /// in trajectories journaled before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ExpertTrajectory {
    pub fn succeeded(&self) -> bool {
        self.success.unwrap_or(self.reward >= 1.0)
    }

    /// The built-in world's trajectory (for its rule teacher), if this is one.
    pub fn to_builtin(&self) -> Option<builtin::Trajectory> {
        Some(builtin::Trajectory {
            task_id: self.task_id.clone(),
            task_type: builtin::TaskType::parse(&self.task_type)?,
            goal: self.goal.clone(),
            initial_observation: self.initial_observation.clone(),
            turns: self.turns.clone(),
            reward: self.reward,
        })
    }

    /// The `finish_reason` column: `success`, `step_limit` (the built-in
    /// expert over its limit), or ScienceWorld's `done` / `gold_exhausted`.
    pub fn finish_reason(&self) -> String {
        match &self.finish_reason {
            Some(r) => r.clone(),
            None if self.succeeded() => "success".into(),
            None => "step_limit".into(),
        }
    }
}

impl From<builtin::Trajectory> for ExpertTrajectory {
    fn from(t: builtin::Trajectory) -> Self {
        ExpertTrajectory {
            task_id: t.task_id,
            task_type: t.task_type.name().to_string(),
            goal: t.goal,
            initial_observation: t.initial_observation,
            turns: t.turns,
            reward: t.reward,
            success: None,
            finish_reason: None,
            finished_at: None,
        }
    }
}

impl From<sciworld::GoldTrajectory> for ExpertTrajectory {
    fn from(g: sciworld::GoldTrajectory) -> Self {
        let turns = g.to_turns();
        let finish = if g.success {
            "success"
        } else if g.done {
            "done"
        } else {
            "gold_exhausted"
        };
        ExpertTrajectory {
            task_id: g.task_id,
            task_type: g.task_type,
            initial_observation: g.goal.clone(),
            goal: g.goal,
            turns,
            reward: g.reward,
            success: Some(g.success),
            finish_reason: Some(finish.into()),
            finished_at: None,
        }
    }
}

/// The error of a spec that needs the expert of an env that has none.
fn no_expert(env_name: &str, env: &EnvSpec) -> anyhow::Error {
    anyhow!(
        "env `{env_name}` (`kind = \"{}\"`) has no expert, and the spec needs expert trajectories (seed plans \
         from a teacher, an `init` model's corpus, or agent SFT); only `kind = \"builtin\"` and `kind = \"sciworld\"` \
         have one\nhint: give the planner a seed set (`planner.seed_set = \"seeds.jsonl\"`), or learn on a \
         built-in or ScienceWorld env",
        env.kind()
    )
}

pub fn draft(env_name: &str, env: &EnvSpec, spec: &Spec) -> anyhow::Result<Draft> {
    if !env.has_expert() {
        return Err(no_expert(env_name, env));
    }
    let work = ExpertWork {
        env_name: env_name.to_string(),
        env: env.clone(),
        split: "train".into(),
        tasks: super::train_tasks(env),
        env_retries: spec.experiment.env_retries,
    };
    Ok(Draft::new(format!("{NAME}[{env_name}/{}]", work.split), vec![], work))
}

#[async_trait]
impl Stage for ExpertWork {
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
        serde_json::json!({
            "env": { "name": self.env_name, "identity": self.env.identity() },
            "split": self.split,
            "tasks": self.tasks,
        })
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Keys(self.item_keys()?))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        run(self, ctx, writer).await
    }
}

impl ExpertWork {
    fn item_key(&self, index: usize, task_id: &str) -> String {
        let v = match &self.env {
            // The built-in world's keys predate other envs: by index.
            EnvSpec::Builtin(b) => serde_json::json!({
                "stage": NAME,
                "version": VERSION,
                "env": crate::env::builtin_identity(b.max_steps),
                "split": self.split,
                "index": index,
            }),
            EnvSpec::Sciworld(_) | EnvSpec::Agentgym(_) => serde_json::json!({
                "stage": NAME,
                "version": VERSION,
                "env": self.env.identity(),
                "split": self.split,
                "task": task_id,
            }),
        };
        short_hash(&v.to_string())
    }

    pub fn item_keys(&self) -> Result<Vec<String>> {
        let ids = train_task_ids(&self.env_name, &self.env, self.tasks)?;
        Ok(ids.iter().enumerate().map(|(i, id)| self.item_key(i, id)).collect())
    }
}

/// The ids of the first `n` train tasks of an env with an expert, without
/// starting it (for item keys).
pub fn train_task_ids(env_name: &str, env: &EnvSpec, n: usize) -> Result<Vec<String>> {
    Ok(match env {
        EnvSpec::Builtin(_) => (0..n).map(|i| builtin::Game::new(Split::Train, i).task_id()).collect(),
        EnvSpec::Sciworld(_) => sciworld::tasks::split_tasks("train")
            .ok_or_else(|| anyhow!("ScienceWorld has no train split"))?
            .iter()
            .take(n)
            .map(|t| t.task_id())
            .collect(),
        EnvSpec::Agentgym(_) => return Err(no_expert(env_name, env)),
    })
}

/// Runs the expert of the built-in world on one task, truncated to the step
/// limit (a trajectory over the limit is a failure, as for any agent).
pub fn expert_episode(split: Split, index: usize, max_steps: u32) -> builtin::Trajectory {
    let mut t = builtin::expert_trajectory(split, index);
    if t.turns.len() > max_steps as usize {
        t.turns.truncate(max_steps as usize);
        t.reward = 0.0;
    }
    t
}

/// A ScienceWorld task's gold replay, restarted after an environment
/// failure up to `retries` times; then a transient `env_failure` item.
pub async fn gold_item(env: &SciworldEnv, task: &TaskInfo, retries: u32) -> Result<serde_json::Value> {
    let mut last = String::new();
    for _ in 0..=retries {
        match sciworld::gold_trajectory(env, task).await {
            Ok(g) => return Ok(serde_json::to_value(ExpertTrajectory { finished_at: Some(table::now()), ..ExpertTrajectory::from(g) })?),
            Err(e) => {
                tracing::warn!("task `{}`: {e}; replaying its gold sequence again from the start", task.task_id);
                last = e.to_string();
            }
        }
    }
    Ok(serde_json::json!({ "task_id": task.task_id, "env_failure": last }))
}

/// The chat history of a trajectory in the released ReAct format: the task
/// as the first user message, assistant turns, `Observation: …` replies.
pub fn trajectory_messages(t: &ExpertTrajectory) -> Vec<Message> {
    let mut m = vec![Message::user(t.initial_observation.clone())];
    for turn in &t.turns {
        m.push(Message::assistant(turn.assistant_text()));
        m.push(Message::user(format!("Observation: {}", turn.observation)));
    }
    m
}

/// An `expert` row with nothing done yet (as an environment failure).
fn failure_row(env_name: &str, split: &str, task_id: &str, task_type: &str) -> EpisodeRow {
    EpisodeRow {
        finish_reason: "env_failure".into(),
        ..super::baseline::scripted_row(NAME, env_name, split, (task_id, task_type), "expert", 0.0, 0)
    }
}

pub fn episode_row(env_name: &str, split: &str, t: &ExpertTrajectory) -> Result<EpisodeRow> {
    Ok(EpisodeRow {
        reward: t.reward,
        success: t.succeeded(),
        steps: t.turns.len() as u64,
        finish_reason: t.finish_reason(),
        messages: serde_json::to_string(&trajectory_messages(t))?,
        finished_at: t.finished_at,
        ..failure_row(env_name, split, &t.task_id, &t.task_type)
    })
}

pub async fn run(w: &ExpertWork, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
    let (tasks, results) = match &w.env {
        EnvSpec::Builtin(b) => {
            let env = crate::env::BuiltinEnv { max_steps: b.max_steps };
            let tasks = crate::env::Environment::tasks(&env, &w.split, Some(w.tasks))?;
            let items: Vec<(String, usize)> = tasks.iter().enumerate().map(|(i, t)| (w.item_key(i, &t.task_id), i)).collect();
            let max_steps = b.max_steps;
            let results = ctx
                .run_items(items, 1, move |index| async move {
                    let t = ExpertTrajectory {
                        finished_at: Some(table::now()),
                        ..ExpertTrajectory::from(expert_episode(Split::Train, index, max_steps))
                    };
                    Ok(serde_json::to_value(t)?)
                })
                .await?;
            (tasks, results)
        }
        EnvSpec::Sciworld(s) => {
            let env: Arc<SciworldEnv> = ctx.envs.sciworld(s).await?;
            let tasks = crate::env::Environment::tasks(env.as_ref(), &w.split, Some(w.tasks))?;
            let items: Vec<(String, TaskInfo)> =
                tasks.iter().enumerate().map(|(i, t)| (w.item_key(i, &t.task_id), t.clone())).collect();
            let retries = w.env_retries;
            let results = ctx
                .run_items(items, s.workers, move |task: TaskInfo| {
                    let env = env.clone();
                    async move { gold_item(&env, &task, retries).await }
                })
                .await?;
            (tasks, results)
        }
        EnvSpec::Agentgym(_) => return Err(no_expert(&w.env_name, &w.env)),
    };

    let mut trajectories = Vec::with_capacity(tasks.len());
    let mut rows = Vec::with_capacity(tasks.len());
    for (task, v) in tasks.iter().zip(&results.values) {
        if is_transient(v) {
            rows.push(failure_row(&w.env_name, &w.split, &task.task_id, &task.task_type));
            continue;
        }
        let t: ExpertTrajectory = serde_json::from_value(v.clone()).context("journal holds a malformed trajectory")?;
        rows.push(episode_row(&w.env_name, &w.split, &t)?);
        trajectories.push(t);
    }
    if results.transient > 0 {
        tracing::warn!(
            "`{}`: {} tasks failed in the environment (rows with `finish_reason = \"env_failure\"`); the next run retries them",
            ctx.label,
            results.transient
        );
    }
    let failed_gold = trajectories.iter().filter(|t| !t.succeeded()).count();
    if failed_gold > 0 {
        tracing::info!("`{}`: the expert did not reach the goal on {failed_gold} of {} tasks", ctx.label, trajectories.len());
    }
    super::common::write_jsonl(&writer.path("trajectories.jsonl"), &trajectories)?;
    let n = table::write_rows(&writer.path("episodes.parquet"), EPISODES, &rows)?;
    Ok(StageOutput::new(results.reused, results.computed)
        .table("episodes", n)
        .file("trajectories.jsonl", trajectories.len())
        .failed(results.transient))
}

/// Reads the trajectories of a finished `expert` artifact.
pub fn read_trajectories(dir: &std::path::Path) -> Result<Vec<ExpertTrajectory>> {
    super::common::read_jsonl(&dir.join("trajectories.jsonl"))
}
