//! OpenAI-compatible chat-completions client (vLLM servers, hosted APIs).
//!
//! One [`OpenAiClient`] serves one `[models.NAME] kind = "openai"` entry:
//! one endpoint or a pool of replicas, each with its own keep-alive HTTP/1.1
//! connection pool and a limit of `max_concurrency` requests in flight.
//! The requests of one session (an episode's turns) go to one endpoint, so
//! its prefix cache holds the conversation; other attempts go to the
//! endpoint with the fewest outstanding requests ([`pool::Pool::pick`]).
//! An endpoint that fails to connect is left out for `cooldown_s`, then
//! one request probes it back in; once every endpoint has refused
//! connections for `dead_after_s`, calls fail at once. Connection errors,
//! timeouts, 408, 429 (`Retry-After` honoured), 5xx and malformed answers
//! are retried with exponential back-off and jitter; other 4xx are not.
//! Readiness is the model list and a 1-token chat answer.
//!
//! The API key is read once from the variable named by `api_key_env`; it is
//! never logged, never part of [`ChatModel::identity`], `Debug` or an error.

mod config;
mod pool;
mod wire;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use config::{OpenAiConfig, PrefillMode};
pub use pool::EndpointStats;

use super::{ChatModel, ChatRequest, Completion, ModelError};
use pool::{Endpoint, Pool};
use wire::{Parsed, Secret};

/// Longest wait a `Retry-After` header can impose on one retry.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A chat model behind one or more OpenAI-compatible endpoints. Cheap to
/// clone (shared state).
#[derive(Clone)]
pub struct OpenAiClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    cfg: OpenAiConfig,
    key: Option<Secret>,
    pool: Pool,
    identity: String,
    rng: AtomicU64,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiClient")
            .field("name", &self.inner.name)
            .field("identity", &self.inner.identity)
            .field("endpoints", &self.inner.pool.eps.iter().map(|e| e.base.as_str()).collect::<Vec<_>>())
            .field("api_key_env", &self.inner.cfg.api_key_env)
            .field("api_key", &self.inner.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OpenAiClient {
    /// Validates `cfg`, reads the API key (if `api_key_env` is set) and
    /// builds one connection pool per endpoint. Needs no runtime.
    pub fn new(name: impl Into<String>, cfg: OpenAiConfig) -> Result<Self, ModelError> {
        let name = name.into();
        cfg.validate().map_err(|e| ModelError::Other(format!("[models.{name}]: {e}")))?;
        let key = match &cfg.api_key_env {
            None => None,
            Some(var) => Some(read_key(&name, var)?),
        };
        let timeout = Duration::from_secs_f64(cfg.timeout_s);
        let cooldown = Duration::from_secs_f64(cfg.cooldown_s);
        let eps = cfg
            .endpoints()
            .into_iter()
            .map(|base| Endpoint::new(base, cfg.max_concurrency, timeout, cooldown))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Other(format!("[models.{name}]: {e}")))?;
        let identity = build_identity(&cfg);
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        Ok(Self {
            inner: Arc::new(Inner { name, cfg, key, pool: Pool::new(eps), identity, rng: AtomicU64::new(seed) }),
        })
    }

    /// The spec's name of this model (`[models.NAME]`).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn config(&self) -> &OpenAiConfig {
        &self.inner.cfg
    }

    /// Parameter count in billions, if the spec gave it.
    pub fn params_b(&self) -> Option<f64> {
        self.inner.cfg.params_b
    }

    /// Per-endpoint counters, in the order of the config.
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        self.inner.pool.eps.iter().map(|e| e.stats()).collect()
    }

    /// Polls `GET {base}/models` on every endpoint until one answers 200,
    /// for at most `ready_timeout_s` (a just-started vLLM loads for
    /// minutes). Endpoints that refuse connections are marked down.
    pub async fn wait_ready(&self) -> Result<(), ModelError> {
        let inner = &self.inner;
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(inner.cfg.ready_timeout_s);
        let mut pause = Duration::from_millis(100);
        let mut last = String::from("no answer yet");
        loop {
            for ep in &inner.pool.eps {
                let left = deadline.saturating_duration_since(Instant::now());
                let limit = left.min(Duration::from_secs(10)).max(Duration::from_millis(200));
                match ep.get_models(inner.key.as_ref(), limit).await {
                    Ok(200) => {
                        ep.mark_reachable();
                        // Listing the model is not answering: a server can
                        // list it and die on the first request (a kernel it
                        // lacks). One 1-token chat request must answer too.
                        self.probe_chat(ep).await?;
                        tracing::info!(model = %inner.name, endpoint = %ep.base,
                            waited_s = started.elapsed().as_secs_f64(), "endpoint ready");
                        return Ok(());
                    }
                    Ok(status) => {
                        ep.mark_reachable();
                        last = format!("`{}/models` answered HTTP {status}", ep.base);
                    }
                    Err(kind) => {
                        if matches!(kind, pool::FailureKind::Connect(_)) {
                            ep.mark_failure(&kind, false);
                        }
                        last = kind.describe(&ep.base);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ModelError::NotReady(format!(
                    "model `{}`: no endpoint answered GET {{base}}/models with 200 within {}s (last: {last})",
                    inner.name, inner.cfg.ready_timeout_s
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
}

impl OpenAiClient {
    /// One 1-token chat request to `ep` (header `X-Mpo-Run-Probe`), three
    /// tries a second apart (a server may still be warming up): an error
    /// that names the endpoint and the answer when none succeeds.
    async fn probe_chat(&self, ep: &Endpoint) -> Result<(), ModelError> {
        let inner = &self.inner;
        let body = serde_json::json!({
            "model": inner.cfg.model,
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 1,
            "temperature": 0.0,
        });
        let body = serde_json::to_vec(&body).expect("a JSON value always serializes");
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match ep.post_probe(body.clone(), inner.key.as_ref()).await {
                Ok(()) => return Ok(()),
                Err(kind) => last = kind.describe(&ep.base),
            }
        }
        Err(ModelError::NotReady(format!(
            "model `{}`: `{}` lists its models but cannot answer a 1-token chat request ({last});              the server's log says why (an unsupported model shape or dtype, say)",
            inner.name, ep.base
        )))
    }
}

fn read_key(name: &str, var: &str) -> Result<Secret, ModelError> {
    let value = std::env::var_os(var).ok_or_else(|| {
        ModelError::Other(format!(
            "[models.{name}]: api_key_env = \"{var}\", but the environment variable `{var}` is not set"
        ))
    })?;
    let value = value.into_string().map_err(|_| {
        ModelError::Other(format!("[models.{name}]: the environment variable `{var}` is not valid UTF-8"))
    })?;
    let value = value.trim().to_string();
    if value.is_empty() {
        return Err(ModelError::Other(format!("[models.{name}]: the environment variable `{var}` is empty")));
    }
    if reqwest::header::HeaderValue::from_str(&format!("Bearer {value}")).is_err() {
        return Err(ModelError::Other(format!(
            "[models.{name}]: the value of `{var}` cannot be sent in an HTTP header (control characters?)"
        )));
    }
    Ok(Secret(value))
}

/// `openai:{model}@{sorted host:port list}`, then `?{json}` of the settings
/// that differ from the defaults and change answers (sampling defaults,
/// `extra_body`). Never the key nor the variable's name.
fn build_identity(cfg: &OpenAiConfig) -> String {
    let mut hosts: Vec<String> = cfg
        .endpoints()
        .iter()
        .filter_map(|u| reqwest::Url::parse(u).ok())
        .map(|u| match (u.host_str(), u.port_or_known_default()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => String::new(),
        })
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut id = format!("openai:{}@{}", cfg.model, hosts.join(","));
    let defaults = OpenAiConfig::new("", "");
    let mut extra = serde_json::Map::new();
    if cfg.temperature != defaults.temperature {
        extra.insert("temperature".into(), Value::from(cfg.temperature));
    }
    if cfg.top_p != defaults.top_p {
        extra.insert("top_p".into(), Value::from(cfg.top_p));
    }
    if cfg.max_tokens != defaults.max_tokens {
        extra.insert("max_tokens".into(), Value::from(cfg.max_tokens));
    }
    if cfg.stop != defaults.stop {
        extra.insert("stop".into(), Value::from(cfg.stop.clone()));
    }
    if let Some(seed) = cfg.seed {
        extra.insert("seed".into(), Value::from(seed));
    }
    if !cfg.send_seed {
        extra.insert("send_seed".into(), Value::from(false));
    }
    if !cfg.extra_body.is_empty() {
        extra.insert("extra_body".into(), Value::Object(cfg.extra_body.clone()));
    }
    if !extra.is_empty() {
        id.push('?');
        id.push_str(&wire::canonical_json(&Value::Object(extra)));
    }
    id
}

impl Inner {
    /// splitmix64 over a shared counter: jitter only, not cryptographic.
    fn next_random(&self) -> u64 {
        let mut z = self.rng.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Back-off before retry number `retry` (1-based): base·2^(retry-1),
    /// capped, "equal jitter" (half fixed, half random).
    fn backoff(&self, retry: u32) -> Duration {
        let base = Duration::from_millis(self.cfg.retry_backoff_ms);
        let cap = Duration::from_secs_f64(self.cfg.retry_backoff_max_s);
        let full = base.saturating_mul(1u32 << (retry.saturating_sub(1)).min(20)).min(cap);
        let half = full / 2;
        let unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(unit)
    }

    /// One logical call with retries: `n` completions of `body`.
    async fn call(self: Arc<Self>, body: Vec<u8>, n: u32, session: Option<u64>) -> Result<Parsed, ModelError> {
        let max_attempts = self.cfg.max_retries.saturating_add(1);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            if let Some(dead) = self.pool.dead_for(Duration::from_secs_f64(self.cfg.dead_after_s)) {
                return Err(ModelError::Transport(format!("model `{}`: {dead}; the server is down (restart it, then rerun: finished work is kept)", self.name)));
            }
            let lease = self.pool.pick(session);
            let result = lease.ep.post_chat(body.clone(), n, self.key.as_ref(), session).await;
            let kind = match result {
                Ok(parsed) => {
                    lease.ep.mark_reachable();
                    return Ok(parsed);
                }
                Err(kind) => kind,
            };
            if matches!(kind, pool::FailureKind::Status { .. } | pool::FailureKind::Malformed(_)) {
                lease.ep.mark_reachable();
            } else {
                lease.ep.mark_failure(&kind, lease.probe);
            }
            let endpoint = lease.ep.base.clone();
            drop(lease);
            if !kind.retryable() || attempt >= max_attempts {
                if kind.retryable() {
                    tracing::warn!(model = %self.name, attempts = attempt,
                        error = %kind.describe(&endpoint), "giving up on a call");
                }
                return Err(kind.into_error(&endpoint, attempt));
            }
            let mut delay = self.backoff(attempt);
            if let pool::FailureKind::Status { retry_after: Some(s), .. } = &kind {
                delay = delay.max(Duration::from_secs_f64(*s).min(MAX_RETRY_AFTER));
            }
            tracing::debug!(model = %self.name, attempt, delay_ms = delay.as_millis() as u64,
                error = %kind.describe(&endpoint), "retrying a call");
            tokio::time::sleep(delay).await;
        }
    }
}

#[async_trait::async_trait]
impl ChatModel for OpenAiClient {
    fn identity(&self) -> String {
        self.inner.identity.clone()
    }

    async fn ready(&self) -> Result<(), ModelError> {
        self.wait_ready().await
    }

    async fn chat(&self, request: &ChatRequest) -> Result<Completion, ModelError> {
        let started = Instant::now();
        let inner = &self.inner;
        if request.messages.is_empty() && request.prefill.is_none() {
            return Err(ModelError::Other(format!("model `{}`: a request needs at least one message", inner.name)));
        }
        if request.prefill.is_some() && inner.cfg.prefill == PrefillMode::None {
            return Err(ModelError::Other(format!(
                "model `{}` has prefill = \"none\": hosted OpenAI-style APIs cannot continue an \
                 assistant message, so thought insertion (an assistant prefill) needs a vLLM \
                 endpoint with prefill = \"vllm\"",
                inner.name
            )));
        }
        let n = request.params.n.max(1);
        let seed = request.params.seed.or(inner.cfg.seed);
        let parsed = if n > 1 && !inner.cfg.supports_n {
            // n separate calls, seeds seed, seed+1, …, merged in order.
            let mut set = tokio::task::JoinSet::new();
            for i in 0..n {
                let body = wire::build_body(&inner.cfg, request, 1, seed.map(|s| s.wrapping_add(i as u64)));
                let inner = Arc::clone(inner);
                let session = request.session;
                set.spawn(async move { (i as usize, inner.call(body, 1, session).await) });
            }
            let mut parts: Vec<Option<Parsed>> = vec![None; n as usize];
            while let Some(joined) = set.join_next().await {
                let (i, result) = joined
                    .map_err(|e| ModelError::Other(format!("model `{}`: a sub-call task failed: {e}", inner.name)))?;
                parts[i] = Some(result?); // dropping `set` cancels the rest
            }
            // The prompt is one prompt, read once, as a server that takes
            // `n` counts it: its tokens are counted once, not n times.
            let mut merged = Parsed::default();
            for p in parts.into_iter().flatten() {
                merged.texts.extend(p.texts);
                merged.finish_reasons.extend(p.finish_reasons);
                merged.prompt_tokens = merged.prompt_tokens.max(p.prompt_tokens);
                merged.completion_tokens += p.completion_tokens;
            }
            merged
        } else {
            let body = wire::build_body(&inner.cfg, request, n, seed);
            Arc::clone(inner).call(body, n, request.session).await?
        };
        Ok(Completion {
            texts: parsed.texts,
            finish_reasons: parsed.finish_reasons,
            prompt_tokens: parsed.prompt_tokens,
            completion_tokens: parsed.completion_tokens,
            wall_ms: started.elapsed().as_millis() as u64,
        })
    }
}
