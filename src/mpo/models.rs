//! Which weights a stage's model is: a model of the spec as declared, or
//! the checkpoint another stage of the DAG produced (`init_model`,
//! `agent_sft`, `sft`, `dpo`, `rft`), loaded with the declared model's
//! sampling settings.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use crate::stage::NodeCtx;
use crate::model::local::LocalModelConfig;
use crate::model::ChatModel;
use crate::spec::ModelSpec;

/// A model as a stage uses it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelRef {
    /// The name in `[models]` (for trained planners: the base's name).
    pub name: String,
    pub spec: ModelSpec,
    /// Index, in the node's inputs, of the stage whose `model/` directory
    /// holds the weights.
    pub input: Option<usize>,
    /// That input's cache key (bound when the plan is built).
    pub checkpoint: Option<String>,
}

impl ModelRef {
    pub fn declared(name: &str, spec: &ModelSpec) -> Self {
        Self { name: name.to_string(), spec: spec.clone(), input: None, checkpoint: None }
    }

    /// The weights produced by input `input` of the node, with `spec`'s
    /// settings (a local model; a served one cannot take trained weights).
    pub fn trained(name: &str, spec: &ModelSpec, input: usize) -> Self {
        let spec = match spec {
            ModelSpec::Local(l) => ModelSpec::Local(LocalModelConfig { path: None, init: None, ..l.clone() }),
            ModelSpec::Openai(_) => ModelSpec::Local(LocalModelConfig::default()),
        };
        Self { name: name.to_string(), spec, input: Some(input), checkpoint: None }
    }

    /// What identifies the model's answers in item keys: the declared
    /// settings, plus the checkpoint's key for trained weights.
    pub fn identity(&self) -> serde_json::Value {
        match &self.checkpoint {
            None => serde_json::to_value(&self.spec).unwrap_or_default(),
            Some(k) => serde_json::json!({ "settings": self.spec, "checkpoint": k }),
        }
    }

    /// The settings a node's config hashes: the trained weights enter the
    /// key through the input's key.
    pub fn config(&self) -> serde_json::Value {
        serde_json::to_value(&self.spec).unwrap_or_default()
    }

    /// Records the producing input's key (see [`crate::plan::Plan::build`]).
    pub fn bind(&mut self, input_keys: &[String]) {
        if let Some(i) = self.input {
            self.checkpoint = input_keys.get(i).cloned();
        }
    }

    /// The ready model.
    pub async fn resolve(&self, ctx: &NodeCtx) -> Result<Arc<dyn ChatModel>> {
        let model = match self.input {
            None => ctx.models.get(&self.name, &self.spec)?,
            Some(i) => {
                let input = ctx.inputs.get(i).ok_or_else(|| anyhow!("model `{}`: input {i} is missing", self.name))?;
                let ModelSpec::Local(l) = &self.spec else {
                    return Err(anyhow!("model `{}`: trained weights need a local model", self.name));
                };
                let spec = ModelSpec::Local(LocalModelConfig { path: Some(super::training::model_dir(&input.dir)), init: None, ..l.clone() });
                let name = format!("{}@{}", self.name, input.stage);
                ctx.models.get(&name, &spec)?
            }
        };
        model.ready().await?;
        Ok(model)
    }
}
