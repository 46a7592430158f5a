//! The MPO chain with models behind HTTP: sample M plans per task, score
//! each with N explorer episodes (the plan inserted), pick pairs; and the
//! item reuse that makes M/N sweeps cost only their largest setting.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use std::collections::HashMap;

use common::{run_bin, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::model::Message;
use mpo_run::store::table::{read_rows, EpisodeRow, PlanRow};

fn spec(planner: &str, explorer: &str) -> String {
    format!(
        r#"
[experiment]
name = "mc"
seed = 3

[models.planner]
kind = "openai"
base_url = "{planner}"
model = "sft-planner"

[models.explorer]
kind = "openai"
base_url = "{explorer}"
model = "explorer"

[envs.household]
kind = "builtin"
tasks = {{ train = 5 }}

[planner]
model = "planner"

[mpo]
m = 2
n = 2
explorer = "explorer"
"#
    )
}

/// Episodes started = requests that carry only the first message.
fn episodes_started(server: &FakeServer) -> usize {
    server.chat_requests().iter().filter(|r| r.body["messages"].as_array().map_or(0, |m| m.len()) == 1).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m_and_n_sweeps_reuse_items_and_explorers_get_the_sampled_plans() {
    let planner = FakeServer::start(FakeOptions::default().seeded_responder(scripted::planner)).await;
    let explorer = FakeServer::start(FakeOptions::default().responder(scripted::plan_sensitive_agent)).await;
    let ctx = TestContext::new();
    ctx.write("mc.toml", &spec(&planner.base_url(), &explorer.base_url()));

    let out = run_bin(&ctx, &["mc.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(planner.chat_count(), 2 * 5, "M × tasks plans sampled");
    assert_eq!(episodes_started(&explorer), 2 * 2 * 5, "M × N × tasks episodes");

    let dry = run_bin(&ctx, &["mc.toml", "--dry-run", "--set", "mpo.m=3", "--set", "mpo.n=3"]).await;
    let d = String::from_utf8_lossy(&dry.stdout).to_string();
    assert!(d.contains("15 items: 10 cached, 5 to run"), "{d}");

    let out = run_bin(&ctx, &["mc.toml", "--set", "mpo.m=3", "--set", "mpo.n=3"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(planner.chat_count(), 2 * 5 + (3 - 2) * 5, "only the new plans are sampled");
    assert_eq!(episodes_started(&explorer), 3 * 3 * 5, "only the new episodes run: 3·3·5 − 2·2·5 more");

    // The plans table of the M = N = 3 run: every plan scored with N = 3.
    let plans: Vec<PlanRow> = read_rows(&ctx.path("results/mc/plans.parquet")).unwrap();
    let scored: Vec<&PlanRow> = plans.iter().filter(|p| p.q.is_some()).collect();
    let latest: Vec<&&PlanRow> = scored.iter().filter(|p| p.n == Some(3)).collect();
    assert_eq!(latest.len(), 15);

    // Every explorer episode saw exactly one of the sampled plans, and each
    // plan was seen by its N episodes.
    let episodes: Vec<EpisodeRow> = read_rows(&ctx.path("results/mc/episodes.parquet")).unwrap();
    let rollouts: Vec<&EpisodeRow> = episodes.iter().filter(|e| e.stage == "mc_rollouts").collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &rollouts {
        let messages: Vec<Message> = serde_json::from_str(&e.messages).unwrap();
        let inserted = scripted::plan_of(&messages).expect("a plan is inserted");
        assert_eq!(Some(&inserted), e.plan.as_ref(), "the recorded plan is the inserted one");
        *seen.entry(inserted).or_default() += 1;
    }
    for p in &latest {
        assert_eq!(seen.get(&p.text).copied().unwrap_or(0) % 3, 0);
        assert!(seen.contains_key(&p.text), "plan never given to the explorer: {}", p.text);
        // Q is the mean reward of the plan's episodes: good plans succeed.
        let expect = if p.text.contains("(good") { 1.0 } else { 0.0 };
        assert_eq!(p.q, Some(expect));
    }

    // Pairs: at most one per task, chosen better than rejected.
    let pairs = mpo_run::store::table::read_parquet(&ctx.path("results/mc/pairs.parquet")).unwrap();
    assert!(pairs.height() <= 5);
    let summary_dirs: Vec<_> = std::fs::read_dir(ctx.path("results/artifacts/pairs")).unwrap().collect();
    assert_eq!(summary_dirs.len(), 2, "one pairs artifact per (M, N)");
    for d in summary_dirs {
        let d = d.unwrap().path();
        let s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("summary.json")).unwrap()).unwrap();
        assert_eq!(s["tasks"], 5);
        let paired = s["pairs"].as_u64().unwrap();
        assert_eq!(paired + s["skipped_all_equal"].as_u64().unwrap() + s["skipped_too_few_scored"].as_u64().unwrap(), 5);
        assert!(d.join("datasets/trl_dpo.jsonl").exists() && d.join("datasets/dataset_info.json").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_teacher_writes_seed_plans_and_unparseable_replies_are_recorded() {
    // The teacher answers with a tagged plan, except for tasks whose goal
    // mentions "heat": there it never uses the tags.
    let teacher = FakeServer::start(FakeOptions::default().responder(|m: &[Message]| {
        let prompt = &m[0].content;
        let task = prompt.split("<task>\n").nth(1).and_then(|s| s.split("\n</task>").next()).unwrap_or("");
        if task.contains("heat") {
            "I think you should heat it.".to_string()
        } else {
            format!("<meta_plan>\nStep 1: Go to where the object of \"{task}\" may be.\nStep 2: Finish.\n</meta_plan>")
        }
    }))
    .await;
    let ctx = TestContext::new();
    ctx.write(
        "teacher.toml",
        &format!(
            r#"
[experiment]
name = "teacher"

[models.gpt]
kind = "openai"
base_url = "{}"
model = "teacher"

[envs.household]
kind = "builtin"
tasks = {{ train = 30 }}

[planner]
teacher = "gpt"
teacher_attempts = 2
"#,
            teacher.base_url()
        ),
    );
    let out = run_bin(&ctx, &["teacher.toml"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plans: Vec<PlanRow> = read_rows(&ctx.path("results/teacher/plans.parquet")).unwrap();
    let dir = std::fs::read_dir(ctx.path("results/artifacts/seed_plans")).unwrap().next().unwrap().unwrap().path();
    let failures = std::fs::read_to_string(dir.join("failures.jsonl")).unwrap();
    let n_fail = failures.lines().count();
    assert!(n_fail > 0, "some tasks are heat tasks");
    assert_eq!(plans.len() + n_fail, 30);
    assert!(plans.iter().all(|p| p.text.starts_with("Step 1: Go to where") && p.planner == "teacher:gpt"));
    assert!(failures.lines().all(|l| l.contains("\"failure\"") && l.contains("heat")));
    // Each failing task was asked exactly `teacher_attempts` times; each good one once.
    assert_eq!(teacher.chat_count(), plans.len() + 2 * n_fail);
}
