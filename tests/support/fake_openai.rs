//! An in-process fake of an OpenAI-compatible chat-completions server, for
//! tests and benches: `#[path = "support/fake_openai.rs"] mod fake_openai;`.
//!
//! - Answers deterministically: by default choice `i` of a request is
//!   [`expected_answer`]`(last message, seed, i)`; or a scripted reply from a
//!   closure `Fn(&[Message]) -> String` ([`FakeOptions::responder`]).
//! - Supports `n`, reports `usage` ([`count_tokens`]).
//! - Records every request (path, headers, JSON body, fault injected).
//! - Injects faults: 429 + Retry-After, 500, hangs, abrupt connection close,
//!   invalid JSON, empty choices/content, any status; at a rate decided by a
//!   hash of the request counter (deterministic), or per request by a script.
//! - Can start late (`start_on` a reserved address), be "not ready" (503)
//!   for a while, and be killed (listener dropped, open connections broken).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use mpo_run::model::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Scripted reply: the text of every choice, from the request's messages.
pub type Responder = Arc<dyn Fn(&[Message]) -> String + Send + Sync>;
/// A responder that also sees the request's seed.
pub type SeededResponder = Arc<dyn Fn(&[Message], Option<u64>) -> String + Send + Sync>;
/// Per-request fault script: `(request counter, JSON body)` → fault.
pub type FaultScript = Arc<dyn Fn(u64, &Value) -> Option<Fault> + Send + Sync>;

/// A misbehaviour injected into one chat-completions request.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 429 with `Retry-After: {secs}`.
    RateLimited { retry_after_s: u64 },
    /// 500.
    ServerError,
    /// Any status, JSON error body (echoing the Authorization header if
    /// [`FakeOptions::echo_auth_in_errors`]).
    Status(u16),
    /// Any status with exactly this body.
    Raw { status: u16, body: String },
    /// Sleeps this long, then answers normally (client should time out).
    Hang(Duration),
    /// Drops the connection without an answer.
    CloseConnection,
    /// 200 with a body that is not JSON.
    InvalidJson,
    /// 200 with `"choices": []`.
    EmptyChoices,
    /// 200 with an empty `content` and no `finish_reason` (a broken
    /// answer; an empty reply the model finished, `finish_reason: "stop"`,
    /// is an answer: a responder returning "" gives that).
    EmptyContent,
}

#[derive(Clone)]
pub struct FakeOptions {
    /// Delay before every answer.
    pub latency: Duration,
    /// Share of chat requests that get a fault from `faults`.
    pub fault_rate: f64,
    /// Faults to mix (chosen by hash of the request counter).
    pub faults: Vec<Fault>,
    pub fault_seed: u64,
    /// Overrides the rate: decides the fault of each request.
    pub script: Option<FaultScript>,
    pub responder: Option<Responder>,
    pub seeded_responder: Option<SeededResponder>,
    /// `GET /v1/models` and chat answer 503 until this long after start.
    pub ready_after: Duration,
    /// If set, requests without `Authorization: Bearer {key}` get 401.
    pub require_key: Option<String>,
    /// Error bodies quote the Authorization header (like some APIs do).
    pub echo_auth_in_errors: bool,
    pub model: String,
    /// A model of a server's prefix cache (benches): see [`PrefixCache`].
    pub prefix_cache: Option<PrefixCache>,
}

/// A model of vLLM's automatic prefix caching, for benches that compare
/// routings: the prompt (its messages' words, in order) is cut into blocks
/// of `block_tokens` words, each block named by the hash of everything up
/// to its end; the longest run of leading blocks already cached is a hit,
/// the rest costs `us_per_uncached_token` of prefill time; every full
/// block is then cached, least recently used out past `capacity_blocks`.
#[derive(Clone, Copy, Debug)]
pub struct PrefixCache {
    pub block_tokens: usize,
    pub capacity_blocks: usize,
    pub us_per_uncached_token: u64,
}

#[derive(Default)]
struct BlockLru {
    tick: u64,
    by_hash: HashMap<u64, u64>,
    by_tick: std::collections::BTreeMap<u64, u64>,
}

impl BlockLru {
    /// Cached leading blocks of `blocks`, then caches them all.
    fn lookup_insert(&mut self, blocks: &[u64], capacity: usize) -> usize {
        let hits = blocks.iter().take_while(|h| self.by_hash.contains_key(h)).count();
        for &h in blocks {
            self.tick += 1;
            if let Some(old) = self.by_hash.insert(h, self.tick) {
                self.by_tick.remove(&old);
            }
            self.by_tick.insert(self.tick, h);
        }
        while self.by_hash.len() > capacity {
            let (&t, &h) = self.by_tick.iter().next().expect("non-empty");
            self.by_tick.remove(&t);
            self.by_hash.remove(&h);
        }
        hits
    }
}

impl Default for FakeOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            fault_rate: 0.0,
            faults: Vec::new(),
            fault_seed: 0x5eed,
            script: None,
            responder: None,
            seeded_responder: None,
            ready_after: Duration::ZERO,
            require_key: None,
            echo_auth_in_errors: false,
            model: "fake-model".into(),
            prefix_cache: None,
        }
    }
}

impl FakeOptions {
    pub fn latency(mut self, d: Duration) -> Self {
        self.latency = d;
        self
    }
    pub fn faults(mut self, rate: f64, faults: Vec<Fault>) -> Self {
        self.fault_rate = rate;
        self.faults = faults;
        self
    }
    pub fn script(mut self, f: impl Fn(u64, &Value) -> Option<Fault> + Send + Sync + 'static) -> Self {
        self.script = Some(Arc::new(f));
        self
    }
    pub fn seeded_responder(mut self, f: impl Fn(&[Message], Option<u64>) -> String + Send + Sync + 'static) -> Self {
        self.seeded_responder = Some(Arc::new(f));
        self
    }
    pub fn responder(mut self, f: impl Fn(&[Message]) -> String + Send + Sync + 'static) -> Self {
        self.responder = Some(Arc::new(f));
        self
    }
    pub fn ready_after(mut self, d: Duration) -> Self {
        self.ready_after = d;
        self
    }
    pub fn require_key(mut self, key: impl Into<String>) -> Self {
        self.require_key = Some(key.into());
        self
    }
    pub fn prefix_cache(mut self, model: PrefixCache) -> Self {
        self.prefix_cache = Some(model);
        self
    }
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Counter over all requests to this server (0-based).
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// Header names lower-case.
    pub headers: Vec<(String, String)>,
    /// JSON body (`Null` for GET or invalid JSON).
    pub body: Value,
    pub fault: Option<Fault>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// Content of the last message of a chat request.
    pub fn last_message(&self) -> Option<&str> {
        self.body["messages"].as_array()?.last()?["content"].as_str()
    }
}

struct Shared {
    opts: FakeOptions,
    started: Instant,
    seq: AtomicU64,
    blocks: Mutex<BlockLru>,
    /// Prompt tokens in full blocks, and those found in the prefix cache.
    block_tokens_seen: AtomicU64,
    block_tokens_hit: AtomicU64,
    /// Readiness probes answered or refused.
    probes: AtomicU64,
    log: Mutex<Vec<Recorded>>,
    /// Clean (non-faulted) answers per last-message content.
    clean: Mutex<HashMap<String, u64>>,
    killed: Arc<AtomicBool>,
    kill_notify: Arc<Notify>,
}

/// A running fake. Dropping it kills it.
pub struct FakeServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

/// FNV-1a, 64 bits.
pub fn fnv(bytes: &[u8], mut h: u64) -> u64 {
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The default answer to choice `index` of a request whose last message
/// (the assistant prefill, if any) is `last`.
pub fn expected_answer(last: &str, seed: Option<u64>, index: u32) -> String {
    let mut h = fnv(last.as_bytes(), 0xcbf2_9ce4_8422_2325);
    h = fnv(&seed.map_or(u64::MAX, |s| s).to_le_bytes(), h);
    h = fnv(&index.to_le_bytes(), h);
    format!("ans-{h:016x} for [{}]", last.chars().take(40).collect::<String>())
}

/// The fake's token count: whitespace-separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// A free 127.0.0.1 address (bound, then released), for `start_on`.
pub async fn reserve_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    l.local_addr().unwrap()
}

impl FakeServer {
    pub async fn start(opts: FakeOptions) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), opts).await.expect("bind the fake server")
    }

    pub async fn start_on(addr: SocketAddr, opts: FakeOptions) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let killed = Arc::new(AtomicBool::new(false));
        let kill_notify = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            opts,
            started: Instant::now(),
            seq: AtomicU64::new(0),
            blocks: Mutex::new(BlockLru::default()),
            block_tokens_seen: AtomicU64::new(0),
            block_tokens_hit: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
            clean: Mutex::new(HashMap::new()),
            killed: killed.clone(),
            kill_notify: kill_notify.clone(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .with_state(shared.clone());
        let listener = KillListener { inner: Some(listener), killed, notify: kill_notify, addr };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<ConnHandle>()).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.log.lock().unwrap().clone()
    }

    pub fn chat_requests(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path.ends_with("/chat/completions")).collect()
    }

    /// With a [`PrefixCache`]: (prompt tokens in full blocks, of them hits).
    pub fn prefix_cache_tokens(&self) -> (u64, u64) {
        (self.shared.block_tokens_seen.load(Ordering::SeqCst), self.shared.block_tokens_hit.load(Ordering::SeqCst))
    }

    /// mpo-run's readiness probes (1-token chat requests) received.
    pub fn probe_count(&self) -> u64 {
        self.shared.probes.load(Ordering::SeqCst)
    }

    pub fn chat_count(&self) -> usize {
        self.shared.log.lock().unwrap().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
    }

    /// Clean answers given, per last-message content.
    pub fn clean_answers(&self) -> HashMap<String, u64> {
        self.shared.clean.lock().unwrap().clone()
    }

    /// Stops accepting connections and breaks the open ones.
    pub fn kill(&self) {
        self.shared.killed.store(true, Ordering::SeqCst);
        self.shared.kill_notify.notify_one();
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.kill();
        self.task.abort();
    }
}

fn record(st: &Shared, seq: u64, method: &str, path: &str, headers: &HeaderMap, body: Value, fault: Option<Fault>) {
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    st.log.lock().unwrap().push(Recorded {
        seq,
        method: method.into(),
        path: path.into(),
        headers,
        body,
        fault,
        at: Instant::now(),
    });
}

fn not_ready(st: &Shared) -> bool {
    st.started.elapsed() < st.opts.ready_after
}

fn auth_error(st: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = st.opts.require_key.as_ref()?;
    let got = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if got == format!("Bearer {key}") {
        return None;
    }
    let msg = if st.opts.echo_auth_in_errors {
        format!("Incorrect API key provided: {got}")
    } else {
        "Incorrect API key provided".to_string()
    };
    Some((StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": msg, "type": "invalid_request_error"}})))
        .into_response())
}

async fn models(State(st): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let seq = st.seq.fetch_add(1, Ordering::SeqCst);
    record(&st, seq, "GET", "/v1/models", &headers, Value::Null, None);
    if not_ready(&st) {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response();
    }
    if let Some(r) = auth_error(&st, &headers) {
        return r;
    }
    axum::Json(json!({"object": "list", "data": [{"id": st.opts.model, "object": "model"}]})).into_response()
}

async fn chat(
    State(st): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    // mpo-run's readiness probe (a 1-token chat request, `X-Mpo-Run-Probe`)
    // takes no place in the request sequence that fault scripts and
    // counts see: it is recorded apart (`probes`), and a script sees it as
    // request `u64::MAX` (a script that faults every request faults it).
    let probe = headers.contains_key("x-mpo-run-probe");
    let seq = if probe { u64::MAX } else { st.seq.fetch_add(1, Ordering::SeqCst) };
    let fault = if let Some(script) = &st.opts.script {
        script(seq, &json)
    } else if !st.opts.faults.is_empty() && st.opts.fault_rate > 0.0 {
        let h = fnv(&seq.to_le_bytes(), 0xcbf2_9ce4_8422_2325 ^ st.opts.fault_seed);
        let h = fnv(&h.to_le_bytes(), h); // mix
        ((h % 1_000_000) as f64 / 1e6 < st.opts.fault_rate)
            .then(|| st.opts.faults[((h >> 32) % st.opts.faults.len() as u64) as usize].clone())
    } else {
        None
    };
    if probe {
        st.probes.fetch_add(1, Ordering::SeqCst);
    } else {
        record(&st, seq, "POST", "/v1/chat/completions", &headers, json.clone(), fault.clone());
    }
    if not_ready(&st) {
        return (StatusCode::SERVICE_UNAVAILABLE, "loading").into_response();
    }
    if let Some(r) = auth_error(&st, &headers) {
        return r;
    }
    if json.is_null() {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    }
    if !st.opts.latency.is_zero() {
        tokio::time::sleep(st.opts.latency).await;
    }
    let messages: Vec<Message> = serde_json::from_value(json["messages"].clone()).unwrap_or_default();
    if let (Some(pc), false) = (st.opts.prefix_cache, probe) {
        let words: Vec<&str> = messages.iter().flat_map(|m| m.content.split_whitespace()).collect();
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        let blocks: Vec<u64> = words
            .chunks_exact(pc.block_tokens)
            .map(|b| {
                for w in b {
                    h = fnv(b" ", fnv(w.as_bytes(), h));
                }
                h
            })
            .collect();
        let hits = st.blocks.lock().unwrap().lookup_insert(&blocks, pc.capacity_blocks);
        st.block_tokens_seen.fetch_add((blocks.len() * pc.block_tokens) as u64, Ordering::SeqCst);
        st.block_tokens_hit.fetch_add((hits * pc.block_tokens) as u64, Ordering::SeqCst);
        let uncached = words.len() - hits * pc.block_tokens;
        tokio::time::sleep(Duration::from_micros(uncached as u64 * pc.us_per_uncached_token)).await;
    }
    let last = messages.last().map(|m| m.content.clone()).unwrap_or_default();
    let n = json["n"].as_u64().unwrap_or(1).max(1) as u32;
    let seed = json["seed"].as_u64();
    match &fault {
        Some(Fault::RateLimited { retry_after_s }) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after_s.to_string())],
                axum::Json(json!({"error": {"message": "rate limited"}})),
            )
                .into_response()
        }
        Some(Fault::ServerError) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
        }
        Some(Fault::Status(code)) => {
            let got = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let msg = if st.opts.echo_auth_in_errors {
                format!("bad request (authorization was: {got})")
            } else {
                "bad request".into()
            };
            return (
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST),
                axum::Json(json!({"error": {"message": msg}})),
            )
                .into_response();
        }
        Some(Fault::Raw { status, body }) => {
            return (StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST), body.clone()).into_response()
        }
        Some(Fault::Hang(d)) => tokio::time::sleep(*d).await,
        Some(Fault::CloseConnection) => {
            conn.kill.store(true, Ordering::SeqCst);
            return Response::new(Body::from("never sent"));
        }
        Some(Fault::InvalidJson) => {
            return ([("content-type", "application/json")], "{\"choices\": [{\"message\": ").into_response()
        }
        Some(Fault::EmptyChoices) => {
            return axum::Json(json!({"id": "x", "object": "chat.completion", "choices": []})).into_response()
        }
        Some(Fault::EmptyContent) | None => {}
    }
    let texts: Vec<String> = (0..n)
        .map(|i| match (&fault, &st.opts.responder) {
            (Some(Fault::EmptyContent), _) => String::new(),
            _ if st.opts.seeded_responder.is_some() => (st.opts.seeded_responder.as_ref().unwrap())(&messages, seed),
            (_, Some(r)) => r(&messages),
            (_, None) => expected_answer(&last, seed, i),
        })
        .collect();
    if fault.is_none() && !probe {
        *st.clean.lock().unwrap().entry(last.clone()).or_default() += 1;
    }
    let prompt_tokens: u64 = messages.iter().map(|m| count_tokens(&m.content)).sum();
    let completion_tokens: u64 = texts.iter().map(|t| count_tokens(t)).sum();
    let choices: Vec<Value> = texts
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let finish = if fault == Some(Fault::EmptyContent) { Value::Null } else { json!("stop") };
            json!({"index": i, "message": {"role": "assistant", "content": t}, "finish_reason": finish})
        })
        .collect();
    axum::Json(json!({
        "id": format!("chatcmpl-{seq}"),
        "object": "chat.completion",
        "model": st.opts.model,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }))
    .into_response()
}

// ---- a listener whose connections can be broken ------------------------

/// Per-connection handle (the `ConnectInfo` of a request): setting `kill`
/// breaks that connection at its next read or write.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub kill: Arc<AtomicBool>,
    pub peer: SocketAddr,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, KillListener>> for ConnHandle {
    fn connect_info(stream: axum::serve::IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

pub struct KillListener {
    inner: Option<TcpListener>,
    killed: Arc<AtomicBool>,
    notify: Arc<Notify>,
    addr: SocketAddr,
}

impl axum::serve::Listener for KillListener {
    type Io = KillIo;
    type Addr = ConnHandle;

    async fn accept(&mut self) -> (KillIo, ConnHandle) {
        loop {
            if self.killed.load(Ordering::SeqCst) {
                self.inner = None; // new connections are refused
                std::future::pending::<()>().await;
            }
            let listener = self.inner.as_ref().expect("listener present until killed");
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let kill = Arc::new(AtomicBool::new(false));
                        let io = KillIo { inner: stream, conn: kill.clone(), server: self.killed.clone() };
                        return (io, ConnHandle { kill, peer });
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                },
                _ = self.notify.notified() => {}
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<ConnHandle> {
        Ok(ConnHandle { kill: Arc::new(AtomicBool::new(false)), peer: self.addr })
    }
}

pub struct KillIo {
    inner: TcpStream,
    conn: Arc<AtomicBool>,
    server: Arc<AtomicBool>,
}

impl KillIo {
    fn broken(&self) -> bool {
        self.conn.load(Ordering::SeqCst) || self.server.load(Ordering::SeqCst)
    }
}

fn reset() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, "fake: connection killed")
}

impl AsyncRead for KillIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
