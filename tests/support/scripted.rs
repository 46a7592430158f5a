//! Scripted chat models for end-to-end tests: replies are a fixed function
//! of the conversation, served by the fake OpenAI server over real HTTP.
//! (Test doubles for LLMs: no model can run here; the HTTP client, the
//! agent loop and the environment are the real ones.)
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use mpo_run::env::builtin::{expert_trajectory, Split, Trajectory};
use mpo_run::model::{Message, Role};

const TURN_MARK: &str = "Now, it's your turn and here is the task.\n";
const PLAN_MARK: &str = "This workflow maybe helpful for you to complete the task:\n";

/// Initial observation → expert trajectory, over every split.
fn expert_index() -> &'static HashMap<String, Trajectory> {
    static INDEX: OnceLock<HashMap<String, Trajectory>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut m = HashMap::new();
        for split in Split::ALL {
            for i in 0..split.size() {
                let t = expert_trajectory(split, i);
                m.insert(t.initial_observation.clone(), t);
            }
        }
        m
    })
}

/// The task text of an agent conversation (without an inserted plan).
pub fn task_of(messages: &[Message]) -> Option<String> {
    let first = messages.iter().find(|m| m.role == Role::User)?;
    // Released prompts mark the task; compact ones put it after the
    // instruction's paragraph.
    let rest = match first.content.split_once(TURN_MARK) {
        Some((_, r)) => r,
        None => first.content.split_once("\n\n")?.1,
    };
    Some(rest.split("\n\nThis workflow maybe helpful").next().unwrap_or(rest).to_string())
}

/// The plan inserted in the instruction, if any.
pub fn plan_of(messages: &[Message]) -> Option<String> {
    let first = messages.iter().find(|m| m.role == Role::User)?;
    Some(first.content.split_once(PLAN_MARK)?.1.to_string())
}

pub fn is_planner_prompt(messages: &[Message]) -> bool {
    messages.len() == 1 && messages[0].content.starts_with("Please generate a step-by-step workflow")
}

/// An agent that replays the built-in world's expert for the task.
pub fn expert_agent(messages: &[Message]) -> String {
    let Some(task) = task_of(messages) else { return "Action: look".into() };
    let Some(t) = expert_index().get(&task) else { return "Action: look".into() };
    let k = messages.iter().filter(|m| m.role == Role::Assistant).count();
    t.turns.get(k).map_or("Action: look".into(), |turn| turn.assistant_text())
}

/// An agent that never does anything useful.
pub fn lazy_agent(_: &[Message]) -> String {
    "Thought: I am not sure.\nAction: look".into()
}

/// A planner whose plans are good for even seeds and bad for odd ones
/// (greedy calls, without a seed, get a good plan).
pub fn planner(messages: &[Message], seed: Option<u64>) -> String {
    let task = messages[0].content.split("<task>").nth(1).and_then(|s| s.split("</task>").next()).unwrap_or("").trim().to_string();
    let quality = if seed.unwrap_or(0) % 2 == 0 { "good" } else { "bad" };
    format!("<workflow>\nStep 1: ({quality}, seed {}) Go to where the object of \"{task}\" may be placed.\nStep 2: Finish the task.\n</workflow>", seed.unwrap_or(0))
}

/// An explorer that succeeds exactly when the inserted plan is a good one.
pub fn plan_sensitive_agent(messages: &[Message]) -> String {
    match plan_of(messages) {
        Some(p) if p.contains("(good") => expert_agent(messages),
        _ => lazy_agent(messages),
    }
}

pub type Script = Arc<dyn Fn(&[Message]) -> String + Send + Sync>;
