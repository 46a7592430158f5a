//! Chat models: one trait for every kind of model the agent loop, the planner
//! stages and the judge talk to.
//!
//! Kinds: `openai` (OpenAI-compatible HTTP, [`openai`]) and, later, `local`
//! (burn). A model is identified by [`ChatModel::identity`], a stable string
//! that goes into item cache keys (never an API key or a URL with secrets).

use serde::{Deserialize, Serialize};

pub mod local;
pub mod openai;
pub mod serve;
mod served;

pub use served::Served;

/// Who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self { role: Role::System, content: content.into() }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self { role: Role::User, content: content.into() }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self { role: Role::Assistant, content: content.into() }
    }
}

/// Sampling parameters of one request. `None` means "the model's default
/// from the spec".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: Option<u32>,
    /// Extra stop strings, added to the model's own.
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    /// Number of completions wanted for this prompt (M plans in one call).
    pub n: u32,
}

/// One chat-completion request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub params: SamplingParams,
    /// Text of a trailing assistant message that the model continues
    /// ("thought" insertion). Only the continuation is returned.
    pub prefill: Option<String>,
    /// The conversation this request continues (one episode): served
    /// models send every request of a session to the same replica, whose
    /// prefix cache holds the conversation so far. Never changes answers.
    pub session: Option<u64>,
}

impl ChatRequest {
    pub fn new(messages: Vec<Message>) -> Self {
        Self { messages, params: SamplingParams { n: 1, ..Default::default() }, prefill: None, session: None }
    }
}

/// What a model answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// `n` completions, in order.
    pub texts: Vec<String>,
    /// Per completion: `stop`, `length`, …
    pub finish_reasons: Vec<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Wall time of the successful call, milliseconds (retries included).
    pub wall_ms: u64,
}

/// Errors of one call. A model error fails that item, never the run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}")]
    Transport(String),
    #[error("endpoint `{endpoint}` answered HTTP {status}: {body}")]
    Status { endpoint: String, status: u16, body: String },
    #[error("malformed response from `{endpoint}`: {detail}")]
    Malformed { endpoint: String, detail: String },
    #[error("gave up after {attempts} attempts; last error: {last}")]
    RetriesExhausted { attempts: u32, last: String },
    #[error("no endpoint is ready: {0}")]
    NotReady(String),
    #[error("{0}")]
    Other(String),
}

/// A chat model. Implementations are cheap to share (`Arc<dyn ChatModel>`)
/// and safe to call from many tasks at once.
#[async_trait::async_trait]
pub trait ChatModel: Send + Sync {
    /// Stable identity for cache keys: kind, model name and every setting
    /// that changes what it answers (never secrets).
    fn identity(&self) -> String;
    async fn chat(&self, request: &ChatRequest) -> Result<Completion, ModelError>;
    /// Waits until the model can answer (a just-started server); the default
    /// is ready at once.
    async fn ready(&self) -> Result<(), ModelError> {
        Ok(())
    }
    /// The serving engine's prefix-cache counters `(queried, hit)` tokens
    /// so far, for models served by an engine that exposes them (vLLM's
    /// `/metrics`); `None` for the others.
    async fn prefix_cache(&self) -> Option<(f64, f64)> {
        None
    }
}

/// Builds the models a run needs, once each (keyed by name and settings),
/// shared by every stage of the run. Served models ([`serve`]) are started
/// here and stopped by [`Registry::release`] or when the registry goes.
#[derive(Default)]
pub struct Registry {
    cache: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<dyn ChatModel>>>,
    servers: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<serve::Server>>>,
}

impl Registry {
    pub fn get(&self, name: &str, spec: &ModelSpec) -> Result<std::sync::Arc<dyn ChatModel>, ModelError> {
        self.get_as(None, name, spec)
    }

    /// The model, under `lease` (a served model's key, see
    /// `mpo::models::ModelRef::lease`) when given.
    pub fn get_as(&self, lease: Option<&str>, name: &str, spec: &ModelSpec) -> Result<std::sync::Arc<dyn ChatModel>, ModelError> {
        let key = match lease {
            Some(l) => l.to_string(),
            None => format!("{name}:{}", serde_json::to_string(spec).unwrap_or_default()),
        };
        let mut cache = self.cache.lock().expect("model registry poisoned");
        if let Some(m) = cache.get(&key) {
            return Ok(m.clone());
        }
        let model: std::sync::Arc<dyn ChatModel> = match spec {
            ModelSpec::Openai(cfg) => std::sync::Arc::new(openai::OpenAiClient::new(name, cfg.clone())?),
            ModelSpec::Local(cfg) if cfg.serve.is_some() => {
                let served = Served::start(name, cfg)?;
                self.servers.lock().expect("model registry poisoned").insert(key.clone(), served.server());
                std::sync::Arc::new(served)
            }
            ModelSpec::Local(cfg) => std::sync::Arc::new(
                local::LocalModel::from_config(cfg).map_err(|e| ModelError::Other(format!("model `{name}`: {e:#}")))?,
            ),
        };
        cache.insert(key, model.clone());
        Ok(model)
    }

    /// Stops the server of the served model under `lease`, if one runs: no
    /// remaining node needs it. A later `get_as` starts it again.
    pub fn release(&self, lease: &str) {
        self.cache.lock().expect("model registry poisoned").remove(lease);
        let server = self.servers.lock().expect("model registry poisoned").remove(lease);
        if let Some(server) = server {
            tracing::info!(target: "engine", "serve {}: no remaining stage needs it", server.name());
            server.stop();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for (_, s) in self.servers.lock().expect("model registry poisoned").drain() {
            s.stop();
        }
    }
}

/// `[models.NAME]`: a chat model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelSpec {
    /// An OpenAI-compatible chat-completions endpoint (vLLM, SGLang, …).
    Openai(openai::OpenAiConfig),
    /// A Llama/Qwen2-architecture model run in-process with burn, from a
    /// Hugging Face directory (`path`).
    Local(local::LocalModelConfig),
}

impl ModelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Openai(_) => "openai",
            ModelSpec::Local(_) => "local",
        }
    }
}

