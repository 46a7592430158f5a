//! The ReAct episode loop: one agent, one task, with or without a meta plan.
//!
//! Per step: the model replies (stop strings and max tokens from the model's
//! settings, as released); the action is parsed by the environment's rule;
//! a reply without an action is answered with the format-error observation
//! and costs a step; otherwise the action goes to the environment and its
//! observation (with the plan, for observation insertion) is appended. The
//! episode ends when the environment says done or at the task's step limit.
//!
//! Failures: a model error fails the episode as an item (it is retried on
//! the next run); an environment error is returned as such so the caller
//! can retry the episode from the start and finally record an environment
//! failure.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::parse::{parse_action, ActionRule};
use super::prompt::{observation_message, opening, PromptSet};
use crate::env::{EnvError, Environment, TaskInfo};
use crate::model::{ChatModel, ChatRequest, Message, ModelError};
use super::Insertion;

/// Switches for quirks of the released loops that shaped published numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quirks {
    /// ScienceWorld release: a format error zeroes the episode's reward.
    pub zero_reward_on_format_error: bool,
}

/// How to run one episode.
#[derive(Clone, Debug)]
pub struct EpisodeSpec<'a> {
    pub prompts: &'a PromptSet,
    pub plan: Option<&'a str>,
    pub insertion: Insertion,
    pub temperature: f64,
    /// Base seed; step `k` uses `seed + k`. `None` leaves sampling unseeded.
    pub seed: Option<u64>,
    pub quirks: Quirks,
}

/// What an episode came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpisodeResult {
    pub reward: f64,
    pub success: bool,
    pub steps: u64,
    /// `success`, `done` (the env ended it otherwise), `step_limit`.
    pub finish_reason: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub wall_ms: u64,
    pub messages: Vec<Message>,
    /// The task type the environment named as the episode started, when
    /// the task list could not know it (AgentGym servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_type: Option<String>,
}

/// Why an episode has no result.
#[derive(Debug, thiserror::Error)]
pub enum EpisodeError {
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("model failed: {0}")]
    Model(#[from] ModelError),
    #[error("{0}")]
    Setup(String),
}

/// Runs one episode of `model` on `task`.
pub async fn run_episode(
    model: &dyn ChatModel,
    env: &dyn Environment,
    task: &TaskInfo,
    spec: &EpisodeSpec<'_>,
) -> Result<EpisodeResult, EpisodeError> {
    let started = Instant::now();
    let mut episode = env.start(task).await?;
    let result = drive(model, env.action_rule(), episode.as_mut(), task, spec).await;
    episode.close().await;
    let mut result = result?;
    result.wall_ms = started.elapsed().as_millis() as u64;
    Ok(result)
}

async fn drive(
    model: &dyn ChatModel,
    rule: ActionRule,
    episode: &mut dyn crate::env::Episode,
    task: &TaskInfo,
    spec: &EpisodeSpec<'_>,
) -> Result<EpisodeResult, EpisodeError> {
    let learned = episode.learned_task_type();
    let icl_key = learned.as_ref().map_or(task.icl_key.as_str(), |(_, k)| k.as_str());
    let task_text = episode.task_text();
    let open = opening(spec.prompts, icl_key, &task_text, spec.plan, spec.insertion)
        .map_err(|e| EpisodeError::Setup(format!("{e:#}")))?;
    let mut messages = open.messages;
    let mut prefill = open.prefill;
    let (mut reward, mut success, mut done) = (0.0, false, false);
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let mut format_error = false;
    let mut steps = 0u64;
    while steps < task.max_steps as u64 && !done {
        let mut request = ChatRequest::new(messages.clone());
        request.params.temperature = Some(spec.temperature);
        request.params.seed = spec.seed.map(|s| s.wrapping_add(steps));
        request.prefill = prefill.take();
        let completion = model.chat(&request).await?;
        prompt_tokens += completion.prompt_tokens;
        completion_tokens += completion.completion_tokens;
        let reply = completion.texts.into_iter().next().unwrap_or_default();
        messages.push(Message::assistant(reply.clone()));
        steps += 1;
        match parse_action(&reply, rule) {
            None => {
                format_error = true;
                messages.push(Message::user(format!("Observation: {}", rule.format_error())));
            }
            Some(action) => {
                let out = episode.step(&action).await?;
                reward = out.reward;
                success = out.success;
                done = out.done;
                let ok = !out.invalid;
                messages.push(Message::user(observation_message(
                    spec.prompts,
                    &out.observation,
                    &task_text,
                    spec.plan,
                    spec.insertion,
                    ok,
                )));
            }
        }
    }
    if format_error && spec.quirks.zero_reward_on_format_error {
        reward = 0.0;
    }
    // An environment that enforces the same step limit says "done" at the
    // limit: that is still the step limit, not the environment ending it.
    let finish_reason = if success {
        "success"
    } else if done && steps < task.max_steps as u64 {
        "done"
    } else {
        "step_limit"
    };
    Ok(EpisodeResult {
        reward,
        success,
        steps,
        finish_reason: finish_reason.to_string(),
        prompt_tokens,
        completion_tokens,
        wall_ms: 0,
        messages,
        task_type: learned.map(|(t, _)| t),
    })
}
