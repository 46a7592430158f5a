//! One bridge worker: a Python process running the embedded `bridge.py`
//! (one ScienceWorld simulator, its JVM a child of it), spoken to in
//! line-delimited JSON over stdin/stdout.
//!
//! Lifetime: the worker runs in its own process group (Python and the JVM),
//! which is SIGKILLed when the [`Worker`] is dropped or fails; a process-wide
//! registry lets [`kill_all_workers`] (the Ctrl-C guard) end every group;
//! and the bridge itself exits when the runner disappears (it watches its
//! parent pid, and the JVM dies with Python's pipe). A request that fails at
//! the transport level (EOF, timeout, unparsable reply) poisons the worker:
//! the caller drops it and the pool starts a fresh one.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The bridge script, embedded so that an installed binary works.
pub const BRIDGE_PY: &str = include_str!("bridge.py");
/// The one-line install of what the bridge needs.
pub const INSTALL_HINT: &str =
    "install it with `pip install scienceworld==1.2.3` and a Java 17 runtime (Debian/Ubuntu: `apt-get install -y openjdk-17-jre-headless`)";
/// Longest reply line accepted from a worker.
const MAX_LINE: usize = 16 << 20;
/// Lines of a worker's stderr kept for error messages.
const STDERR_TAIL: usize = 20;

/// Writes the embedded script to a content-addressed cache file (once per
/// process) and returns its path.
pub fn bridge_script() -> std::io::Result<PathBuf> {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    if let Some(p) = PATH.get() {
        return Ok(p.clone());
    }
    let hash = blake3::hash(BRIDGE_PY.as_bytes()).to_hex();
    let dir = std::env::temp_dir().join("mpo-run");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("sciworld_bridge_{}.py", &hash[..16]));
    let fresh = std::fs::read_to_string(&path).map(|s| s == BRIDGE_PY).unwrap_or(false);
    if !fresh {
        let tmp = tempfile::NamedTempFile::new_in(&dir)?;
        std::fs::write(tmp.path(), BRIDGE_PY)?;
        tmp.persist(&path).map_err(|e| e.error)?;
    }
    let _ = PATH.set(path.clone());
    Ok(path)
}

/// Short hash of the bridge script, part of the environment's identity.
pub fn bridge_hash() -> String {
    blake3::hash(BRIDGE_PY.as_bytes()).to_hex()[..16].to_string()
}

/// What `bridge.py --check` found.
#[derive(Clone, Debug)]
pub struct Installation {
    pub python: String,
    pub scienceworld: String,
    pub java: String,
}

/// Checks that `python` runs, imports `scienceworld`, and finds `java`;
/// the error names the one-line install. A success is remembered for the
/// process (plans build the environment many times; each check starts
/// Python and Java).
pub fn check_installation(python: &str) -> Result<Installation, String> {
    static FOUND: OnceLock<Mutex<std::collections::HashMap<String, Installation>>> = OnceLock::new();
    let found = FOUND.get_or_init(Default::default);
    if let Some(i) = found.lock().ok().and_then(|m| m.get(python).cloned()) {
        return Ok(i);
    }
    let inst = check_installation_now(python)?;
    if let Ok(mut m) = found.lock() {
        m.insert(python.to_string(), inst.clone());
    }
    Ok(inst)
}

fn check_installation_now(python: &str) -> Result<Installation, String> {
    let script = bridge_script().map_err(|e| format!("cannot write the ScienceWorld bridge script: {e}"))?;
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{python}` for ScienceWorld ({e}); set `python = \"…\"` in the env, and {INSTALL_HINT}"))?;
    let line = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(line.trim()).map_err(|_| {
        format!(
            "`{python} {}` --check failed (status {}): {}; {INSTALL_HINT}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let get = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let sw = get("scienceworld").ok_or_else(|| {
        format!(
            "the Python package `scienceworld` is missing for `{python}` ({}); {INSTALL_HINT}",
            get("scienceworld_error").unwrap_or_default()
        )
    })?;
    let java = get("java").ok_or_else(|| {
        format!("Java is missing ({}); ScienceWorld needs a Java runtime: {INSTALL_HINT}", get("java_error").unwrap_or_default())
    })?;
    Ok(Installation { python: get("python").unwrap_or_default(), scienceworld: sw, java })
}

fn registry() -> &'static Mutex<HashSet<i32>> {
    static LIVE: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

fn kill_group(pgid: i32) {
    if pgid > 0 {
        // SAFETY: plain syscall; a negative pid addresses the process group.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// SIGKILLs every live worker's process group (for a Ctrl-C handler).
pub fn kill_all_workers() {
    let groups: Vec<i32> = registry().lock().map(|mut g| g.drain().collect()).unwrap_or_default();
    for g in groups {
        kill_group(g);
    }
}

/// Number of worker process groups alive in this process.
pub fn live_workers() -> usize {
    registry().lock().map(|g| g.len()).unwrap_or(0)
}

/// Installs (once per process) a Ctrl-C listener that kills all workers and
/// exits with status 130, as the default SIGINT action would have.
pub fn install_ctrl_c_guard() {
    static ONCE: OnceLock<()> = OnceLock::new();
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    ONCE.get_or_init(|| {
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                kill_all_workers();
                std::process::exit(130);
            }
        });
    });
}

/// A transport-level failure: the worker must be discarded.
#[derive(Debug)]
pub struct WorkerFailure(pub String);

/// A request's result: `Ok(Ok(reply))`, a request the bridge refused
/// (`Ok(Err(message))`, the worker stays usable), or a dead worker.
pub type Reply = Result<Result<Value, String>, WorkerFailure>;

pub struct Worker {
    child: Child,
    pid: i32,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    timeout: Duration,
}

impl Worker {
    /// Starts a worker and waits for its hello (JVM started).
    pub async fn spawn(
        python: &str,
        script: &Path,
        env: &[(String, String)],
        start_timeout: Duration,
        timeout: Duration,
    ) -> Result<Worker, String> {
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start `{python}` for ScienceWorld: {e}; {INSTALL_HINT}"))?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        registry().lock().unwrap().insert(pid);
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let tail = stderr_tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                tracing::debug!(target: "sciworld", "worker {pid}: {l}");
                let mut t = tail.lock().unwrap();
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(l);
            }
        });
        let mut w = Worker { child, pid, stdin, stdout, next_id: 0, stderr_tail, timeout };
        match w.read_reply(start_timeout).await {
            Ok(v) if v.get("ok").and_then(Value::as_bool) == Some(true) => Ok(w),
            Ok(v) => Err(format!(
                "the ScienceWorld bridge failed to start: {}; {INSTALL_HINT}",
                v.get("error").and_then(Value::as_str).unwrap_or("unknown error")
            )),
            Err(WorkerFailure(e)) => Err(format!("the ScienceWorld bridge failed to start: {e}")),
        }
    }

    /// The bridge's (Python's) process id; the JVM runs in its process group.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap();
        let s: Vec<&str> = t.iter().map(String::as_str).collect();
        if s.is_empty() {
            String::new()
        } else {
            format!("; its stderr ends: {}", s.join(" | "))
        }
    }

    async fn read_reply(&mut self, timeout: Duration) -> Result<Value, WorkerFailure> {
        let mut buf = Vec::new();
        let read = async {
            loop {
                let avail = self.stdout.fill_buf().await?;
                if avail.is_empty() {
                    return Ok::<bool, std::io::Error>(false);
                }
                if let Some(i) = avail.iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&avail[..i]);
                    self.stdout.consume(i + 1);
                    return Ok(true);
                }
                let n = avail.len();
                buf.extend_from_slice(avail);
                self.stdout.consume(n);
                if buf.len() > MAX_LINE {
                    return Err(std::io::Error::other("reply line too long"));
                }
            }
        };
        let res = tokio::time::timeout(timeout, read).await;
        let pid = self.pid;
        match res {
            Err(_) => Err(WorkerFailure(format!("ScienceWorld worker {pid} did not answer within {:.0?}", timeout))),
            Ok(Err(e)) => Err(WorkerFailure(format!("reading from ScienceWorld worker {pid}: {e}{}", self.stderr_tail()))),
            Ok(Ok(false)) => {
                // Give the stderr reader a moment to collect the last words.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let status = self.child.try_wait().ok().flatten();
                Err(WorkerFailure(format!(
                    "ScienceWorld worker {pid} exited ({}){}",
                    status.map_or("still running, stdout closed".to_string(), |s| s.to_string()),
                    self.stderr_tail()
                )))
            }
            Ok(Ok(true)) => serde_json::from_slice::<Value>(&buf)
                .ok()
                .filter(Value::is_object)
                .ok_or_else(|| {
                    WorkerFailure(format!(
                        "ScienceWorld worker {pid} answered garbage: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(200)])
                    ))
                }),
        }
    }

    /// Sends one request and waits (up to the request timeout) for its reply.
    pub async fn request(&mut self, mut req: Value) -> Reply {
        self.next_id += 1;
        let id = self.next_id;
        req["id"] = id.into();
        let mut line = req.to_string();
        line.push('\n');
        let pid = self.pid;
        let write = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(WorkerFailure(format!("writing to ScienceWorld worker {pid}: {e}{}", self.stderr_tail())))
            }
            Err(_) => return Err(WorkerFailure(format!("ScienceWorld worker {pid} does not read its input"))),
        }
        let v = self.read_reply(self.timeout).await?;
        if v.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(WorkerFailure(format!("ScienceWorld worker {pid} answered out of turn: {v}")));
        }
        match v.get("ok").and_then(Value::as_bool) {
            Some(true) => Ok(Ok(v)),
            Some(false) => Ok(Err(v.get("error").and_then(Value::as_str).unwrap_or("unknown error").to_string())),
            None => Err(WorkerFailure(format!("ScienceWorld worker {pid} answered without `ok`: {v}"))),
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Python and its JVM share the group; `kill_on_drop` reaps Python.
        kill_group(self.pid);
        if let Ok(mut g) = registry().lock() {
            g.remove(&self.pid);
        }
    }
}
