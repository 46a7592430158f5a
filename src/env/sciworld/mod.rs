//! ScienceWorld, the real simulator, as an mpo-run environment
//! (`[envs.NAME] kind = "sciworld"`).
//!
//! Each episode runs on a bridge worker — a Python process with the official
//! `scienceworld` package (1.2.3; it starts its own JVM) speaking
//! line-delimited JSON ([`worker`]) — leased from a pool of `workers`
//! processes ([`pool`]), so K episodes run in parallel. The released loop's
//! rules (ETO/MPO `SciWorldEnv`), kept here:
//! - tasks are the released `[name, variation]` lists ([`tasks`]), loaded
//!   with `simplificationStr="easy"`; the per-task step limit comes from
//!   `max_steps.json`; the simulator is created with `envStepLimit=200`;
//! - the agent's task text is the simulator's task description after
//!   `env.reset()`, without its `Task Description:` header;
//! - reward = best score seen (0–1; negative scores count as 0);
//! - success = the task's goal state (score 100), *not* "done", which the
//!   simulator also sets on failure (negative score) and at its move limit;
//! - 10 consecutive "No known action matches that input." end the episode.
//!
//! A worker that dies, hangs past `request_timeout_s` or answers garbage is
//! killed; the episode's step returns [`EnvError`] and the next episode
//! gets a fresh worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{EnvError, Environment, Episode, StepOutcome, TaskInfo};
use crate::env::ActionRule;
use crate::env::Family;

pub mod pool;
pub mod tasks;
pub mod worker;

pub use pool::PoolStats;
pub use worker::{check_installation, install_ctrl_c_guard, kill_all_workers, live_workers, Installation};

/// The package version the project pins.
pub const PACKAGE_VERSION: &str = "1.2.3";
/// `envStepLimit` of the simulator (the MPO release's value).
pub const ENV_STEP_LIMIT: u32 = 200;
/// Consecutive invalid actions that end an episode (the release's rule).
pub const MAX_CONSECUTIVE_INVALID: u32 = 10;
/// The simulator's answer to an action it does not parse.
pub const INVALID_OBSERVATION: &str = "No known action matches that input";
/// Bump when episodes change for the same spec (cache keys).
pub const BRIDGE_VERSION: u32 = 1;
/// The in-context example key of every task (one example for all).
pub const ICL_KEY: &str = "default";

const SIMPLIFICATIONS: [&str; 6] =
    ["easy", "teleportAction", "selfWateringFlowerPots", "openContainers", "openDoors", "noElectricalAction"];

/// `[envs.NAME] kind = "sciworld"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SciworldEnvSpec {
    /// Python with the `scienceworld` package.
    #[serde(default = "default_python")]
    pub python: String,
    /// Bridge worker processes = episodes in parallel.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Use only the first K tasks of a split, e.g. `tasks = { train = 200 }`.
    #[serde(default)]
    pub tasks: BTreeMap<String, usize>,
    /// One step limit for every task instead of `max_steps.json`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// The simulator's simplifications (the release: `easy`).
    #[serde(default = "default_simplification")]
    pub simplification: String,
    /// Seconds a worker may take to start (Python + JVM).
    #[serde(default = "default_start_timeout")]
    pub start_timeout_s: f64,
    /// Seconds a worker may take for one request (a task load or a step).
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: f64,
}

fn default_python() -> String {
    "python3".into()
}
fn default_workers() -> usize {
    1
}
fn default_simplification() -> String {
    "easy".into()
}
fn default_start_timeout() -> f64 {
    120.0
}
fn default_request_timeout() -> f64 {
    120.0
}

impl Default for SciworldEnvSpec {
    fn default() -> Self {
        SciworldEnvSpec {
            python: default_python(),
            workers: default_workers(),
            tasks: BTreeMap::new(),
            max_steps: None,
            simplification: default_simplification(),
            start_timeout_s: default_start_timeout(),
            request_timeout_s: default_request_timeout(),
        }
    }
}

impl SciworldEnvSpec {
    /// The first `limit` tasks of a split (all if `None`), from the
    /// release's lists: no simulator needed.
    pub fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        let canon = tasks::canonical_split(split).ok_or_else(|| {
            EnvError(format!("ScienceWorld has no split `{split}` (train, seen/dev, unseen/test)"))
        })?;
        let list = tasks::split_tasks(canon).unwrap_or_default();
        let n = self.task_count(canon).unwrap_or(list.len());
        let n = limit.map_or(n, |l| l.min(n));
        Ok(list[..n].iter().map(|t| task_info(self, canon, t)).collect())
    }


    /// Checks the settings (not the installation: see [`build`]).
    pub fn validate(&self) -> Result<(), String> {
        let mut e = Vec::new();
        if self.python.trim().is_empty() {
            e.push("`python` must not be empty".to_string());
        }
        if !(1..=64).contains(&self.workers) {
            e.push(format!("`workers` = {} must be between 1 and 64", self.workers));
        }
        for (split, &k) in &self.tasks {
            if tasks::canonical_split(split).is_none() {
                e.push(format!("`tasks.{split}`: unknown split; allowed: `train`, `seen` (or `dev`), `unseen` (or `test`)"));
            } else if k == 0 {
                e.push(format!("`tasks.{split}` must be >= 1"));
            }
        }
        if self.max_steps == Some(0) {
            e.push("`max_steps` must be >= 1".into());
        }
        for s in self.simplification.split(',').filter(|s| !s.is_empty()) {
            if !SIMPLIFICATIONS.contains(&s) {
                e.push(format!("`simplification`: unknown `{s}`; allowed: {}", SIMPLIFICATIONS.join(", ")));
            }
        }
        for (k, v) in [("start_timeout_s", self.start_timeout_s), ("request_timeout_s", self.request_timeout_s)] {
            if !(v.is_finite() && v > 0.0) {
                e.push(format!("`{k}` = {v} must be > 0"));
            }
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(e.join("; "))
        }
    }

    /// How many tasks of `split` the experiment uses.
    pub fn task_count(&self, split: &str) -> Option<usize> {
        let all = tasks::split_tasks(split)?.len();
        let canon = tasks::canonical_split(split)?;
        let k = self.tasks.iter().find(|(s, _)| tasks::canonical_split(s) == Some(canon)).map(|(_, &k)| k);
        Some(k.map_or(all, |k| k.min(all)))
    }

    /// Everything that changes what an episode does, for cache keys (no
    /// python path, worker count or timeouts).
    pub fn identity(&self) -> Value {
        json!({
            "kind": "sciworld",
            "package": format!("scienceworld=={PACKAGE_VERSION}"),
            "bridge_version": BRIDGE_VERSION,
            "simplification": self.simplification,
            "env_step_limit": ENV_STEP_LIMIT,
            "max_consecutive_invalid": MAX_CONSECUTIVE_INVALID,
            "max_steps": self.max_steps.map_or(Value::from("per-task"), Value::from),
        })
    }
}

/// Builds the environment: validates the spec and checks that Python, the
/// package and Java are there (the error names the one-line install).
/// Workers start lazily, on the first episodes. Needs a tokio runtime for
/// the Ctrl-C guard (without one the guard is skipped).
pub fn build(spec: &SciworldEnvSpec) -> Result<Arc<SciworldEnv>, String> {
    build_with_env(spec, Vec::new())
}

/// [`build`] with the bridge's test hooks on (`__debug_hang__`,
/// `__debug_garbage__`, `__debug_exit__` actions), for robustness tests.
#[doc(hidden)]
pub fn build_with_debug_hooks(spec: &SciworldEnvSpec) -> Result<Arc<SciworldEnv>, String> {
    build_with_env(spec, vec![("MPO_SCIWORLD_DEBUG".into(), "1".into())])
}

fn build_with_env(spec: &SciworldEnvSpec, env: Vec<(String, String)>) -> Result<Arc<SciworldEnv>, String> {
    spec.validate()?;
    let inst = check_installation(&spec.python)?;
    if inst.scienceworld != PACKAGE_VERSION {
        tracing::warn!(
            "scienceworld {} is installed; the project pins {PACKAGE_VERSION} (`pip install scienceworld=={PACKAGE_VERSION}`)",
            inst.scienceworld
        );
    }
    let script = worker::bridge_script().map_err(|e| format!("cannot write the ScienceWorld bridge script: {e}"))?;
    let cfg = pool::PoolConfig {
        python: spec.python.clone(),
        script,
        start_timeout: Duration::from_secs_f64(spec.start_timeout_s),
        request_timeout: Duration::from_secs_f64(spec.request_timeout_s),
        env,
    };
    install_ctrl_c_guard();
    Ok(Arc::new(SciworldEnv { spec: spec.clone(), installation: inst, pool: Arc::new(pool::Pool::new(cfg, spec.workers)) }))
}

/// ScienceWorld behind a pool of bridge workers.
pub struct SciworldEnv {
    spec: SciworldEnvSpec,
    installation: Installation,
    pool: Arc<pool::Pool>,
}

impl SciworldEnv {
    pub fn spec(&self) -> &SciworldEnvSpec {
        &self.spec
    }
    /// What the installation check found.
    pub fn installation(&self) -> &Installation {
        &self.installation
    }
    /// Python pids of the live workers (each one a process group with its JVM).
    pub fn worker_pids(&self) -> Vec<i32> {
        self.pool.pids()
    }
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }
    /// Kills the idle workers now (leased ones die with their episodes).
    pub fn shutdown(&self) {
        self.pool.shutdown_idle();
    }

    async fn load(&self, task: &TaskInfo, gold: bool) -> Result<(pool::Lease, Value), EnvError> {
        let t = tasks::parse_task_id(&task.task_id)
            .ok_or_else(|| EnvError(format!("unknown ScienceWorld task `{}`", task.task_id)))?;
        let mut lease = self.pool.acquire().await?;
        let req = json!({
            "op": "load",
            "task": t.release_name,
            "variation": t.variation,
            "simplification": self.spec.simplification,
            "gold": gold,
        });
        match lease.request(req).await {
            Ok(v) if v.get("task_desc").and_then(Value::as_str).is_some() => Ok((lease, v)),
            Ok(v) => {
                lease.kill();
                Err(EnvError(format!("ScienceWorld load answered without a task description: {v}")))
            }
            Err(e) => {
                lease.release(); // a refused load leaves the worker usable; a dead one is gone already
                Err(e)
            }
        }
    }
}

#[async_trait]
impl Environment for SciworldEnv {
    fn identity(&self) -> Value {
        self.spec.identity()
    }
    fn family(&self) -> Family {
        Family::Sciworld
    }
    fn action_rule(&self) -> ActionRule {
        ActionRule::Sciworld
    }
    fn splits(&self) -> Vec<String> {
        tasks::SPLITS.iter().map(|s| s.to_string()).collect()
    }
    fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        self.spec.tasks(split, limit)
    }
    async fn start(&self, task: &TaskInfo) -> Result<Box<dyn Episode>, EnvError> {
        let (lease, v) = self.load(task, false).await?;
        Ok(Box::new(SciworldEpisode {
            lease: Some(lease),
            task_text: v["task_desc"].as_str().unwrap_or_default().to_string(),
            tracker: Tracker::new(task.max_steps),
        }))
    }
}

/// The released loop's bookkeeping over simulator replies.
#[derive(Clone, Debug)]
struct Tracker {
    max_steps: u32,
    steps: u32,
    best: f64,
    success: bool,
    invalid_run: u32,
    done: bool,
    /// The last step's raw score.
    last: Option<f64>,
}

impl Tracker {
    fn new(max_steps: u32) -> Tracker {
        Tracker { max_steps, steps: 0, best: 0.0, success: false, invalid_run: 0, done: false, last: None }
    }

    /// Folds one step reply into the episode state.
    fn observe(&mut self, v: &Value) -> Option<StepOutcome> {
        let observation = v.get("observation")?.as_str()?.to_string();
        let raw = v.get("raw_score")?.as_f64()?;
        let completed = v.get("completed")?.as_bool()?;
        let moves = v.get("moves")?.as_u64()?;
        let score = (100.0 * raw).round() as i64;
        self.steps += 1;
        self.last = Some(raw);
        if raw > self.best {
            self.best = raw;
        }
        if score >= 100 {
            self.success = true;
        }
        let invalid = observation.contains(INVALID_OBSERVATION);
        self.invalid_run = if invalid { self.invalid_run + 1 } else { 0 };
        self.done = completed
            || score < 0
            || moves > u64::from(ENV_STEP_LIMIT)
            || self.invalid_run >= MAX_CONSECUTIVE_INVALID
            || self.steps >= self.max_steps;
        Some(StepOutcome { observation, reward: self.best.clamp(0.0, 1.0), done: self.done, success: self.success, invalid })
    }
}

struct SciworldEpisode {
    lease: Option<pool::Lease>,
    task_text: String,
    tracker: Tracker,
}

async fn step_on(lease: &mut pool::Lease, tracker: &mut Tracker, action: &str) -> Result<StepOutcome, EnvError> {
    let v = lease.request(json!({"op": "step", "action": action})).await?;
    match tracker.observe(&v) {
        Some(out) => Ok(out),
        None => {
            lease.kill();
            Err(EnvError(format!("ScienceWorld step answered an incomplete reply: {v}")))
        }
    }
}

#[async_trait]
impl Episode for SciworldEpisode {
    fn task_text(&self) -> String {
        self.task_text.clone()
    }
    fn last_score(&self) -> Option<f64> {
        self.tracker.last
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        if self.tracker.done {
            return Err(EnvError("step after the ScienceWorld episode ended".into()));
        }
        let lease = self.lease.as_mut().ok_or_else(|| EnvError("episode closed".into()))?;
        step_on(lease, &mut self.tracker, action).await
    }
    async fn close(mut self: Box<Self>) {
        if let Some(l) = self.lease.take() {
            l.release();
        }
    }
}

/// A gold episode: the simulator's gold action sequence replayed on a fresh
/// load of the task, with the observations it produced. Replayed in full
/// (no step limit; the caller truncates to `TaskInfo::max_steps` if it
/// wants the agent's budget), stopping early only if the simulator ends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoldTrajectory {
    pub task_id: String,
    pub task_type: String,
    /// The task text the agent sees (the task description).
    pub goal: String,
    /// The simulator's first observation (`look around` at reset); the
    /// released loop does not show it to the agent.
    pub initial_observation: String,
    /// (action, observation) per step.
    pub turns: Vec<(String, String)>,
    /// Best score seen, 0–1.
    pub reward: f64,
    /// The goal state was reached.
    pub success: bool,
    /// The simulator ended the episode (goal, negative score, move limit, or
    /// the invalid-action rule) before the gold sequence ran out.
    #[serde(default)]
    pub done: bool,
}

impl GoldTrajectory {
    /// The turns as the built-in world's [`Turn`](crate::env::builtin::Turn)s (no thoughts).
    pub fn to_turns(&self) -> Vec<crate::env::builtin::Turn> {
        self.turns
            .iter()
            .map(|(a, o)| crate::env::builtin::Turn { thought: None, action: a.clone(), observation: o.clone() })
            .collect()
    }
}

/// The gold trajectory of a task: loads it with `generateGoldPath=True`,
/// takes `get_gold_action_sequence()` and replays it on the same instance.
pub async fn gold_trajectory(env: &SciworldEnv, task: &TaskInfo) -> Result<GoldTrajectory, EnvError> {
    let (mut lease, v) = env.load(task, true).await?;
    let gold: Vec<String> = match v.get("gold").and_then(Value::as_array) {
        Some(a) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        None => {
            lease.release();
            return Err(EnvError(format!("ScienceWorld gave no gold sequence for `{}`", task.task_id)));
        }
    };
    if gold.first().is_some_and(|a| a.starts_with("ERROR")) {
        lease.release();
        return Err(EnvError(format!("ScienceWorld gold path for `{}`: {}", task.task_id, gold[0])));
    }
    let mut tracker = Tracker::new(u32::MAX);
    let mut turns = Vec::with_capacity(gold.len());
    let mut done = false;
    for a in gold {
        let out = step_on(&mut lease, &mut tracker, &a).await?;
        turns.push((a, out.observation));
        if out.done {
            done = true;
            break;
        }
    }
    lease.release();
    Ok(GoldTrajectory {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        goal: v["task_desc"].as_str().unwrap_or_default().to_string(),
        initial_observation: v.get("observation").and_then(Value::as_str).unwrap_or_default().to_string(),
        turns,
        reward: tracker.best.clamp(0.0, 1.0),
        success: tracker.success,
        done,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(obs: &str, raw: f64, completed: bool) -> Value {
        json!({"observation": obs, "raw_score": raw, "completed": completed, "moves": 1})
    }

    #[test]
    fn tracker_rules() {
        let mut t = Tracker::new(100);
        for i in 1..MAX_CONSECUTIVE_INVALID {
            let o = t.observe(&reply("No known action matches that input.", 0.0, false)).unwrap();
            assert!(o.invalid && !o.done, "step {i}");
        }
        assert!(!t.observe(&reply("ok", 0.5, false)).unwrap().done);
        let o = t.observe(&reply("ok", -1.0, true)).unwrap();
        assert!(o.done && !o.success && o.reward == 0.5);
        let mut t = Tracker::new(100);
        for _ in 0..MAX_CONSECUTIVE_INVALID - 1 {
            t.observe(&reply("No known action matches that input.", 0.0, false));
        }
        assert!(t.observe(&reply("No known action matches that input.", 0.0, false)).unwrap().done);
        let o = Tracker::new(1).observe(&reply("x", 1.0, true)).unwrap();
        assert!(o.done && o.success && o.reward == 1.0);
    }
}

fn task_info(spec: &SciworldEnvSpec, split: &str, t: &tasks::SciTask) -> TaskInfo {
    TaskInfo {
        task_id: t.task_id(),
        split: split.to_string(),
        task_type: t.name.clone(),
        icl_key: ICL_KEY.to_string(),
        max_steps: spec.max_steps.unwrap_or(t.max_steps),
    }
}
