//! One episode per AgentGym server kind, with the exact wire shapes.
//!
//! ALFWorld (agentenv-alfworld):
//! - `POST /create` → `{"id": N}`
//! - `POST /reset {"id", "game", "world_type": "Text"}` →
//!   `{"id", "observation", "available_actions", "task_type"}`; the stock
//!   server has already cut the welcome paragraph, a raw TextWorld text
//!   (`-= Welcome to TextWorld, ALFRED! =-\n\n…`) is cut here as the release
//!   did (`"\n".join(ob.split("\n\n")[1:])`).
//! - `POST /step {"id", "action"}` → `{"observation", "reward",
//!   "available_actions", "done"}`; `reward` is `float(won)`;
//!   `You arrive at loc N. ` is stripped from observations.
//! - `POST /close {"id"}` where the server has it.
//!
//! SciWorld (agentenv-sciworld):
//! - `POST /create` → `{"id"}`; `POST /reset {"id", "data_idx"}` →
//!   `{"task_name", "var_num", "task_description", "observation", "score", …}`
//!   (the task text is `task_description`);
//! - `POST /step {"id", "action"}` → `{"observation", "reward", "score",
//!   "done"}`; reward = best score seen / 100 (negative scores count as 0);
//! - `POST /close {"id"}`.
//!
//! WebShop (agentenv-webshop):
//! - `POST /create` → a bare integer `env_idx`;
//! - `POST /reset {"env_idx", "session_id"}` → `[observation, null]`
//!   (`GET /observation?env_idx=` when the first item is not text);
//! - `POST /step {"env_idx", "action"}` → `{"state", "reward", "done",
//!   "info"}`; reward = the score of the final step (0–1);
//! - `POST /close {"env_idx"}`.
//!
//! Every episode is also done once it has taken its step limit.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::client::{Retry, Session};
use super::ServerKind;
use crate::env::builtin::{TaskType, NOTHING_HAPPENS};
use crate::env::{EnvError, Episode, StepOutcome};

/// ScienceWorld's answer to an action it does not know.
const SCIWORLD_UNKNOWN: &str = "No known action matches that input";

/// Creates a session, resets it to `game` and returns the episode; the
/// session is closed again when the reset fails.
pub(crate) async fn start(
    kind: ServerKind,
    mut session: Session,
    game: Value,
    max_steps: u32,
) -> Result<Box<dyn Episode>, EnvError> {
    let created = session.post("/create", &json!({}), Retry::Any).await?;
    session.id = match kind {
        ServerKind::Webshop => created
            .as_u64()
            .map(Value::from)
            .or_else(|| created.get("env_idx").cloned()),
        _ => created.get("id").cloned(),
    }
    .filter(|v| !v.is_null())
    .ok_or_else(|| EnvError(format!("`{}/create` answered no session id: {created}", session.base)))?;
    let reset = match kind {
        ServerKind::Alfworld => AlfworldEpisode::reset(session, game, max_steps).await,
        ServerKind::Sciworld => SciworldEpisode::reset(session, game, max_steps).await,
        ServerKind::Webshop => WebshopEpisode::reset(session, game, max_steps).await,
    };
    match reset {
        Ok(ep) => Ok(ep),
        Err((session, e)) => {
            let key = if kind == ServerKind::Webshop { "env_idx" } else { "id" };
            session.close(json!({ key: session.id })).await;
            Err(e)
        }
    }
}

type ResetResult = Result<Box<dyn Episode>, (Session, EnvError)>;

fn str_field(v: &Value, key: &str, what: &str) -> Result<String, EnvError> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| EnvError(format!("{what} answered no `{key}` text: {}", short(v))))
}

fn f64_field(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn bool_field(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The release's cut of ALFWorld's first observation: drop the welcome
/// paragraph, join the rest with single newlines. Texts without the
/// banner (the stock server already cut it) are kept.
pub fn trim_alfworld_intro(ob: &str) -> String {
    if ob.trim_start().starts_with("-= Welcome to TextWorld") {
        ob.split("\n\n").skip(1).collect::<Vec<_>>().join("\n")
    } else {
        ob.to_string()
    }
}

/// `You arrive at loc N. ` removed, as the release's `process_ob`.
pub fn strip_arrival(ob: &str) -> String {
    if ob.starts_with("You arrive at loc ") {
        if let Some(i) = ob.find(". ") {
            return ob[i + 2..].to_string();
        }
    }
    ob.to_string()
}

/// The task type of an ALFWorld `task_type` answer, e.g.
/// `pick_clean_then_place_in_recep-Mug-None-Cabinet-10/trial_T2019…` or the
/// built-in server's `pick_heat_then_place_in_recep/seen/0007`.
pub fn alfworld_task_type(s: &str) -> Option<TaskType> {
    let head = s.split(['/', '-']).next()?.trim();
    Some(match head {
        "pick_and_place_simple" | "pick_and_place" => TaskType::PickAndPlace,
        "pick_clean_then_place_in_recep" | "pick_clean_then_place" => TaskType::PickCleanThenPlace,
        "pick_heat_then_place_in_recep" | "pick_heat_then_place" => TaskType::PickHeatThenPlace,
        "pick_cool_then_place_in_recep" | "pick_cool_then_place" => TaskType::PickCoolThenPlace,
        "look_at_obj_in_light" | "look_at_obj" => TaskType::LookAtObjInLight,
        "pick_two_obj_and_place" | "pick_two_obj" => TaskType::PickTwoObj,
        _ => return None,
    })
}

// ---- ALFWorld ---------------------------------------------------------------

struct AlfworldEpisode {
    session: Session,
    task: String,
    task_type: Option<TaskType>,
    steps: u32,
    max_steps: u32,
    done: bool,
}

impl AlfworldEpisode {
    async fn reset(session: Session, game: Value, max_steps: u32) -> ResetResult {
        let body = json!({"id": session.id, "game": game, "world_type": "Text"});
        let what = format!("`{}/reset` (game {game})", session.base);
        let r = match session.post("/reset", &body, Retry::Any).await {
            Ok(r) => r,
            Err(e) => return Err((session, e)),
        };
        let ob = match str_field(&r, "observation", &what) {
            Ok(o) => o,
            Err(e) => return Err((session, e)),
        };
        let task_type = r.get("task_type").and_then(Value::as_str).and_then(alfworld_task_type);
        Ok(Box::new(AlfworldEpisode {
            session,
            task: trim_alfworld_intro(&ob),
            task_type,
            steps: 0,
            max_steps,
            done: false,
        }))
    }
}

#[async_trait]
impl Episode for AlfworldEpisode {
    fn task_text(&self) -> String {
        self.task.clone()
    }
    fn learned_task_type(&self) -> Option<(String, String)> {
        self.task_type.map(|t| (t.name().to_string(), t.icl_key().to_string()))
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        let r = self
            .session
            .post("/step", &json!({"id": self.session.id, "action": action}), Retry::Safe)
            .await?;
        let what = format!("`{}/step`", self.session.base);
        let observation = strip_arrival(&str_field(&r, "observation", &what)?);
        self.steps += 1;
        let reward = f64_field(&r, "reward");
        self.done = self.done || bool_field(&r, "done") || self.steps >= self.max_steps;
        Ok(StepOutcome {
            invalid: observation == NOTHING_HAPPENS,
            observation,
            reward,
            done: self.done,
            success: reward >= 1.0,
        })
    }
    async fn close(self: Box<Self>) {
        self.session.close(json!({"id": self.session.id})).await;
    }
}

// ---- SciWorld ---------------------------------------------------------------

struct SciworldEpisode {
    session: Session,
    task: String,
    task_name: Option<String>,
    best: f64,
    /// The last step's score, 0–1.
    last: Option<f64>,
    steps: u32,
    max_steps: u32,
    done: bool,
}

impl SciworldEpisode {
    async fn reset(session: Session, game: Value, max_steps: u32) -> ResetResult {
        let body = json!({"id": session.id, "data_idx": game});
        let what = format!("`{}/reset` (data_idx {game})", session.base);
        let r = match session.post("/reset", &body, Retry::Any).await {
            Ok(r) => r,
            Err(e) => return Err((session, e)),
        };
        let task = match str_field(&r, "task_description", &what) {
            Ok(t) => t,
            Err(e) => return Err((session, e)),
        };
        let task_name = r.get("task_name").and_then(Value::as_str).map(str::to_string);
        Ok(Box::new(SciworldEpisode {
            session,
            task,
            task_name,
            best: 0.0,
            last: None,
            steps: 0,
            max_steps,
            done: false,
        }))
    }
}

#[async_trait]
impl Episode for SciworldEpisode {
    fn task_text(&self) -> String {
        self.task.clone()
    }
    fn learned_task_type(&self) -> Option<(String, String)> {
        self.task_name.clone().map(|n| (n, "default".to_string()))
    }
    fn last_score(&self) -> Option<f64> {
        self.last
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        let r = self
            .session
            .post("/step", &json!({"id": self.session.id, "action": action}), Retry::Safe)
            .await?;
        let what = format!("`{}/step`", self.session.base);
        let observation = str_field(&r, "observation", &what)?;
        self.steps += 1;
        let score = f64_field(&r, "score");
        self.last = Some(score / 100.0);
        self.best = self.best.max(score.max(0.0) / 100.0);
        self.done = self.done || bool_field(&r, "done") || self.steps >= self.max_steps;
        Ok(StepOutcome {
            invalid: observation.trim_start().starts_with(SCIWORLD_UNKNOWN),
            observation,
            reward: self.best,
            done: self.done,
            success: score >= 100.0,
        })
    }
    async fn close(self: Box<Self>) {
        self.session.close(json!({"id": self.session.id})).await;
    }
}

// ---- WebShop ----------------------------------------------------------------

struct WebshopEpisode {
    session: Session,
    task: String,
    reward: f64,
    steps: u32,
    max_steps: u32,
    done: bool,
}

impl WebshopEpisode {
    async fn reset(session: Session, game: Value, max_steps: u32) -> ResetResult {
        let body = json!({"env_idx": session.id, "session_id": game});
        let r = match session.post("/reset", &body, Retry::Any).await {
            Ok(r) => r,
            Err(e) => return Err((session, e)),
        };
        let first = r.get(0).and_then(Value::as_str).map(str::to_string);
        let task = match first {
            Some(t) => t,
            None => {
                let q = format!("/observation?env_idx={}", session.id);
                match session.get(&q, Retry::Any).await {
                    Ok(Value::String(s)) => s,
                    Ok(other) => {
                        let e = EnvError(format!("`{}{q}` answered no text: {}", session.base, short(&other)));
                        return Err((session, e));
                    }
                    Err(e) => return Err((session, e)),
                }
            }
        };
        Ok(Box::new(WebshopEpisode {
            session,
            task,
            reward: 0.0,
            steps: 0,
            max_steps,
            done: false,
        }))
    }
}

#[async_trait]
impl Episode for WebshopEpisode {
    fn task_text(&self) -> String {
        self.task.clone()
    }
    async fn step(&mut self, action: &str) -> Result<StepOutcome, EnvError> {
        let r = self
            .session
            .post(
                "/step",
                &json!({"env_idx": self.session.id, "action": action}),
                Retry::Safe,
            )
            .await?;
        let what = format!("`{}/step`", self.session.base);
        let observation = str_field(&r, "state", &what)?;
        self.steps += 1;
        let server_done = bool_field(&r, "done");
        if server_done {
            self.reward = f64_field(&r, "reward");
        }
        self.done = self.done || server_done || self.steps >= self.max_steps;
        Ok(StepOutcome {
            observation,
            reward: self.reward,
            done: self.done,
            success: self.reward >= 1.0,
            invalid: false,
        })
    }
    async fn close(self: Box<Self>) {
        self.session.close(json!({"env_idx": self.session.id})).await;
    }
}
