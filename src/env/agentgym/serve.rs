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
//! Every 4xx answer has a JSON body (#22: unknown routes, wrong methods and
//! unreadable JSON once answered with an empty or plain-text body): `{"detail":
//! "…"}` with the same status.
//!
//! Sessions are bounded (#22: abandoned sessions were kept forever, ≈1 kB
//! each): a session untouched for `idle_timeout` is dropped (its id then
//! answers "not valid"), and `/create` beyond `max_sessions` live sessions is
//! HTTP 429 `{"detail": "…"}` (`mpo-run serve-env --max-sessions N
//! --idle-timeout-s S`; defaults [`ServeSettings::default`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, Request, State};
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
    /// When a request last named this session.
    touched: Instant,
}

/// Settings of a served world.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ServeSettings {
    /// Step limit of an episode.
    pub max_steps: u32,
    /// Live sessions at most; `/create` beyond them is HTTP 429.
    pub max_sessions: usize,
    /// A session no request names for this long is dropped.
    pub idle_timeout: Duration,
}

impl Default for ServeSettings {
    fn default() -> Self {
        // 4,096 sessions: the most episodes a spec may keep in flight
        // (`eval.concurrency` ≤ 4,096); an hour: far above one agent turn
        // with retries (6 × 120 s), so only abandoned sessions expire.
        Self { max_steps: 30, max_sessions: 4_096, idle_timeout: Duration::from_secs(3_600) }
    }
}

struct Shared {
    settings: ServeSettings,
    next_id: AtomicU64,
    sessions: Mutex<HashMap<u64, Session>>,
}

impl Shared {
    /// The sessions, with the expired ones dropped.
    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let idle = self.settings.idle_timeout;
        sessions.retain(|_, s| s.touched.elapsed() <= idle);
        sessions
    }
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
    builtin_router_with(ServeSettings { max_steps, ..ServeSettings::default() })
}

/// [`builtin_router`] with every setting.
pub fn builtin_router_with(settings: ServeSettings) -> Router {
    let shared = Arc::new(Shared {
        settings,
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
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_client_errors))
        .with_state(shared)
}

async fn not_found(req: Request) -> Response {
    let msg = format!(
        "no route `{} {}`; routes: GET /, POST /create, /reset, /step, /close, GET /observation, /available_actions, /detail",
        req.method(),
        req.uri().path()
    );
    (StatusCode::NOT_FOUND, Json(json!({ "detail": msg }))).into_response()
}

/// Every 4xx answer gets a JSON body: one that is not JSON already (axum's
/// own rejections: a wrong method, an unreadable body) becomes `{"detail":
/// "<its text or the status's reason>"}` with the same status.
async fn json_client_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() || is_json {
        return res;
    }
    let text = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("client error").to_string()
    } else {
        text
    };
    (status, Json(json!({ "detail": detail }))).into_response()
}

/// Serves the built-in world on `addr` until `shutdown` resolves.
pub async fn serve_builtin(
    addr: SocketAddr,
    max_steps: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_builtin_with(addr, ServeSettings { max_steps, ..ServeSettings::default() }, shutdown).await
}

/// [`serve_builtin`] with every setting.
pub async fn serve_builtin_with(
    addr: SocketAddr,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on `{addr}`"))?;
    serve_builtin_on_with(listener, settings, shutdown).await
}

/// [`serve_builtin`] on a bound listener (port 0 in tests).
pub async fn serve_builtin_on(
    listener: TcpListener,
    max_steps: u32,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_builtin_on_with(listener, ServeSettings { max_steps, ..ServeSettings::default() }, shutdown).await
}

/// [`serve_builtin_on`] with every setting.
pub async fn serve_builtin_on_with(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("the listener has no address")?;
    tracing::info!("serving the built-in household world (AgentGym ALFWorld protocol) on http://{addr}");
    axum::serve(listener, builtin_router_with(settings))
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

/// A JSON body, or HTTP 422 `{"detail": …}` saying why it is unreadable.
fn json_body(body: Result<Json<Value>, JsonRejection>) -> Result<Value, Response> {
    body.map(|Json(v)| v).map_err(|e| (e.status(), Json(json!({ "detail": e.body_text() }))).into_response())
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
    let mut sessions = st.live();
    if let Some(s) = sessions.get_mut(&id) {
        s.touched = Instant::now();
    }
    match sessions.get_mut(&id) {
        None => error(format!("The id {id} is not valid.")),
        Some(Session { game: None, .. }) => error(format!("The environment {id} has not been reset.")),
        Some(Session { game: Some(g), .. }) if g.done() && !finished_ok => {
            error(format!("The task with environment {id} has finished."))
        }
        Some(Session { game: Some(g), last, .. }) => f(g, last),
    }
}

async fn hello() -> Json<Value> {
    Json(json!(
        "This is environment AlfWorld (mpo-run built-in household world)."
    ))
}

async fn create(State(st): St) -> Response {
    let mut sessions = st.live();
    let max = st.settings.max_sessions;
    if sessions.len() >= max {
        let msg = format!(
            "{max} sessions are open, the server's limit (`--max-sessions`): close finished ones with POST /close; \
             idle ones expire after {} s (`--idle-timeout-s`)",
            st.settings.idle_timeout.as_secs()
        );
        return (StatusCode::TOO_MANY_REQUESTS, Json(json!({ "detail": msg }))).into_response();
    }
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    sessions.insert(
        id,
        Session {
            game: None,
            last: String::new(),
            touched: Instant::now(),
        },
    );
    Json(json!({ "id": id })).into_response()
}

async fn reset(State(st): St, body: Result<Json<Value>, JsonRejection>) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
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
        Ok(g) => g.with_max_steps(st.settings.max_steps),
        Err(e) => return error(e),
    };
    let mut sessions = st.live();
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
    session.touched = Instant::now();
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

async fn step(State(st): St, body: Result<Json<Value>, JsonRejection>) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
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

async fn close(State(st): St, body: Result<Json<Value>, JsonRejection>) -> Response {
    let body = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let id = match id_of(&body) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match st.live().remove(&id) {
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
