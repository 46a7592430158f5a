//! The built-in household world served over AgentGym's ALFWorld protocol,
//! so other tools can use it and the HTTP client has a real peer in tests
//! (`mpo-run serve-env builtin --port P`).
//!
//! Routes, as agentenv-alfworld:
//! - `GET /` → a greeting string (health checks);
//! - `POST /create` → `{"id": N}`;
//! - `POST /reset {"id", "game", "world_type"}` → `{"id", "observation",
//!   "available_actions", "task_type", "task_id"}`; `world_type` must be
//!   `Text`, `Embody` or `Hybrid` (all play the text world);
//! - `POST /step {"id", "action"}` → `{"observation", "reward",
//!   "available_actions", "done"}` (`reward` = 1.0 once won);
//! - `GET /observation?id=`, `GET /available_actions?id=`, `GET /detail?id=`;
//! - `POST /close {"id"}` → `{"closed": true}` (frees the session).
//!
//! `game` is either a task id string (`"seen/0007"`, any split) or an
//! integer index into the flat list `seen` (0..140), `unseen` (140..274),
//! `train` (274..3595) — the evaluation games first, so that game indices
//! 0..140 / 140..274 play the roles of ALFWorld's eval_in_distribution /
//! eval_out_of_distribution (the agentgym client's defaults).
//!
//! Observations are those of [`Game`]: the first one is already cut as the
//! stock server cuts it (no welcome paragraph), and there is no
//! `You arrive at loc N.`. Errors are HTTP 200 `{"error": "…"}`, as the
//! stock server answers; stepping a finished episode is an error there too.
//! A malformed body is HTTP 422 `{"detail": "…"}` (FastAPI's status).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::env::builtin::{Game, Split};

struct Session {
    game: Option<Game>,
    /// The last observation (what `GET /observation` answers).
    last: String,
}

struct Shared {
    max_steps: u32,
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, Session>>,
}

type St = State<Arc<Shared>>;

/// The game of a `/reset` `game` value (see the module docs).
pub fn builtin_game(game: &Value) -> Result<Game, String> {
    match game {
        Value::String(id) => Game::from_task_id(id).ok_or_else(|| format!("unknown built-in task id `{id}`")),
        Value::Number(n) => {
            let mut i = n
                .as_u64()
                .ok_or_else(|| format!("game {n} is not a non-negative integer"))? as usize;
            for split in [Split::Seen, Split::Unseen, Split::Train] {
                if i < split.size() {
                    return Ok(Game::new(split, i));
                }
                i -= split.size();
            }
            let total: usize = Split::ALL.iter().map(|s| s.size()).sum();
            Err(format!("game {n} out of range (0..{total})"))
        }
        other => Err(format!("`game` must be a task id string or an integer, not {other}")),
    }
}

/// The router, for embedding or serving on a listener of one's own.
pub fn builtin_router(max_steps: u32) -> Router {
    let shared = Arc::new(Shared {
        max_steps,
        next_id: AtomicU64::new(0),
        sessions: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/", get(hello))
        .route("/create", post(create))
        .route("/reset", post(reset))
        .route("/step", post(step))
        .route("/close", post(close))
        .route("/observation", get(observation))
        .route("/available_actions", get(available_actions))
        .route("/detail", get(detail))
        .with_state(shared)
}

/// Serves the built-in world on `addr` until `shutdown` resolves.
pub async fn serve_builtin(
    addr: SocketAddr,
    max_steps: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on `{addr}`"))?;
    serve_builtin_on(listener, max_steps, shutdown).await
}

/// [`serve_builtin`] on a bound listener (port 0 in tests).
pub async fn serve_builtin_on(
    listener: TcpListener,
    max_steps: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("the listener has no address")?;
    tracing::info!("serving the built-in household world (AgentGym ALFWorld protocol) on http://{addr}");
    axum::serve(listener, builtin_router(max_steps))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the built-in environment server failed")
}

fn error(msg: impl Into<String>) -> Response {
    Json(json!({ "error": msg.into() })).into_response()
}

fn unprocessable(msg: impl Into<String>) -> Response {
    (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "detail": msg.into() }))).into_response()
}

fn id_of(body: &Value) -> Result<u64, Response> {
    body.get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| unprocessable("field `id` (an integer) is required"))
}

fn query_id(q: &Option<String>) -> Result<u64, Response> {
    q.as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("id="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| unprocessable("query parameter `id` (an integer) is required"))
}

/// Runs `f` on the live game of session `id`, or answers the stock error.
fn with_game(st: &Shared, id: u64, finished_ok: bool, f: impl FnOnce(&mut Game, &mut String) -> Response) -> Response {
    let mut sessions = st.sessions.lock().unwrap_or_else(|p| p.into_inner());
    match sessions.get_mut(&id) {
        None => error(format!("The id {id} is not valid.")),
        Some(Session { game: None, .. }) => error(format!("The environment {id} has not been reset.")),
        Some(Session { game: Some(g), .. }) if g.done() && !finished_ok => {
            error(format!("The task with environment {id} has finished."))
        }
        Some(Session { game: Some(g), last }) => f(g, last),
    }
}

async fn hello() -> Json<Value> {
    Json(json!(
        "This is environment AlfWorld (mpo-run built-in household world)."
    ))
}

async fn create(State(st): St) -> Response {
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    st.sessions.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        Session {
            game: None,
            last: String::new(),
        },
    );
    Json(json!({ "id": id })).into_response()
}

async fn reset(State(st): St, Json(body): Json<Value>) -> Response {
    let id = match id_of(&body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(game) = body.get("game") else {
        return unprocessable("field `game` is required");
    };
    let world_type = body.get("world_type").and_then(Value::as_str).unwrap_or("Text");
    if !["Text", "Embody", "Hybrid"].contains(&world_type) {
        return error("world_type must be one of \"Text\", \"Embody\" and \"Hybrid\"");
    }
    let game = match builtin_game(game) {
        Ok(g) => g.with_max_steps(st.max_steps),
        Err(e) => return error(e),
    };
    let mut sessions = st.sessions.lock().unwrap_or_else(|p| p.into_inner());
    let Some(session) = sessions.get_mut(&id) else {
        return error(format!("The id {id} is not valid."));
    };
    let answer = json!({
        "id": id,
        "observation": game.initial_observation(),
        "available_actions": game.admissible_actions(),
        "task_type": format!("{}/{}", alfworld_dir(&game), game.task_id()),
        "task_id": game.task_id(),
    });
    session.last = game.initial_observation();
    session.game = Some(game);
    Json(answer).into_response()
}

/// ALFWorld's task-directory prefix of the game's type.
fn alfworld_dir(g: &Game) -> &'static str {
    use crate::env::builtin::TaskType::*;
    match g.task_type() {
        PickAndPlace => "pick_and_place_simple",
        PickCleanThenPlace => "pick_clean_then_place_in_recep",
        PickHeatThenPlace => "pick_heat_then_place_in_recep",
        PickCoolThenPlace => "pick_cool_then_place_in_recep",
        LookAtObjInLight => "look_at_obj_in_light",
        PickTwoObj => "pick_two_obj_and_place",
    }
}

async fn step(State(st): St, Json(body): Json<Value>) -> Response {
    let id = match id_of(&body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let Some(action) = body.get("action").and_then(Value::as_str) else {
        return unprocessable("field `action` (a string) is required");
    };
    with_game(&st, id, false, |g, last| {
        let out = g.step(action);
        last.clone_from(&out.observation);
        Json(json!({
            "observation": out.observation,
            "reward": out.reward,
            "available_actions": g.admissible_actions(),
            "done": out.done,
        }))
        .into_response()
    })
}

async fn close(State(st): St, Json(body): Json<Value>) -> Response {
    let id = match id_of(&body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match st.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id) {
        Some(_) => Json(json!({ "closed": true })).into_response(),
        None => error(format!("The id {id} is not valid.")),
    }
}

async fn observation(State(st): St, RawQuery(q): RawQuery) -> Response {
    match query_id(&q) {
        Ok(id) => with_game(&st, id, true, |_, last| Json(json!(last)).into_response()),
        Err(r) => r,
    }
}

async fn available_actions(State(st): St, RawQuery(q): RawQuery) -> Response {
    match query_id(&q) {
        Ok(id) => with_game(&st, id, true, |g, _| {
            Json(json!(g.admissible_actions())).into_response()
        }),
        Err(r) => r,
    }
}

async fn detail(State(st): St, RawQuery(q): RawQuery) -> Response {
    match query_id(&q) {
        Ok(id) => with_game(&st, id, true, |g, _| {
            Json(json!({
                "task_id": g.task_id(),
                "steps": g.steps_taken(),
                "max_steps": g.max_steps(),
                "done": g.done(),
                "reward": if g.won() { 1.0 } else { 0.0 },
            }))
            .into_response()
        }),
        Err(r) => r,
    }
}
