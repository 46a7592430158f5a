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

/// TRL's rows of an SFT set (`prompt`/`completion`).
pub fn trl_sft(rows: &[Completion]) -> Vec<serde_json::Value> {
    rows.iter().map(|c| serde_json::json!({"prompt": c.prompt, "completion": c.completion})).collect()
}

/// TRL's rows of a preference set (`prompt`/`chosen`/`rejected`).
pub fn trl_dpo(rows: &[Preference]) -> Vec<serde_json::Value> {
    rows.iter().map(|p| serde_json::json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected})).collect()
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
