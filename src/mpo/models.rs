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
            None => self.config(),
            Some(k) => serde_json::json!({ "settings": self.keyed_spec(), "checkpoint": k }),
        }
    }

    /// The settings a node's config hashes: the trained weights enter the
    /// key through the input's key.
    pub fn config(&self) -> serde_json::Value {
        self.keyed_spec()
    }

    /// The settings as keys see them. A served local model has the key it
    /// has in-process (the weights and the sampling settings): how it is
    /// served (replicas, GPUs, ports, timeouts) changes no answer worth a
    /// recomputation. `serve.key = true` keys the engine and its args, and
    /// `send_seed = false` (which changes sampled answers) is keyed too.
    fn keyed_spec(&self) -> serde_json::Value {
        let ModelSpec::Local(l) = &self.spec else { return serde_json::to_value(&self.spec).unwrap_or_default() };
        let Some(s) = &l.serve else { return serde_json::to_value(&self.spec).unwrap_or_default() };
        let mut plain = l.clone();
        plain.serve = None;
        let mut v = serde_json::to_value(ModelSpec::Local(plain)).unwrap_or_default();
        let mut served = serde_json::Map::new();
        if s.key {
            served.insert("engine".into(), s.engine.clone().into());
            served.insert("args".into(), serde_json::json!(s.args));
            served.insert("command".into(), serde_json::json!(s.command));
        }
        if !s.send_seed {
            served.insert("send_seed".into(), false.into());
        }
        if !served.is_empty() {
            v["serve"] = served.into();
        }
        v
    }

    /// The key under which the run's model registry holds this model's
    /// server, when it is served: one server per weights and settings,
    /// shared by every node that generates from them, stopped when the
    /// last of them is settled (see `exec`).
    pub fn lease(&self) -> Option<String> {
        let ModelSpec::Local(l) = &self.spec else { return None };
        l.serve.as_ref()?;
        let weights = match (&self.input, &self.checkpoint) {
            (Some(_), Some(k)) => format!("{}@{k}", self.name),
            (Some(i), None) => format!("{}@input{i}", self.name),
            (None, _) => self.name.clone(),
        };
        Some(format!("{weights}:{}", serde_json::to_string(&self.spec).unwrap_or_default()))
    }

    /// Records the producing input's key (see [`crate::plan::Plan::build`]).
    pub fn bind(&mut self, input_keys: &[String]) {
        if let Some(i) = self.input {
            self.checkpoint = input_keys.get(i).cloned();
        }
    }

    /// The ready model.
    pub async fn resolve(&self, ctx: &NodeCtx) -> Result<Arc<dyn ChatModel>> {
        let lease = self.lease();
        let model = match self.input {
            None => ctx.models.get_as(lease.as_deref(), &self.name, &self.spec)?,
            Some(i) => {
                let input = ctx.inputs.get(i).ok_or_else(|| anyhow!("model `{}`: input {i} is missing", self.name))?;
                let ModelSpec::Local(l) = &self.spec else {
                    return Err(anyhow!("model `{}`: trained weights need a local model", self.name));
                };
                let spec = ModelSpec::Local(LocalModelConfig { path: Some(super::training::model_dir(&input.dir)), init: None, ..l.clone() });
                let name = format!("{}@{}", self.name, input.stage);
                ctx.models.get_as(lease.as_deref(), &name, &spec)?
            }
        };
        model.ready().await?;
        ctx.used(&self.name, &model).await;
        Ok(model)
    }
}
