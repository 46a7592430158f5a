//! HTTP plumbing shared by the AgentGym episodes: one reqwest client per
//! env, per-server session slots, retries, and the `{"error": …}` rule.
//!
//! Retry policy (why): a 503 or a refused connection means the server did
//! nothing, so any request may be repeated. A timeout or a connection
//! broken mid-request may have been applied, so only requests that are
//! harmless to repeat (`Retry::Any`) are retried then; `/step` is not — the
//! eval stage restarts the whole episode instead.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AgentgymEnvSpec;
use crate::env::EnvError;

/// Longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Idle pooled connections are dropped before uvicorn's 5 s keep-alive
/// closes them under us (a stale connection would fail a `/step`).
const POOL_IDLE: Duration = Duration::from_secs(3);

/// One server and its episode slots.
pub(crate) struct Server {
    pub url: String,
    pub slots: Arc<Semaphore>,
}

impl Server {
    pub fn new(url: String, concurrency: usize) -> Self {
        Self {
            url,
            slots: Arc::new(Semaphore::new(concurrency)),
        }
    }
}

/// Which failures of a request may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only where the server certainly did nothing (503, refused).
    Safe,
    /// Also timeouts and broken connections (idempotent enough requests).
    Any,
    /// Never (best-effort `/close`).
    Never,
}

pub(crate) struct Http {
    client: reqwest::Client,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

impl Http {
    pub fn new(spec: &AgentgymEnvSpec) -> Self {
        let connect = Duration::from_secs_f64(spec.connect_timeout_s.clamp(0.001, 3600.0));
        let client = reqwest::Client::builder()
            .connect_timeout(connect)
            .pool_idle_timeout(POOL_IDLE)
            .build()
            // Building only fails when the TLS backend cannot start; the
            // per-request timeout below still applies to the fallback.
            .unwrap_or_default();
        Self {
            client,
            timeout: Duration::from_secs_f64(spec.timeout_s.clamp(0.001, 86_400.0)),
            retries: spec.retries,
            backoff: Duration::from_millis(spec.retry_backoff_ms),
        }
    }

    pub async fn post(&self, base: &str, path: &str, body: &Value, retry: Retry) -> Result<Value, EnvError> {
        let url = format!("{base}{path}");
        self.send(|| self.client.post(&url).json(body), &url, retry).await
    }

    pub async fn get(&self, base: &str, path_and_query: &str, retry: Retry) -> Result<Value, EnvError> {
        let url = format!("{base}{path_and_query}");
        self.send(|| self.client.get(&url), &url, retry).await
    }

    async fn send(
        &self,
        build: impl Fn() -> reqwest::RequestBuilder,
        url: &str,
        retry: Retry,
    ) -> Result<Value, EnvError> {
        let mut attempt: u32 = 0;
        loop {
            let why = match build()
                .timeout(self.timeout)
                .send()
                .await
                .map_err(reqwest::Error::without_url)
            {
                Ok(resp) if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                    "503 Service Unavailable".to_string()
                }
                Ok(resp) => {
                    let status = resp.status();
                    match resp.text().await.map_err(reqwest::Error::without_url) {
                        Ok(text) => return answer(url, status, &text),
                        Err(e) if retry == Retry::Any => format!("reading the answer failed: {}", chain(&e)),
                        Err(e) => return Err(EnvError(format!("`{url}`: reading the answer failed: {}", chain(&e)))),
                    }
                }
                Err(e) if e.is_connect() && retry != Retry::Never => format!("cannot connect: {}", chain(&e)),
                Err(e) if retry == Retry::Any => chain(&e),
                Err(e) => return Err(EnvError(format!("`{url}`: {}", chain(&e)))),
            };
            if retry == Retry::Never || attempt >= self.retries {
                let tries = attempt + 1;
                return Err(EnvError(format!("`{url}`: {why} (gave up after {tries} attempt(s))")));
            }
            let wait = self.backoff.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
            tracing::debug!(%url, %why, attempt, ?wait, "AgentGym request failed; retrying");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// A 2xx JSON answer that is not `{"error": …}`, else the error.
fn answer(url: &str, status: reqwest::StatusCode, text: &str) -> Result<Value, EnvError> {
    if !status.is_success() {
        return Err(EnvError(format!("`{url}`: HTTP {status}: {}", snippet(text))));
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| EnvError(format!("`{url}`: the answer is not JSON ({e}): {}", snippet(text))))?;
    if let Some(err) = v.as_object().and_then(|o| o.get("error")) {
        let msg = err.as_str().map_or_else(|| err.to_string(), str::to_string);
        return Err(EnvError(format!("`{url}`: the server answered an error: {msg}")));
    }
    Ok(v)
}

fn snippet(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_string(),
    }
}

/// An error with its sources (reqwest's top message alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// A server session: its id (ALFWorld/SciWorld `id`, WebShop `env_idx`)
/// and the slot it holds until dropped.
pub(crate) struct Session {
    pub http: Arc<Http>,
    pub base: String,
    pub id: Value,
    pub _permit: OwnedSemaphorePermit,
}

impl Session {
    pub async fn post(&self, path: &str, body: &Value, retry: Retry) -> Result<Value, EnvError> {
        self.http.post(&self.base, path, body, retry).await
    }
    pub async fn get(&self, path_and_query: &str, retry: Retry) -> Result<Value, EnvError> {
        self.http.get(&self.base, path_and_query, retry).await
    }
    /// Best-effort `POST /close` (a server without the route answers 404,
    /// which is ignored like any failure here).
    pub async fn close(&self, body: Value) {
        if let Err(e) = self.post("/close", &body, Retry::Never).await {
            tracing::debug!(base = %self.base, "closing the AgentGym session failed: {e}");
        }
    }
}

/// Blocking `GET /` of a base URL: `Err((why, port))` unless it answers 2xx
/// (https: a TCP connection is enough).
pub(crate) fn probe(base: &str, timeout: Duration) -> Result<(), (String, u16)> {
    let url = reqwest::Url::parse(base).map_err(|e| (format!("bad URL: {e}"), 0))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let fail = |why: String| (why, port);
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve `{host}`: {e}")))?
        .collect();
    let mut last = format!("`{host}` resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(mut stream) => {
                if url.scheme() == "https" {
                    return Ok(());
                }
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                let req = format!("GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
                if let Err(e) = stream.write_all(req.as_bytes()) {
                    last = format!("connected, but sending failed: {e}");
                    continue;
                }
                let mut buf = [0u8; 64];
                let mut got = Vec::new();
                while got.len() < 12 {
                    match stream.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(e) => {
                            last = format!("connected, but no answer: {e}");
                            break;
                        }
                    }
                }
                let line = String::from_utf8_lossy(&got);
                let status = line.split_whitespace().nth(1).unwrap_or("");
                if status.starts_with('2') {
                    return Ok(());
                }
                if !got.is_empty() {
                    last = format!("`GET /` answered `{}`", line.lines().next().unwrap_or("").trim());
                }
            }
            Err(e) => last = format!("cannot connect: {e}"),
        }
    }
    Err(fail(last))
}
