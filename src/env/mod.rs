//! Environments behind one trait. Three kinds (docs/ARCHITECTURE.md): the built-in
//! household world ([`builtin`], in-process, deterministic), ScienceWorld
//! (the real simulator through bridge processes) and AgentGym HTTP servers.
//!
//! An environment's identity — everything that changes what an episode does —
//! goes into cache keys; its name in the spec does not. An [`EnvError`] is a
//! failure of the environment (a dead worker, a server gone), never of the
//! agent: the eval stage retries the episode from the start and, when
//! retries run out, records it as an environment failure.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};


pub mod agentgym;
pub mod builtin;
pub mod sciworld;
mod spec;

pub use spec::{BuiltinEnvSpec, EnvSpec};

/// One task of a split, as the agent loop needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Stable id, the `task_id` column (`seen/0007`, `boil/0_21`, …).
    pub task_id: String,
    pub split: String,
    /// The `task_type` column.
    pub task_type: String,
    /// Key of the in-context example to use (the released ICL keys).
    pub icl_key: String,
    /// Step limit of this task.
    pub max_steps: u32,
}

/// What the environment answered to one action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub observation: String,
    /// The episode's reward so far (built-in/ALFWorld: 1 once won;
    /// ScienceWorld: best score seen, 0–1).
    pub reward: f64,
    pub done: bool,
    /// The task's goal was reached.
    pub success: bool,
    /// The environment did not recognise the action (ScienceWorld's
    /// consecutive-invalid rule counts these).
    pub invalid: bool,
}

/// A failure of the environment itself.
#[derive(Debug, thiserror::Error)]
#[error("environment failure: {0}")]
pub struct EnvError(pub String);

/// A running episode.
#[async_trait]
pub trait Episode: Send {
    /// The task text shown to the agent (`{task}` of the first message).
    fn task_text(&self) -> String;
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError>;
    /// `(task_type, icl_key)` when they are learned only as the episode
    /// starts (an AgentGym server names the task at `/reset`); the caller
    /// then uses these instead of the [`TaskInfo`]'s.
    fn learned_task_type(&self) -> Option<(String, String)> {
        None
    }
    /// The last step's own score (0–1) where the reward is a best-of
    /// (ScienceWorld); `None` where the step's reward is the score.
    fn last_score(&self) -> Option<f64> {
        None
    }
    /// Releases server/worker resources (always called).
    async fn close(self: Box<Self>);
}

/// An environment kind with its settings.
#[async_trait]
pub trait Environment: Send + Sync {
    /// Everything that changes what an episode does, for cache keys.
    fn identity(&self) -> serde_json::Value;
    fn family(&self) -> Family;
    fn action_rule(&self) -> ActionRule;
    /// The split names it has.
    fn splits(&self) -> Vec<String>;
    /// The first `limit` tasks of a split (all if `None`).
    fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError>;
    async fn start(&self, task: &TaskInfo) -> Result<Box<dyn Episode>, EnvError>;
    /// Checks that the environment can run episodes (servers up, workers
    /// installed) before a stage starts; the error says how to fix it.
    async fn health_check(&self) -> Result<(), EnvError> {
        Ok(())
    }
    /// The task text an episode of `task` opens with (planners see it).
    /// By default it starts and closes an episode; environments that know
    /// the text without one override this.
    async fn task_text(&self, task: &TaskInfo) -> Result<String, EnvError> {
        let episode = self.start(task).await?;
        let text = episode.task_text();
        episode.close().await;
        Ok(text)
    }
}

/// The identity of the built-in world with its settings, for cache keys.
pub fn builtin_identity(max_steps: u32) -> serde_json::Value {
    serde_json::json!({
        "kind": "builtin",
        "generator_version": builtin::GENERATOR_VERSION,
        "max_steps": max_steps,
    })
}

/// The first `limit` tasks of a built-in split (all if `None`).
pub fn builtin_tasks(split: &str, limit: Option<usize>, max_steps: u32) -> Result<Vec<TaskInfo>, EnvError> {
    let s = builtin::Split::parse(split).ok_or_else(|| EnvError(format!("the built-in world has no split `{split}`")))?;
    let n = limit.map_or(s.size(), |l| l.min(s.size()));
    Ok((0..n)
        .map(|i| {
            let g = builtin::Game::new(s, i);
            TaskInfo {
                task_id: g.task_id(),
                split: s.name().to_string(),
                task_type: g.task_type().name().to_string(),
                icl_key: g.task_type().icl_key().to_string(),
                max_steps: max_steps,
            }
        })
        .collect())
}

/// The built-in world as an [`Environment`].
#[derive(Clone, Debug)]
pub struct BuiltinEnv {
    pub max_steps: u32,
}

struct BuiltinEpisode {
    game: builtin::Game,
}

#[async_trait]
impl Episode for BuiltinEpisode {
    fn task_text(&self) -> String {
        self.game.initial_observation()
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        let out = self.game.step(action);
        Ok(StepOutcome {
            invalid: out.observation == builtin::NOTHING_HAPPENS,
            observation: out.observation,
            reward: out.reward,
            done: out.done,
            success: out.won,
        })
    }
    async fn close(self: Box<Self>) {}
}

#[async_trait]
impl Environment for BuiltinEnv {
    fn identity(&self) -> serde_json::Value {
        builtin_identity(self.max_steps)
    }
    fn family(&self) -> Family {
        Family::Alfworld
    }
    fn action_rule(&self) -> ActionRule {
        ActionRule::Alfworld
    }
    fn splits(&self) -> Vec<String> {
        builtin::Split::ALL.iter().map(|s| s.name().to_string()).collect()
    }
    fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        builtin_tasks(split, limit, self.max_steps)
    }
    async fn task_text(&self, task: &TaskInfo) -> Result<String, EnvError> {
        builtin::Game::from_task_id(&task.task_id)
            .map(|g| g.initial_observation())
            .ok_or_else(|| EnvError(format!("unknown built-in task `{}`", task.task_id)))
    }
    async fn start(&self, task: &TaskInfo) -> Result<Box<dyn Episode>, EnvError> {
        let game = builtin::Game::from_task_id(&task.task_id)
            .ok_or_else(|| EnvError(format!("unknown built-in task `{}`", task.task_id)))?
            .with_max_steps(self.max_steps);
        Ok(Box::new(BuiltinEpisode { game }))
    }
}

/// Builds the environment a spec declares.
pub fn build(spec: &EnvSpec) -> Result<Arc<dyn Environment>, EnvError> {
    Ok(match spec {
        EnvSpec::Builtin(b) => Arc::new(BuiltinEnv { max_steps: b.max_steps }),
        EnvSpec::Agentgym(a) => agentgym::build(a),
        EnvSpec::Sciworld(s) => sciworld::build(s).map(|e| e as Arc<dyn Environment>).map_err(EnvError)?,
    })
}

/// Builds each environment a run needs once (worker pools and server
/// sessions are shared by every stage of the run).
#[derive(Default)]
pub struct Registry {
    cache: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn Environment>>>,
    /// ScienceWorld pools, typed (the `expert` stage replays gold
    /// sequences on them); [`Registry::get`] hands out the same ones.
    sciworld: std::sync::Mutex<std::collections::HashMap<String, Arc<sciworld::SciworldEnv>>>,
}

impl Registry {
    /// The environment of `spec`, built (and health-checked) on first use.
    pub async fn get(&self, spec: &EnvSpec) -> Result<Arc<dyn Environment>, EnvError> {
        if let EnvSpec::Sciworld(s) = spec {
            let env: Arc<dyn Environment> = self.sciworld(s).await?;
            return Ok(env);
        }
        let key = serde_json::to_string(spec).unwrap_or_default();
        if let Some(e) = self.cache.lock().expect("env registry poisoned").get(&key) {
            return Ok(e.clone());
        }
        let env = build(spec)?;
        env.health_check().await?;
        self.cache.lock().expect("env registry poisoned").insert(key, env.clone());
        Ok(env)
    }

    /// The ScienceWorld environment of `spec` (one worker pool per settings
    /// for the whole run), built on first use.
    pub async fn sciworld(&self, spec: &sciworld::SciworldEnvSpec) -> Result<Arc<sciworld::SciworldEnv>, EnvError> {
        let key = serde_json::to_string(spec).unwrap_or_default();
        if let Some(e) = self.sciworld.lock().expect("env registry poisoned").get(&key) {
            return Ok(e.clone());
        }
        let env = sciworld::build(spec).map_err(EnvError)?;
        env.health_check().await?;
        Ok(self.sciworld.lock().expect("env registry poisoned").entry(key).or_insert(env).clone())
    }
}

/// The environment family: which released prompts, ICL examples and
/// action rule an environment's episodes use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Alfworld,
    Sciworld,
    Webshop,
}

impl Family {
    /// `alfworld`, `sciworld` or `webshop`: the prompt files' prefix.
    pub fn name(self) -> &'static str {
        match self {
            Family::Alfworld => "alfworld",
            Family::Sciworld => "sciworld",
            Family::Webshop => "webshop",
        }
    }
}

/// Which release rule parses actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActionRule {
    Alfworld,
    Sciworld,
    Webshop,
}

