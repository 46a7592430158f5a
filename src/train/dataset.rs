//! Training data as text, before any engine tokenises it: what a training
//! stage builds once and hands to a [`super::engine::TrainEngine`], and the
//! writers that put the same data in other engines' formats (LLaMA-Factory's
//! ShareGPT with a `dataset_info.json` entry, TRL's JSONL) for `pairs`'
//! exported datasets and `mpo-run export`.
//!
//! A prompt here is the whole user message (a planner prompt already
//! rendered from its template); the chat template is the engine's business.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::Message;

/// A prompt and the reply trained on (planner SFT and RFT).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub task_id: String,
    pub prompt: String,
    pub completion: String,
}

/// A prompt with a preferred and a dispreferred reply (DPO).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    pub task_id: String,
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    /// The plans' Monte Carlo scores Q, where the pair came from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_q: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_q: Option<f64>,
}

/// What a training stage trains on.
#[derive(Clone, Debug, PartialEq)]
pub enum Dataset {
    /// Whole conversations; the loss is on the assistant turns (agent SFT).
    Chat(Vec<Vec<Message>>),
    /// One user prompt, one assistant reply each (planner SFT, RFT).
    Completions(Vec<Completion>),
    /// Preference pairs (DPO).
    Preferences(Vec<Preference>),
}

impl Dataset {
    pub fn len(&self) -> usize {
        match self {
            Dataset::Chat(v) => v.len(),
            Dataset::Completions(v) => v.len(),
            Dataset::Preferences(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// LLaMA-Factory's ShareGPT rows of an SFT set (`conversations`: human
/// prompt, gpt reply).
pub fn llamafactory_sft(rows: &[Completion]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|c| {
            serde_json::json!({"conversations": [
                {"from": "human", "value": c.prompt}, {"from": "gpt", "value": c.completion}]})
        })
        .collect()
}

/// LLaMA-Factory's ShareGPT rows of a preference set (`ranking: true`).
pub fn llamafactory_dpo(rows: &[Preference]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|p| {
            serde_json::json!({
                "conversations": [{"from": "human", "value": p.prompt}],
                "chosen": {"from": "gpt", "value": p.chosen},
                "rejected": {"from": "gpt", "value": p.rejected},
            })
        })
        .collect()
}

/// The `dataset_info.json` entry of an SFT set in `file`.
pub fn llamafactory_sft_info(file: &str) -> serde_json::Value {
    serde_json::json!({"file_name": file, "formatting": "sharegpt", "columns": {"messages": "conversations"}})
}

/// The `dataset_info.json` entry of a preference set in `file`.
pub fn llamafactory_dpo_info(file: &str) -> serde_json::Value {
    serde_json::json!({"file_name": file, "formatting": "sharegpt", "ranking": true,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}})
}

fn user(text: &str) -> serde_json::Value {
    serde_json::json!([{"role": "user", "content": text}])
}

fn assistant(text: &str) -> serde_json::Value {
    serde_json::json!([{"role": "assistant", "content": text}])
}

/// TRL's conversational language-modelling rows of an SFT set
/// (`messages`: the user's prompt, the assistant's reply), with `task_id`.
/// Train with `assistant_only_loss=True` for mpo-run's loss (on the reply
/// and its end-of-turn only); [`trl_prompt_completion`] is the same data
/// as prompt-completion rows, which TRL masks without a training template.
pub fn trl_sft(rows: &[Completion]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|c| {
            serde_json::json!({"task_id": c.task_id, "messages": [
                {"role": "user", "content": c.prompt}, {"role": "assistant", "content": c.completion}]})
        })
        .collect()
}

/// TRL's conversational prompt-completion rows (`prompt`: the user's
/// message, `completion`: the assistant's), with `task_id`.
pub fn trl_prompt_completion(rows: &[Completion]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|c| serde_json::json!({"task_id": c.task_id, "prompt": user(&c.prompt), "completion": assistant(&c.completion)}))
        .collect()
}

/// TRL's conversational rows of whole conversations (`messages`).
pub fn trl_chat(conversations: &[Vec<Message>]) -> Vec<serde_json::Value> {
    conversations
        .iter()
        .map(|m| {
            serde_json::json!({ "messages": m })
        })
        .collect()
}

/// TRL's conversational preference rows (`prompt`: the user's message,
/// `chosen`/`rejected`: assistant messages), with `task_id` and, where
/// known, both plans' Q (`chosen_q`, `rejected_q`).
pub fn trl_dpo(rows: &[Preference]) -> Vec<serde_json::Value> {
    rows.iter()
        .map(|p| {
            let mut v = serde_json::json!({"task_id": p.task_id, "prompt": user(&p.prompt), "chosen": assistant(&p.chosen), "rejected": assistant(&p.rejected)});
            if let (Some(c), Some(r)) = (p.chosen_q, p.rejected_q) {
                v["chosen_q"] = c.into();
                v["rejected_q"] = r.into();
            }
            v
        })
        .collect()
}

/// Writes `rows` as one pretty JSON array (LLaMA-Factory's files).
pub fn write_json_array(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(rows)?).with_context(|| format!("writing {}", path.display()))
}

/// Writes `rows` as JSON lines (TRL's files).
pub fn write_json_lines(path: &Path, rows: &[serde_json::Value]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
