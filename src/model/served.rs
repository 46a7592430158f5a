//! A local model generated from by a managed server ([`super::serve`]):
//! the OpenAI client over the server's replicas, with the local model's
//! sampling settings.

use std::sync::Arc;

use super::local::LocalModelConfig;
use super::openai::{OpenAiClient, OpenAiConfig, PrefillMode};
use super::serve::{ServeRequest, Server};
use super::local::Precision;
use super::{ChatModel, ChatRequest, Completion, ModelError};

pub struct Served {
    name: String,
    server: Arc<Server>,
    client: OpenAiClient,
    ready: tokio::sync::OnceCell<()>,
    http: reqwest::Client,
}

impl Served {
    /// Starts the server of the local model `cfg` (its `serve` set) and the
    /// client over its replicas.
    pub fn start(name: &str, cfg: &LocalModelConfig) -> Result<Served, ModelError> {
        let serve = cfg.serve.as_ref().ok_or_else(|| ModelError::Other(format!("model `{name}` has no `serve`")))?;
        let dir = cfg.path.clone().ok_or_else(|| ModelError::Other(format!("[models.{name}]: a served model needs `path`")))?;
        let req = ServeRequest {
            name: name.to_string(),
            dir: std::path::absolute(&dir).unwrap_or(dir),
            dtype: match cfg.precision {
                Precision::Bf16 => "bfloat16",
                _ => "float32",
            },
            seed: cfg.seed,
        };
        let server = Arc::new(Server::start(&req, serve)?);
        let mut oc = OpenAiConfig::with_pool(server.urls(), name);
        oc.max_concurrency = serve.max_concurrency;
        oc.timeout_s = serve.timeout_s;
        oc.max_tokens = cfg.max_tokens;
        oc.temperature = cfg.temperature;
        oc.top_p = cfg.top_p;
        oc.stop = cfg.stop.clone();
        oc.seed = Some(cfg.seed);
        oc.send_seed = serve.send_seed;
        oc.prefill = PrefillMode::Vllm;
        // A replica that dies is restarted: calls wait for it as long as a
        // start may take, with retries enough to span it.
        oc.dead_after_s = serve.ready_timeout_s;
        oc.max_retries = 30;
        oc.retry_backoff_max_s = 10.0;
        oc.cooldown_s = 1.0;
        if cfg.top_k > 0 {
            oc.extra_body.insert("top_k".into(), serde_json::json!(cfg.top_k));
        }
        let client = OpenAiClient::new(name, oc)?;
        Ok(Served { name: name.to_string(), server, client, ready: tokio::sync::OnceCell::new(), http: reqwest::Client::new() })
    }

    pub fn server(&self) -> Arc<Server> {
        self.server.clone()
    }
}

#[async_trait::async_trait]
impl ChatModel for Served {
    fn identity(&self) -> String {
        format!("served:{}", self.client.identity())
    }

    async fn ready(&self) -> Result<(), ModelError> {
        let (http, name) = (&self.http, &self.name);
        self.ready
            .get_or_try_init(|| self.server.wait_ready(|url| probe(http, url, name)))
            .await
            .map(|_| ())
    }

    async fn chat(&self, request: &ChatRequest) -> Result<Completion, ModelError> {
        if let Some(why) = self.server.failed() {
            return Err(ModelError::Other(why));
        }
        match self.client.chat(request).await {
            Ok(c) => Ok(c),
            Err(e) => match self.server.failed() {
                Some(why) => Err(ModelError::Other(why)),
                None => Err(e),
            },
        }
    }

    async fn prefix_cache(&self) -> Option<(f64, f64)> {
        self.server.prefix_cache(&self.http).await
    }
}

/// Whether the replica at `url` lists its models and answers a 1-token
/// chat request (a server can list a model and die on the first request,
/// e.g. a kernel its build lacks); why not, otherwise. Quiet: a replica
/// that is still loading refuses connections for a while.
async fn probe(http: &reqwest::Client, url: String, name: &str) -> Result<(), String> {
    let models = http.get(format!("{url}/models")).timeout(std::time::Duration::from_secs(5)).send().await.map_err(|e| format!("GET {url}/models: {e}"))?;
    if !models.status().is_success() {
        return Err(format!("GET {url}/models answered HTTP {}", models.status()));
    }
    let body = serde_json::json!({
        "model": name,
        "messages": [{"role": "user", "content": "Hello"}],
        "max_tokens": 1,
        "temperature": 0.0,
    });
    let resp = http
        .post(format!("{url}/chat/completions"))
        .header("X-Mpo-Run-Probe", "1")
        .json(&body)
        .timeout(std::time::Duration::from_secs(120))
        .send()
        .await
        .map_err(|e| format!("a 1-token chat request to {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("a 1-token chat request to {url} answered HTTP {status}: {}", text.chars().take(300).collect::<String>()));
    }
    Ok(())
}
