//! The whole MPO chain in-process on the built-in world with tiny local
//! models that mpo-run initialises itself: expert → seed plans → init
//! models → agent SFT → planner SFT → M plans → N rollouts → pairs → DPO
//! and RFT → test plans → eval, from an empty results dir; row counts are
//! what the spec implies; a rerun is all cached.
//!
//! The Monte Carlo explorer is a scripted agent behind the fake OpenAI
//! server (it succeeds exactly when the inserted plan has an even length),
//! so that plans get different Q values and DPO gets pairs whatever the
//! tiny untrained models write; everything else is the real local model.

#[path = "support/fake_openai.rs"]
mod fake_openai;
#[path = "support/scripted.rs"]
mod scripted;
mod common;

use common::{run_bin, TestContext};
use fake_openai::{FakeOptions, FakeServer};
use mpo_run::store::table::read_rows;
use serde_json::Value;

fn spec(explorer_url: &str) -> String {
    format!(r#"
[experiment]
name = "chain"
seed = 1
prompts = "compact"

[models.planner]
kind = "local"
init = {{ layers = 1, hidden = 32, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "word_level" }}
max_tokens = 24

[models.explorer]
kind = "openai"
base_url = "{explorer_url}"
model = "scripted"

[models.agent]
kind = "local"
init = {{ layers = 1, hidden = 48, heads = 2, kv_heads = 1, ff = 64, vocab_size = 300, tokenizer = "word_level" }}
max_tokens = 16

[envs.household]
kind = "builtin"
max_steps = 30
tasks = {{ train = 6, seen = 2 }}

[planner]
model = "planner"
train_tasks = 4
max_tokens = 24

[agent_sft]
models = ["agent"]
plan_share = 0.5

[mpo]
m = 3
n = 2
explorer = "explorer"

[train.sft]
epochs = 1
batch_size = 4
lr = 1e-3
[train.agent_sft]
epochs = 1
batch_size = 4
lr = 1e-3
max_len = 256
[train.dpo]
epochs = 1
batch_size = 2
lr = 1e-3
[train.rft]
epochs = 1
batch_size = 2
lr = 1e-3

[eval]
agents = ["agent"]
envs = ["household"]
splits = ["seen"]
planners = ["none", "sft", "rft", "mpo"]
insertion = ["instruction"]
"#
    )
}

fn manifests(ctx: &TestContext) -> Vec<Value> {
    let mut out = Vec::new();
    let root = ctx.path("results/artifacts");
    for stage in std::fs::read_dir(&root).unwrap().flatten() {
        for art in std::fs::read_dir(stage.path()).unwrap().flatten() {
            let m = art.path().join("manifest.json");
            if let Ok(text) = std::fs::read_to_string(&m) {
                let mut v: Value = serde_json::from_str(&text).unwrap();
                v["dir"] = Value::String(art.path().display().to_string());
                out.push(v);
            }
        }
    }
    out
}

fn rows(m: &Value, file: &str) -> u64 {
    m["rows"][file].as_u64().unwrap_or_else(|| panic!("{}: no row count for {file}: {m}", m["label"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_chain_runs_with_tiny_local_models() {
    let explorer = FakeServer::start(FakeOptions::default().responder(|m: &[mpo_run::model::Message]| {
        match scripted::plan_of(m) {
            Some(p) if p.trim().len() % 2 == 0 => scripted::expert_agent(m),
            _ => scripted::lazy_agent(m),
        }
    }))
    .await;
    let ctx = TestContext::new();
    ctx.write("chain.toml", &spec(&explorer.base_url()));
    let out = run_bin(&ctx, &["chain.toml"]).await;
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));

    let ms = manifests(&ctx);
    let by = |stage: &str| -> Vec<&Value> { ms.iter().filter(|m| m["stage"] == stage).collect() };
    let one = |stage: &str| -> &Value {
        let v = by(stage);
        assert_eq!(v.len(), 1, "one `{stage}` artifact");
        v[0]
    };
    assert_eq!(by("init_model").len(), 2, "planner and agent");
    assert_eq!(rows(one("expert"), "trajectories.jsonl"), 6);
    assert_eq!(rows(one("sample_plans"), "plans.jsonl"), 4 * 3, "tasks × M");
    let mc = one("mc_rollouts");
    assert_eq!(rows(mc, "episodes.parquet"), 4 * 3 * 2, "tasks × M × N");
    assert_eq!(rows(mc, "plans.parquet"), 4 * 3);
    let pairs = one("pairs");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}/summary.json", pairs["dir"].as_str().unwrap())).unwrap()).unwrap();
    let n_pairs = summary["pairs"].as_u64().unwrap();
    assert!(n_pairs <= 4);
    assert_eq!(
        n_pairs + summary["skipped_all_equal"].as_u64().unwrap() + summary["skipped_too_few_scored"].as_u64().unwrap(),
        4,
        "every task is paired or counted as skipped: {summary}"
    );
    assert_eq!(rows(pairs, "pairs.parquet"), n_pairs);

    // Trainings: one step per batch per epoch, a Hugging Face directory each.
    let agent_sft = one("agent_sft");
    assert!(rows(agent_sft, "train_log.parquet") >= 1);
    assert_eq!(rows(one("sft"), "train_log.parquet"), 6u64.div_ceil(4), "6 seed plans, batch 4, 1 epoch");
    for stage in ["agent_sft", "sft", "dpo", "rft"] {
        for m in by(stage) {
            let dir = std::path::Path::new(m["dir"].as_str().unwrap()).join("model");
            for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
                assert!(dir.join(f).exists(), "{stage}: {f}");
            }
        }
    }
    assert!(n_pairs > 0, "the scripted explorer separates plans: {summary}");
    {
        assert_eq!(rows(one("dpo"), "train_log.parquet"), n_pairs.div_ceil(2));
        assert_eq!(rows(one("dpo"), "reference_logps.jsonl"), n_pairs);
    }

    // Test plans per trained variant, evaluation per variant.
    let tp = by("test_plans");
    assert_eq!(tp.len(), 3, "sft, rft, mpo");
    for m in &tp {
        assert_eq!(rows(m, "plans.parquet"), 2);
    }
    let ev = by("eval");
    assert_eq!(ev.len(), 4);
    for m in &ev {
        assert_eq!(rows(m, "episodes.parquet"), 2);
    }
    let episodes: Vec<mpo_run::store::table::EpisodeRow> = read_rows(&ctx.path("results/chain/episodes.parquet")).unwrap();
    let eval_rows = episodes.iter().filter(|e| e.stage == "eval").count();
    assert_eq!(eval_rows, 4 * 2);
    let mut planners: Vec<&str> = episodes.iter().filter(|e| e.stage == "eval").map(|e| e.planner.as_str()).collect();
    planners.sort();
    planners.dedup();
    assert_eq!(planners, vec!["mpo", "none", "rft", "sft"]);
    let log: Vec<mpo_run::train::TrainLogRow> = read_rows(&ctx.path("results/chain/train_log.parquet")).unwrap();
    assert!(log.iter().any(|r| r.stage == "dpo" && r.margin.is_some()));

    // The datasets for external trainers.
    let out = run_bin(&ctx, &["export", "chain.toml", "--to", "datasets"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = ctx.path("datasets/base");
    let seed: Vec<Value> = serde_json::from_slice(&std::fs::read(d.join("mpo_seed_sft.json")).unwrap()).unwrap();
    assert_eq!(seed.len(), 6);
    let dpo: Vec<Value> = serde_json::from_slice(&std::fs::read(d.join("mpo_dpo.json")).unwrap()).unwrap();
    assert_eq!(dpo.len() as u64, n_pairs);
    assert!(dpo[0]["chosen"]["value"].is_string() && dpo[0]["rejected"]["value"].is_string());
    let trl = std::fs::read_to_string(d.join("trl_dpo.jsonl")).unwrap();
    assert_eq!(trl.lines().count() as u64, n_pairs);
    let info: Value = serde_json::from_slice(&std::fs::read(d.join("dataset_info.json")).unwrap()).unwrap();
    for k in ["mpo_seed_sft", "mpo_dpo", "mpo_rft"] {
        assert!(info[k]["file_name"].is_string(), "dataset_info names {k}: {info}");
    }
    assert_eq!(info["mpo_dpo"]["ranking"], true);

    // A rerun is a no-op.
    let again = run_bin(&ctx, &["chain.toml"]).await;
    assert!(again.status.success());
    let text = String::from_utf8_lossy(&again.stdout).to_string() + &String::from_utf8_lossy(&again.stderr);
    assert!(!text.contains("ran in"), "second run recomputed something:\n{text}");
}
