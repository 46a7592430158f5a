//! The ReAct episode loop: one agent, one task, with or without a meta plan.
//!
//! Per step: the model replies (stop strings and max tokens from the model's
//! settings, as released); the action is parsed by the environment's rule;
//! a reply without an action is answered with the format-error observation
//! and costs a step; otherwise the action goes to the environment and its
//! observation (with the plan, for observation insertion, whatever the
//! observation says) is appended. With thought insertion every request ends
//! with the plan's assistant prefill, and the history keeps only what the
//! model wrote after it (the release's `call_with_workflow`). The episode
//! ends when the environment says done or at the task's step limit.
//!
//! Failures: a model error fails the episode as an item (it is retried on
//! the next run); an environment error is returned as such so the caller
//! can retry the episode from the start and finally record an environment
//! failure.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::parse::{parse_action, ActionRule};
use super::prompt::{effective_plan, observation_message, opening, PromptSet};
use crate::env::{EnvError, Environment, TaskInfo};
use crate::model::{ChatModel, ChatRequest, Message, ModelError};
use super::Insertion;

/// Switches for quirks of the released loops that shaped published numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quirks {
    /// ScienceWorld release: a format error resets the running best score
    /// to 0; later steps raise it again when their score exceeds it (the
    /// episode's reward is that running value at the end).
    pub zero_reward_on_format_error: bool,
}

/// The revision of the loop rules, for the item keys of episodes whose
/// bytes or reward revision 2 (issue 21: the prefill on every request, the
/// plan after every observation, empty plans, the quirk's reset) changed
/// under an unchanged prompt-set identity; `None` where it changed nothing
/// (no plan or a non-empty plan in the instruction, without the quirk), so
/// that those episodes keep their keys.
pub fn rules_revision(plan: Option<&str>, insertion: Insertion, quirks: Quirks) -> Option<u32> {
    let changed = quirks.zero_reward_on_format_error
        || plan == Some("")
        || (plan.is_some() && insertion != Insertion::Instruction);
    changed.then_some(2)
}

/// [`rules_revision`] for a stage's key, whose plans are not known yet:
/// `has_plans` — the stage inserts plans.
pub fn stage_rules_revision(has_plans: bool, insertion: Insertion, quirks: Quirks) -> Option<u32> {
    (quirks.zero_reward_on_format_error || (has_plans && insertion != Insertion::Instruction)).then_some(2)
}

/// The released ScienceWorld loop's running reward under
/// [`Quirks::zero_reward_on_format_error`]: the best step score, reset to 0
/// by a format error.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResettingBest(f64);

impl ResettingBest {
    pub fn format_error(&mut self) {
        self.0 = 0.0;
    }
    pub fn step(&mut self, score: f64) {
        if score > self.0 {
            self.0 = score;
        }
    }
    pub fn value(self) -> f64 {
        self.0.clamp(0.0, 1.0)
    }
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

/// An episode's session key: a hash of its opening messages (the task, the
/// plan, the prompt set) and a process-wide counter, so that two episodes
/// of one task (N rollouts of a plan) are two sessions, spread over the
/// replicas, while all turns of one go to one replica.
fn session_key(opening: &[Message]) -> u64 {
    use std::hash::{Hash, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in opening {
        m.content.hash(&mut h);
    }
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed).hash(&mut h);
    h.finish()
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
    let plan = effective_plan(spec.plan);
    let open = opening(spec.prompts, icl_key, &task_text, plan, spec.insertion)
        .map_err(|e| EpisodeError::Setup(format!("{e:#}")))?;
    let mut messages = open.messages;
    // Thought insertion: the same prefill ends every request.
    let prefill = open.prefill;
    let (mut reward, mut success, mut done) = (0.0, false, false);
    let (mut prompt_tokens, mut completion_tokens) = (0, 0);
    let mut quirk_reward = ResettingBest::default();
    let mut steps = 0u64;
    let session = session_key(&messages);
    while steps < task.max_steps as u64 && !done {
        let mut request = ChatRequest::new(messages.clone());
        request.params.temperature = Some(spec.temperature);
        request.params.seed = spec.seed.map(|s| s.wrapping_add(steps));
        request.prefill = prefill.clone();
        request.session = Some(session);
        let completion = model.chat(&request).await?;
        prompt_tokens += completion.prompt_tokens;
        completion_tokens += completion.completion_tokens;
        let reply = completion.texts.into_iter().next().unwrap_or_default();
        messages.push(Message::assistant(reply.clone()));
        steps += 1;
        match parse_action(&reply, rule) {
            None => {
                quirk_reward.format_error();
                messages.push(Message::user(format!("Observation: {}", rule.format_error())));
            }
            Some(action) => {
                let out = episode.step(&action).await?;
                reward = out.reward;
                success = out.success;
                done = out.done;
                quirk_reward.step(episode.last_score().unwrap_or(out.reward));
                messages.push(Message::user(observation_message(
                    spec.prompts,
                    &out.observation,
                    &task_text,
                    plan,
                    spec.insertion,
                    true,
                )));
            }
        }
    }
    if spec.quirks.zero_reward_on_format_error {
        reward = quirk_reward.value();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_revision_marks_only_the_episodes_it_changed() {
        let q = Quirks::default();
        let quirk = Quirks { zero_reward_on_format_error: true };
        assert_eq!(rules_revision(None, Insertion::Instruction, q), None);
        assert_eq!(rules_revision(Some("Step 1: a"), Insertion::Instruction, q), None);
        assert_eq!(rules_revision(None, Insertion::Thought, q), None);
        assert_eq!(rules_revision(Some(""), Insertion::Instruction, q), Some(2));
        assert_eq!(rules_revision(Some("Step 1: a"), Insertion::Thought, q), Some(2));
        assert_eq!(rules_revision(Some("Step 1: a"), Insertion::Observation, q), Some(2));
        assert_eq!(rules_revision(None, Insertion::Instruction, quirk), Some(2));
        assert_eq!(stage_rules_revision(false, Insertion::Thought, q), None);
        assert_eq!(stage_rules_revision(true, Insertion::Observation, q), Some(2));
    }

    #[test]
    fn the_quirk_resets_and_recovers() {
        let mut r = ResettingBest::default();
        r.step(0.5);
        r.format_error();
        assert_eq!(r.value(), 0.0);
        r.step(0.25);
        r.step(0.1);
        assert_eq!(r.value(), 0.25);
    }
}
