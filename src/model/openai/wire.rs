//! The chat-completions wire format: request bodies, answers, and the
//! text helpers that keep secrets and huge bodies out of errors.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::config::OpenAiConfig;
use crate::model::{ChatRequest, Role};

/// Longest body excerpt put into an error.
pub(crate) const EXCERPT_CHARS: usize = 300;

/// The API key. Its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Replaces every occurrence of the key with `<redacted>`.
pub(crate) fn redact(text: &str, key: Option<&Secret>) -> String {
    match key {
        Some(k) if !k.0.is_empty() && text.contains(&k.0) => text.replace(&k.0, "<redacted>"),
        _ => text.to_string(),
    }
}

/// At most [`EXCERPT_CHARS`] characters of a body, key redacted.
pub(crate) fn excerpt(body: &[u8], key: Option<&Secret>) -> String {
    let text = redact(String::from_utf8_lossy(body).trim(), key);
    truncate_chars(&text, EXCERPT_CHARS)
}

pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The JSON body of one chat-completions call asking for `n` completions.
pub(crate) fn build_body(cfg: &OpenAiConfig, req: &ChatRequest, n: u32, seed: Option<u64>) -> Vec<u8> {
    let mut body = Map::new();
    for (k, v) in &cfg.extra_body {
        body.insert(k.clone(), v.clone());
    }
    body.insert("model".into(), Value::String(cfg.model.clone()));
    let mut messages: Vec<Value> = req
        .messages
        .iter()
        .map(|m| {
            let mut o = Map::new();
            o.insert("role".into(), Value::String(role_str(m.role).into()));
            o.insert("content".into(), Value::String(m.content.clone()));
            Value::Object(o)
        })
        .collect();
    if let Some(prefill) = &req.prefill {
        let mut o = Map::new();
        o.insert("role".into(), Value::String("assistant".into()));
        o.insert("content".into(), Value::String(prefill.clone()));
        messages.push(Value::Object(o));
    }
    body.insert("messages".into(), Value::Array(messages));
    let p = &req.params;
    body.insert("max_tokens".into(), Value::from(p.max_tokens.unwrap_or(cfg.max_tokens)));
    body.insert("temperature".into(), Value::from(p.temperature.unwrap_or(cfg.temperature)));
    body.insert("top_p".into(), Value::from(p.top_p.unwrap_or(cfg.top_p)));
    let mut stop: Vec<&String> = Vec::with_capacity(cfg.stop.len() + p.stop.len());
    for s in cfg.stop.iter().chain(p.stop.iter()) {
        if !s.is_empty() && !stop.contains(&s) {
            stop.push(s);
        }
    }
    if !stop.is_empty() {
        body.insert("stop".into(), Value::Array(stop.into_iter().map(|s| Value::String(s.clone())).collect()));
    }
    if let Some(seed) = seed.filter(|_| cfg.send_seed) {
        body.insert("seed".into(), Value::from(seed));
    }
    if n > 1 {
        body.insert("n".into(), Value::from(n));
    }
    if req.prefill.is_some() {
        body.insert("continue_final_message".into(), Value::Bool(true));
        body.insert("add_generation_prompt".into(), Value::Bool(false));
    }
    serde_json::to_vec(&Value::Object(body)).expect("a JSON value always serializes")
}

/// What one successful call answered.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parsed {
    pub texts: Vec<String>,
    pub finish_reasons: Vec<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    choices: Option<Vec<WireChoice>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// Parses a 200 answer that should hold `n` completions; `Err` is the
/// detail of a malformed answer.
pub(crate) fn parse_response(body: &[u8], n: u32, key: Option<&Secret>) -> Result<Parsed, String> {
    let wire: WireResponse = serde_json::from_slice(body)
        .map_err(|e| format!("invalid JSON ({e}); body: {}", excerpt(body, key)))?;
    let mut choices = match wire.choices {
        Some(c) if !c.is_empty() => c,
        _ => return Err(format!("no `choices`; body: {}", excerpt(body, key))),
    };
    if choices.len() != n as usize {
        return Err(format!("asked for {n} choices, got {}", choices.len()));
    }
    if choices.iter().all(|c| c.index.is_some()) {
        choices.sort_by_key(|c| c.index);
    }
    let mut out = Parsed { texts: Vec::with_capacity(choices.len()), ..Default::default() };
    for (i, c) in choices.into_iter().enumerate() {
        let text = c.message.and_then(|m| m.content).unwrap_or_default();
        // An empty reply that the server finished (`stop`: the model
        // answered end-of-sequence at once, as an agent often does after a
        // thought prefill) is an answer: the episode records it as a
        // format error, as the in-process engine and the released loop do.
        // Empty and unfinished is a broken answer.
        let Some(finish) = c.finish_reason.filter(|f| !f.is_empty()) else {
            if text.is_empty() {
                return Err(format!("choice {i} has empty content and no finish_reason"));
            }
            out.texts.push(text);
            out.finish_reasons.push("unknown".into());
            continue;
        };
        out.texts.push(text);
        out.finish_reasons.push(finish);
    }
    if let Some(u) = wire.usage {
        out.prompt_tokens = u.prompt_tokens.unwrap_or(0);
        out.completion_tokens = u.completion_tokens.unwrap_or(0);
    }
    Ok(out)
}

/// JSON with object keys sorted at every level (stable identity strings
/// whatever serde_json's map order is).
pub(crate) fn canonical_json(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // With serde_json's default BTreeMap this is already sorted; with
    // `preserve_order` the rebuilt map keeps the sorted insertion order.
    serde_json::to_string(&sorted(v)).expect("a JSON value always serializes")
}

/// `Retry-After` in seconds (delta-seconds form only).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<f64> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<f64>().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}
