//! Endpoints of one model: an HTTP connection pool and a concurrency limit
//! per endpoint, least-outstanding-requests choice, and health (an endpoint
//! that fails to connect is left out for a cool-down, then one request
//! probes it back in).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::wire::{self, Parsed, Secret};
use crate::model::ModelError;

/// Longest cool-down of an endpoint that stays down.
const MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// Transport failures in a row (timeouts, resets) that take an endpoint out.
const FAILURES_TO_DOWN: u32 = 3;

/// Counters of one endpoint, for reports and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    pub base_url: String,
    /// Chat-completions attempts sent to it.
    pub requests: u64,
    /// Attempts that failed (any reason).
    pub failures: u64,
    /// Attempts now queued or in flight.
    pub outstanding: usize,
    /// Whether it is in rotation (not marked down).
    pub up: bool,
}

/// Why one attempt failed.
#[derive(Clone, Debug)]
pub(crate) enum FailureKind {
    Connect(String),
    Transport(String),
    Timeout(String),
    Status { status: u16, body: String, retry_after: Option<f64> },
    Malformed(String),
    /// Never helped by a retry (a request that cannot be built).
    Fatal(String),
}

impl FailureKind {
    pub(crate) fn retryable(&self) -> bool {
        match self {
            FailureKind::Status { status, .. } => status_retryable(*status),
            FailureKind::Fatal(_) => false,
            _ => true,
        }
    }

    pub(crate) fn describe(&self, endpoint: &str) -> String {
        match self {
            FailureKind::Connect(m) => format!("cannot connect to `{endpoint}`: {m}"),
            FailureKind::Transport(m) => format!("transport error talking to `{endpoint}`: {m}"),
            FailureKind::Timeout(m) => format!("`{endpoint}` timed out: {m}"),
            FailureKind::Status { status, body, .. } => {
                format!("`{endpoint}` answered HTTP {status}: {body}")
            }
            FailureKind::Malformed(d) => format!("malformed response from `{endpoint}`: {d}"),
            FailureKind::Fatal(m) => format!("request to `{endpoint}` failed: {m}"),
        }
    }

    /// The error of the last attempt, once no retry is left or allowed.
    pub(crate) fn into_error(self, endpoint: &str, attempts: u32) -> ModelError {
        let endpoint_s = endpoint.to_string();
        match self {
            FailureKind::Malformed(detail) => ModelError::Malformed {
                endpoint: endpoint_s,
                detail: if attempts > 1 { format!("{detail} (after {attempts} attempts)") } else { detail },
            },
            FailureKind::Status { status, body, .. } if !status_retryable(status) => {
                ModelError::Status { endpoint: endpoint_s, status, body }
            }
            FailureKind::Fatal(m) => ModelError::Transport(format!("request to `{endpoint}` failed: {m}")),
            other => ModelError::RetriesExhausted { attempts, last: other.describe(endpoint) },
        }
    }
}

fn status_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// Error text of a reqwest error: its cause chain, without the URL.
fn chain(e: reqwest::Error, key: Option<&Secret>) -> String {
    let e = e.without_url();
    let mut out = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    wire::truncate_chars(&wire::redact(&out, key), wire::EXCERPT_CHARS)
}

fn classify(e: reqwest::Error, timeout: Duration, key: Option<&Secret>) -> FailureKind {
    if e.is_builder() {
        FailureKind::Fatal(chain(e, key))
    } else if e.is_connect() {
        FailureKind::Connect(chain(e, key))
    } else if e.is_timeout() {
        FailureKind::Timeout(format!("no complete answer within {}s", timeout.as_secs_f64()))
    } else {
        FailureKind::Transport(chain(e, key))
    }
}

struct Health {
    down_until: Option<Instant>,
    cooldown: Duration,
    failures_in_row: u32,
    /// Since when every attempt failed to connect, and the last such error.
    unreachable: Option<(Instant, String)>,
}

pub(crate) struct Endpoint {
    pub(crate) base: String,
    chat_url: String,
    models_url: String,
    http: reqwest::Client,
    timeout: Duration,
    sem: Semaphore,
    outstanding: AtomicUsize,
    down: AtomicBool,
    probing: AtomicBool,
    health: Mutex<Health>,
    base_cooldown: Duration,
    requests: AtomicU64,
    failures: AtomicU64,
}

impl Endpoint {
    pub(crate) fn new(
        base: String,
        max_concurrency: u32,
        timeout: Duration,
        cooldown: Duration,
    ) -> Result<Self, String> {
        let loopback = reqwest::Url::parse(&base).ok().is_some_and(|u| {
            let host = u.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        });
        let mut builder = reqwest::Client::builder();
        if loopback {
            builder = builder.no_proxy(); // a local vLLM is never behind $HTTP_PROXY
        }
        let http = builder
            .http1_only()
            .pool_max_idle_per_host(max_concurrency as usize)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(60))
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mpo-run/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for `{base}`: {e}"))?;
        Ok(Self {
            chat_url: format!("{base}/chat/completions"),
            models_url: format!("{base}/models"),
            base,
            http,
            timeout,
            sem: Semaphore::new(max_concurrency as usize),
            outstanding: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            health: Mutex::new(Health { down_until: None, cooldown, failures_in_row: 0, unreachable: None }),
            base_cooldown: cooldown,
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn down_until(&self) -> Option<Instant> {
        if self.down.load(Ordering::Acquire) {
            self.health().down_until
        } else {
            None
        }
    }

    pub(crate) fn stats(&self) -> EndpointStats {
        EndpointStats {
            base_url: self.base.clone(),
            requests: self.requests.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            outstanding: self.outstanding.load(Ordering::Relaxed),
            up: !self.down.load(Ordering::Acquire),
        }
    }

    /// The endpoint answered something over HTTP: it is reachable.
    pub(crate) fn mark_reachable(&self) {
        let mut h = self.health();
        h.failures_in_row = 0;
        h.unreachable = None;
        if self.down.load(Ordering::Acquire) {
            h.down_until = None;
            h.cooldown = self.base_cooldown;
            self.down.store(false, Ordering::Release);
            tracing::info!(endpoint = %self.base, "endpoint is back in rotation");
        }
    }

    /// A transport-level failure; `probe`: the attempt was the one let
    /// through after a cool-down.
    pub(crate) fn mark_failure(&self, kind: &FailureKind, probe: bool) {
        let connect = matches!(kind, FailureKind::Connect(_));
        let transport = connect || matches!(kind, FailureKind::Transport(_) | FailureKind::Timeout(_));
        if !transport {
            return;
        }
        let mut h = self.health();
        h.failures_in_row += 1;
        if let FailureKind::Connect(m) = kind {
            let since = h.unreachable.take().map_or_else(Instant::now, |(t, _)| t);
            h.unreachable = Some((since, m.clone()));
        }
        if !(connect || probe || h.failures_in_row >= FAILURES_TO_DOWN) {
            return;
        }
        let now = Instant::now();
        let was_down = self.down.load(Ordering::Acquire);
        if was_down && !probe && h.down_until.is_some_and(|t| t > now) {
            return; // already out; don't stretch the cool-down per failure
        }
        h.cooldown = if was_down { (h.cooldown * 2).min(MAX_COOLDOWN) } else { self.base_cooldown };
        h.down_until = Some(now + h.cooldown);
        self.down.store(true, Ordering::Release);
        tracing::warn!(endpoint = %self.base, cooldown_s = h.cooldown.as_secs_f64(),
            error = %kind.describe(&self.base), "endpoint taken out of rotation");
    }

    /// One chat-completions attempt (waits for a concurrency slot first).
    /// `session`: sent as `X-Session-ID` (hex), for routers in front of
    /// the replicas that route by it.
    pub(crate) async fn post_chat(
        &self,
        body: Vec<u8>,
        n: u32,
        key: Option<&Secret>,
        session: Option<u64>,
    ) -> Result<Parsed, FailureKind> {
        let _permit = self.sem.acquire().await.map_err(|_| FailureKind::Fatal("endpoint closed".into()))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let result = self.post_chat_inner(body, n, key, session).await;
        if result.is_err() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn post_chat_inner(&self, body: Vec<u8>, n: u32, key: Option<&Secret>, session: Option<u64>) -> Result<Parsed, FailureKind> {
        let mut rb = self
            .http
            .post(&self.chat_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(s) = session {
            rb = rb.header("X-Session-ID", format!("{s:016x}"));
        }
        if let Some(k) = key {
            rb = rb.bearer_auth(&k.0);
        }
        let resp = rb.send().await.map_err(|e| classify(e, self.timeout, key))?;
        let status = resp.status();
        let retry_after = wire::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| classify(e, self.timeout, key))?;
        if !status.is_success() {
            return Err(FailureKind::Status {
                status: status.as_u16(),
                body: wire::excerpt(&bytes, key),
                retry_after,
            });
        }
        wire::parse_response(&bytes, n, key).map_err(FailureKind::Malformed)
    }

    /// A readiness probe: a chat request that must answer 200 with a
    /// parseable answer (an empty reply is fine).
    pub(crate) async fn post_probe(&self, body: Vec<u8>, key: Option<&Secret>) -> Result<(), FailureKind> {
        let mut rb = self
            .http
            .post(&self.chat_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Mpo-Run-Probe", "ready")
            .body(body);
        if let Some(k) = key {
            rb = rb.bearer_auth(&k.0);
        }
        let resp = rb.send().await.map_err(|e| classify(e, self.timeout, key))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| classify(e, self.timeout, key))?;
        if !status.is_success() {
            return Err(FailureKind::Status { status: status.as_u16(), body: wire::excerpt(&bytes, key), retry_after: None });
        }
        wire::parse_response(&bytes, 1, key).map(|_| ()).map_err(FailureKind::Malformed)
    }

    /// `GET {base}/models`: `Ok(status)` or the transport failure.
    pub(crate) async fn get_models(&self, key: Option<&Secret>, limit: Duration) -> Result<u16, FailureKind> {
        let mut rb = self.http.get(&self.models_url).timeout(limit);
        if let Some(k) = key {
            rb = rb.bearer_auth(&k.0);
        }
        let resp = rb.send().await.map_err(|e| classify(e, limit, key))?;
        Ok(resp.status().as_u16())
    }
}

/// An endpoint chosen for one attempt; releases its place when dropped.
pub(crate) struct Lease {
    pub(crate) ep: Arc<Endpoint>,
    pub(crate) probe: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ep.outstanding.fetch_sub(1, Ordering::AcqRel);
        if self.probe {
            self.ep.probing.store(false, Ordering::Release);
        }
    }
}

/// splitmix64's finaliser: a well-mixed 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stable hash of an endpoint's base URL (FNV-1a).
fn url_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn lease(ep: &Arc<Endpoint>, probe: bool) -> Lease {
    ep.outstanding.fetch_add(1, Ordering::AcqRel);
    Lease { ep: Arc::clone(ep), probe }
}

pub(crate) struct Pool {
    pub(crate) eps: Vec<Arc<Endpoint>>,
    rr: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(eps: Vec<Endpoint>) -> Self {
        Self { eps: eps.into_iter().map(Arc::new).collect(), rr: AtomicUsize::new(0) }
    }

    /// `Some(why)` when every endpoint has refused connections for longer
    /// than `limit` and none is due for a probe: calls then fail at once
    /// instead of each retrying against a dead server. One call per
    /// cool-down still probes, so a server that comes back is found.
    pub(crate) fn dead_for(&self, limit: Duration) -> Option<String> {
        // Every call asks: answer from the atomics while any endpoint is in
        // rotation (a refused connection always takes one out).
        if self.eps.iter().any(|e| !e.down.load(Ordering::Acquire)) {
            return None;
        }
        let now = Instant::now();
        let mut why = Vec::new();
        for ep in &self.eps {
            let h = ep.health();
            let (since, err) = h.unreachable.as_ref()?;
            let elapsed = now.duration_since(*since);
            if elapsed < limit {
                return None;
            }
            let probe_due = h.down_until.is_none_or(|t| t <= now) && !ep.probing.load(Ordering::Acquire);
            if probe_due {
                return None;
            }
            why.push(format!("`{}` refused connections for {:.0}s ({err})", ep.base, elapsed.as_secs_f64()));
        }
        Some(why.join("; "))
    }

    /// A session's endpoint among the up ones (see [`Pool::pick`]).
    fn affine(&self, session: u64) -> Option<&Arc<Endpoint>> {
        let up: Vec<&Arc<Endpoint>> = self.eps.iter().filter(|e| !e.down.load(Ordering::Acquire)).collect();
        if up.is_empty() {
            return None;
        }
        let total: usize = up.iter().map(|e| e.outstanding.load(Ordering::Acquire)).sum();
        // Room for this request too: twice the mean load, ceil(2 (total + 1) / up).
        let cap = (2 * (total + 1)).div_ceil(up.len());
        let mut ranked: Vec<(u64, &Arc<Endpoint>)> = up.into_iter().map(|e| (mix(session ^ url_hash(&e.base)), e)).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        let fits = |e: &Arc<Endpoint>| e.outstanding.load(Ordering::Acquire) < cap && e.sem.available_permits() > 0;
        ranked.iter().find(|(_, e)| fits(e)).or(ranked.first()).map(|(_, e)| *e)
    }

    /// The endpoint for the next attempt: a down endpoint whose cool-down
    /// is over (one probe at a time), else for a request of a `session`
    /// (an episode) its own endpoint — the first up endpoint in the
    /// session's rendezvous-hash order that has a free slot
    /// (`max_concurrency`) and at most twice the mean load (consistent
    /// hashing with bounded loads: the turns of one episode stay on one
    /// replica and its prefix cache, and a replica that is taken out or
    /// saturated moves only its own sessions), else
    /// the up endpoint with the fewest outstanding requests (ties rotate),
    /// else — all down — the one that comes back first (the attempt fails
    /// fast and is retried with back-off, so a call never waits
    /// unboundedly for a dead pool).
    pub(crate) fn pick(&self, session: Option<u64>) -> Lease {
        let len = self.eps.len();
        if len == 1 {
            let ep = &self.eps[0];
            let probe = ep.down.load(Ordering::Acquire)
                && ep.down_until().is_none_or(|t| t <= Instant::now())
                && ep.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok();
            return lease(ep, probe);
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed) % len;
        let order = (0..len).map(|i| &self.eps[(start + i) % len]);
        let now = Instant::now();
        for ep in order.clone() {
            if ep.down.load(Ordering::Acquire)
                && ep.down_until().is_none_or(|t| t <= now)
                && ep.probing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok()
            {
                return lease(ep, true);
            }
        }
        if let Some(session) = session {
            if let Some(ep) = self.affine(session) {
                return lease(ep, false);
            }
        }
        let mut best: Option<(&Arc<Endpoint>, usize)> = None;
        for ep in order {
            if !ep.down.load(Ordering::Acquire) {
                let o = ep.outstanding.load(Ordering::Acquire);
                if best.is_none_or(|(_, b)| o < b) {
                    best = Some((ep, o));
                }
            }
        }
        if let Some((ep, _)) = best {
            return lease(ep, false);
        }
        let ep = self
            .eps
            .iter()
            .min_by_key(|e| e.down_until().unwrap_or(now))
            .expect("a pool has at least one endpoint");
        lease(ep, false)
    }
}
