//! The agent loop and the `eval` stage end to end: scripted chat models
//! behind the real HTTP client, the built-in world, the real binary.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{journal_lines, run_bin, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::model::Message;
use mpo_run::store::table::{read_rows, EpisodeRow};

fn spec(expert: &str, lazy: &str, tasks: usize, concurrency: usize) -> String {
    format!(
        r#"
[experiment]
name = "evaltest"
seed = 1

[models.expert]
kind = "openai"
base_url = "{expert}"
model = "expert"

[models.lazy]
kind = "openai"
base_url = "{lazy}"
model = "lazy"

[envs.household]
kind = "builtin"
tasks = {{ train = 20 }}

[planner]
prompted = "expert"

[eval]
agents = ["expert", "lazy"]
envs = ["household"]
splits = ["seen"]
tasks = {tasks}
planners = ["none", "prompted"]
insertion = ["instruction", "observation"]
concurrency = {concurrency}
"#
    )
}

async fn servers() -> (FakeServer, FakeServer) {
    let expert = FakeServer::start(FakeOptions::default().responder(|m: &[Message]| {
        if scripted::is_planner_prompt(m) {
            scripted::planner(m, None)
        } else {
            scripted::expert_agent(m)
        }
    }))
    .await;
    let lazy = FakeServer::start(FakeOptions::default().responder(scripted::lazy_agent)).await;
    (expert, lazy)
}

fn eval_rows(ctx: &TestContext) -> Vec<EpisodeRow> {
    let rows: Vec<EpisodeRow> = read_rows(&ctx.path("results/evaltest/episodes.parquet")).unwrap();
    rows.into_iter().filter(|r| r.stage == "eval").collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_with_and_without_plans_records_expected_rewards() {
    let (expert, lazy) = servers().await;
    let ctx = TestContext::new();
    ctx.write("eval.toml", &spec(&expert.base_url(), &lazy.base_url(), 8, 16));
    let out = run_bin(&ctx, &["eval.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let rows = eval_rows(&ctx);
    // none: 2 agents × 8 tasks; prompted: × 2 insertion positions.
    assert_eq!(rows.len(), 16 + 32);
    let mut cells: BTreeMap<(String, String, String), (usize, f64)> = BTreeMap::new();
    for r in &rows {
        let c = cells.entry((r.agent.clone(), r.planner.clone(), r.insertion.clone())).or_default();
        c.0 += 1;
        c.1 += r.reward;
        match r.agent.as_str() {
            "expert" => assert!(r.success && r.reward == 1.0 && r.finish_reason == "success", "{} {}", r.task_id, r.finish_reason),
            _ => assert!(!r.success && r.reward == 0.0 && r.steps == 30 && r.finish_reason == "step_limit", "{} {}", r.task_id, r.finish_reason),
        }
        assert_eq!(r.plan.is_some(), r.planner == "prompted");
        let messages: Vec<Message> = serde_json::from_str(&r.messages).unwrap();
        let first = &messages[0].content;
        match r.insertion.as_str() {
            "instruction" => assert!(first.contains("This workflow maybe helpful for you to complete the task:\nStep 1:")),
            "observation" => {
                assert!(!first.contains("This workflow maybe helpful"));
                assert!(messages[2].content.starts_with("Observation: ") && messages[2].content.contains("This workflow maybe helpful"));
            }
            _ => assert!(!first.contains("This workflow maybe helpful")),
        }
        assert_eq!(messages.len() as u64, 1 + 2 * r.steps, "first message, then a reply and an observation per step");
        assert!(r.prompt_tokens > 0 && r.completion_tokens > 0);
    }
    let summary: Vec<String> = cells.iter().map(|((a, p, i), (n, s))| format!("{a}/{p}/{i}: {n} episodes, reward {s}")).collect();
    assert_eq!(
        summary,
        vec![
            "expert/none/none: 8 episodes, reward 8",
            "expert/prompted/instruction: 8 episodes, reward 8",
            "expert/prompted/observation: 8 episodes, reward 8",
            "lazy/none/none: 8 episodes, reward 0",
            "lazy/prompted/instruction: 8 episodes, reward 0",
            "lazy/prompted/observation: 8 episodes, reward 0",
        ]
    );
    // Plans were generated once per task and reused by every agent.
    let planner_calls = expert.chat_requests().iter().filter(|r| r.body["messages"][0]["content"].as_str().unwrap_or("").starts_with("Please generate")).count();
    assert_eq!(planner_calls, 8);

    // A rerun is a no-op: no model is called.
    let before = expert.chat_count() + lazy.chat_count();
    let again = run_bin(&ctx, &["eval.toml"]).await;
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to do"));
    assert_eq!(expert.chat_count() + lazy.chat_count(), before);
}

/// Rows without what legitimately differs between two runs (wall time,
/// the time of day an episode finished).
fn comparable(ctx: &TestContext) -> Vec<String> {
    let mut v: Vec<String> = eval_rows(ctx)
        .into_iter()
        .map(|mut r| {
            r.wall_ms = 0;
            r.finished_at = None;
            serde_json::to_string(&r).unwrap()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_eval_resumes_to_the_same_rows() {
    let (expert, lazy) = servers().await;
    let reference = TestContext::new();
    reference.write("eval.toml", &spec(&expert.base_url(), &lazy.base_url(), 12, 2));
    assert!(run_bin(&reference, &["eval.toml"]).await.status.success());

    let ctx = TestContext::new();
    ctx.write("eval.toml", &spec(&expert.base_url(), &lazy.base_url(), 12, 2));
    let mut child = ctx
        .command(&["eval.toml"])
        .env("MPORUN_TEST_ITEM_DELAY_MS", "40")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while journal_lines(&ctx, "episodes") < 6 {
        assert!(start.elapsed() < Duration::from_secs(120), "the eval never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = journal_lines(&ctx, "episodes");
    assert!(done < 72, "killed mid-stage ({done} of 72 episodes done)");

    let out = run_bin(&ctx, &["eval.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(comparable(&reference), comparable(&ctx));
    assert_eq!(journal_lines(&ctx, "episodes"), 72, "each episode journaled exactly once");
}

fn files_under(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_but_never_written() {
    const SECRET: &str = "sk-test-3f9a1c0d7e-never-write-me";
    let server = FakeServer::start(FakeOptions::default().require_key(SECRET).responder(scripted::expert_agent)).await;
    let ctx = TestContext::new();
    ctx.write(
        "secret.toml",
        &format!(
            r#"
[experiment]
name = "secret"

[models.agent]
kind = "openai"
base_url = "{}"
model = "agent"
api_key_env = "MPO_TEST_SECRET_KEY"

[envs.household]
kind = "builtin"

[eval]
agents = ["agent"]
envs = ["household"]
splits = ["seen"]
tasks = 3
"#,
            server.base_url()
        ),
    );
    let mut cmd = ctx.command(&["secret.toml", "-vv"]);
    cmd.env("MPO_TEST_SECRET_KEY", SECRET);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Sent as a bearer token (the server refuses requests without it).
    let reqs = server.chat_requests();
    assert!(!reqs.is_empty());
    assert!(reqs.iter().all(|r| r.header("authorization") == Some(&format!("Bearer {SECRET}"))));
    let rows = eval_rows_of(&ctx, "secret");
    assert!(rows.iter().all(|r| r.reward == 1.0));
    // Nowhere on disk, nor in what the run printed.
    let mut files = Vec::new();
    files_under(&ctx.path("results"), &mut files);
    files_under(&ctx.path("reports"), &mut files);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "log")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()), "the key leaked into {}", f.display());
    }
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));
}

fn eval_rows_of(ctx: &TestContext, experiment: &str) -> Vec<EpisodeRow> {
    read_rows(&ctx.path(&format!("results/{experiment}/episodes.parquet"))).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_model_server_fails_the_stage_and_loses_nothing() {
    // Start, learn the address, stop: the agent's endpoint refuses connections.
    let (expert, _lazy) = servers().await;
    let dead = FakeServer::start(FakeOptions::default()).await;
    let dead_url = dead.base_url();
    dead.kill();
    drop(dead);
    let ctx = TestContext::new();
    let text = spec(&expert.base_url(), &dead_url, 4, 4).replace("model = \"lazy\"", "model = \"lazy\"\nmax_retries = 1\ntimeout_s = 2\nready_timeout_s = 1");
    ctx.write("eval.toml", &text);
    let out = run_bin(&ctx, &["eval.toml"]).await;
    assert_eq!(out.status.code(), Some(1), "a failed stage exits 1");
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("FAILED"), "{e}");
    // The expert agent's cells finished and are in the results.
    let rows = eval_rows(&ctx);
    assert_eq!(rows.iter().filter(|r| r.agent == "expert").count(), 4 + 8);
    assert!(rows.iter().all(|r| r.agent == "expert"));
}

/// An AgentGym-protocol server (the built-in world served by mpo-run) that
/// goes away mid-run: the unfinished episodes are recorded as environment
/// failures, the run completes, and the next run (server back) retries only
/// those, reusing every finished episode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_server_that_dies_mid_run_loses_nothing() {
    let (expert, _lazy) = servers().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mpo_run::env::agentgym::serve_builtin_on(listener, 30, async move {
        let _ = stopped.await;
    }));
    let ctx = TestContext::new();
    ctx.write(
        "gym.toml",
        &format!(
            r#"
[experiment]
name = "gym"
env_retries = 1

[models.expert]
kind = "openai"
base_url = "{}"
model = "expert"

[envs.alf]
kind = "agentgym"
env = "alfworld"
url = "http://{addr}"
retries = 1
retry_backoff_ms = 10
connect_timeout_s = 1

[eval]
agents = ["expert"]
envs = ["alf"]
splits = ["seen"]
tasks = 12
concurrency = 2
"#,
            expert.base_url()
        ),
    );
    let mut cmd = ctx.command(&["gym.toml"]);
    cmd.env("MPORUN_TEST_ITEM_DELAY_MS", "150");
    let run = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    // Let a few episodes finish, then take the server away.
    let start = Instant::now();
    while journal_lines(&ctx, "episodes") < 2 {
        assert!(start.elapsed() < Duration::from_secs(60), "no episode finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop.send(());
    let _ = server.await;
    let out = run.await.unwrap();
    assert!(out.status.success(), "environment failures are results, not a failed run: {}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<EpisodeRow> = read_rows(&ctx.path("results/gym/episodes.parquet")).unwrap();
    assert_eq!(rows.len(), 12, "every task has a row");
    let failed = rows.iter().filter(|r| r.finish_reason == "env_failure").count();
    let done = rows.iter().filter(|r| r.success).count();
    assert!(failed > 0 && done >= 2 && failed + done == 12, "failed {failed}, done {done}");
    assert_eq!(journal_lines(&ctx, "episodes"), done, "only finished episodes are journaled");

    // The server comes back on the same address: the rerun retries only the
    // failed episodes.
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = tokio::spawn(mpo_run::env::agentgym::serve_builtin_on(listener, 30, std::future::pending()));
    let again = run_bin(&ctx, &["gym.toml"]).await;
    let e = String::from_utf8_lossy(&again.stderr).to_string();
    assert!(again.status.success(), "{e}");
    assert!(e.contains(&format!("{failed} items computed, {done} reused")), "{e}");
    let rows: Vec<EpisodeRow> = read_rows(&ctx.path("results/gym/episodes.parquet")).unwrap();
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r.success), "all episodes succeed once the server is back");
    // And now it is final: a third run does nothing.
    let third = run_bin(&ctx, &["gym.toml"]).await;
    assert!(String::from_utf8_lossy(&third.stderr).contains("nothing to do"));
    server.abort();
}

/// #24: an agent that answers with nothing at once (vLLM: `content: ""`,
/// `finish_reason: "stop"`, as after a thought prefill) is an agent that
/// made format errors — recorded episodes, not a failed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_replies_are_format_errors_not_failures() {
    let (expert, _lazy) = servers().await;
    let mute = FakeServer::start(FakeOptions::default().responder(|_: &[Message]| String::new())).await;
    let ctx = TestContext::new();
    ctx.write("eval.toml", &spec(&expert.base_url(), &mute.base_url(), 2, 4));
    let out = run_bin(&ctx, &["eval.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<EpisodeRow> = eval_rows(&ctx).into_iter().filter(|r| r.agent == "lazy").collect();
    assert_eq!(rows.len(), 2 + 4);
    for r in &rows {
        assert!(!r.success && r.steps == 30 && r.finish_reason == "step_limit", "{} {}", r.task_id, r.finish_reason);
        let messages: Vec<Message> = serde_json::from_str(&r.messages).unwrap();
        assert_eq!(messages[1].content, "");
        assert!(messages[2].content.contains("Observation:"), "the format error's observation: {}", messages[2].content);
    }
    assert_eq!(mute.chat_count(), 6 * 30, "one call per turn, none retried");
}
