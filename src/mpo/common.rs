//! Pieces shared by the model-calling stages: seeds, plan extraction,
//! prompt sets, and the episode item every rollout stage records.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::agent::episode::{run_episode, EpisodeResult, EpisodeSpec, Quirks};
use crate::agent::prompt::{Family, IclFormat, PromptSet};
use crate::env::{Environment, TaskInfo};
use crate::model::{ChatModel, ChatRequest, Message};
use crate::spec::Insertion;
use crate::store::table::EpisodeRow;

/// The item journal of episodes: `mc_rollouts` and `eval` share it, so
/// the same episode (same agent, env, task, plan, seed) never runs twice.
pub const EPISODE_JOURNAL: &str = "episodes";

/// A seed derived from the experiment seed and a path of names/indices.
pub fn derive_seed(base: u64, parts: &[&str]) -> u64 {
    let h = blake3::hash(format!("{base}:{}", parts.join("/")).as_bytes());
    // Keep seeds within i64 so every server accepts them.
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) >> 1
}

/// The prompt set a spec names (`released`, `paper`, `compact` or a
/// directory), with `#conversation` for ETO's multi-turn example format
/// (`experiment.icl_format`).
pub fn prompt_set(name: &str, family: Family) -> Result<PromptSet> {
    let (base, format) = IclFormat::split_name(name);
    let mut set = match base {
        "released" | "paper" | "compact" => PromptSet::embedded(base, family)?,
        dir => PromptSet::from_dir(Path::new(dir), family)?,
    };
    set.icl_format = format;
    Ok(set)
}

/// The identity of a prompt set for item keys: its name and revision for
/// embedded sets, its content hash for a directory; `#conversation` for the
/// conversation format.
///
/// Revisions: `compact@2` restates the task after every observation;
/// `released@2` and `paper@2` (and `rules@2` in a directory's hash) follow
/// the release byte for byte (issue 21: the example join, the planner given
/// the environment's task text, plans extracted from and trained inside
/// the planner prompt's tags).
pub fn prompt_identity(set: &PromptSet) -> String {
    let base = match set.name.as_str() {
        "released" | "paper" => format!("{}@2", set.name),
        "compact" => "compact@2".into(),
        _ => {
            let mut text = format!("rules@2\n{}\n{:?}\n{}", set.instruction, set.icl, set.planner);
            if set.observation != crate::agent::prompt::PLAIN_OBSERVATION {
                text.push_str(&format!("\n{}", set.observation));
            }
            format!("dir:{}", &blake3::hash(text.as_bytes()).to_hex()[..16])
        }
    };
    format!("{base}{}", set.icl_format.suffix())
}

/// What a stage's key records of its prompt set beyond the name it is
/// configured with: the identity, where the name does not pin it (a
/// directory; `released` and `paper`, revised by issue 21; any set in the
/// conversation format). `None` for `compact`: its revision 2 reached item
/// keys only, and its stages keep their keys.
pub fn prompt_revision(name: &str, family: Family) -> Option<String> {
    let id = prompt_identity(&prompt_set(name, family).ok()?);
    (id != name && id != "compact@2").then_some(id)
}

/// Adds [`prompt_revision`] to a stage's config as `prompt_id`.
pub fn record_prompt_revision(config: &mut serde_json::Value, name: &str, family: Family) {
    if let Some(id) = prompt_revision(name, family) {
        config["prompt_id"] = id.into();
    }
}

/// One plan sampled from a planner: a greedy or seeded chat call with the
/// planner prompt.
pub async fn sample_plan(
    model: &dyn ChatModel,
    prompts: &PromptSet,
    task_text: &str,
    temperature: f64,
    seed: Option<u64>,
    max_tokens: u32,
) -> Result<(String, String)> {
    let mut req = ChatRequest::new(vec![Message::user(prompts.planner_prompt(task_text))]);
    req.params.temperature = Some(temperature);
    req.params.seed = seed;
    req.params.max_tokens = Some(max_tokens);
    // The planner writes several lines: the agent's stop strings must not cut it.
    let completion = model.chat(&req).await.map_err(|e| anyhow!("planner call failed: {e}"))?;
    let reply = completion.texts.into_iter().next().unwrap_or_default();
    if reply.trim().is_empty() {
        // A (bad) answer all the same: recorded as an empty plan, which
        // scores and pairs like any other.
        tracing::warn!("the planner answered with an empty plan");
    }
    Ok((prompts.extract_plan(&reply), reply))
}

/// What a planner-calling stage needs: the env, the model (ready), the
/// prompt set and its identity.
pub async fn planner_setup(
    ctx: &crate::stage::NodeCtx,
    env: &crate::spec::EnvSpec,
    model: &super::models::ModelRef,
    prompts: &str,
) -> Result<(Arc<dyn Environment>, Arc<dyn ChatModel>, Arc<PromptSet>, String)> {
    let env = ctx.envs.get(env).await?;
    let model = model.resolve(ctx).await?;
    let prompts = Arc::new(prompt_set(prompts, env.family())?);
    let pid = prompt_identity(&prompts);
    Ok((env, model, prompts, pid))
}

/// The goal of `task` (the judge's task description).
pub async fn planner_goal(env: &dyn Environment, task: &TaskInfo) -> Result<String> {
    Ok(planner_task_text(&env.task_text(task).await?))
}

/// What the planner of `prompts` is given for `task`: the environment's
/// task text, or its goal for `compact` ([`PromptSet::planner_task`]).
pub async fn planner_input(env: &dyn Environment, task: &TaskInfo, prompts: &PromptSet) -> Result<String> {
    Ok(prompts.planner_task(&env.task_text(task).await?))
}

/// The goal line of a task text (`Your task is to: …` → `…`), else the
/// whole text.
pub fn planner_task_text(task_text: &str) -> String {
    crate::agent::prompt::task_goal(task_text)
}

/// An episode as journaled: the result, or an environment failure after
/// the retries ran out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpisodeItem {
    pub result: Option<EpisodeResult>,
    pub env_failure: Option<String>,
    /// When the episode finished or gave up (the `finished_at` column,
    /// #26); absent in items journaled before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Runs an episode, retrying from the start when the environment fails.
/// Model errors fail the item (a rerun retries it).
#[allow(clippy::too_many_arguments)]
pub async fn episode_item(
    model: Arc<dyn ChatModel>,
    env: Arc<dyn Environment>,
    task: TaskInfo,
    prompts: Arc<PromptSet>,
    plan: Option<String>,
    insertion: Insertion,
    temperature: f64,
    seed: Option<u64>,
    env_retries: u32,
    quirks: Quirks,
) -> Result<serde_json::Value> {
    let spec = EpisodeSpec { prompts: &prompts, plan: plan.as_deref(), insertion, temperature, seed, quirks };
    let mut last = String::new();
    for _ in 0..=env_retries {
        match run_episode(model.as_ref(), env.as_ref(), &task, &spec).await {
            Ok(r) => {
                return Ok(serde_json::to_value(EpisodeItem { result: Some(r), env_failure: None, finished_at: Some(crate::store::table::now()) })?)
            }
            Err(crate::agent::episode::EpisodeError::Env(e)) => {
                tracing::warn!("task `{}`: {e}; retrying the episode from the start", task.task_id);
                last = e.to_string();
            }
            Err(e) => return Err(anyhow!("task `{}`: {e}", task.task_id)),
        }
    }
    Ok(serde_json::to_value(EpisodeItem { result: None, env_failure: Some(last), finished_at: Some(crate::store::table::now()) })?)
}

/// Fields of an episode row that do not come from the episode itself.
pub struct RowContext<'a> {
    pub stage: &'a str,
    pub env: &'a str,
    pub agent: &'a str,
    pub planner: &'a str,
    pub insertion: Insertion,
    pub temperature: f64,
}

/// The `episodes` row of a journaled episode item.
pub fn episode_row(
    ctx: &RowContext<'_>,
    task: &TaskInfo,
    item: &serde_json::Value,
    plan: Option<(&str, &str)>,
    rollout: u64,
    seed: Option<u64>,
) -> Result<EpisodeRow> {
    let item: EpisodeItem = serde_json::from_value(item.clone()).context("malformed episode item")?;
    let (reward, success, steps, finish, pt, ct, wall, messages) = match &item.result {
        Some(r) => (
            r.reward,
            r.success,
            r.steps,
            r.finish_reason.clone(),
            r.prompt_tokens,
            r.completion_tokens,
            r.wall_ms,
            serde_json::to_string(&r.messages)?,
        ),
        None => (0.0, false, 0, "env_failure".to_string(), 0, 0, 0, "[]".to_string()),
    };
    Ok(EpisodeRow {
        stage: ctx.stage.into(),
        env: ctx.env.into(),
        split: task.split.clone(),
        task_id: task.task_id.clone(),
        task_type: item.result.as_ref().and_then(|r| r.task_type.clone()).unwrap_or_else(|| task.task_type.clone()),
        agent: ctx.agent.into(),
        planner: ctx.planner.into(),
        insertion: if plan.is_some() { insertion_name(ctx.insertion).into() } else { "none".into() },
        plan_id: plan.map(|(id, _)| id.to_string()),
        rollout,
        seed,
        temperature: ctx.temperature,
        reward,
        success,
        steps,
        finish_reason: finish,
        prompt_tokens: pt,
        completion_tokens: ct,
        wall_ms: wall,
        finished_at: item.finished_at,
        plan: plan.map(|(_, text)| text.to_string()),
        messages,
    })
}

pub fn insertion_name(i: Insertion) -> &'static str {
    match i {
        Insertion::Instruction => "instruction",
        Insertion::Thought => "thought",
        Insertion::Observation => "observation",
    }
}

/// Writes one JSON object per line.
pub fn write_jsonl<T: Serialize>(path: &std::path::Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(path, text)?;
    Ok(())
}

/// Reads a file written by [`write_jsonl`].
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    text.lines().map(|l| serde_json::from_str(l).with_context(|| format!("malformed line in `{}`", path.display()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_revised_and_carry_the_format() {
        let id = |n: &str| prompt_identity(&prompt_set(n, Family::Alfworld).unwrap());
        assert_eq!(id("released"), "released@2");
        assert_eq!(id("paper"), "paper@2");
        assert_eq!(id("compact"), "compact@2");
        assert_eq!(id("released#conversation"), "released@2#conversation");
        assert_eq!(prompt_revision("compact", Family::Alfworld), None);
        assert_eq!(prompt_revision("released", Family::Alfworld).as_deref(), Some("released@2"));
        assert_eq!(prompt_revision("compact#conversation", Family::Alfworld).as_deref(), Some("compact@2#conversation"));
        assert_eq!(prompt_set("released#conversation", Family::Alfworld).unwrap().icl_format, IclFormat::Conversation);
    }

    #[test]
    fn planner_sees_the_goal() {
        assert_eq!(planner_task_text("You are in the middle of a room.\nYour task is to: put a mug in cabinet."), "put a mug in cabinet.");
        assert_eq!(planner_task_text("boil water"), "boil water");
    }

    #[test]
    fn seeds_are_stable_and_distinct() {
        assert_eq!(derive_seed(0, &["a", "1"]), derive_seed(0, &["a", "1"]));
        assert_ne!(derive_seed(0, &["a", "1"]), derive_seed(0, &["a", "2"]));
        assert!(derive_seed(7, &["x"]) <= i64::MAX as u64);
    }
}
