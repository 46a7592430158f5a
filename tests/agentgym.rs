//! Tests of the AgentGym HTTP environments (`mpo_run::env::agentgym`):
//! the built-in world served over HTTP against the in-process one, and each
//! server kind's protocol against small fake servers built from the
//! recorded request/response shapes (`{"error"}` answers, 503 bursts, a
//! server that goes away or hangs mid-episode).
//!
//! Over 600 lines on purpose: each fake server's recorded answers are
//! written out in full next to the test that uses them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::{Json, Router};
use mpo_run::env::agentgym::*;
use mpo_run::env::builtin::{expert_trajectory, Game, Split, TaskType};
use mpo_run::env::{BuiltinEnv, EnvError, Environment, Episode, StepOutcome};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Generous bound on anything that must not hang.
const NO_HANG: Duration = Duration::from_secs(20);

async fn builtin_server(max_steps: u32) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_builtin_on(listener, max_steps, async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// A spec with fast retries, for tests.
fn spec(kind: ServerKind, url: &str) -> AgentgymEnvSpec {
    let mut s = AgentgymEnvSpec::new(kind, url);
    s.retries = 3;
    s.retry_backoff_ms = 5;
    s.timeout_s = 5.0;
    s.connect_timeout_s = 2.0;
    s
}

async fn play(ep: &mut Box<dyn Episode>, actions: &[String]) -> Result<Vec<StepOutcome>, EnvError> {
    let mut out = Vec::new();
    for a in actions {
        let o = ep.step(a).await?;
        let done = o.done;
        out.push(o);
        if done {
            break;
        }
    }
    Ok(out)
}

// ---- the built-in world over HTTP ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_over_http_matches_in_process() {
    let (url, _stop) = builtin_server(30).await;
    let http = build(&spec(ServerKind::Alfworld, &url));
    let local = BuiltinEnv { max_steps: 30 };
    for split in [Split::Seen, Split::Unseen] {
        let remote_tasks = http.tasks(split.name(), None).unwrap();
        let local_tasks = local.tasks(split.name(), None).unwrap();
        assert_eq!(remote_tasks.len(), split.size());
        let mut picked: Vec<usize> = (0..split.size()).step_by(9).collect();
        for &tt in TaskType::ALL {
            picked.push(
                (0..split.size())
                    .find(|&i| Game::new(split, i).task_type() == tt)
                    .unwrap(),
            );
        }
        for i in picked {
            let (rt, lt) = (&remote_tasks[i], &local_tasks[i]);
            assert_eq!(
                (&rt.task_id, &rt.split, rt.max_steps),
                (&lt.task_id, &lt.split, lt.max_steps)
            );
            let expert = expert_trajectory(split, i);
            let mut actions: Vec<String> = expert.turns.iter().map(|t| t.action.clone()).collect();
            if i % 2 == 1 {
                // Invalid and idle actions first (and a run into the step limit).
                actions.splice(
                    0..0,
                    ["frobnicate the egg".to_string(), "look".into(), "inventory".into()],
                );
            }
            let mut r = http.start(rt).await.unwrap();
            let mut l = local.start(lt).await.unwrap();
            assert_eq!(r.task_text(), l.task_text(), "{}", rt.task_id);
            assert_eq!(r.task_text(), expert.initial_observation);
            assert_eq!(
                r.learned_task_type(),
                Some((lt.task_type.clone(), lt.icl_key.clone())),
                "{}",
                rt.task_id
            );
            let ro = play(&mut r, &actions).await.unwrap();
            let lo = play(&mut l, &actions).await.unwrap();
            assert_eq!(ro, lo, "{}", rt.task_id);
            if i % 2 == 0 {
                assert_eq!(ro.last().unwrap().reward, 1.0, "{}: expert over HTTP", rt.task_id);
                let obs: Vec<&str> = ro.iter().map(|o| o.observation.as_str()).collect();
                let want: Vec<&str> = expert.turns.iter().map(|t| t.observation.as_str()).collect();
                assert_eq!(obs, want);
            }
            r.close().await;
            l.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_server_takes_task_ids_and_flat_indices() {
    let (url, _stop) = builtin_server(30).await;
    let mut s = spec(ServerKind::Alfworld, &url);
    s.games.insert(
        "seen".into(),
        GameList::List(vec![
            GameRef::Id("unseen/0005".into()),
            GameRef::Index(140),
            GameRef::Index(274),
        ]),
    );
    let env = build(&s);
    let tasks = env.tasks("seen", None).unwrap();
    let want = [
        Game::new(Split::Unseen, 5),
        Game::new(Split::Unseen, 0),
        Game::new(Split::Train, 0),
    ];
    for (t, g) in tasks.iter().zip(&want) {
        let ep = env.start(t).await.unwrap();
        assert_eq!(ep.task_text(), g.initial_observation());
        ep.close().await;
    }
    assert_eq!(
        builtin_game(&json!("nope")).unwrap_err(),
        "unknown built-in task id `nope`"
    );
    assert!(builtin_game(&json!(3595)).unwrap_err().contains("out of range"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_closed_and_bounded() {
    let (url, _stop) = builtin_server(30).await;
    let mut s = spec(ServerKind::Alfworld, &url);
    s.concurrency = 1;
    let env = build(&s);
    let tasks = env.tasks("seen", Some(2)).unwrap();
    let first = env.start(&tasks[0]).await.unwrap();
    // The one slot is taken: a second episode waits.
    assert!(tokio::time::timeout(Duration::from_millis(300), env.start(&tasks[1]))
        .await
        .is_err());
    first.close().await;
    let second = tokio::time::timeout(NO_HANG, env.start(&tasks[1]))
        .await
        .unwrap()
        .unwrap();
    second.close().await;
    // Session 0 was closed on the server: it no longer knows the id.
    let detail: Value = reqwest::get(format!("{url}/detail?id=0"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail, json!({"error": "The id 0 is not valid."}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_builtin_stops_on_shutdown_and_reports_a_taken_port() {
    tokio::time::timeout(NO_HANG, serve_builtin("127.0.0.1:0".parse().unwrap(), 30, async {}))
        .await
        .expect("graceful shutdown")
        .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve_builtin(addr, 30, async {}).await.unwrap_err();
    assert_eq!(err.to_string(), format!("cannot listen on `{addr}`"));
}

async fn builtin_server_with(settings: ServeSettings) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_builtin_on_with(listener, settings, async move {
        let _ = rx.await;
    }));
    (format!("http://{addr}"), tx)
}

/// #22: every 4xx answer has a JSON body that says what was wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_error_has_a_json_body() {
    let (url, _stop) = builtin_server(30).await;
    let http = reqwest::Client::new();
    let answers = [
        http.get(format!("{url}/no_such_route")).send().await.unwrap(),
        http.get(format!("{url}/create")).send().await.unwrap(),
        http.post(format!("{url}/step")).body("{not json").header("content-type", "application/json").send().await.unwrap(),
        http.post(format!("{url}/reset")).body("{}").send().await.unwrap(),
        http.post(format!("{url}/close")).json(&json!({})).send().await.unwrap(),
        http.get(format!("{url}/detail")).send().await.unwrap(),
    ];
    for r in answers {
        let status = r.status();
        assert!(status.is_client_error(), "{status}");
        let body: Value = r.json().await.unwrap_or_else(|e| panic!("{status}: not JSON: {e}"));
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{status}: {body}");
    }
}

/// #22: sessions are bounded in number and expire when idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_limited_and_expire_when_idle() {
    let settings = ServeSettings { max_steps: 30, max_sessions: 2, idle_timeout: Duration::from_millis(400) };
    let (url, _stop) = builtin_server_with(settings).await;
    let http = reqwest::Client::new();
    let create = || async {
        let r = http.post(format!("{url}/create")).send().await.unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(create().await.0, StatusCode::OK);
    assert_eq!(create().await.0, StatusCode::OK);
    let (status, body) = create().await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(body["detail"].as_str().unwrap().contains("--max-sessions"), "{body}");
    // Abandoned sessions expire: room again, and the old ids are gone.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = create().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail: Value = http.get(format!("{url}/detail?id=0")).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail, json!({"error": "The id 0 is not valid."}));
    // A session in use is kept alive by its requests.
    let id = body["id"].as_u64().unwrap();
    let reset = json!({"id": id, "game": "seen/0000"});
    assert_eq!(http.post(format!("{url}/reset")).json(&reset).send().await.unwrap().status(), StatusCode::OK);
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let d: Value = http.get(format!("{url}/detail?id={id}")).send().await.unwrap().json().await.unwrap();
        assert!(d.get("error").is_none(), "{d}");
    }
}

// ---- fake servers ---------------------------------------------------------

type Handler = dyn Fn(&str, &Value) -> (u16, Value) + Send + Sync;

/// An axum server answering every request with `handler(path?query, body)`
/// and recording `(path?query, body)`.
struct Fake {
    url: String,
    log: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Fake {
    async fn start(handler: impl Fn(&str, &Value) -> (u16, Value) + Send + Sync + 'static) -> Fake {
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        let app = Router::new().fallback(move |uri: Uri, body: Bytes| {
            let (handler, log) = (handler.clone(), log2.clone());
            async move {
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let path = uri.path_and_query().map_or("/".to_string(), |p| p.to_string());
                log.lock().unwrap().push((path.clone(), body.clone()));
                let (status, answer) = handler(&path, &body);
                (StatusCode::from_u16(status).unwrap(), Json(answer)).into_response()
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Fake { url, log }
    }
    fn paths(&self) -> Vec<String> {
        self.log.lock().unwrap().iter().map(|(p, _)| p.clone()).collect()
    }
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }
}

const ALF_RAW: &str = "-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, you see a cabinet 1, and a coffeemachine 1.\n\nYour task is to: put a clean mug in coffeemachine.";

/// agentenv-alfworld's answers (no `/close` route: 404).
fn alfworld_answer(path: &str, body: &Value) -> (u16, Value) {
    match path {
        "/create" => (200, json!({"id": 3})),
        "/reset" => (
            200,
            json!({
                "id": 3, "observation": ALF_RAW, "available_actions": ["go to cabinet 1", "look"],
                "task_type": "pick_clean_then_place_in_recep-Mug-None-CoffeeMachine-10/trial_T20190908_143209_571893",
            }),
        ),
        "/step" => match body["action"].as_str().unwrap_or("") {
            "go to cabinet 1" => (
                200,
                json!({"observation": "You arrive at loc 5. The cabinet 1 is closed.", "reward": 0.0, "available_actions": ["open cabinet 1"], "done": false}),
            ),
            "finish" => (
                200,
                json!({"observation": "You put the mug 1 in/on the coffeemachine 1.", "reward": 1.0, "available_actions": [], "done": true}),
            ),
            _ => (
                200,
                json!({"observation": "Nothing happens.", "reward": 0.0, "available_actions": [], "done": false}),
            ),
        },
        _ => (404, json!({"detail": "Not Found"})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alfworld_protocol() {
    let fake = Fake::start(alfworld_answer).await;
    let env = build(&spec(ServerKind::Alfworld, &fake.url));
    let task = &env.tasks("unseen", Some(1)).unwrap()[0];
    assert_eq!(
        (task.task_id.as_str(), task.task_type.as_str()),
        ("unseen/0000", "unknown")
    );
    let mut ep = env.start(task).await.unwrap();
    assert_eq!(
        ep.task_text(),
        "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, and a coffeemachine 1.\nYour task is to: put a clean mug in coffeemachine."
    );
    assert_eq!(
        ep.learned_task_type(),
        Some(("pick_clean_then_place".into(), "pick_clean_then_place".into()))
    );
    let o = ep.step("go to cabinet 1").await.unwrap();
    assert_eq!(
        (o.observation.as_str(), o.reward, o.done, o.success, o.invalid),
        ("The cabinet 1 is closed.", 0.0, false, false, false)
    );
    assert!(ep.step("dance").await.unwrap().invalid);
    let o = ep.step("finish").await.unwrap();
    assert_eq!((o.reward, o.done, o.success), (1.0, true, true));
    ep.close().await; // the 404 of a server without `/close` is ignored
    assert_eq!(fake.paths(), ["/create", "/reset", "/step", "/step", "/step", "/close"]);
    assert_eq!(
        fake.bodies("/reset"),
        [json!({"id": 3, "game": 140, "world_type": "Text"})]
    );
    assert_eq!(fake.bodies("/step")[0], json!({"id": 3, "action": "go to cabinet 1"}));
    assert_eq!(fake.bodies("/close"), [json!({"id": 3})]);
    // Release texts without the banner (the stock server's cut) are kept.
    assert_eq!(
        trim_alfworld_intro("You are in a room.\nYour task is to: x."),
        "You are in a room.\nYour task is to: x."
    );
    assert_eq!(
        strip_arrival("You arrive at loc 12. On the desk 1, you see a pen 1."),
        "On the desk 1, you see a pen 1."
    );
    assert_eq!(
        alfworld_task_type("look_at_obj_in_light-Book-None-DeskLamp-302/trial_T1"),
        Some(TaskType::LookAtObjInLight)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_env_errors() {
    for (route, answer, want) in [
        ("/create", json!({"error": "boom at create"}), "boom at create"),
        (
            "/reset",
            json!({"error": "list index out of range"}),
            "list index out of range",
        ),
        (
            "/step",
            json!({"error": "The task with environment 3 has finished."}),
            "has finished",
        ),
    ] {
        let fake = Fake::start(move |path, body| {
            if path == route {
                (200, answer.clone())
            } else {
                alfworld_answer(path, body)
            }
        })
        .await;
        let env = build(&spec(ServerKind::Alfworld, &fake.url));
        let task = &env.tasks("seen", Some(1)).unwrap()[0];
        let err = match env.start(task).await {
            Err(e) => e,
            Ok(mut ep) => {
                let e = ep.step("look").await.unwrap_err();
                ep.close().await;
                e
            }
        };
        assert!(err.0.contains(want), "{route}: {err}");
        if route == "/reset" {
            // A session whose reset failed is closed again.
            assert_eq!(fake.paths(), ["/create", "/reset", "/close"]);
        }
    }
    // FastAPI's validation failure: HTTP 422 with `detail`.
    let fake = Fake::start(|path, body| {
        if path == "/reset" {
            (422, json!({"detail": [{"msg": "value is not a valid integer"}]}))
        } else {
            alfworld_answer(path, body)
        }
    })
    .await;
    let env = build(&spec(ServerKind::Alfworld, &fake.url));
    let err = env.start(&env.tasks("seen", Some(1)).unwrap()[0]).await.err().unwrap();
    assert!(err.0.contains("422") && err.0.contains("not a valid integer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_burst_is_retried() {
    let seen = Arc::new(AtomicU64::new(0));
    let s2 = seen.clone();
    // Every request is answered 503 twice, then served.
    let fake = Fake::start(move |path, body| {
        if s2.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
            (503, json!("busy"))
        } else {
            alfworld_answer(path, body)
        }
    })
    .await;
    let env = build(&spec(ServerKind::Alfworld, &fake.url));
    let mut ep = env.start(&env.tasks("seen", Some(1)).unwrap()[0]).await.unwrap();
    assert_eq!(
        ep.step("go to cabinet 1").await.unwrap().observation,
        "The cabinet 1 is closed."
    );
    assert_eq!(fake.paths().iter().filter(|p| *p == "/step").count(), 3);

    // A burst longer than the retries is an EnvError naming the 503.
    let fake = Fake::start(|_, _| (503, json!("busy"))).await;
    let mut s = spec(ServerKind::Alfworld, &fake.url);
    s.retries = 2;
    let env = build(&s);
    let err = env.start(&env.tasks("seen", Some(1)).unwrap()[0]).await.err().unwrap();
    assert!(err.0.contains("503") && err.0.contains("after 3 attempt"), "{err}");
    ep.close().await;
}

/// A raw HTTP server that answers `/create` and `/reset`, then at `/step`
/// either goes away (closes the connection and its listener) or hangs.
async fn dying_server(hang: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
            let body = match path.as_str() {
                "/create" => json!({"id": 1}),
                "/reset" => json!({"id": 1, "observation": "You are in a room.\nYour task is to: look.", "available_actions": [], "task_type": "look_at_obj_in_light"}),
                _ if hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                _ => return, // the socket and the listener are dropped: the server is gone
            }
            .to_string();
            let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
            let _ = sock.write_all(resp.as_bytes()).await;
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_is_an_env_error() {
    for hang in [false, true] {
        let url = dying_server(hang).await;
        let mut s = spec(ServerKind::Alfworld, &url);
        s.timeout_s = 0.5;
        let env = build(&s);
        let t0 = std::time::Instant::now();
        let mut ep = env.start(&env.tasks("seen", Some(1)).unwrap()[0]).await.unwrap();
        let err = tokio::time::timeout(NO_HANG, ep.step("look"))
            .await
            .expect("no hang")
            .unwrap_err();
        if !hang {
            // Gone for good: the next step is refused (retried, then an error).
            let again = tokio::time::timeout(NO_HANG, ep.step("look"))
                .await
                .expect("no hang")
                .unwrap_err();
            assert!(again.0.contains("cannot connect"), "{again}");
        }
        tokio::time::timeout(NO_HANG, ep.close())
            .await
            .expect("close does not hang");
        assert!(err.0.contains(&url), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    }
}

// ---- WebShop and SciWorld -------------------------------------------------

fn webshop_answer(path: &str, body: &Value) -> (u16, Value) {
    match path {
        "/create" => (200, json!(7)),
        "/reset" if body["session_id"] == json!(2853) => (
            200,
            json!(["WebShop [SEP] Instruction: [SEP] i need a red shirt [SEP] Search", null]),
        ),
        "/reset" => (200, json!([null, null])),
        "/observation?env_idx=7" => (200, json!("WebShop [SEP] Instruction: [SEP] other [SEP] Search")),
        "/available_actions?env_idx=7" => (200, json!({"has_search_bar": true, "clickables": ["search"]})),
        "/step" if body["action"] == json!("click[buy now]") => (
            200,
            json!({"state": "Thank you for shopping with us!", "reward": 0.75, "done": true, "info": null}),
        ),
        "/step" => (
            200,
            json!({"state": "[Back to Search] Page 1 (Total results: 50) [SEP] B01 [SEP] Red shirt", "reward": 0.0, "done": false, "info": null}),
        ),
        "/close" => (200, json!({"closed": true})),
        _ => (404, json!({"detail": "Not Found"})),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webshop_protocol() {
    let fake = Fake::start(webshop_answer).await;
    let env = build(&spec(ServerKind::Webshop, &fake.url));
    assert_eq!(env.splits(), ["test"]);
    let tasks = env.tasks("test", None).unwrap();
    assert_eq!((tasks.len(), tasks[0].max_steps), (200, 10));
    let mut ep = env.start(&tasks[0]).await.unwrap();
    assert_eq!(
        ep.task_text(),
        "WebShop [SEP] Instruction: [SEP] i need a red shirt [SEP] Search"
    );
    let o = ep.step("search[red shirt]").await.unwrap();
    assert_eq!((o.reward, o.done), (0.0, false));
    let o = ep.step("click[buy now]").await.unwrap();
    assert_eq!(
        (o.observation.as_str(), o.reward, o.done, o.success),
        ("Thank you for shopping with us!", 0.75, true, false)
    );
    ep.close().await;
    assert_eq!(fake.bodies("/reset"), [json!({"env_idx": 7, "session_id": 2853})]);
    assert_eq!(
        fake.bodies("/step")[0],
        json!({"env_idx": 7, "action": "search[red shirt]"})
    );
    assert_eq!(fake.bodies("/close"), [json!({"env_idx": 7})]);

    // A reset without text: the observation is fetched; the step limit ends it.
    let mut ep = env.start(&tasks[1]).await.unwrap();
    assert_eq!(ep.task_text(), "WebShop [SEP] Instruction: [SEP] other [SEP] Search");
    let outs = play(&mut ep, &vec!["click[b01]".to_string(); 12]).await.unwrap();
    assert_eq!(outs.len(), 10);
    assert!(outs[9].done && outs[9].reward == 0.0 && !outs[8].done);
    ep.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sciworld_protocol() {
    let fake = Fake::start(|path, body| match path {
        "/create" => (200, json!({"id": 0})),
        "/reset" => (200, json!({"task_name": "boil", "var_num": 3, "task_description": "Your task is to boil water.", "observation": "This room is called the hallway.", "reward": 0, "score": 0, "deleted": false, "done": false})),
        "/step" => match body["action"].as_str().unwrap() {
            "look around" => (200, json!({"observation": "This room is called the kitchen.", "reward": 25, "score": 25, "done": false})),
            "fly" => (200, json!({"observation": "No known action matches that input.", "reward": 0, "score": 25, "done": false})),
            _ => (200, json!({"observation": "You lost.", "reward": -125, "score": -100, "done": true})),
        },
        "/close" => (200, json!(true)),
        _ => (404, json!({"detail": "Not Found"})),
    })
    .await;
    let mut s = spec(ServerKind::Sciworld, &fake.url);
    assert!(s.validate().unwrap_err().contains("data_idx"));
    s.games.insert("seen".into(), GameList::List(vec![GameRef::Index(12)]));
    s.validate().unwrap();
    let env = build(&s);
    let mut ep = env.start(&env.tasks("seen", None).unwrap()[0]).await.unwrap();
    assert_eq!(ep.task_text(), "Your task is to boil water.");
    assert_eq!(ep.learned_task_type(), Some(("boil".into(), "default".into())));
    assert_eq!(ep.step("look around").await.unwrap().reward, 0.25);
    let o = ep.step("fly").await.unwrap();
    assert!(o.invalid && o.reward == 0.25);
    let o = ep.step("drink the stove").await.unwrap();
    assert_eq!((o.reward, o.done, o.success), (0.25, true, false));
    ep.close().await;
    assert_eq!(fake.bodies("/reset"), [json!({"id": 0, "data_idx": 12})]);
    assert_eq!(fake.bodies("/close"), [json!({"id": 0})]);
}

// ---- health check and spec ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_names_the_url_and_how_to_start() {
    let (up, _stop) = builtin_server(30).await;
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let ok = AgentgymEnv::new(&spec(ServerKind::Alfworld, &up));
    tokio::task::spawn_blocking(move || ok.health_check())
        .await
        .unwrap()
        .unwrap();
    let mut s = spec(ServerKind::Alfworld, &up);
    s.urls.push(down.clone());
    let bad = AgentgymEnv::new(&s);
    let err = tokio::task::spawn_blocking(move || bad.health_check())
        .await
        .unwrap()
        .unwrap_err();
    let port = down.rsplit(':').next().unwrap();
    assert!(err.0.contains(&format!("at `{down}` is not up")), "{err}");
    assert!(
        err.0.contains(&format!(
            "hint: start it with `alfworld --host 127.0.0.1 --port {port}`"
        )),
        "{err}"
    );
    assert!(
        err.0.contains(&format!("mpo-run serve-env builtin --port {port}")),
        "{err}"
    );
    assert!(!err.0.contains(&up), "{err}");
}

#[test]
fn spec_parses_validates_and_counts() {
    let s: AgentgymEnvSpec = toml::from_str(
        r#"
        env = "alfworld"
        urls = ["http://127.0.0.1:36001", "http://127.0.0.1:36002/"]
        concurrency = 4
        games = { seen = { start = 3, count = 2 }, unseen = [1, "unseen/0002"] }
        tasks = { unseen = 1 }
        "#,
    )
    .unwrap();
    s.validate().unwrap();
    assert_eq!(s.all_urls(), ["http://127.0.0.1:36001", "http://127.0.0.1:36002"]);
    assert_eq!(s.games_of("seen"), Some(GameList::Range { start: 3, count: 2 }));
    assert_eq!(
        s.games_of("unseen"),
        Some(GameList::List(vec![
            GameRef::Index(1),
            GameRef::Id("unseen/0002".into())
        ]))
    );
    assert_eq!(
        (s.task_count("seen"), s.task_count("unseen"), s.task_count("train")),
        (Some(2), Some(1), None)
    );
    assert!(toml::from_str::<AgentgymEnvSpec>("env = \"alfworld\"\nurl = \"http://x\"\nport = 1").is_err());
    assert!(toml::from_str::<AgentgymEnvSpec>("env = \"babyai\"\nurl = \"http://x\"").is_err());

    let d = AgentgymEnvSpec::new(ServerKind::Alfworld, "http://127.0.0.1:36001");
    assert_eq!(
        (d.task_count("seen"), d.task_count("unseen"), d.max_steps()),
        (Some(140), Some(134), 30)
    );
    let w = AgentgymEnvSpec::new(ServerKind::Webshop, "http://127.0.0.1:36003");
    assert_eq!((w.task_count("test"), w.max_steps()), (Some(200), 10));
    assert_eq!(
        webshop_test_sessions()[..3],
        [GameRef::Index(2853), GameRef::Index(5934), GameRef::Index(1642)]
    );
    // Identity: what changes an episode, not where the server runs.
    assert_eq!(
        d.identity(),
        AgentgymEnvSpec::new(ServerKind::Alfworld, "http://10.0.0.9:1").identity()
    );
    assert_ne!(d.identity(), w.identity());

    let mut bad = AgentgymEnvSpec::new(ServerKind::Alfworld, "localhost:36001");
    bad.url = Some("ftp://h".into());
    bad.urls = vec!["ftp://h".into()];
    bad.concurrency = 0;
    bad.timeout_s = f64::NAN;
    bad.games.insert("test".into(), GameList::List(vec![]));
    bad.tasks.insert("train".into(), 5);
    let err = bad.validate().unwrap_err();
    for want in [
        "not an http(s) URL",
        "listed twice",
        "`concurrency` = 0",
        "`timeout_s` = NaN",
        "`games.test`: unknown split",
        "`tasks.train` = 5: split `train` has no games",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // Embedded as `EnvSpec::Agentgym` under the internally tagged `kind`.
    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "kind", rename_all = "lowercase")]
    enum EnvSpecLike {
        Agentgym(AgentgymEnvSpec),
    }
    let EnvSpecLike::Agentgym(e) = toml::from_str::<EnvSpecLike>(
        "kind = \"agentgym\"\nenv = \"alfworld\"\nurl = \"http://h:1\"\ngames = { seen = { start = 3, count = 2 } }",
    )
    .unwrap();
    assert_eq!(e.task_count("seen"), Some(2));
    assert!(toml::from_str::<EnvSpecLike>("kind = \"agentgym\"\nenv = \"alfworld\"\nurl = \"http://h:1\"\nmax_step = 3")
        .unwrap_err()
        .to_string()
        .contains("unknown field `max_step`"));

    let mut none = d.clone();
    none.url = None;
    assert!(none.validate().unwrap_err().contains("`url` (or `urls`) is missing"));
}
