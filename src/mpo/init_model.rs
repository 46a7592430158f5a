//! Stage `init_model`: a model declared with `init = {…}`, made from a seed.
//!
//! - In: `expert` (+ `seed_plans`): the tokenizer corpus (the world's and
//!   the planner's texts of the train split).
//! - Out: `model/` (a Hugging Face directory: config, safetensors, the
//!   byte-level BPE tokenizer trained on the corpus, chat template) and
//!   `init.json` (vocabulary size, parameters, corpus size).
//! - Key: the model's name and `init` settings, `experiment.seed`, the
//!   prompt set, and the inputs' keys.

use std::path::PathBuf;

use anyhow::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::common::prompt_set;
use crate::agent::prompt::Family;
use crate::model::local::{init_model, LocalModelConfig};
use crate::stage::{Items, NodeCtx, Slot, Stage, StageOutput};
use crate::store::ArtifactWriter;

pub const NAME: &str = "init_model";
pub const VERSION: u32 = super::training::VERSION;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitWork {
    pub model_name: String,
    pub settings: LocalModelConfig,
    pub seed: u64,
    pub prompts: String,
    pub family: Family,
    /// The `expert` artifact (its episodes' texts).
    pub expert: Slot,
    /// The `seed_plans` artifact, when the spec has a planner.
    pub seeds: Option<Slot>,
}

#[async_trait]
impl Stage for InitWork {
    fn name(&self) -> &'static str {
        NAME
    }
    fn version(&self) -> u32 {
        VERSION
    }
    fn config(&self) -> serde_json::Value {
        serde_json::json!({ "model": self.model_name, "init": self.settings.init, "seed": self.seed, "prompts": self.prompts })
    }
    fn items(&self, _inputs: &[Option<PathBuf>]) -> Result<Items> {
        Ok(Items::Whole("one job (tokenizer and weights from the seed)"))
    }
    async fn run(&self, ctx: &NodeCtx, writer: &ArtifactWriter) -> Result<StageOutput> {
        let texts = corpus(ctx, self)?;
        // Each model its own draw, even when two share a shape.
        let seed = super::common::derive_seed(self.seed, &[NAME, &self.model_name]);
        let (settings, dir) = (self.settings.clone(), writer.path("model"));
        let n = texts.len();
        let stats = tokio::task::spawn_blocking(move || -> Result<serde_json::Value> {
            let model = init_model(&settings, &texts, seed)?;
            model.save(&dir)?;
            let params: usize = crate::train::optim::param_names(model.net()).iter().map(|(_, _, n)| n).sum();
            Ok(serde_json::json!({
                "vocab_size": model.arch().vocab_size, "parameters": params, "corpus_texts": n,
            }))
        })
        .await??;
        tracing::info!("init_model `{}`: {stats}", self.model_name);
        writer.write_json("init.json", &stats)?;
        Ok(StageOutput::new(0, 1).file("model/model.safetensors", 1))
    }
}

/// The tokenizer corpus of `init` models: the agent's and the planner's
/// texts of the train split (instruction, observations, actions, plans).
fn corpus(ctx: &NodeCtx, w: &InitWork) -> Result<Vec<String>> {
    let prompts = prompt_set(&w.prompts, w.family)?;
    let mut out = vec![prompts.instruction.clone(), prompts.planner.clone()];
    for examples in prompts.icl.values() {
        for ex in examples {
            out.extend(ex.iter().map(|m| m.content.clone()));
        }
    }
    for t in super::expert::read_trajectories(ctx.input(w.expert)?)? {
        out.push(t.initial_observation.clone());
        for turn in &t.turns {
            out.push(turn.assistant_text());
            out.push(format!("Observation: {}", turn.observation));
        }
    }
    if let Some(slot) = w.seeds {
        for s in super::seed_plans::read_seed_set(ctx.input(slot)?)? {
            out.push(prompts.planner_prompt(&s.task));
            out.push(s.plan);
        }
    }
    Ok(out)
}
