//! AgentGym environment servers over HTTP (`[envs.NAME] kind = "agentgym"`).
//!
//! Speaks each AgentGym server's protocol as it is (agentenv-alfworld,
//! agentenv-webshop, agentenv-sciworld); `episodes.rs` has the exact request
//! and response shapes. One [`AgentgymEnv`] talks to one or more servers of
//! the same kind (`url` / `urls`); each server runs at most `concurrency`
//! episodes at a time (a session holds a slot from `/create` to `/close`).
//!
//! Failures: any HTTP error, a non-JSON answer, or a `{"error": …}` body
//! (AgentGym reports errors as HTTP 200) is an [`EnvError`]. A 503 and a
//! refused connection are retried `retries` times with exponential backoff
//! (nothing was done by the server); a timeout or a connection broken in
//! the middle of a request is retried only where repeating it is harmless
//! (`/create`, `/reset`, reads), never for `/step`. Sessions are closed
//! (`/close`) whenever the server has that route.
//!
//! Tasks of a split are a list of *game references* sent to the server's
//! `/reset` as they are (a number, or a string): ALFWorld `game`, SciWorld
//! `data_idx`, WebShop `session_id`. Task ids are `{split}/{position:04}`.
//! Defaults:
//! - `alfworld`: `seen` = games 0..140 (eval_in_distribution), `unseen` =
//!   140..274 (eval_out_of_distribution) — the game order of
//!   [`serve_builtin`]; AgentGym's stock ALFWorld server lists its own
//!   train/test mappings instead, so give `games.seen` / `games.unseen`
//!   explicitly for it. Step limit 30, reward = won.
//! - `webshop`: `test` = the 200 sessions of the ETO release
//!   (`data/webshop/webshop_test_indices.json`). Step limit 10, reward = the
//!   environment's final score (0–1).
//! - `sciworld`: no default; `games.SPLIT` lists the server's `data_idx`
//!   values (its own flattening of task × variation). Step limit 30 for every
//!   task (the per-task limits of `sciworld_max_steps.json` are not applied
//!   here: the task name is known only after `/reset`). Reward = best score
//!   seen / 100.
//!
//! The task type of an ALFWorld game (and a SciWorld task name) is known
//! only after `/reset`: [`Environment::tasks`] reports `task_type =
//! "unknown"` and the episode reports the real one through
//! [`Episode::learned_task_type`].
//!
//! The built-in household world is served over the ALFWorld protocol by
//! [`serve_builtin`] (module [`serve`] documents its `game` values).

mod client;
mod episodes;
pub mod serve;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{EnvError, Environment, Episode, TaskInfo};
use crate::env::ActionRule;
use crate::env::Family;

pub use episodes::{alfworld_task_type, strip_arrival, trim_alfworld_intro};
pub use serve::{
    builtin_game, builtin_router, builtin_router_with, serve_builtin, serve_builtin_on, serve_builtin_on_with,
    serve_builtin_with, ServeSettings,
};

/// The 200 WebShop test sessions of the ETO release.
const WEBSHOP_TEST: &str = include_str!("../../../data/webshop/webshop_test_indices.json");

/// Which AgentGym server a spec talks to (`env = "…"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    Alfworld,
    Webshop,
    Sciworld,
}

impl ServerKind {
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Alfworld => "alfworld",
            ServerKind::Webshop => "webshop",
            ServerKind::Sciworld => "sciworld",
        }
    }

    /// The prompt family of its episodes.
    pub fn family(self) -> Family {
        match self {
            ServerKind::Alfworld => Family::Alfworld,
            ServerKind::Webshop => Family::Webshop,
            ServerKind::Sciworld => Family::Sciworld,
        }
    }

    /// The split names a spec may use for this kind.
    pub fn splits(self) -> &'static [&'static str] {
        match self {
            ServerKind::Alfworld | ServerKind::Sciworld => &["train", "seen", "unseen"],
            ServerKind::Webshop => &["train", "test"],
        }
    }

    /// Step limit of the released loops (ALFWorld 30, WebShop 10,
    /// ScienceWorld's generic 30).
    pub fn default_max_steps(self) -> u32 {
        match self {
            ServerKind::Alfworld | ServerKind::Sciworld => 30,
            ServerKind::Webshop => 10,
        }
    }

    /// How to start such a server (for the health check's hint).
    fn start_hint(self, port: u16) -> String {
        match self {
            ServerKind::Alfworld => format!(
                "start it with `alfworld --host 127.0.0.1 --port {port}` (AgentGym's agentenv-alfworld), \
                 or serve the built-in household world with `mpo-run serve-env builtin --port {port}`"
            ),
            ServerKind::Webshop => {
                format!("start it with `webshop --host 127.0.0.1 --port {port}` (AgentGym's agentenv-webshop)")
            }
            ServerKind::Sciworld => {
                format!("start it with `sciworld --host 127.0.0.1 --port {port}` (AgentGym's agentenv-sciworld)")
            }
        }
    }
}

/// One game reference, sent to `/reset` as it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GameRef {
    Index(u64),
    Id(String),
}

impl GameRef {
    fn to_json(&self) -> serde_json::Value {
        match self {
            GameRef::Index(i) => serde_json::Value::from(*i),
            GameRef::Id(s) => serde_json::Value::from(s.as_str()),
        }
    }
}

/// The games of a split: `{ start = 0, count = 140 }` or a list
/// (`[3, 17, "seen/0007"]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GameList {
    Range { start: u64, count: usize },
    List(Vec<GameRef>),
}

impl GameList {
    fn len(&self) -> usize {
        match self {
            GameList::Range { count, .. } => *count,
            GameList::List(v) => v.len(),
        }
    }
    fn get(&self, i: usize) -> Option<GameRef> {
        match self {
            GameList::Range { start, count } => (i < *count).then(|| GameRef::Index(start + i as u64)),
            GameList::List(v) => v.get(i).cloned(),
        }
    }
}

/// `[envs.NAME] kind = "agentgym"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentgymEnvSpec {
    /// The server's environment: `alfworld`, `webshop` or `sciworld`.
    pub env: ServerKind,
    /// Base URL of one server, e.g. `http://127.0.0.1:36001`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Base URLs of several servers of the same kind (with or beside `url`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// Episodes in flight per server.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Limit of one request, in seconds.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    #[serde(default = "default_connect_timeout_s")]
    pub connect_timeout_s: f64,
    /// Retries of a request answered 503 or refused (and of a failed
    /// `/create`, `/reset` or read).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff between retries (doubles, at most 5 s).
    #[serde(default = "default_retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Step limit of an episode (default per `env`: 30, webshop 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u32>,
    /// Use only the first K tasks of a split, e.g. `tasks = { seen = 20 }`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, usize>,
    /// The server's games per split (overrides the defaults).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub games: BTreeMap<String, GameList>,
}

fn default_concurrency() -> usize {
    8
}
fn default_timeout_s() -> f64 {
    120.0
}
fn default_connect_timeout_s() -> f64 {
    10.0
}
fn default_retries() -> u32 {
    5
}
fn default_retry_backoff_ms() -> u64 {
    500
}

impl AgentgymEnvSpec {
    /// The first `limit` tasks of a split (all if `None`), from the
    /// spec's game lists: no server needed.
    pub fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        let games = self.games_of(split).ok_or_else(|| {
            EnvError(format!(
                "the AgentGym {} env has no split `{split}`; it has: {}",
                self.env.name(),
                self.available_splits().join(", ")
            ))
        })?;
        let n = limit.map_or(games.len(), |l| l.min(games.len()));
        let (task_type, icl_key) = match self.env {
            ServerKind::Webshop => ("webshop", "default"),
            ServerKind::Sciworld => ("unknown", "default"),
            ServerKind::Alfworld => ("unknown", "unknown"),
        };
        Ok((0..n)
            .map(|i| TaskInfo {
                task_id: format!("{split}/{i:04}"),
                split: split.to_string(),
                task_type: task_type.to_string(),
                icl_key: icl_key.to_string(),
                max_steps: self.max_steps(),
            })
            .collect())
    }


    /// A spec for one server with every default.
    pub fn new(env: ServerKind, url: impl Into<String>) -> Self {
        Self {
            env,
            url: Some(url.into()),
            urls: Vec::new(),
            concurrency: default_concurrency(),
            timeout_s: default_timeout_s(),
            connect_timeout_s: default_connect_timeout_s(),
            retries: default_retries(),
            retry_backoff_ms: default_retry_backoff_ms(),
            max_steps: None,
            tasks: BTreeMap::new(),
            games: BTreeMap::new(),
        }
    }

    /// `url` then `urls`, without a trailing `/`.
    pub fn all_urls(&self) -> Vec<String> {
        self.url
            .iter()
            .chain(&self.urls)
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .collect()
    }

    pub fn max_steps(&self) -> u32 {
        self.max_steps.unwrap_or(self.env.default_max_steps())
    }

    /// The split names a spec may use (the env's; see [`AgentgymEnvSpec::available_splits`]).
    pub fn splits(&self) -> &'static [&'static str] {
        self.env.splits()
    }

    /// The splits that have games (explicit or default), in `splits()` order.
    pub fn available_splits(&self) -> Vec<String> {
        self.splits()
            .iter()
            .filter(|s| self.games_of(s).is_some())
            .map(|s| s.to_string())
            .collect()
    }

    /// The games of a split: `games.SPLIT`, else the default, else `None`.
    pub fn games_of(&self, split: &str) -> Option<GameList> {
        if let Some(g) = self.games.get(split) {
            return Some(g.clone());
        }
        match (self.env, split) {
            (ServerKind::Alfworld, "seen") => Some(GameList::Range { start: 0, count: 140 }),
            (ServerKind::Alfworld, "unseen") => Some(GameList::Range { start: 140, count: 134 }),
            (ServerKind::Webshop, "test") => Some(GameList::List(webshop_test_sessions())),
            _ => None,
        }
    }

    /// How many tasks of `split` the experiment uses (`None`: no such split).
    pub fn task_count(&self, split: &str) -> Option<usize> {
        let all = self.games_of(split)?.len();
        Some(self.tasks.get(split).map_or(all, |&k| k.min(all)))
    }

    /// Checks what the user wrote, without side effects. The message names
    /// the key (relative to `envs.NAME`), the value and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        let urls = self.all_urls();
        if urls.is_empty() {
            errs.push(
                "`url` (or `urls`) is missing: give the server's base URL, e.g. `url = \"http://127.0.0.1:36001\"`"
                    .to_string(),
            );
        }
        for (i, u) in urls.iter().enumerate() {
            match reqwest::Url::parse(u) {
                Ok(p) if (p.scheme() == "http" || p.scheme() == "https") && p.host_str().is_some() => {}
                _ => errs.push(format!("`{u}` is not an http(s) URL with a host")),
            }
            if urls[..i].contains(u) {
                errs.push(format!("`{u}` is listed twice"));
            }
        }
        if self.concurrency < 1 {
            errs.push(format!("`concurrency` = {}: must be >= 1", self.concurrency));
        }
        for (key, v) in [
            ("timeout_s", self.timeout_s),
            ("connect_timeout_s", self.connect_timeout_s),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                errs.push(format!("`{key}` = {v}: must be a finite number of seconds > 0"));
            }
        }
        if self.max_steps == Some(0) {
            errs.push("`max_steps` = 0: must be >= 1".to_string());
        }
        let allowed = self
            .splits()
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for (split, g) in &self.games {
            if !self.splits().contains(&split.as_str()) {
                errs.push(format!(
                    "`games.{split}`: unknown split for `env = \"{}\"`; allowed: {allowed}",
                    self.env.name()
                ));
            } else if g.len() == 0 {
                errs.push(format!("`games.{split}` is empty"));
            }
        }
        for (split, &k) in &self.tasks {
            if !self.splits().contains(&split.as_str()) {
                errs.push(format!("`tasks.{split}` = {k}: unknown split; allowed: {allowed}"));
            } else if self.games_of(split).is_none() {
                errs.push(format!(
                    "`tasks.{split}` = {k}: split `{split}` has no games; give `games.{split}`"
                ));
            } else if k == 0 {
                errs.push(format!("`tasks.{split}` = 0: must be >= 1"));
            }
        }
        if self.env == ServerKind::Sciworld && self.games.is_empty() {
            errs.push(
                "`games` is missing: a SciWorld server needs its `data_idx` values per split, e.g. `games = { seen = [0, 5, 9] }`"
                    .to_string(),
            );
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs.join("; "))
        }
    }

    /// Everything that changes what an episode does: the server kind, the
    /// step limit and the games; not the URLs, bounds or timeouts.
    pub fn identity(&self) -> serde_json::Value {
        let games: BTreeMap<String, GameList> = self
            .available_splits()
            .into_iter()
            .filter_map(|s| self.games_of(&s).map(|g| (s, g)))
            .collect();
        serde_json::json!({
            "kind": "agentgym",
            "env": self.env.name(),
            "protocol_version": 1,
            "max_steps": self.max_steps(),
            "games": games,
        })
    }
}

/// The ETO release's WebShop test sessions.
pub fn webshop_test_sessions() -> Vec<GameRef> {
    let v: Vec<u64> = serde_json::from_str(WEBSHOP_TEST).unwrap_or_default();
    v.into_iter().map(GameRef::Index).collect()
}

/// An AgentGym server (or several of one kind) as an [`Environment`].
pub struct AgentgymEnv {
    spec: AgentgymEnvSpec,
    http: Arc<client::Http>,
    servers: Vec<client::Server>,
    next: AtomicUsize,
}

/// Builds the environment a (validated) spec declares.
pub fn build(spec: &AgentgymEnvSpec) -> Arc<dyn Environment> {
    Arc::new(AgentgymEnv::new(spec))
}

impl AgentgymEnv {
    pub fn new(spec: &AgentgymEnvSpec) -> Self {
        let http = client::Http::new(spec);
        let servers = spec
            .all_urls()
            .into_iter()
            .map(|u| client::Server::new(u, spec.concurrency.max(1)))
            .collect();
        Self {
            spec: spec.clone(),
            http: Arc::new(http),
            servers,
            next: AtomicUsize::new(0),
        }
    }

    pub fn spec(&self) -> &AgentgymEnvSpec {
        &self.spec
    }

    /// Checks that every server answers `GET /` (blocking, a few seconds at
    /// most per server; call it before a stage starts). The error names the
    /// URL and says how to start the server.
    pub fn health_check(&self) -> Result<(), EnvError> {
        let timeout = std::time::Duration::from_secs_f64(self.spec.connect_timeout_s.clamp(0.1, 30.0));
        let mut errs = Vec::new();
        for s in &self.servers {
            if let Err((why, port)) = client::probe(&s.url, timeout) {
                errs.push(format!(
                    "the AgentGym {} server at `{}` is not up ({why})\nhint: {}",
                    self.spec.env.name(),
                    s.url,
                    self.spec.env.start_hint(port)
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(EnvError(errs.join("\n")))
        }
    }

    /// The server with the most free slots (ties: round robin).
    fn pick_server(&self) -> Option<&client::Server> {
        let n = self.servers.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // `max_by_key` keeps the last maximum: scan from the far end so the
        // round-robin start wins ties.
        (0..n)
            .rev()
            .map(|k| &self.servers[(start + k) % n])
            .max_by_key(|s| s.slots.available_permits())
    }
}

/// Task id `{split}/{position:04}` → position.
fn position_of(task_id: &str, split: &str) -> Option<usize> {
    let (s, i) = task_id.split_once('/')?;
    (s == split).then_some(())?;
    i.parse().ok()
}

#[async_trait]
impl Environment for AgentgymEnv {
    fn identity(&self) -> serde_json::Value {
        self.spec.identity()
    }
    fn family(&self) -> Family {
        self.spec.env.family()
    }
    fn action_rule(&self) -> ActionRule {
        match self.spec.env {
            ServerKind::Alfworld => ActionRule::Alfworld,
            ServerKind::Sciworld => ActionRule::Sciworld,
            ServerKind::Webshop => ActionRule::Webshop,
        }
    }
    fn splits(&self) -> Vec<String> {
        self.spec.available_splits()
    }
    async fn health_check(&self) -> Result<(), EnvError> {
        let me = AgentgymEnv::new(&self.spec);
        tokio::task::spawn_blocking(move || me.health_check())
            .await
            .map_err(|e| EnvError(format!("health check panicked: {e}")))?
    }
    fn tasks(&self, split: &str, limit: Option<usize>) -> Result<Vec<TaskInfo>, EnvError> {
        self.spec.tasks(split, limit)
    }
    async fn start(&self, task: &TaskInfo) -> Result<Box<dyn Episode>, EnvError> {
        let bad = || {
            EnvError(format!(
                "unknown AgentGym task `{}` (split `{}`)",
                task.task_id, task.split
            ))
        };
        let pos = position_of(&task.task_id, &task.split).ok_or_else(bad)?;
        let game = self
            .spec
            .games_of(&task.split)
            .and_then(|g| g.get(pos))
            .ok_or_else(bad)?;
        let server = self
            .pick_server()
            .ok_or_else(|| EnvError("the AgentGym env has no server URL".into()))?;
        let permit = server
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| EnvError("the session slots were closed".into()))?;
        let session = client::Session {
            http: self.http.clone(),
            base: server.url.clone(),
            id: serde_json::Value::Null,
            _permit: permit,
        };
        episodes::start(self.spec.env, session, game.to_json(), task.max_steps).await
    }
}
